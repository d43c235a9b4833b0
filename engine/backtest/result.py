"""What a backtest is asked for (:class:`BacktestOptions`) and what it produces (:class:`BacktestResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perpwatch.api.exits import EXIT_REASONS
from perpwatch.api.history import History
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event
from perpwatch.language.compiler import Strategy

#: The options of the account a backtest trades on, handed to its executor when the executor's
#: ``options_schema`` declares them (``paper`` declares all four).
ACCOUNT_OPTIONS = ("balance_usd", "fee_bps", "slippage_bps", "funding_interval_hours")

#: Why a trade closed: a signal, or what closed it between signals (``perpwatch.api.exits``).
EXIT_KINDS = ("signal", *EXIT_REASONS)

#: How a backtest trades: ``auto`` the fast path where it gives the same result as the walk
#: (``fastloop.why_not_fast``), else the walk; ``fast`` insists on it (an error says why not);
#: ``walk`` bar by bar, always.
ENGINES = ("auto", "fast", "walk")

#: The horizons (in bars) of the forward price move after each fired event; ``AHEAD_BARS`` the
#: bars past the last walked one a result keeps prices of, to measure them.
HORIZONS = (1, 4, 24)
AHEAD_BARS = max(HORIZONS) + 1


@dataclass
class BacktestOptions:
    balance_usd: float = 10_000.0  # the starting equity: the executor's, once built
    fee_bps: float = 5.0
    slippage_bps: float = 2.0
    funding_interval_hours: int = 8
    start: int | None = None  # first bar traded (open time, ms); earlier bars only warm up
    end: int | None = None  # last bar traded
    executor: str = "paper"  # the executor plugin every strategy trades on
    executor_options: dict[str, Any] = field(default_factory=dict)  # its options (ACCOUNT_OPTIONS aside)
    engine: str = "auto"  # auto | fast | walk (ENGINES)

    def account(self) -> dict[str, Any]:
        """The account options, by the names the ``paper`` executor's options use."""
        return {name: getattr(self, name) for name in ACCOUNT_OPTIONS}


@dataclass
class TradeRecord:
    strategy: str
    symbol: str
    side: str
    size_usd: float
    qty: float
    entry_time: int  # fill time (ms)
    entry_price: float
    exit_time: int | None
    exit_price: float | None
    fees: float
    funding: float
    pnl: float  # gross: realised, or unrealised at the last mark for an open trade
    net_pnl: float  # after fees and funding
    status: str  # closed | open
    entry_rule: str | None = None
    exit_rule: str | None = None
    entry_bar: int | None = None  # the bar whose signal opened it
    exit_bar: int | None = None
    #: why it closed: signal, stop_loss, take_profit, trailing_stop, liquidation (None while open)
    exit_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        for key in ("entry_time", "exit_time", "entry_bar", "exit_bar"):
            d[f"{key}_iso"] = format_time(d[key]) if d[key] is not None else None
        return d


@dataclass
class BacktestResult:
    strategies: list[Strategy]
    symbols: dict[str, list[str]]  # strategy -> symbols traded
    history: History
    options: BacktestOptions
    step_ms: int
    times: np.ndarray  # bar open times walked
    equity: np.ndarray  # account equity after each bar (its close, after its orders filled)
    exposed: np.ndarray  # a position was open after the bar
    closes: dict[str, np.ndarray]  # symbol -> price.close over ``times``
    events: list[Event]  # fired / suppressed / resolved, in bar order
    trading: list[Event]  # order / rejected, in bar order
    trades: list[TradeRecord]
    funding_settlements: int
    funding_skipped: int
    assumptions: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    #: symbol -> numeric metric the strategies read (price aside) -> its values over ``times``
    metrics: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    #: symbol -> price.open / price.close from the first bar of ``times`` to up to ``AHEAD_BARS`` bars
    #: after its last, where the data has them (forward moves reach past ``--to``: ``forward.py``)
    ahead_opens: dict[str, np.ndarray] = field(default_factory=dict)
    ahead_closes: dict[str, np.ndarray] = field(default_factory=dict)
    #: when the account's equity first reached zero or below (ms; it opens no position after), else None
    bust_time: int | None = None

    @property
    def equity_times(self) -> np.ndarray:
        """The time of each equity point: the start, then each bar's close."""
        return np.concatenate([self.times[:1], self.times + self.step_ms])

    @property
    def equity_curve(self) -> np.ndarray:
        """The starting balance, then the equity after each bar."""
        return np.concatenate([[self.options.balance_usd], self.equity])
