"""What a backtest reads from its executor to report on it: the trades and the funding settlements.

An executor can be backtested (``perpwatch backtest --executor NAME``) when it implements
:class:`~perpwatch.api.interfaces.Accounting` (the backtest marks and funds positions through
``update`` and draws the equity curve from ``equity``) and this :class:`Ledger`. The ``paper``
executor does both.

The backtest links each trade to the rules that opened and closed it through the fills the
executor returns: ``Fill.info["trade_id"]`` (the :attr:`TradeSummary.id`) and
``Fill.info["action"]`` (``"open"`` or ``"close"``). Without a ``trade_id`` the trade is still
reported, without its rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class TradeSummary:
    """One position an executor took, open or closed, in USD."""

    id: int
    strategy: str
    symbol: str
    side: str  # long | short
    size_usd: float
    qty: float
    entry_time: int  # fill time, ms
    entry_price: float
    exit_time: int | None
    exit_price: float | None
    fees: float  # opening and closing
    funding: float  # received (+) or paid (-)
    pnl: float  # gross: realised, or unrealised at the latest mark while open
    net_pnl: float  # after fees and funding
    status: str  # open | closed


@runtime_checkable
class Ledger(Protocol):
    """An executor's books, read once the backtest has walked every bar."""

    def trade_summaries(self) -> list[TradeSummary]:
        """Every position taken, oldest first; an open one valued at its latest mark."""
        ...

    def funding_counts(self) -> tuple[int, int]:
        """(funding settlements applied, settlements skipped because the rate was unknown)."""
        ...
