"""What the HTTP side reads and changes: a state database, the runner's telemetry and executors.

:class:`Backend` serves both ``perpwatch run --http`` (the running process: the runner's store,
telemetry, executors and lock) and ``perpwatch serve`` (a state database of its own, read-only: the
telemetry is the snapshot the last run left in it). Reads go through the store's API from the
event loop's thread; the actions (halt, resume, mute) wait for the runner's database lock, so
they never land inside a cycle's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from perpwatch.api.executors import Accounting, Executor
from perpwatch.common.clock import Clock
from perpwatch.common.text import printable
from perpwatch.common.timeutil import INTERVALS
from perpwatch.evaluation.events import Event
from perpwatch.evaluation.rules import FIRING, INACTIVE, PENDING, RuleState
from perpwatch.live import risk
from perpwatch.live.alertstate import AlertState
from perpwatch.live.state import StateStore
from perpwatch.live.telemetry import Telemetry

log = logging.getLogger("perpwatch.web")

#: Seconds beyond two of the shortest intervals before /healthz says the run is stale.
DEFAULT_HEALTH_GRACE = 120.0
#: The most events one page lists.
MAX_EVENTS = 500
#: Event kinds the filter offers (the rule state machine's and the trading layer's).
EVENT_KINDS = ("fired", "suppressed", "resolved", "rejected", "order")
SEVERITIES = ("info", "low", "medium", "high", "critical")


@dataclass
class RuleRow:
    """One (strategy, rule, symbol) as the dashboard shows it."""

    strategy: str
    rule: str
    symbol: str
    status: str  # inactive, pending or firing
    since: int | None  # bar time (ms) the status began, when known
    truth: bool | None  # the condition at the newest bar stepped (None: unknown or not seen)
    values: dict[str, Any] = field(default_factory=dict)  # the names the condition read, there
    bar: int | None = None  # that bar


@dataclass
class PositionRow:
    executor: str
    strategy: str
    symbol: str
    side: str
    qty: float
    entry_price: float
    opened: int


@dataclass
class MuteRow:
    """A mute in force: a ``perpwatch mute`` target, or a silence with matchers."""

    what: str  # ``strategy`` / ``strategy/rule``, or the matchers (``strategy=x severity=low``)
    symbol: str | None
    until: float
    author: str = ""
    comment: str = ""


class Forbidden(Exception):
    """An action refused: no token, a wrong one, or a read-only server."""


@dataclass
class Backend:
    """The state the endpoints show; ``read_only`` for ``perpwatch serve``."""

    store: StateStore
    clock: Clock
    token: str | None = None
    read_only: bool = False
    health_grace: float = DEFAULT_HEALTH_GRACE
    telemetry: Telemetry | None = None  # the runner's own (run --http); None: read from the store
    executors: dict[str, Executor] = field(default_factory=dict)
    strategies: list[Any] = field(default_factory=list)  # (Strategy, symbols) of the runner's jobs
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # the runner's database lock
    _silences: AlertState | None = field(default=None, init=False, repr=False)
    _counts: dict[tuple[str, str, str], int] = field(default_factory=dict, init=False, repr=False)
    _counted: int = field(default=0, init=False, repr=False)  # the newest event id counted

    def event_counts(self) -> dict[tuple[str, str, str], int]:
        """(strategy, rule, kind) -> events recorded: the events since the last call added to the
        counts kept, so a scrape costs what is new, not the whole table."""
        rows, self._counted = self.store.event_counts(self._counted)
        for strategy, rule, kind, n in rows:
            self._counts[(strategy, rule, kind)] = self._counts.get((strategy, rule, kind), 0) + n
        return dict(sorted(self._counts.items()))

    # -- reads --------------------------------------------------------------------------------

    def current_telemetry(self) -> Telemetry:
        """The runner's telemetry, or the snapshot in the database (empty when there is none)."""
        if self.telemetry is not None:
            self.telemetry.refresh()
            return self.telemetry
        return Telemetry.load(self.store) or Telemetry()

    def health(self) -> tuple[bool, dict[str, Any]]:
        ok, facts = self.current_telemetry().health(self.clock.time(), self.health_grace)
        facts["halted"] = risk.halted(self.store) is not None
        return ok, facts

    def halted(self) -> str | None:
        return risk.halted(self.store)

    def mutes(self) -> list[MuteRow]:
        """The mutes and silences in force, in that order."""
        now = self.clock.time()
        rows = [MuteRow(m.target, m.symbol, m.until) for m in self.store.mutes(now)]
        if self._silences is None:
            self._silences = AlertState(self.store)  # its tables exist (created once when absent)
        for s in self._silences.silences(now):
            rows.append(MuteRow(s.text(), None, s.until, s.author, s.comment))
        return rows

    def events(self, limit: int, **filters: str | None) -> list[Event]:
        return self.store.find_events(min(max(1, limit), MAX_EVENTS), **filters)

    def rules(self, since: bool = True) -> list[RuleRow]:
        """Every (strategy, rule, symbol) the runner runs or the database holds a state for; with
        ``since``, when each one's status began (a look through the events)."""
        telemetry = self.current_telemetry()
        stored = {(s, r, sym): st for s, r, sym, st in self.store.rule_states()}
        keys = list(stored)
        steps: dict[str, int] = {}
        for strategy, symbols in self.strategies:
            steps[strategy.name] = strategy.step_ms
            keys += [(strategy.name, rule.name, sym) for rule in strategy.rules for sym in symbols]
        for name, series in telemetry.series.items():
            steps.setdefault(name.partition("/")[0], INTERVALS.get(series.get("interval", ""), 0))
        fired = self.store.last_event_times(("fired", "suppressed")) if since else {}
        resolved = self.store.last_event_times(("resolved",)) if since else {}
        rows = []
        for key in sorted(set(keys)):
            state = stored.get(key) or RuleState()
            seen = telemetry.rules.get("/".join(key), {})
            rows.append(
                RuleRow(
                    *key,
                    status=state.status,
                    since=_since(state, key, steps.get(key[0], 0), fired, resolved),
                    truth=seen.get("truth"),
                    values=seen.get("values", {}),
                    bar=seen.get("bar"),
                )
            )
        return rows

    async def positions(self) -> tuple[list[PositionRow], dict[str, float | None], list[str]]:
        """Open positions of every executor, each strategy's PnL (None where unknown), and the
        executors whose positions are unknown (their ``positions()`` failed)."""
        rows: list[PositionRow] = []
        pnl: dict[str, float | None] = {}
        strategies = {s.name for s, _ in self.strategies}
        failed: set[int] = set()  # id() of the executors whose positions are unknown
        unknown: list[str] = []
        for name, executor in self.executors.items():
            try:
                held = await executor.positions()
            except Exception as e:  # a plugin's failure leaves its positions unknown, not the page broken
                log.warning("executor %s: positions unknown: %s", name, printable(f"{type(e).__name__}: {e}"))
                failed.add(id(executor))
                unknown.append(name)
                continue
            for p in held:
                rows.append(PositionRow(name, p.strategy, p.symbol, p.side, p.qty, p.entry_price, p.opened))
                strategies.add(p.strategy)
        for strategy in sorted(strategies):
            owner = next(
                (x for s, _ in self.strategies if s.name == strategy and (x := self._executor(s))), None
            )
            if owner is None and len(self.executors) == 1:
                owner = next(iter(self.executors.values()))
            pnl[strategy] = None
            if isinstance(owner, Accounting) and id(owner) not in failed:
                try:
                    value = await owner.pnl(strategy)
                except Exception as e:
                    log.warning("PnL of %s unknown: %s", strategy, printable(f"{type(e).__name__}: {e}"))
                    continue
                pnl[strategy] = float(value) if math.isfinite(value) else None
        return rows, pnl, unknown

    def _executor(self, strategy: Any) -> Executor | None:
        return self.executors.get(strategy.execute) if getattr(strategy, "execute", None) else None

    # -- actions ------------------------------------------------------------------------------

    def authorise(self, given: str | None) -> None:
        """Raise :class:`Forbidden` unless ``given`` is the configured token (compared in constant
        time) on a server that may change things."""
        if self.read_only:
            raise Forbidden("this server is read-only (perpwatch serve); use perpwatch halt, resume or mute")
        if not self.token:
            raise Forbidden("no http.token is configured, so no action is allowed")
        if not given or not hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8")):
            raise Forbidden("a valid token is needed for this action")

    async def halt(self, reason: str) -> str:
        async with self.lock:
            risk.halt(self.store, reason, self.clock.time())
            return risk.halted(self.store) or ""

    async def resume(self) -> bool:
        async with self.lock:
            return risk.resume(self.store)

    async def mute(self, target: str, symbol: str | None, seconds: float) -> float:
        until = self.clock.time() + seconds
        async with self.lock:
            self.store.mute(target, symbol, until)
        return until

    def known_targets(self) -> set[str]:
        """What ``mute`` may name: strategies and ``strategy/rule`` of the rules shown."""
        out: set[str] = set()
        for row in self.rules():
            out |= {row.strategy, f"{row.strategy}/{row.rule}"}
        return out


def _since(
    state: RuleState,
    key: tuple[str, str, str],
    step_ms: int,
    fired: dict[tuple[str, str, str], int],
    resolved: dict[tuple[str, str, str], int],
) -> int | None:
    """When the rule's current status began (bar time, ms), when the database can tell."""
    if state.status == FIRING:
        return fired.get(key)
    if state.status == PENDING and state.last_bar is not None and step_ms:
        return state.last_bar - (max(1, state.count) - 1) * step_ms
    if state.status == INACTIVE:
        return resolved.get(key)
    return None


@contextlib.contextmanager
def opened(path: str) -> Any:
    """A state database opened for ``perpwatch serve`` (never created: it must exist)."""
    import os

    from perpwatch.common.errors import PerpwatchError

    if path != ":memory:" and not os.path.exists(path):
        raise PerpwatchError(f"no state database at {path} (perpwatch run creates it)")
    store = StateStore(path)
    try:
        yield store
    finally:
        store.close()
