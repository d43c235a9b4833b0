"""The ``fixedfee`` executor: a simulated account in memory, with a fixed fee in USD per fill.

What it shows a plugin author:

* the two methods every executor has (``submit``, ``positions``);
* the accounting the trading layer reads (``update``, ``pnl``, ``equity``: the ``Accounting``
  protocol), so funding and marks reach it and ``max_daily_loss_pct`` works;
* the ledger a backtest reports from (``trade_summaries``, ``funding_counts``: the ``Ledger``
  protocol), so ``perpwatch backtest --executor fixedfee`` works; its fills name the trade they
  open or close (``info["trade_id"]``, ``info["action"]``), which links trades to their rules.

Fill rule: a market order fills at exactly the price it is given (no slippage) and pays
``fee_usd`` per fill; ``size_usd`` becomes ``qty = size_usd / price``. ``long`` / ``short`` open a
position, reverse an opposite one (close, then open) and do nothing when one of that side is
already open; ``flat`` closes. Funding is not modelled. The book lives in memory: a restarted
``perpwatch run`` starts flat (a real executor would keep it in ``ctx.store``, the state database).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from perpwatch.api.interfaces import Executor, ExecutorError, Fill, PluginContext, Position
from perpwatch.api.ledger import TradeSummary
from perpwatch.evaluation.events import OrderIntent


@dataclass
class Trade:
    """One position, open or closed."""

    id: int
    strategy: str
    symbol: str
    side: str  # long | short
    qty: float
    size_usd: float
    entry_time: int
    entry_price: float
    mark: float  # the latest price seen (the exit price once closed)
    fees: float = 0.0
    pnl: float = 0.0  # realised, once closed
    exit_time: int | None = None
    exit_price: float | None = None

    @property
    def open(self) -> bool:
        return self.exit_time is None

    @property
    def unrealised(self) -> float:
        sign = 1 if self.side == "long" else -1
        return sign * (self.mark - self.entry_price) * self.qty if self.open else 0.0


class FixedFeeExecutor(Executor):
    """Fills every order at its price for a fixed fee; keeps balance, positions and trades in memory."""

    name: ClassVar[str] = "fixedfee"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "balance_usd": {"type": "number", "exclusiveMinimum": 0, "default": 10000},
            "fee_usd": {"type": "number", "minimum": 0, "default": 1, "description": "fee per fill, USD"},
        },
    }

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None) -> None:
        super().__init__(options, ctx)
        self.balance = float(self.option("balance_usd"))  # cash: start + realised PnL - fees
        self.fee = float(self.option("fee_usd"))
        self.book: list[Trade] = []

    # -- the Executor interface -----------------------------------------------------------------

    async def submit(
        self, strategy: str, symbol: str, intent: OrderIntent, price: float, time: int
    ) -> list[Fill]:
        if not (math.isfinite(price) and price > 0):
            raise ExecutorError(f"fixedfee: no usable price ({price!r})", retryable=False)
        current = self._open_trade(strategy, symbol)
        if intent.side == "flat":
            return [] if current is None else [self._close(current, price, time)]
        if intent.side not in ("long", "short"):
            raise ExecutorError(f"fixedfee: side {intent.side!r} is not long, short or flat", retryable=False)
        size = intent.size_usd
        if size is None or not (math.isfinite(size) and size > 0):
            raise ExecutorError(f"fixedfee: size_usd {size!r} is not a positive number", retryable=False)
        if current is not None and current.side == intent.side:
            return []  # a signal is a target: that side is already held
        fills = [] if current is None else [self._close(current, price, time)]
        return [*fills, self._open(strategy, symbol, intent.side, size, price, time)]

    async def positions(self) -> list[Position]:
        return [
            Position(t.strategy, t.symbol, t.side, t.qty, t.entry_price, t.entry_time)
            for t in self.book
            if t.open
        ]

    # -- Accounting: what the trading layer reads -------------------------------------------------

    async def update(
        self, strategy: str, symbol: str, price: float | None, rate: float | None, until: int
    ) -> list[Any]:
        """Mark the open position at ``price``; funding is not modelled (nothing is settled)."""
        trade = self._open_trade(strategy, symbol)
        if trade is not None and price is not None and math.isfinite(price) and price > 0:
            trade.mark = price
        return []

    async def pnl(self, strategy: str) -> float:
        return sum(t.pnl + t.unrealised - t.fees for t in self.book if t.strategy == strategy)

    async def equity(self) -> float:
        return self.balance + sum(t.unrealised for t in self.book)

    # -- Ledger: what a backtest reports ----------------------------------------------------------

    def trade_summaries(self) -> list[TradeSummary]:
        return [
            TradeSummary(
                id=t.id,
                strategy=t.strategy,
                symbol=t.symbol,
                side=t.side,
                size_usd=t.size_usd,
                qty=t.qty,
                entry_time=t.entry_time,
                entry_price=t.entry_price,
                exit_time=t.exit_time,
                exit_price=t.exit_price,
                fees=t.fees,
                funding=0.0,
                pnl=t.pnl + t.unrealised,
                net_pnl=t.pnl + t.unrealised - t.fees,
                status="open" if t.open else "closed",
            )
            for t in self.book
        ]

    def funding_counts(self) -> tuple[int, int]:
        return 0, 0

    # -- internals ------------------------------------------------------------------------------

    def _open_trade(self, strategy: str, symbol: str) -> Trade | None:
        return next((t for t in self.book if t.open and t.strategy == strategy and t.symbol == symbol), None)

    def _open(self, strategy: str, symbol: str, side: str, size: float, price: float, time: int) -> Fill:
        trade = Trade(len(self.book) + 1, strategy, symbol, side, size / price, size, time, price, price)
        trade.fees = self.fee
        self.book.append(trade)
        self.balance -= self.fee
        return self._fill(trade, "buy" if side == "long" else "sell", price, time, "open")

    def _close(self, trade: Trade, price: float, time: int) -> Fill:
        trade.mark = price
        trade.pnl = trade.unrealised
        trade.exit_time, trade.exit_price = time, price
        trade.fees += self.fee
        self.balance += trade.pnl - self.fee
        return self._fill(trade, "sell" if trade.side == "long" else "buy", price, time, "close")

    def _fill(self, trade: Trade, side: str, price: float, time: int, action: str) -> Fill:
        info = {"action": action, "trade_id": trade.id, "strategy": trade.strategy}
        if action == "close":
            info["pnl"] = trade.pnl
        return Fill(trade.symbol, side, trade.qty, price, self.fee, time, info)
