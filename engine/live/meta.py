"""Meta-alerts: the engine's own alerts, recorded and routed like any alert (strategy
``perpwatch``; severity ``critical`` unless the config's ``meta: {severity: …}`` says otherwise).

=================  ==============================================  =====================================
rule               fires when                                      resolves when
=================  ==============================================  =====================================
source_failing     a source failed ``source_failures`` cycles      the source answers again
                   in a row (default 3); subject: the source
stale_data         a symbol's newest bar is older than the bar     its data is current again
                   being decided; subject: the symbol
cycle_failed       a cycle failed (an evaluation or the trading    a cycle succeeds
                   layer failed, or the cycle was rolled back)
notifier_failing   a notifier failed ``notifier_failures`` tries   it delivers again
                   in a row (default 3); sent through the others
kill_switch        the trading kill switch is set (``halt``)       it is cleared (``resume``)
alive              once a day with ``meta: {alive: true}``: the    (a notice, never firing)
                   cycles and alerts of the last day
=================  ==============================================  =====================================

Each transition is one event (``fired`` or ``resolved``, its time the clock's), so a restart
never repeats one: the state of each meta-alert is in the ``meta_alerts`` table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event
from perpwatch.live.alerting import Alerting
from perpwatch.live.alertstate import MetaState
from perpwatch.live.fetching import Fetched, FetchKey
from perpwatch.live.jobs import CycleReport
from perpwatch.live.risk import HALT_FLAG
from perpwatch.live.routing import ENGINE
from perpwatch.live.schedule import Plan

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner

DAY_SECONDS = 86_400.0
#: The meta-alerts' rule names (their strategy is ``perpwatch``).
META_RULES = ("source_failing", "stale_data", "cycle_failed", "notifier_failing", "kill_switch", "alive")


@dataclass
class MetaSettings:
    """The config's ``meta:`` block."""

    enabled: bool = True
    severity: str = "critical"
    source_failures: int = 3
    notifier_failures: int = 3
    alive: bool = False

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> MetaSettings:
        raw = raw or {}
        known = {
            k: raw[k]
            for k in ("enabled", "severity", "source_failures", "notifier_failures", "alive")
            if k in raw
        }
        return cls(**known)


class MetaAlerts:
    """Watches cycles, deliveries and the kill switch; raises and resolves meta-alerts."""

    def __init__(self, alerting: Alerting, settings: MetaSettings | None = None):
        self.alerting = alerting
        self.state = alerting.state
        self.settings = settings or MetaSettings()
        self.cycles = 0  # good cycles since the last alive notice

    # -- transitions --------------------------------------------------------------------------

    def _event(
        self, kind: str, name: str, subject: str, message: str, now: float, values: dict[str, Any]
    ) -> Event:
        severity = "info" if name == "alive" else self.settings.severity
        return Event(
            kind=kind,
            strategy=ENGINE,
            rule=name,
            symbol=subject,
            time=int(now * 1000),
            severity=severity,
            message=message,
            values=values,
        )

    def failing(
        self, name: str, subject: str, now: float, detail: str, threshold: int = 1, exclude: str | None = None
    ) -> bool:
        """One more failure of (``name``, ``subject``); fires at ``threshold`` in a row. True when it fired."""
        st = self.state.meta(name, subject) or MetaState(name, subject, "ok", now, 0, "")
        if st.status == "ok" and st.count == 0:
            st.since = now
        st.count += 1
        st.detail = detail
        fired = False
        if st.status == "ok" and st.count >= threshold and self.settings.enabled:
            st.status = "firing"
            fired = True
            message = _firing_message(name, subject, st.count, st.since, detail)
            self.alerting.engine_alert(
                self._event("fired", name, subject, message, now, {"failures": st.count, "detail": detail}),
                now,
                exclude,
            )
        self.state.set_meta(st, now)
        return fired

    def fine(self, name: str, subject: str, now: float, exclude: str | None = None) -> bool:
        """(``name``, ``subject``) is fine again; resolves it when it was firing. True when resolved."""
        st = self.state.meta(name, subject)
        if st is None:
            return False
        self.state.drop_meta(name, subject)
        if st.status != "firing":
            return False
        message = _resolved_message(name, subject, st.count, st.since, now)
        self.alerting.engine_alert(
            self._event("resolved", name, subject, message, now, {"failures": st.count}), now, exclude
        )
        return True

    # -- what the runner reports --------------------------------------------------------------

    def observe_cycle(
        self,
        now: float,
        plans: list[Plan],
        fetched: Mapping[FetchKey, Fetched],
        report: CycleReport,
        fetch_failures: int,
    ) -> None:
        """After a cycle's stepping (in its transaction): sources, stale data, failures, the kill switch."""
        asked: dict[str, str | None] = {}
        stale: dict[str, str] = {}
        fresh: set[str] = set()
        for plan in plans:
            job = plan.job
            for symbol in plan.symbols:
                got = fetched.get((job.source, job.strategy.interval, symbol))
                if got is None:
                    continue
                if got.reason is not None:
                    asked[job.source] = (
                        asked.get(job.source) or f"{symbol} {job.strategy.interval}: {got.reason}"
                    )
                    continue
                asked.setdefault(job.source, None)
                if not got.frame.columns:
                    continue
                if got.newest is not None and got.newest >= plan.end:
                    fresh.add(symbol)
                else:
                    newest = "no bar" if got.newest is None else f"newest bar {format_time(got.newest)}"
                    stale[symbol] = (
                        f"{job.source} {job.strategy.interval}: {newest}, deciding {format_time(plan.end)}"
                    )
        for source, reason in asked.items():
            if reason is None:
                self.fine("source_failing", source, now)
            else:
                self.failing("source_failing", source, now, reason, self.settings.source_failures)
        for symbol, detail in stale.items():
            self.failing("stale_data", symbol, now, detail)
        for symbol in fresh - set(stale):
            self.fine("stale_data", symbol, now)
        others = report.failures[fetch_failures:]
        if others:
            self.failing("cycle_failed", "cycle", now, "; ".join(others[:5]))
        else:
            self.fine("cycle_failed", "cycle", now)
            self.cycles += 1
        self.kill_switch(now)
        self.alive(now)

    def cycle_rolled_back(self, now: float, reason: str) -> None:
        """A cycle failed as a whole and was rolled back (its own transaction)."""
        with self.alerting.store.transaction():
            self.failing("cycle_failed", "cycle", now, f"rolled back: {reason}")

    def kill_switch(self, now: float) -> None:
        halted = self.alerting.store.get_flag(HALT_FLAG)
        if halted is not None:
            st = self.state.meta("kill_switch", "trading")
            if st is None or st.status != "firing":
                self.failing("kill_switch", "trading", now, halted)
        else:
            self.fine("kill_switch", "trading", now)

    def delivery(self, notifier: str, ok: bool, attempts: int, error: str, now: float) -> None:
        """A delivery try of ``notifier`` ended (under the database lock, outside a cycle)."""
        with self.alerting.store.transaction():
            if ok:
                self.fine("notifier_failing", notifier, now, exclude=notifier)
                return
            st = self.state.meta("notifier_failing", notifier)
            if st is not None and st.status == "firing":
                return
            self.failing(
                "notifier_failing", notifier, now, error, self.settings.notifier_failures, exclude=notifier
            )

    def alive(self, now: float) -> None:
        """Once a day (``meta: {alive: true}``): a notice that the engine runs, with the day's counts."""
        if not self.settings.alive:
            return
        st = self.state.meta("alive", "daily")
        if st is None:  # the first cycle: the day starts now
            self.state.set_meta(MetaState("alive", "daily", "ok", now, 0, ""), now)
            self.cycles = 0
            return
        if now - st.since < DAY_SECONDS:
            return
        since_ms = int(st.since * 1000)
        row = self.alerting.store.conn.execute(
            "SELECT COUNT(*) FROM events WHERE kind = 'fired' AND strategy != ? AND time >= ?",
            (ENGINE, since_ms),
        ).fetchone()
        firing = [m for m in self.state.metas() if m.status == "firing"]
        message = (
            f"perpwatch is running: {self.cycles} good cycles and {row[0]} alerts since "
            f"{format_time(since_ms)}; {len(firing)} meta-alerts firing"
        )
        values = {"cycles": self.cycles, "alerts": int(row[0]), "meta_firing": len(firing)}
        self.alerting.engine_alert(self._event("fired", "alive", "daily", message, now, values), now)
        self.state.set_meta(MetaState("alive", "daily", "ok", now, 0, ""), now)
        self.cycles = 0


_WHAT = {
    "source_failing": "source {subject} failing",
    "stale_data": "stale data for {subject}",
    "cycle_failed": "a cycle failed",
    "notifier_failing": "notifier {subject} failing",
    "kill_switch": "kill switch set: trading halted",
}


def _firing_message(name: str, subject: str, count: int, since: float, detail: str) -> str:
    what = _WHAT.get(name, name).format(subject=subject)
    times = f" ({count} in a row since {format_time(int(since * 1000))})" if count > 1 else ""
    return f"{what}{times}: {detail}"


def _resolved_message(name: str, subject: str, count: int, since: float, now: float) -> str:
    what = _WHAT.get(name, name).format(subject=subject)
    minutes = max(0, round((now - since) / 60))
    return f"recovered: {what} — over after {count} {'try' if name == 'notifier_failing' else 'cycle'}{'s' if count != 1 else ''} ({minutes} min)"
