"""What the runner runs: a strategy with its source, symbols and notifiers (a :class:`Job`), and
what one cycle is given (:class:`RunnerOptions`) and reports (:class:`CycleReport`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from perpwatch.language.compiler import Rule, Strategy

CATCH_UP_BARS = 24  # the most missed bars a rule steps through when it catches up

# What the trading layer reads from the evaluated frame (fill and mark price, funding rate), fetched
# for every strategy with ``execute:`` whether or not its rules name them.
TRADING_METRICS = frozenset({"price.close", "funding.close"})
# What protective exits are judged on (each bar's open, high and low), for strategies that have them.
EXIT_METRICS = frozenset({"price.open", "price.high", "price.low"})


@dataclass
class RunnerOptions:
    settle_seconds: float = 5.0
    concurrency: int = 8
    source_timeout: float = 60.0
    notify_timeout: float = 30.0
    catch_up_bars: int = CATCH_UP_BARS

    @classmethod
    def from_config(cls, runner: Mapping[str, Any]) -> RunnerOptions:
        known = {k: runner[k] for k in ("settle_seconds", "concurrency", "source_timeout") if k in runner}
        return cls(**known)


@dataclass
class Job:
    """One strategy as the runner runs it."""

    strategy: Strategy
    source: str  # source instance name
    symbols: list[str]
    notify: list[str]
    deps: dict[str, frozenset[str]]  # rule name -> the metrics its condition needs
    metrics: frozenset[str] = field(init=False)  # what to fetch and keep for it

    def __post_init__(self) -> None:
        extra = TRADING_METRICS if self.strategy.execute else frozenset()
        if self.strategy.execute and self.strategy.has_exits:
            extra |= EXIT_METRICS
        self.metrics = frozenset(self.strategy.metrics) | extra


@dataclass
class CycleReport:
    """What one cycle did, and where its time went."""

    time: float
    bars: dict[str, int] = field(default_factory=dict)  # strategy -> newest bar processed
    fetches: int = 0
    failures: list[str] = field(default_factory=list)  # "source SYMBOL interval: reason"
    source_failures: dict[str, int] = field(default_factory=dict)  # source instance -> failed fetches
    events: int = 0
    queued: int = 0
    wall: float = 0.0  # seconds, the whole cycle
    fetch_wall: float = 0.0  # seconds waiting for the sources
    process_wall: float = 0.0  # seconds evaluating, stepping, recording (one transaction)
    process_cpu: float = 0.0  # CPU seconds of the process in that phase (evaluations run in a thread)
    commit_wall: float = 0.0  # seconds of it spent committing (fsync)
    cpu: float = 0.0  # CPU seconds of the process in the whole cycle

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def rule_metrics(strategy: Strategy, rule: Rule) -> frozenset[str]:
    """The metric names a rule's condition depends on (through its lets)."""
    nodes = strategy.plan.nodes
    seen: set[int] = set()
    todo = [rule.cond]
    out: set[str] = set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        node = nodes[n]
        if node.op == "metric":
            out.add(node.data)
        todo.extend(node.args)
    return frozenset(out)
