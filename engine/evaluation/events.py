"""Events and order intents: what the rule state machine emits and the executors act on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("info", "low", "medium", "high", "critical")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


EXIT_KINDS = ("pct", "price")


@dataclass(frozen=True)
class ExitDistance:
    """How far from the entry fill a protective exit lies, as the decision bar knew it.

    ``kind`` ``"pct"``: ``value`` percent of the entry fill price (``stop_loss: 2%``), resolved when
    the entry fills. ``kind`` ``"price"``: ``value`` is a distance in price units (quote currency,
    e.g. USD per coin) that an expression gave at the decision bar (``2 * sma(price.high -
    price.low, 14)``). ``value`` None: the expression was unknown at that bar; nothing may open on it.
    """

    kind: str  # "pct" | "price"
    value: float | None

    def distance(self, entry_price: float) -> float | None:
        """The distance in price units from ``entry_price``; None when unknown or not positive."""
        v = self.value
        if v is None or v != v or v <= 0 or v == float("inf"):
            return None
        return entry_price * v / 100 if self.kind == "pct" else v

    def describe(self) -> str:
        if self.value is None:
            return "unknown"
        return f"{self.value:g}%" if self.kind == "pct" else f"{self.value:.8g}"


@dataclass
class OrderIntent:
    """What a rule's ``signal`` asks for: a side (long/short/flat), a size in USD, and the protective
    exits of the position it opens (``stop_loss``, ``take_profit``, ``trailing_stop``: each an
    :class:`ExitDistance` from the entry fill, or None for none). ``perpwatch.api.exits.exit_levels``
    turns them into prices once the entry's fill price is known; a long's stop lies below the fill
    and its take-profit above (a short's the reverse); the trailing stop keeps its distance from the
    best price since entry."""

    side: str | None  # None when the side expression was unknown
    size_usd: float | None  # None when unknown; nothing trades on an unknown intent
    stop_loss: ExitDistance | None = None
    take_profit: ExitDistance | None = None
    trailing_stop: ExitDistance | None = None

    def __post_init__(self) -> None:  # from JSON (the state database, a plugin): dicts become ExitDistance
        for name in ("stop_loss", "take_profit", "trailing_stop"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, ExitDistance(str(value.get("kind")), value.get("value")))

    @property
    def has_exits(self) -> bool:
        return any(x is not None for x in (self.stop_loss, self.take_profit, self.trailing_stop))

    def to_dict(self) -> dict[str, Any]:
        """As JSON: side and size, and the protective exits it has (an intent without exits reads as
        it did before they existed)."""
        d: dict[str, Any] = {"side": self.side, "size_usd": self.size_usd}
        d.update({name: asdict(x) for name, x in self.exits().items()})
        return d

    def exits(self) -> dict[str, ExitDistance]:
        """The protective exits asked for, by name (``stop_loss``, ``take_profit``, ``trailing_stop``)."""
        pairs = (
            ("stop_loss", self.stop_loss),
            ("take_profit", self.take_profit),
            ("trailing_stop", self.trailing_stop),
        )
        return {name: x for name, x in pairs if x is not None}


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
        d["signal"] = self.signal.to_dict() if self.signal else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        d = dict(d)
        sig = d.get("signal")
        d["signal"] = OrderIntent(**sig) if sig else None
        return cls(**d)
