"""``/metrics``: the runner's telemetry and the state database in the Prometheus text format.

A custom collector (prometheus-client) built per scrape from a :class:`Backend`; nothing is
registered globally. Counters that come from the database (events, notifier failures) count over
the database's whole life; those from the telemetry count since the run that wrote it began.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from perpwatch.evaluation.rules import FIRING, INACTIVE, PENDING
from perpwatch.live.telemetry import DURATION_BUCKETS, Telemetry
from perpwatch.web.backend import Backend

__all__ = ["CONTENT_TYPE_LATEST", "render"]


@dataclass
class Scrape:
    """Everything one scrape reports, read before the collector runs (some reads are async)."""

    now: float
    telemetry: Telemetry
    healthy: bool
    halted: bool
    mutes: int
    events: dict[tuple[str, str, str], int]
    outbox: list[tuple[str, int, float | None, int]]
    rules: list[tuple[str, str, str, str]]  # strategy, rule, symbol, status
    positions: dict[str, int] = field(default_factory=dict)
    pnl: dict[str, float | None] = field(default_factory=dict)


class PerpwatchCollector(Collector):
    def __init__(self, scrape: Scrape):
        self.scrape = scrape

    def collect(self) -> Iterator[Any]:
        s, t = self.scrape, self.scrape.telemetry
        yield _counter("perpwatch_cycles", "Cycles committed since the run began.", t.cycles)
        yield _counter(
            "perpwatch_cycles_failed", "Cycles rolled back whole (retried shortly).", t.cycles_failed
        )
        yield _counter(
            "perpwatch_cycles_with_failures",
            "Committed cycles in which a fetch, an evaluation or a trade failed.",
            t.cycles_with_failures,
        )
        cumulative, running = [], 0
        for bound, n in zip([*map(str, DURATION_BUCKETS), "+Inf"], t.duration_counts, strict=True):
            running += n
            cumulative.append((bound, running))
        hist = HistogramMetricFamily(
            "perpwatch_cycle_duration_seconds", "Wall time of committed cycles.", labels=[]
        )
        hist.add_metric([], cumulative, t.duration_sum)
        yield hist
        fetch = CounterMetricFamily(
            "perpwatch_fetch_failures",
            "Failed fetches (one symbol and interval) by source.",
            labels=["source"],
        )
        for source, n in sorted(t.fetch_failures.items()):
            fetch.add_metric([source], n)
        yield fetch
        events = CounterMetricFamily(
            "perpwatch_events", "Events recorded in the state database.", labels=["strategy", "rule", "kind"]
        )
        for (strategy, rule, kind), n in s.events.items():
            events.add_metric([strategy, rule, kind], n)
        yield events
        depth = GaugeMetricFamily(
            "perpwatch_outbox_pending", "Undelivered notifications.", labels=["notifier"]
        )
        age = GaugeMetricFamily(
            "perpwatch_outbox_oldest_age_seconds",
            "Age of the oldest undelivered notification (0 when none).",
            labels=["notifier"],
        )
        failures = CounterMetricFamily(
            "perpwatch_notifier_failures", "Failed delivery attempts recorded.", labels=["notifier"]
        )
        for notifier, pending, oldest, failed in s.outbox:
            depth.add_metric([notifier], pending)
            age.add_metric([notifier], max(0.0, s.now - oldest) if oldest is not None else 0.0)
            failures.add_metric([notifier], failed)
        yield from (depth, age, failures)
        for name, doc, value in (
            ("perpwatch_last_cycle_timestamp_seconds", "When the newest committed cycle ran.", t.last_cycle),
            (
                "perpwatch_last_successful_cycle_timestamp_seconds",
                "When the newest cycle without any failure ran.",
                t.last_good_cycle,
            ),
        ):
            if value is not None:  # absent, not zero, before the first such cycle
                yield GaugeMetricFamily(name, doc, value=value)
        positions = GaugeMetricFamily("perpwatch_open_positions", "Open positions.", labels=["strategy"])
        for strategy, n in sorted(s.positions.items()):
            positions.add_metric([strategy], n)
        yield positions
        pnl = GaugeMetricFamily(
            "perpwatch_pnl_usd", "PnL so far (realised and unrealised, after costs).", labels=["strategy"]
        )
        for strategy, value in sorted(s.pnl.items()):
            if value is not None:  # unknown is left out, never reported as 0
                pnl.add_metric([strategy], value)
        yield pnl
        yield GaugeMetricFamily(
            "perpwatch_trading_halted", "1 while the kill switch is set.", value=1.0 if s.halted else 0.0
        )
        yield GaugeMetricFamily("perpwatch_mutes_active", "Mutes in force.", value=s.mutes)
        yield GaugeMetricFamily(
            "perpwatch_healthy", "1 while the newest cycle is recent (as /healthz).", value=float(s.healthy)
        )
        counts = {INACTIVE: 0, PENDING: 0, FIRING: 0}
        firing = GaugeMetricFamily(
            "perpwatch_rule_firing",
            "1 while the rule fires for the symbol.",
            labels=["strategy", "rule", "symbol"],
        )
        for strategy, rule, symbol, status in s.rules:
            counts[status] = counts.get(status, 0) + 1
            firing.add_metric([strategy, rule, symbol], 1.0 if status == FIRING else 0.0)
        by_status = GaugeMetricFamily(
            "perpwatch_rules", "(strategy, rule, symbol)s by status.", labels=["status"]
        )
        for status, n in sorted(counts.items()):
            by_status.add_metric([status], n)
        yield from (firing, by_status)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


async def scrape(backend: Backend) -> Scrape:
    healthy, _ = backend.health()
    rows, pnl, unknown = await backend.positions()
    positions: dict[str, int] = {} if unknown else {strategy: 0 for strategy in pnl}  # unknown: left out
    for row in rows:
        positions[row.strategy] = positions.get(row.strategy, 0) + 1
    return Scrape(
        now=backend.clock.time(),
        telemetry=backend.current_telemetry(),
        healthy=healthy,
        halted=backend.halted() is not None,
        mutes=len(backend.mutes()),
        events=backend.event_counts(),
        outbox=backend.store.outbox_stats(),
        rules=[(r.strategy, r.rule, r.symbol, r.status) for r in backend.rules(since=False)],
        positions=positions,
        pnl=pnl,
    )


async def render(backend: Backend) -> bytes:
    """The text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PerpwatchCollector(await scrape(backend)))
    return generate_latest(registry)
