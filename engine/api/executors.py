"""Executors: what acts on the order intents that passed the risk layer, and the accounting the
trading layer reads from them.

Protective exits: an :class:`OrderIntent` that opens a position may carry ``stop_loss``,
``take_profit`` and ``trailing_stop`` (each an :class:`ExitDistance`: a percent of the entry fill, or
a price distance the decision bar gave; ``value`` is never None when the trading layer submits it,
it refuses entries whose exits are unknown). ``perpwatch.api.exits.exit_levels(side, fill_price,
intent)`` resolves them into prices once the entry's fill price is known; an exchange executor
places them as reduce-only orders then. An executor that also implements :class:`Protective`
has ``check_exits`` called once per bar for each open position, before that bar's signals."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from perpwatch.api.plugin import Plugin, PluginError
from perpwatch.evaluation.events import ExitDistance, OrderIntent


class ExecutorError(PluginError):
    """An executor refused or failed an order. ``halt`` True: nothing more may be opened on its
    account (a margin rejection, too many exchange errors): the trading layer sets the kill switch
    with this message."""

    halt: bool = False


@dataclass
class Fill:
    """The result of an order: what filled, at what price, with what fee.

    ``info`` may carry ``action`` (``open``/``close``), ``trade_id``, ``pnl`` and, for a close that
    no signal asked for, ``reason`` (``stop_loss``, ``take_profit``, ``trailing_stop``,
    ``liquidation``: ``perpwatch.api.exits.EXIT_REASONS``)."""

    symbol: str
    side: str  # "buy" or "sell"
    qty: float
    price: float
    fee_usd: float
    time: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Position:
    """An open position of one strategy in one symbol."""

    strategy: str
    symbol: str
    side: str  # "long" or "short"
    qty: float
    entry_price: float
    opened: int


class Executor(Plugin, ABC):
    """Acts on order intents that passed the risk layer."""

    @abstractmethod
    async def submit(
        self, strategy: str, symbol: str, intent: OrderIntent, price: float, time: int
    ) -> list[Fill]:
        """Fill ``intent`` for ``strategy`` in ``symbol`` at ``price`` (the bar's), at ``time`` (ms).

        Returns the fills ([] when there is nothing to do); raise ExecutorError to refuse or fail."""

    @abstractmethod
    async def positions(self) -> list[Position]:
        """Every open position, of every strategy."""

    async def submit_once(
        self, key: str, strategy: str, symbol: str, intent: OrderIntent, price: float, time: int
    ) -> list[Fill]:
        """``submit`` for the event ``key`` (``Event.key``, the same after a restart): what the
        trading layer calls. An executor whose orders must never be sent twice (a real exchange)
        overrides it and derives its order ids from ``key``; the default calls ``submit``."""
        return await self.submit(strategy, symbol, intent, price, time)


@dataclass
class Notice:
    """Something an executor found while reconciling its books with the exchange: recorded as an
    event of ``strategy`` (``""``: the account's) in ``symbol``; ``halt`` True sets the kill switch."""

    message: str
    strategy: str = ""
    symbol: str = ""
    halt: bool = False
    values: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Reconciling(Protocol):
    """An executor whose positions live elsewhere (an exchange): the trading layer calls
    ``reconcile`` at start-up and at every cycle, before any signal is acted on."""

    async def reconcile(self) -> list[Notice]:
        """Compare the exchange with the executor's books; what was found (halting or not)."""
        ...


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


@runtime_checkable
class Protective(Protocol):
    """What an executor offers to carry out protective exits (stops, take-profits, trailing stops,
    liquidations) between signals. The trading layer calls ``check_exits`` for every open position of
    the strategy in ``symbol`` once per bar, before the bar's funding, marks and signals, and records
    each fill it returns as an ``order`` event with the fill's ``info["reason"]``.

    For a strategy without protective exits it is called only when the executor's ``liquidates``
    attribute is true (or absent): a ``paper`` account without leverage sets it false, so a backtest
    without exits pays nothing for them."""

    async def check_exits(
        self,
        strategy: str,
        symbol: str,
        bar_time: int,
        prices: tuple[float | None, float | None, float | None, float | None],
        time: int,
    ) -> list[Fill]:
        """Judge the bar opening at ``bar_time`` (ms) with ``prices`` (open, high, low, close; None:
        unknown) against the position's exits (``perpwatch.api.exits.check_bar``); close what it
        hits at ``time`` and return the fills (``info["reason"]`` set), [] when nothing was hit."""
        ...


__all__ = [
    "Accounting",
    "Executor",
    "ExecutorError",
    "ExitDistance",
    "Fill",
    "Notice",
    "OrderIntent",
    "Position",
    "Protective",
    "Reconciling",
]
