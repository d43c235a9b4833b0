"""Stale data in a cycle: the newest bar a source returned is older than the bar being decided.

Rules then see unknown values and nothing fires, which alone would look like a quiet market. The
log says so once, when a (source, interval) becomes stale, with both times and the source's hint
(a replay source: the span its file holds and ``--simulate-from``); once more when it is current
again. In between, each cycle says it at DEBUG only, so a long run on old data is not a warning
per bar.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from perpwatch.api.interfaces import Source
from perpwatch.common.timeutil import format_time
from perpwatch.live.fetching import Fetched, FetchKey
from perpwatch.live.schedule import Plan

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner

#: At most this many symbols are named in one line (then "and N more").
SHOWN = 10


class Staleness:
    """Which (source, interval) pairs are stale, to log each change once."""

    def __init__(self, sources: Mapping[str, Source]):
        self.sources = sources
        self.stale: set[tuple[str, str]] = set()

    def observe(self, plans: list[Plan], fetched: Mapping[FetchKey, Fetched]) -> None:
        """Compare, per fetch that did not fail, its newest known bar with the plan's bar."""
        found: dict[tuple[str, str], tuple[int, list[tuple[str, int | None, int]]]] = {}
        fresh: set[tuple[str, str]] = set()
        for plan in plans:
            job = plan.job
            pair = (job.source, job.strategy.interval)
            for symbol in plan.symbols:
                got = fetched.get((job.source, job.strategy.interval, symbol))
                if got is None or got.reason is not None or not got.frame.columns:
                    continue  # a failure is logged as one; nothing asked, nothing to judge
                newest = got.newest
                if newest is not None and newest >= plan.end:
                    fresh.add(pair)
                    continue
                end, which = found.setdefault(pair, (plan.end, []))
                if all(s != symbol for s, _, _ in which):
                    which.append((symbol, newest, int(got.frame.times[0])))
        for pair, (end, which) in found.items():
            if pair in self.stale:
                log.debug("source %s %s: still stale at %s", pair[0], pair[1], format_time(end))
                continue
            self.stale.add(pair)
            log.warning(self._describe(pair, end, which))
        for pair in fresh - set(found):
            if pair in self.stale:
                self.stale.discard(pair)
                log.info("source %s %s: data is current again", pair[0], pair[1])

    def _describe(self, pair: tuple[str, str], end: int, which: list[tuple[str, int | None, int]]) -> str:
        source, interval = pair
        parts = [
            f"{symbol} newest bar {format_time(newest)}"
            if newest is not None
            else f"{symbol} no bar since {format_time(since)}"
            for symbol, newest, since in which[:SHOWN]
        ]
        more = f" and {len(which) - SHOWN} more" if len(which) > SHOWN else ""
        text = (
            f"source {source} {interval}: stale data ({', '.join(parts)}{more}), older than the bar "
            f"being decided, {format_time(end)}; its rules see unknown values and stay quiet"
        )
        try:
            hint = self.sources[source].stale_hint(which[0][0], interval)
        except Exception:  # a hint must not stop the cycle
            hint = None
        return f"{text}; {hint}" if hint else text
