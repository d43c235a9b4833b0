"""What a cycle fetches: for every (source instance, interval, symbol) the union of the metrics its
strategies need over their warm-up, concurrently (at most ``runner.concurrency`` at once), each
fetch within ``runner.source_timeout``, onto the expected bar grid (a bar not returned is unknown).
A source is asked only for the metrics it provides; the problems it reports with data that did
arrive (values it made unknown) are logged once per cycle.

A failure is logged once, when it starts (:class:`FailureLog`); while the same failure lasts, a
``still failing since`` line follows after 2, 4, 8… failed cycles (then every ``SUMMARY_EVERY``),
and the first cycle in which the source answers again says so once."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from perpwatch.api.interfaces import FetchRequest, Source, SourceError
from perpwatch.evaluation.frame import Frame
from perpwatch.live.jobs import CycleReport, RunnerOptions
from perpwatch.live.schedule import Plan

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner

FetchKey = tuple[str, str, str]  # (source instance, interval, symbol)

#: While a failure lasts, a summary line at most every this many failed cycles (after 2, 4, 8…).
SUMMARY_EVERY = 64
HELD = "(rules needing it are held this cycle)"


@dataclass
class Fetched:
    """One (source, symbol, interval) fetch: the frame on the expected grid and what failed."""

    frame: Frame
    failed: frozenset[str] = frozenset()  # metrics missing because the source failed
    reason: str | None = None
    notes: str | None = None  # the source's problems with data that did arrive (``frame.problems``)
    newest: int | None = None  # open time of the newest bar the source returned (None: no bar)


class Fetcher:
    """Fetches a cycle's plans from the source instances."""

    def __init__(self, sources: dict[str, Source], options: RunnerOptions, redact: Callable[[str], str]):
        self.sources = sources
        self.options = options
        self.redact = redact
        self.provides = {name: frozenset(src.provides(src.options)) for name, src in sources.items()}
        self.failure_log = FailureLog()
        self._sem: asyncio.Semaphore | None = None

    async def fetch_all(self, plans: list[Plan], report: CycleReport) -> dict[FetchKey, Fetched]:
        """Everything ``plans`` need, one fetch per key; failures go to ``report`` and the log."""
        groups: dict[FetchKey, tuple[set[str], int, int, int]] = {}
        for plan in plans:
            job, s = plan.job, plan.job.strategy
            for symbol in plan.symbols:
                key = (job.source, s.interval, symbol)
                metrics, bars, _, _ = groups.get(key, (set(), 0, plan.end, s.step_ms))
                groups[key] = (metrics | job.metrics, max(bars, s.warmup + plan.bars), plan.end, s.step_ms)
        if self._sem is None:
            self._sem = asyncio.Semaphore(max(1, self.options.concurrency))
        keys = list(groups)
        results = await asyncio.gather(*(self.fetch(key, *groups[key]) for key in keys))
        report.fetches = len(keys)
        failed: dict[tuple[str, str], list[str]] = {}
        noted: dict[tuple[str, str], list[str]] = {}
        for (source, interval, symbol), got in zip(keys, results, strict=True):
            if got.reason is not None:
                failed.setdefault((source, got.reason), []).append(f"{symbol} {interval}")
                report.failures.append(f"{source} {symbol} {interval}: {got.reason}")
                report.source_failures[source] = report.source_failures.get(source, 0) + 1
            elif got.notes is not None:
                noted.setdefault((source, got.notes), []).append(f"{symbol} {interval}")
        self.failure_log.cycle(report.time, {source for source, _, _ in keys}, failed)
        for (source, notes), which in noted.items():
            log.warning("source %s sent data with problems for %s: %s", source, _some(which), notes)
        return dict(zip(keys, results, strict=True))

    async def fetch(self, key: FetchKey, metrics: set[str], bars: int, end: int, step_ms: int) -> Fetched:
        """``bars`` bars of ``metrics`` up to ``end`` for one key; never raises."""
        source_name, interval, symbol = key
        start = end - (bars - 1) * step_ms
        grid = np.arange(start, end + step_ms, step_ms, dtype=np.int64)
        wanted = frozenset(metrics)
        asked = wanted & self.provides[source_name]  # the start-up warned about the others
        request = FetchRequest(symbol=symbol, interval=interval, metrics=asked, start=start, end=end)
        timeout = self.options.source_timeout
        assert self._sem is not None
        async with self._sem:
            try:
                frame = await asyncio.wait_for(self.sources[source_name].fetch(request), timeout)
            except SourceError as e:
                return Fetched(Frame(grid), wanted, self.redact(str(e)) or type(e).__name__)
            except TimeoutError:
                return Fetched(Frame(grid), wanted, f"timed out after {timeout:g}s")
            except Exception as e:  # a plugin bug must not stop the other symbols
                log.debug("source %s %s %s: fetch raised", source_name, symbol, interval, exc_info=True)
                return Fetched(Frame(grid), wanted, self.redact(f"unexpected {type(e).__name__}: {e}"))
        if not isinstance(frame, Frame):
            return Fetched(Frame(grid), wanted, f"returned {type(frame).__name__}, not a frame")
        missing = asked - frame.columns.keys()
        reason = notes = None
        problems = "; ".join(dict.fromkeys(frame.problems))
        if missing:
            reason = self.redact(problems or f"no data for {', '.join(sorted(missing))}")
        elif problems:
            notes = self.redact(problems)
        newest = int(frame.times.max()) if len(frame.times) else None
        return Fetched(frame.reindex(grid), frozenset(missing), reason, notes, newest)


@dataclass
class Streak:
    """One failure of a source, cycle after cycle."""

    since: float  # clock time of its first failed cycle
    cycles: int = 1  # failed cycles in a row
    logged: int = 1  # ``cycles`` when a line last said so


class FailureLog:
    """Source failures in the log: the first failed cycle says what failed and why; the same failure
    (the same reason, numbers aside) in the cycles after is summarised, ``still failing since HH:MM
    UTC, N cycles``, after 2, 4, 8… failed cycles and then every ``SUMMARY_EVERY``; the first cycle
    in which the source fails no more says once that it answers again. Another reason is a new
    failure, said in full."""

    def __init__(self) -> None:
        self.streaks: dict[tuple[str, str], Streak] = {}  # (source, reason with digits masked)

    def cycle(self, now: float, fetched: set[str], failed: dict[tuple[str, str], list[str]]) -> None:
        """Log this cycle's failures; ``fetched`` are the sources asked, ``failed`` maps (source,
        reason) to the symbols and intervals that failed so."""
        seen: set[tuple[str, str]] = set()
        for (source, reason), which in failed.items():
            key = (source, _shape(reason))
            seen.add(key)
            streak = self.streaks.get(key)
            if streak is None:
                self.streaks[key] = Streak(since=now)
                log.warning("source %s failed for %s: %s %s", source, _some(which), reason, HELD)
                continue
            streak.cycles += 1
            if streak.cycles - streak.logged >= min(streak.logged, SUMMARY_EVERY):
                streak.logged = streak.cycles
                log.warning(
                    "source %s still failing since %s, %d cycles, for %s: %s %s",
                    source,
                    _clock_time(streak.since, now),
                    streak.cycles,
                    _some(which),
                    reason,
                    HELD,
                )
        failing = {source for source, _ in failed}
        recovered: dict[str, Streak] = {}
        for key in [k for k in self.streaks if k not in seen and k[0] in fetched]:
            streak = self.streaks.pop(key)
            if key[0] not in failing and streak.cycles >= recovered.get(key[0], streak).cycles:
                recovered[key[0]] = streak
        for source, streak in recovered.items():
            log.info(
                "source %s answers again after %d failed %s (failing since %s)",
                source,
                streak.cycles,
                "cycle" if streak.cycles == 1 else "cycles",
                _clock_time(streak.since, now),
            )


def _shape(reason: str) -> str:
    """``reason`` with its numbers masked: "paused for another 85 s" is the same failure as 84 s."""
    return re.sub(r"\d+(?:\.\d+)?", "#", reason)


def _clock_time(at: float, now: float) -> str:
    """``12:00 UTC``, or ``2024-01-02 12:00 UTC`` when ``at`` is on another day than ``now``."""
    then, today = datetime.fromtimestamp(at, UTC), datetime.fromtimestamp(now, UTC)
    return then.strftime("%H:%M UTC" if then.date() == today.date() else "%Y-%m-%d %H:%M UTC")


def _some(which: list[str]) -> str:
    """The first ten of ``which``, and how many more."""
    return ", ".join(which[:10]) + (f" and {len(which) - 10} more" if len(which) > 10 else "")
