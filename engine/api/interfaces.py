"""What a plugin class implements: sources, notifiers and executors.

Every plugin class has a ``name`` (the default instance name in a config), an ``options_schema``
(JSON Schema of its options, checked when the config is loaded) and is built as
``cls(options, ctx)``. All I/O methods are async.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx

from perpwatch.common.clock import Clock
from perpwatch.evaluation.events import Event, OrderIntent
from perpwatch.evaluation.frame import Frame
from perpwatch.language.metrics import Metric


@dataclass
class PluginContext:
    """What the engine hands a plugin instance.

    ``transport`` replaces httpx's network transport (tests use ``httpx.MockTransport``);
    ``clock`` is the engine's clock (fake in tests); ``state_path`` is the SQLite state database;
    ``secrets`` are config values that came from ``${ENV}`` and must never be shown;
    ``store`` is the engine's state store (``perpwatch.live.state.StateStore``) when one is open, so an
    executor can write inside the cycle's transaction.
    """

    clock: Clock = field(default_factory=Clock)
    transport: httpx.AsyncBaseTransport | None = None
    state_path: str | None = None
    secrets: frozenset[str] = frozenset()
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("perpwatch"))
    store: Any = None


class PluginError(Exception):
    """A plugin's failure, with a message that is safe to show (no secrets)."""

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None):
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class SourceError(PluginError):
    """A source could not deliver; its metrics count as missing for this cycle."""


class NotifierError(PluginError):
    """A notifier could not deliver; the outbox retries later (``retry_after`` seconds if known)."""

    def __init__(self, message: str, *, retryable: bool | None = None, retry_after: float | None = None):
        super().__init__(message, retryable=retryable)
        self.retry_after = retry_after


class ExecutorError(PluginError):
    """An executor refused or failed an order."""


@dataclass(frozen=True)
class FetchRequest:
    """Bars ``start``..``end`` (open times, ms, both inclusive) of ``metrics`` for one symbol."""

    symbol: str
    interval: str
    metrics: frozenset[str]
    start: int
    end: int


class Plugin:
    name: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None):
        self.options = dict(options or {})
        self.ctx = ctx or PluginContext()

    async def aclose(self) -> None:
        """Release connections; called once when the engine stops."""


class Source(Plugin):
    """Fetches metric history. Only closed bars; values it lacks are NaN, never 0."""

    #: Metrics outside the core namespace that this source adds, under its own prefix (``myplugin.thing``).
    metrics: ClassVar[tuple[Metric, ...]] = ()

    def provides(self) -> frozenset[str]:
        """The metric names this source can fill (with its current options)."""
        raise NotImplementedError

    async def fetch(self, request: FetchRequest) -> Frame:
        """The requested bars; raise SourceError when the source cannot answer."""
        raise NotImplementedError


class Notifier(Plugin):
    """Delivers events; raise NotifierError to have the outbox retry."""

    async def send(self, event: Event) -> None:
        raise NotImplementedError


@dataclass
class Fill:
    """The result of an order: what filled, at what price, with what fee."""

    symbol: str
    side: str  # "buy" or "sell"
    qty: float
    price: float
    fee_usd: float
    time: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Position:
    strategy: str
    symbol: str
    side: str  # "long" or "short"
    qty: float
    entry_price: float
    opened: int


class Executor(Plugin):
    """Acts on order intents that passed the risk layer."""

    async def submit(
        self, strategy: str, symbol: str, intent: OrderIntent, price: float, time: int
    ) -> list[Fill]:
        raise NotImplementedError

    async def positions(self) -> list[Position]:
        raise NotImplementedError


@runtime_checkable
class Accounting(Protocol):
    """What an executor offers beyond ``submit``/``positions`` so the trading layer can settle funding,
    mark positions and enforce ``max_daily_loss_pct`` (the ``paper`` executor does).

    The trading layer checks ``isinstance(executor, Accounting)``; an executor without these methods
    still trades, but a strategy with ``max_daily_loss_pct`` is then refused new positions.
    """

    async def update(
        self, strategy: str, symbol: str, price: float | None, rate: float | None, until: int
    ) -> list[Any]:
        """Settle the funding due up to ``until`` (ms) on the strategy's open position in ``symbol`` at
        ``rate`` (percent; None: unknown, skipped), then mark it at ``price`` (None: keep the last mark).
        Returns what was settled."""
        ...

    async def pnl(self, strategy: str) -> float:
        """The strategy's PnL so far in USD: realised plus unrealised at the marks, after fees and funding."""
        ...

    async def equity(self) -> float:
        """The account's equity in USD: balance plus the unrealised PnL of every open position."""
        ...
