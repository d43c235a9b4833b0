"""Events and order intents: what the rule state machine emits and the executors act on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("info", "low", "medium", "high", "critical")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass
class OrderIntent:
    """What a rule's ``signal`` asks for: a side (long/short/flat) and a size in USD."""

    side: str | None  # None when the side expression was unknown
    size_usd: float | None  # None when unknown; nothing trades on an unknown intent


@dataclass
class Event:
    """A fired, suppressed or resolved rule (strategy language, section 6)."""

    kind: str  # "fired" | "suppressed" | "resolved"
    strategy: str
    rule: str
    symbol: str
    time: int  # open time of the bar, ms UTC
    severity: str = "info"
    message: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    signal: OrderIntent | None = None
    interval: str = ""

    @property
    def key(self) -> str:
        """A stable identity: one event per (strategy, rule, symbol, bar, kind)."""
        return f"{self.strategy}/{self.rule}/{self.symbol}/{self.time}/{self.kind}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["signal"] = asdict(self.signal) if self.signal else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        d = dict(d)
        sig = d.get("signal")
        d["signal"] = OrderIntent(**sig) if sig else None
        return cls(**d)
