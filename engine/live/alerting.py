"""From recorded events to outbox rows, once per cycle: repeats, silences, inhibition, routing.

The stepper hands each recorded event to :meth:`Alerting.add` (inside its symbol's savepoint);
after every strategy of the cycle has stepped, :meth:`Alerting.finish` routes them all, so an
inhibition sees the states of this cycle whichever strategy stepped first. Everything is written
in the cycle's transaction: the outbox rows, the snapshot lines of the alerts' bars and the
repeat bookkeeping commit with the events, or none of them do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from perpwatch.api.interfaces import Notifier
from perpwatch.evaluation.events import Event
from perpwatch.evaluation.rules import FIRING, RuleState
from perpwatch.language.compiler import Rule, Strategy
from perpwatch.live.alertstate import AlertState
from perpwatch.live.jobs import CycleReport, Job
from perpwatch.live.routing import NotifyPolicy, labels_of
from perpwatch.live.state import StateStore

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner


@dataclass
class Pending:
    """A recorded event waiting for the end of the stepping to be routed."""

    event_id: int
    event: Event
    job: Job
    rule: Rule
    suppressed_before: bool


class Alerting:
    """Routes a cycle's events into the outbox (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        state: AlertState,
        policy: NotifyPolicy | None,
        notifiers: dict[str, Notifier],
    ):
        """``policy`` None: no config's routes; each job's own notifiers get its alerts."""
        self.store = store
        self.state = state
        self.by_config = policy is not None
        self.policy = policy or NotifyPolicy()
        self.notifiers = notifiers
        self.pending: list[Pending] = []

    # -- during the stepping ------------------------------------------------------------------

    def begin(self) -> None:
        """A new cycle: forget what a rolled-back one left."""
        self.pending.clear()

    def mark(self) -> int:
        return len(self.pending)

    def rollback(self, mark: int) -> None:
        """A savepoint rolled back: drop what was added since ``mark``."""
        del self.pending[mark:]

    def repeat_due(self, strategy: Strategy, rule: Rule, state: RuleState, symbol: str, bar: int) -> bool:
        """Whether a rule firing at ``bar`` (and not newly) is due for a repeat notification."""
        every = self.policy.repeat_for(rule.severity, rule.repeat_ms)
        if not every or state.status != FIRING:
            return False
        last = self.state.last_sent(strategy.name, rule.name, symbol)
        if last is None:
            last = state.last_fired
        return last is not None and bar - last >= every

    def add(
        self,
        event_id: int,
        event: Event,
        job: Job,
        rule: Rule,
        suppressed_before: bool,
        snapshot: Callable[[], list[tuple[str, str]]] | None = None,
        now: float = 0.0,
    ) -> None:
        """A recorded event of the cycle; its bar's snapshot lines are kept when it may be notified."""
        if event.kind in ("fired", "repeat"):
            self.state.set_sent(event.strategy, event.rule, event.symbol, event.time)
        if event.kind not in ("fired", "repeat", "resolved"):
            return
        if snapshot is not None and job.strategy.snapshot:
            self.state.save_snapshot(event.strategy, event.symbol, event.time, snapshot(), now)
        self.pending.append(Pending(event_id, event, job, rule, suppressed_before))

    # -- at the end of the stepping -----------------------------------------------------------

    def finish(self, now: float, report: CycleReport) -> None:
        """Route every pending event into the outbox."""
        pending, self.pending = self.pending, []
        for p in pending:
            for name in self.routes(p, now):
                self.store.enqueue(p.event_id, name, now)
                report.queued += 1
        self.state.prune(now)

    def routes(self, p: Pending, now: float) -> list[str]:
        """The notifiers that get ``p``'s event: none when it is a resolution the rule does not ask
        for, muted, silenced or inhibited; else its receivers that accept it."""
        event = p.event
        if event.kind == "resolved" and (not p.rule.notify_resolved or p.suppressed_before):
            return []
        if self.store.is_muted(event.strategy, event.rule, event.symbol, now):
            return []
        labels = labels_of(event)
        if self.state.silenced(labels, now) is not None:
            return []
        if self.inhibited(event, labels):
            return []
        return self.receivers(event, p.job.strategy.notify if self.by_config else p.job.notify)

    def receivers(self, event: Event, explicit: list[str] | None, exclude: str | None = None) -> list[str]:
        """The notifiers that take ``event``: ``explicit`` (a strategy's), else the routes; without a
        config's policy, every notifier (the meta-alerts)."""
        if explicit is None and not self.by_config:
            explicit = list(self.notifiers)
        names = self.policy.receivers(event, explicit)
        return [n for n in names if n != exclude and n in self.notifiers and self.notifiers[n].accepts(event)]

    def inhibited(self, event: Event, labels: dict[str, str]) -> bool:
        """Whether an inhibit rule's source fires for the event's symbol and its target matches."""
        for rule in self.policy.inhibit:
            if rule.strategy == event.strategy and rule.rule in (None, event.rule):
                continue  # a source never inhibits itself
            if not rule.target.matches(labels):
                continue
            sql = "SELECT 1 FROM rule_state WHERE strategy = ? AND symbol = ? AND status = ?"
            args = [rule.strategy, event.symbol, FIRING]
            if rule.rule is not None:
                sql, args = sql + " AND rule = ?", [*args, rule.rule]
            if self.store.conn.execute(sql + " LIMIT 1", args).fetchone() is not None:
                return True
        return False

    # -- the engine's own alerts --------------------------------------------------------------

    def engine_alert(self, event: Event, now: float, exclude: str | None = None) -> int:
        """Record a meta-alert and queue it at once for its receivers (but ``exclude``); how many."""
        event_id = self.store.record_event(event, now)
        if event_id is None:
            return 0
        if self.state.silenced(labels_of(event), now) is not None:
            return 0
        names = self.receivers(event, None, exclude)
        if not names:
            log.warning("meta-alert %s %s: no notifier takes it", event.rule, event.symbol)
        for name in names:
            self.store.enqueue(event_id, name, now)
        return len(names)
