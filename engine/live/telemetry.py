"""What the runner tells an observer about itself: plain-Python counters, gauges and a histogram of
cycle durations, updated by the runner and the loop, kept in the state database after every cycle.

No monitoring library here: ``perpwatch.web`` turns a :class:`Telemetry` (or the snapshot a
``serve`` reads back from the database) into Prometheus metrics and the dashboard.

Per cycle the runner records: the cycle's time, whether every fetch answered, fetch failures by
source, its duration up to the commit, and the newest evaluation of each (strategy, symbol), from
which each rule's condition and the values it read at the newest bar are taken when asked; for each
(strategy, symbol) the last ``SERIES_POINTS`` bars of the strategy's key metrics (the dashboard's
chart). A cycle that fails as a whole (rolled back) is counted by the loop. The snapshot is written
inside the cycle's transaction (it commits with the cycle): every cycle of a live run, at most once
a second of real time in a simulation, and at the end of the run. Everything kept is bounded by the
strategies, rules and symbols being run.
"""

from __future__ import annotations

import bisect
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (seconds) of the cycle-duration histogram's buckets (+Inf is implied).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Bars of each key metric kept for the dashboard's chart.
SERIES_POINTS = 48
#: Key metrics charted per strategy (its ``snapshot:`` names when it has them, else its metrics).
SERIES_METRICS = 4
#: Text values kept for a rule's condition are cut to this many characters.
TEXT_LIMIT = 80
#: The snapshot's name in the state database's ``snapshots`` table.
SNAPSHOT_KEY = "runner"
#: The snapshot is written with a cycle at most this often (seconds of real time).
SAVE_EVERY_SECONDS = 1.0


@dataclass
class Telemetry:
    """The runner's counters and gauges. Times are the runner clock's (epoch seconds)."""

    started: float = 0.0  # when the run began (the clock's time)
    interval_seconds: float = 0.0  # the shortest strategy interval: what "recent" means for /healthz
    cycles: int = 0  # cycles committed
    cycles_failed: int = 0  # cycles rolled back whole (a bug, the database)
    cycles_with_failures: int = 0  # committed cycles in which some fetch, evaluation or trade failed
    last_cycle: float | None = None  # the time of the newest committed cycle
    last_good_cycle: float | None = None  # ... of the newest one without any failure
    fetch_failures: dict[str, int] = field(default_factory=dict)  # source instance -> failed fetches
    duration_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)  # "strategy/rule/symbol" -> last value
    series: dict[str, dict[str, Any]] = field(default_factory=dict)  # "strategy/symbol" -> key metrics
    _latest: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)  # newest evaluations
    _saved: float = field(default=-math.inf, repr=False)  # time.monotonic() of the last save
    _dirty: bool = field(default=False, repr=False)  # a save was held back

    # -- updates ------------------------------------------------------------------------------

    def start(self, now: float, intervals_ms: Iterable[int]) -> None:
        """A run begins at ``now`` with strategies of these intervals."""
        self.started = now
        steps = [ms for ms in intervals_ms if ms > 0]
        self.interval_seconds = min(steps) / 1000 if steps else 0.0

    def cycle_recorded(self, report: Any, stepped: Iterable[Any], seconds: float) -> None:
        """A cycle's outcome, just before its commit: ``report`` (a ``CycleReport``), the
        (strategy, symbol)s stepped at their newest bar (``Stepped``) and the wall seconds it took
        so far (everything but the commit)."""
        self.cycles += 1
        self.cycle_timed(seconds)
        self.last_cycle = report.time
        if report.failures:
            self.cycles_with_failures += 1
        else:
            self.last_good_cycle = report.time
        for source, n in getattr(report, "source_failures", {}).items():
            self.fetch_failures[source] = self.fetch_failures.get(source, 0) + n
        for item in stepped:
            self._observe(item)

    def cycle_timed(self, seconds: float) -> None:
        """The committed cycle's duration (wall seconds)."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        self.duration_counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds

    def cycle_failed(self) -> None:
        self.cycles_failed += 1

    def _observe(self, item: Any) -> None:
        """Keep the newest evaluation of a (strategy, symbol) (its rules' values are read from it
        when asked: :meth:`refresh`) and add its new bars to the chart's series."""
        strategy, ev, symbol = item.job.strategy, item.ev, item.symbol
        i = len(ev.frame.times) - 1
        if i < 0:
            return
        self._latest[(strategy.name, symbol)] = (strategy, ev)
        key = f"{strategy.name}/{symbol}"
        series = self.series.get(key)
        if series is None or series.get("interval") != strategy.interval:
            names = list(getattr(strategy, "snapshot", None) or ()) or sorted(strategy.metrics)
            kept = []
            for name in names:
                metric = getattr(name, "name", name)  # a snapshot entry may carry a format
                col = ev.frame.columns.get(metric)
                if col is not None and getattr(col, "dtype", None) is not None and col.dtype.kind == "f":
                    kept.append(metric)
                if len(kept) >= SERIES_METRICS:
                    break
            series = self.series[key] = {
                "interval": strategy.interval,
                "times": [],
                "metrics": {m: [] for m in kept},
            }
        times: list[int] = series["times"]
        newest = times[-1] if times else None
        lo = max(0, i + 1 - SERIES_POINTS)
        for j in range(lo, i + 1):  # the bars after the newest kept (one per cycle, more when catching up)
            t = int(ev.frame.times[j])
            if newest is not None and t <= newest:
                continue
            times.append(t)
            for metric, values in series["metrics"].items():
                col = ev.frame.columns.get(metric)
                values.append(_plain(col[j]) if col is not None else None)
        if len(times) > SERIES_POINTS:
            cut = len(times) - SERIES_POINTS
            del times[:cut]
            for values in series["metrics"].values():
                del values[:cut]

    def refresh(self) -> None:
        """Read each rule's condition and values at the newest bar from the evaluations kept."""
        for (name, symbol), (strategy, ev) in self._latest.items():
            i = len(ev.frame.times) - 1
            bar = int(ev.frame.times[i])
            for rule in strategy.rules:
                truth = ev.truths(rule.cond)[i]
                self.rules[f"{name}/{rule.name}/{symbol}"] = {
                    "bar": bar,
                    "truth": None if truth != truth else bool(truth),
                    "values": {n: _plain(ev.named_value(n, i)) for n in rule.names},
                }
        self._latest.clear()

    # -- persistence --------------------------------------------------------------------------

    def to_json(self) -> str:
        self.refresh()
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return json.dumps(fields, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Telemetry:
        """A snapshot read back (``perpwatch serve``); fields it lacks keep their defaults."""
        doc = json.loads(text)
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__ and not k.startswith("_")}
        out = cls(**known)
        if len(out.duration_counts) != len(DURATION_BUCKETS) + 1:  # written with other buckets
            out.duration_counts, out.duration_sum = [0] * (len(DURATION_BUCKETS) + 1), 0.0
        return out

    def save(self, store: Any, force: bool = False) -> None:
        """Write the snapshot into ``store`` (inside the cycle's transaction); at most once every
        ``SAVE_EVERY_SECONDS`` of real time unless ``force`` (a simulation's cycles come back to
        back; a live run's are minutes apart, so each one is saved)."""
        now = time.monotonic()
        if not force and now - self._saved < SAVE_EVERY_SECONDS:
            self._dirty = True
            return
        store.save_snapshot(SNAPSHOT_KEY, self.to_json())
        self._saved, self._dirty = now, False

    def flush(self, store: Any) -> None:
        """Write a snapshot that :meth:`save` held back (the end of a run)."""
        if self._dirty:
            self.save(store, force=True)

    @classmethod
    def load(cls, store: Any) -> Telemetry | None:
        """The snapshot the last run left in ``store`` (None when no run has recorded a cycle)."""
        text = store.load_snapshot(SNAPSHOT_KEY)
        return None if text is None else cls.from_json(text)

    # -- health -------------------------------------------------------------------------------

    def stale_after(self, grace: float) -> float:
        """Seconds without a committed cycle after which the run is not healthy: two of the
        shortest intervals plus ``grace``."""
        return 2 * self.interval_seconds + grace

    def health(self, now: float, grace: float) -> tuple[bool, dict[str, Any]]:
        """Whether the newest cycle (or the start, before the first one) is recent at ``now``,
        and the facts behind the answer."""
        since = self.last_cycle if self.last_cycle is not None else self.started
        age = now - since if since else math.inf
        limit = self.stale_after(grace)
        ok = self.interval_seconds > 0 and age <= limit
        return ok, {
            "status": "ok" if ok else "stale",
            "last_cycle": self.last_cycle,
            "last_good_cycle": self.last_good_cycle,
            "age_seconds": None if math.isinf(age) else round(age, 3),
            "stale_after_seconds": limit,
            "cycles": self.cycles,
        }


def _plain(value: Any) -> Any:
    """A value fit for JSON: finite numbers, booleans, short text; None for unknown."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value[:TEXT_LIMIT]
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)[:TEXT_LIMIT]
    return f if math.isfinite(f) else None
