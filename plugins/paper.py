"""``paper``: a simulated futures account kept in the state database.

Tables (created with ``CREATE TABLE IF NOT EXISTS`` on the engine's store connection, so every
write joins the runner's cycle transaction and survives restarts):

``paper_accounts(account PK, start_balance, balance, created_at)``
    The cash balance: start + realised PnL - fees + funding. Created with ``balance_usd`` the first
    time an account is used; a later ``balance_usd`` does not reset an existing account.
``paper_trades``
    One row per position, open or closed (``status``); at most one open per (account, strategy,
    symbol). Holds side, qty, entry/exit time, price and fee, funding paid or received, realised
    PnL, the latest mark price and ``funded_to`` (funding is settled up to this time).
``paper_orders``
    Every submitted intent, ``filled`` or ``ignored`` with the reason.
``paper_fills``
    Every fill: order, position, buy/sell, qty, price, fee, open/close, realised PnL.
``paper_funding``
    Every funding settlement applied to a position (rate NULL: skipped, the rate was unknown).

Fill rules: a market order fills at the price it is given, moved ``slippage_bps`` against the
order (buys higher, sells lower), and pays ``fee_bps`` of its notional (qty x fill price).
``size_usd`` becomes ``qty = size_usd / price``. ``long`` / ``short`` open a position, reverse an
opposite one (close, then open) and do nothing when one of that side is already open (a signal is
a target, not an increment); ``flat`` closes. An intent with an unknown side or size, or a size
that is not positive for long/short, does nothing and is recorded as ignored.

Funding: settlements fall every ``funding_interval_hours`` on UTC boundaries (8 h: 00, 08, 16
UTC). A position open at a settlement pays ``qty x price x rate / 100`` when long and funding is
positive (receives it when negative; shorts the reverse); funding rates are percent per interval.

Protective exits (``stop_loss``, ``take_profit``, ``trailing_stop`` on the intent): their levels
are set from the entry fill (``perpwatch.api.exits.exit_levels``) and kept on the position;
``check_exits`` judges each later bar's open, high and low against them (``exits.check_bar``: a gap
through a stop fills at the open, a stop and a take-profit in one bar take the stop) and closes the
position at that price, with slippage and fees like any order; the order's note and the fill's
``info["reason"]`` say why. An intent whose exits are unknown opens nothing (recorded as ignored).

Margin (off unless ``leverage`` is set; then isolated margin per position): opening a position
needs ``size_usd / leverage`` of initial margin plus the opening fee out of the free margin (equity
less the margin of the other open positions, and of the position a reversal closes); without it
the order is refused (``ExecutorError``, recorded as ``rejected``). Each position gets a
liquidation price where its loss leaves only the maintenance margin
(``maintenance_margin_pct`` of the notional at entry): a long's ``entry x (1 - 1/leverage +
mmr)``, a short's ``entry x (1 + 1/leverage - mmr)``; a bar whose low (a short: high) reaches it
closes the position there (``reason`` ``liquidation``), after any protective stop at or before it.

Beyond ``submit``/``positions`` it keeps the accounts the trading layer reads (``Accounting``:
``update``, ``pnl``, ``equity``) and the ledger a backtest reports from (``Ledger``:
``trade_summaries``, ``funding_counts``); its fills carry ``trade_id`` and ``action`` in ``info``.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from perpwatch.api.exits import ExitProblem, Levels, check_bar, exit_levels
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Executor, ExecutorError, Fill, PluginContext, Position
from perpwatch.api.ledger import TradeSummary
from perpwatch.common.jsonsafe import finite_or_none
from perpwatch.evaluation.events import OrderIntent

HOUR_MS = 3_600_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS paper_accounts (
    account TEXT PRIMARY KEY, start_balance REAL NOT NULL, balance REAL NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS paper_trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, strategy TEXT NOT NULL,
    symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL, size_usd REAL NOT NULL,
    entry_time INTEGER NOT NULL, entry_price REAL NOT NULL, entry_fee REAL NOT NULL,
    exit_time INTEGER, exit_price REAL, exit_fee REAL NOT NULL DEFAULT 0,
    funding REAL NOT NULL DEFAULT 0, pnl REAL NOT NULL DEFAULT 0,
    mark_price REAL NOT NULL, funded_to INTEGER NOT NULL, status TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS paper_one_open_position
    ON paper_trades (account, strategy, symbol) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS paper_trades_by_strategy ON paper_trades (strategy, account);
CREATE TABLE IF NOT EXISTS paper_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, strategy TEXT NOT NULL,
    symbol TEXT NOT NULL, time INTEGER NOT NULL, side TEXT, size_usd REAL, price REAL,
    status TEXT NOT NULL, note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS paper_fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT, order_id INTEGER NOT NULL, trade_id INTEGER NOT NULL,
    account TEXT NOT NULL, strategy TEXT NOT NULL, symbol TEXT NOT NULL, time INTEGER NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL,
    action TEXT NOT NULL, pnl REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS paper_funding (
    trade_id INTEGER NOT NULL, time INTEGER NOT NULL, account TEXT NOT NULL, strategy TEXT NOT NULL,
    symbol TEXT NOT NULL, rate REAL, notional REAL NOT NULL, amount REAL NOT NULL,
    PRIMARY KEY (trade_id, time)
);
"""

_TRADE_COLUMNS = (
    "id, strategy, symbol, side, qty, size_usd, entry_time, entry_price, entry_fee, exit_time, "
    "exit_price, exit_fee, funding, pnl, mark_price, funded_to, status, stop_price, take_price, "
    "trail, best_price, liq_price, margin, exit_reason"
)

#: Columns added to ``paper_trades`` by protective exits and the margin model (older databases get them).
_EXIT_COLUMNS = (
    ("stop_price", "REAL"),
    ("take_price", "REAL"),
    ("trail", "REAL"),
    ("best_price", "REAL"),
    ("liq_price", "REAL"),
    ("margin", "REAL"),
    ("exit_reason", "TEXT"),
)


@dataclass
class Trade:
    """One position of the paper account, open or closed."""

    id: int
    strategy: str
    symbol: str
    side: str  # long | short
    qty: float
    size_usd: float
    entry_time: int
    entry_price: float
    entry_fee: float
    exit_time: int | None
    exit_price: float | None
    exit_fee: float
    funding: float  # received (+) or paid (-)
    pnl: float  # realised, before fees and funding
    mark_price: float
    funded_to: int
    status: str  # open | closed
    stop_price: float | None = None
    take_price: float | None = None
    trail: float | None = None  # trailing-stop distance, price units
    best_price: float | None = None  # best price since entry (for the trailing stop)
    liq_price: float | None = None  # liquidation price (margin model)
    margin: float | None = None  # initial margin held (margin model)
    exit_reason: str | None = None  # signal, stop_loss, take_profit, trailing_stop, liquidation

    @property
    def levels(self) -> Levels:
        return Levels(
            side=self.side,
            stop=self.stop_price,
            take=self.take_price,
            trail=self.trail,
            best=self.best_price,
            liquidation=self.liq_price,
        )

    @property
    def sign(self) -> int:
        return 1 if self.side == "long" else -1

    @property
    def unrealized(self) -> float:
        return 0.0 if self.status != "open" else self.sign * (self.mark_price - self.entry_price) * self.qty

    @property
    def net_pnl(self) -> float:
        """Realised and unrealised PnL after fees and funding."""
        return self.pnl + self.unrealized - self.entry_fee - self.exit_fee + self.funding


class _Refused(Exception):
    """An order refused after it was recorded as rejected (the record is kept)."""


@dataclass
class FundingPayment:
    trade_id: int
    time: int  # the settlement, ms UTC
    rate: float | None  # percent per interval; None: skipped (unknown)
    notional: float
    amount: float  # + received, - paid


class PaperExecutor(Executor):
    """A simulated futures account: balance, positions, orders, fills and funding in SQLite."""

    name: ClassVar[str] = "paper"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "balance_usd": {"type": "number", "exclusiveMinimum": 0, "default": 10000},
            "fee_bps": {"type": "number", "minimum": 0, "maximum": 1000, "default": 5},
            "slippage_bps": {"type": "number", "minimum": 0, "maximum": 1000, "default": 2},
            "funding_interval_hours": {"type": "integer", "minimum": 1, "maximum": 24, "default": 8},
            "leverage": {
                "type": "number",
                "minimum": 1,
                "maximum": 125,
                "description": "turns the margin model on: initial margin size_usd / leverage, isolated per "
                "position, with a liquidation price; unset (default): no margin limit and no liquidation",
            },
            "maintenance_margin_pct": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 50,
                "default": 0.5,
                "description": "maintenance margin in percent of a position's notional at entry (with leverage)",
            },
            "account": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_.-]+$",
                "default": "paper",
                "description": "account name, to keep several paper accounts in one state database",
            },
        },
    }

    def __init__(self, options: dict[str, Any] | None = None, ctx: PluginContext | None = None):
        super().__init__(options, ctx)
        self._check_options()
        self.balance_usd = float(self.options.get("balance_usd", 10000))
        self.fee = float(self.options.get("fee_bps", 5)) / 10_000
        self.slippage = float(self.options.get("slippage_bps", 2)) / 10_000
        self.funding_ms = int(self.options.get("funding_interval_hours", 8)) * HOUR_MS
        self.account = str(self.options.get("account", "paper"))
        lev = self.options.get("leverage")
        self.leverage = float(lev) if lev is not None else None
        self.mmr = float(self.options.get("maintenance_margin_pct", 0.5)) / 100
        self.liquidates = self.leverage is not None  # read by the trading layer (Protective)
        if self.leverage is not None and self.mmr >= 1 / self.leverage:
            raise ValueError(
                f"paper executor: maintenance_margin_pct {self.mmr * 100:g} must be below 100 / leverage "
                f"({100 / self.leverage:g}): a position would be liquidated as it opens"
            )
        store = self.ctx.store
        if store is None:
            from perpwatch.live.state import StateStore

            store = self.ctx.store = StateStore(self.ctx.state_path or ":memory:")
        self.store = store
        self.conn = store.conn
        with store.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            have = {row[1] for row in self.conn.execute("PRAGMA table_info(paper_trades)")}
            for column, kind in _EXIT_COLUMNS:
                if column not in have:
                    self.conn.execute(f"ALTER TABLE paper_trades ADD COLUMN {column} {kind}")
            self.conn.execute(
                "INSERT INTO paper_accounts (account, start_balance, balance, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (account) DO NOTHING",
                (self.account, self.balance_usd, self.balance_usd, _time.time()),
            )
            self._upper_case_symbols()

    def _upper_case_symbols(self) -> None:
        """Accounts written before perpwatch upper-cased symbols hold ``btc``: rename to ``BTC``,
        unless one coin has an open position under both spellings (refused, naming them)."""
        clashes = self.conn.execute(
            "SELECT a.strategy, a.symbol, b.symbol FROM paper_trades a JOIN paper_trades b "
            "ON b.account = a.account AND b.strategy = a.strategy AND b.symbol = upper(a.symbol) "
            "AND a.status = 'open' AND b.status = 'open' "
            "WHERE a.account = ? AND a.symbol != upper(a.symbol) ORDER BY 1, 2",
            (self.account,),
        ).fetchall()
        if clashes:
            shown = ", ".join(f"{s}: {low!r} and {up!r}" for s, low, up in clashes[:5])
            raise ExecutorError(
                f"paper account {self.account!r} has two open positions on one coin ({shown}), "
                "opened before perpwatch upper-cased symbols; remove the lower-case one (its entry fee stays "
                f'paid) with: sqlite3 {self.store.path} "DELETE FROM paper_trades WHERE account = '
                f"'{self.account}' AND status = 'open' AND symbol != upper(symbol)\"",
                retryable=False,
            )
        for table in ("paper_trades", "paper_orders", "paper_fills", "paper_funding"):
            self.conn.execute(
                f"UPDATE {table} SET symbol = upper(symbol) WHERE account = ? AND symbol != upper(symbol)",
                (self.account,),
            )

    def _check_options(self) -> None:
        """Refuse options outside ``options_schema`` before anything is stored: a NaN balance, fee or
        slippage would otherwise reach the database (a config's options are checked on loading;
        this guards options built in Python, such as a backtest's)."""
        from jsonschema.exceptions import best_match

        from perpwatch.language.schemas import schema_validator

        error = best_match(schema_validator(self.options_schema).iter_errors(self.options))
        if error is not None:
            at = "/".join(str(p) for p in error.absolute_path) or "options"
            raise ValueError(f"paper executor: {at}: {error.message}")

    # -- the Executor interface -----------------------------------------------------------------

    async def submit(
        self, strategy: str, symbol: str, intent: OrderIntent, price: float, time: int
    ) -> list[Fill]:
        """Fill ``intent`` at ``price`` (plus slippage and fees); [] when it does nothing (recorded)."""
        refused = ""
        with self.store.transaction():
            try:
                return self._submit(strategy, symbol, intent, price, int(time))
            except _Refused as e:  # recorded as rejected: commit that, then refuse
                refused = str(e)
        raise ExecutorError(refused, retryable=False)

    async def positions(self) -> list[Position]:
        return [
            Position(t.strategy, t.symbol, t.side, t.qty, t.entry_price, t.entry_time)
            for t in self.trades(status="open")
        ]

    async def position(self, strategy: str, symbol: str) -> Position | None:
        """The strategy's open position in ``symbol`` (one indexed lookup, not every position)."""
        t = self.open_trade(strategy, symbol)
        return (
            None if t is None else Position(t.strategy, t.symbol, t.side, t.qty, t.entry_price, t.entry_time)
        )

    async def check_exits(
        self,
        strategy: str,
        symbol: str,
        bar_time: int,
        prices: tuple[float | None, float | None, float | None, float | None],
        time: int,
    ) -> list[Fill]:
        """Judge the bar (open, high, low, close) against the open position's protective exits and
        liquidation price; close it at the exit's price (plus slippage and fees) when one is hit."""
        trade = self.open_trade(strategy, symbol)
        if trade is None or not trade.levels.active:
            return []
        hit, after = check_bar(trade.levels, *prices)
        with self.store.transaction():
            if hit is None:
                if after.best != trade.best_price:
                    self.conn.execute(
                        "UPDATE paper_trades SET best_price = ? WHERE id = ?", (after.best, trade.id)
                    )
                return []
            note = f"{hit.reason}: level {hit.level:.8g}" + (
                f", the bar opened beyond it at {hit.price:.8g}" if hit.price != hit.level else ""
            )
            order = self.conn.execute(
                "INSERT INTO paper_orders (account, strategy, symbol, time, side, size_usd, price, status, note) "
                "VALUES (?, ?, ?, ?, 'flat', NULL, ?, 'pending', ?)",
                (self.account, strategy, symbol, int(time), hit.price, note),
            ).lastrowid
            assert order is not None
            fill = self._close(trade, order, hit.price, int(time), reason=hit.reason)
            self.conn.execute(
                "UPDATE paper_orders SET status = 'filled', note = ? WHERE id = ?",
                (f"{note}; close {fill.side} {fill.qty:.8g} @ {fill.price:.8g}", order),
            )
        return [fill]

    # -- accounting the trading layer uses ------------------------------------------------------

    async def update(
        self, strategy: str, symbol: str, price: float | None, rate: float | None, until: int
    ) -> list[FundingPayment]:
        """Settle funding due up to ``until`` (ms) at ``rate`` (percent; None: unknown, skipped),
        then mark the position at ``price`` (None: keep the last mark). What was settled."""
        good_price = price is not None and math.isfinite(price) and price > 0
        if good_price:  # the common case, one statement: no settlement due, just mark
            due = until - until % self.funding_ms  # the latest settlement at or before ``until``
            cur = self.conn.execute(
                "UPDATE paper_trades SET mark_price = ? WHERE account = ? AND strategy = ? AND symbol = ? "
                "AND status = 'open' AND funded_to >= ?",
                (price, self.account, strategy, symbol, due),
            )
            if cur.rowcount:
                return []
        trade = self.open_trade(strategy, symbol)
        if trade is None:
            return []
        with self.store.transaction():
            payments = self._settle(trade, price, rate, until)
            if good_price:
                self.conn.execute("UPDATE paper_trades SET mark_price = ? WHERE id = ?", (price, trade.id))
        return payments

    async def pnl(self, strategy: str) -> float:
        """The strategy's PnL so far: realised + unrealised (at the marks), after fees and funding."""
        return self.strategy_pnl(strategy)

    async def equity(self) -> float:
        """Balance plus the unrealised PnL of every open position at its latest mark."""
        return self.account_equity()

    # -- queries (synchronous: local reads) ------------------------------------------------------

    def balance(self) -> float:
        row = self.conn.execute(
            "SELECT balance FROM paper_accounts WHERE account = ?", (self.account,)
        ).fetchone()
        return float(row[0])

    def start_balance(self) -> float:
        row = self.conn.execute(
            "SELECT start_balance FROM paper_accounts WHERE account = ?", (self.account,)
        ).fetchone()
        return float(row[0])

    def account_equity(self) -> float:
        return self.snapshot()[0]

    def snapshot(self) -> tuple[float, int]:
        """(equity at the marks, number of open positions): the balance plus each open position's
        unrealised PnL, added one by one in (strategy, symbol) order; a defined order of additions,
        so a backtest's fast path (``perpwatch.backtest.fastloop``) reproduces it bit for bit."""
        rows = self.conn.execute(
            "SELECT side, mark_price, entry_price, qty FROM paper_trades WHERE account = ? AND status = 'open' "
            "ORDER BY strategy, symbol",
            (self.account,),
        ).fetchall()
        unrealized = 0.0
        for side, mark, entry, qty in rows:
            unrealized += (1 if side == "long" else -1) * (mark - entry) * qty
        return self.balance() + unrealized, len(rows)

    def strategy_pnl(self, strategy: str) -> float:
        row = self.conn.execute(
            "SELECT COALESCE(SUM(pnl - entry_fee - exit_fee + funding + CASE status WHEN 'open' THEN "
            "CASE side WHEN 'long' THEN 1 ELSE -1 END * (mark_price - entry_price) * qty ELSE 0 END), 0) "
            "FROM paper_trades WHERE account = ? AND strategy = ?",
            (self.account, strategy),
        ).fetchone()
        return float(row[0])

    def open_count(self) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM paper_trades WHERE account = ? AND status = 'open'", (self.account,)
        ).fetchone()
        return int(row[0])

    def open_trade(self, strategy: str, symbol: str) -> Trade | None:
        row = self.conn.execute(
            f"SELECT {_TRADE_COLUMNS} FROM paper_trades "
            "WHERE account = ? AND strategy = ? AND symbol = ? AND status = 'open'",
            (self.account, strategy, symbol),
        ).fetchone()
        return Trade(*row) if row else None

    def trades(self, strategy: str | None = None, status: str | None = None) -> list[Trade]:
        """Positions of this account, oldest first (optionally of one strategy and/or status)."""
        sql, args = f"SELECT {_TRADE_COLUMNS} FROM paper_trades WHERE account = ?", [self.account]
        if strategy is not None:
            sql, args = sql + " AND strategy = ?", [*args, strategy]
        if status == "open":  # a literal, so the partial index of open positions serves it
            sql += " AND status = 'open'"
        elif status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        return [Trade(*row) for row in self.conn.execute(sql + " ORDER BY id", args)]

    def orders(self) -> list[dict[str, Any]]:
        cols = ("id", "strategy", "symbol", "time", "side", "size_usd", "price", "status", "note")
        rows = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM paper_orders WHERE account = ? ORDER BY id", (self.account,)
        )
        return [dict(zip(cols, row, strict=True)) for row in rows]

    def fills(self) -> list[dict[str, Any]]:
        cols = (
            "id",
            "order_id",
            "trade_id",
            "strategy",
            "symbol",
            "time",
            "side",
            "qty",
            "price",
            "fee",
            "action",
            "pnl",
        )
        rows = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM paper_fills WHERE account = ? ORDER BY id", (self.account,)
        )
        return [dict(zip(cols, row, strict=True)) for row in rows]

    def funding_payments(self) -> list[FundingPayment]:
        rows = self.conn.execute(
            "SELECT trade_id, time, rate, notional, amount FROM paper_funding WHERE account = ? "
            "ORDER BY time, trade_id",
            (self.account,),
        )
        return [FundingPayment(*row) for row in rows]

    # -- the Ledger a backtest reads (perpwatch.api.ledger) ----------------------------------------

    def trade_summaries(self) -> list[TradeSummary]:
        """Every position of this account, oldest first; an open one valued at its latest mark."""
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
                fees=t.entry_fee + t.exit_fee,
                funding=t.funding,
                pnl=t.pnl + t.unrealized,
                net_pnl=t.net_pnl,
                status=t.status,
            )
            for t in self.trades()
        ]

    def funding_counts(self) -> tuple[int, int]:
        """(settlements applied, settlements skipped because the rate was unknown)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(rate IS NOT NULL), 0), COALESCE(SUM(rate IS NULL), 0) FROM paper_funding "
            "WHERE account = ?",
            (self.account,),
        ).fetchone()
        return int(row[0]), int(row[1])

    # -- internals ----------------------------------------------------------------------------

    def _submit(self, strategy: str, symbol: str, intent: OrderIntent, price: float, time: int) -> list[Fill]:
        side, size = intent.side, intent.size_usd
        order = self.conn.execute(
            "INSERT INTO paper_orders (account, strategy, symbol, time, side, size_usd, price, status, note) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', '')",
            (self.account, strategy, symbol, time, side, finite_or_none(size), finite_or_none(price)),
        ).lastrowid
        assert order is not None

        def ignore(note: str) -> list[Fill]:
            self.conn.execute(
                "UPDATE paper_orders SET status = 'ignored', note = ? WHERE id = ?", (note, order)
            )
            return []

        if side not in ("long", "short", "flat"):
            return ignore(f"side {side!r} is not long, short or flat")
        if price is None or not math.isfinite(price) or price <= 0:
            return ignore(f"no usable price ({price!r})")
        trade = self.open_trade(strategy, symbol)
        if side == "flat":
            if trade is None:
                return ignore("flat: no position to close")
            fills = [self._close(trade, order, price, time)]
        else:
            if size is None or not math.isfinite(size) or size <= 0:
                return ignore(f"{side}: size_usd {size!r} is not a positive number")
            if trade is not None and trade.side == side:
                return ignore(
                    f"{side}: a {side} position is already open (signals are targets, not additions)"
                )
            fill_price = self._fill_price(side == "long", price)
            try:
                levels = exit_levels(side, fill_price, intent)
            except ExitProblem as e:
                return ignore(f"{side}: {e}; not opening without it")
            if self.leverage is not None:
                problem = self._margin_problem(size, fill_price, trade)
                if problem:
                    ignore(problem)
                    self.conn.execute("UPDATE paper_orders SET status = 'rejected' WHERE id = ?", (order,))
                    raise _Refused(problem)
                levels = replace(levels, liquidation=self._liquidation_price(side, fill_price))
            fills = [] if trade is None else [self._close(trade, order, price, time)]
            fills.append(self._open(strategy, symbol, side, size, order, price, time, levels))
        note = "; ".join(f"{f.info['action']} {f.side} {f.qty:.8g} @ {f.price:.8g}" for f in fills)
        self.conn.execute("UPDATE paper_orders SET status = 'filled', note = ? WHERE id = ?", (note, order))
        return fills

    def _fill_price(self, buy: bool, price: float) -> float:
        return price * (1 + self.slippage) if buy else price * (1 - self.slippage)

    def _margin_problem(self, size: float, fill_price: float, closing: Trade | None) -> str | None:
        """Why a position of ``size`` USD cannot open on the free margin, or None."""
        assert self.leverage is not None
        need = size / self.leverage + (size / fill_price) * fill_price * self.fee
        held = self.conn.execute(
            "SELECT COALESCE(SUM(margin), 0) FROM paper_trades WHERE account = ? AND status = 'open' AND id != ?",
            (self.account, closing.id if closing is not None else -1),
        ).fetchone()[0]
        free = self.account_equity() - float(held)
        if need <= free:
            return None
        return (
            f"insufficient free margin: {size:,.2f} USD at leverage {self.leverage:g} needs {need:,.2f} "
            f"(initial margin and fee), free {free:,.2f}"
        )

    def _liquidation_price(self, side: str, entry: float) -> float:
        assert self.leverage is not None
        if side == "long":
            return entry * (1 - 1 / self.leverage + self.mmr)
        return entry * (1 + 1 / self.leverage - self.mmr)

    def _open(
        self,
        strategy: str,
        symbol: str,
        side: str,
        size: float,
        order: int,
        price: float,
        time: int,
        levels: Levels | None = None,
    ) -> Fill:
        buy = side == "long"
        qty = size / price
        fill_price = self._fill_price(buy, price)
        fee = qty * fill_price * self.fee
        lv = levels or Levels(side=side)
        margin = size / self.leverage if self.leverage is not None else None
        trade_id = self.conn.execute(
            "INSERT INTO paper_trades (account, strategy, symbol, side, qty, size_usd, entry_time, entry_price, "
            "entry_fee, mark_price, funded_to, status, stop_price, take_price, trail, best_price, liq_price, "
            "margin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?)",
            (
                *(self.account, strategy, symbol, side, qty, size, time, fill_price, fee, price, time),
                *(lv.stop, lv.take, lv.trail, lv.best if lv.active else None, lv.liquidation, margin),
            ),
        ).lastrowid
        assert trade_id is not None
        self._cash(-fee)
        return self._fill(order, trade_id, strategy, symbol, time, buy, qty, fill_price, fee, "open", 0.0)

    def _close(self, trade: Trade, order: int, price: float, time: int, reason: str = "signal") -> Fill:
        buy = trade.side == "short"
        fill_price = self._fill_price(buy, price)
        fee = trade.qty * fill_price * self.fee
        pnl = trade.sign * (fill_price - trade.entry_price) * trade.qty
        self.conn.execute(
            "UPDATE paper_trades SET status = 'closed', exit_time = ?, exit_price = ?, exit_fee = ?, pnl = ?, "
            "mark_price = ?, exit_reason = ? WHERE id = ?",
            (time, fill_price, fee, pnl, fill_price, reason, trade.id),
        )
        self._cash(pnl - fee)
        fill = self._fill(
            order, trade.id, trade.strategy, trade.symbol, time, buy, trade.qty, fill_price, fee, "close", pnl
        )
        fill.info["reason"] = reason
        return fill

    def _fill(
        self,
        order: int,
        trade_id: int,
        strategy: str,
        symbol: str,
        time: int,
        buy: bool,
        qty: float,
        price: float,
        fee: float,
        action: str,
        pnl: float,
    ) -> Fill:
        side = "buy" if buy else "sell"
        self.conn.execute(
            "INSERT INTO paper_fills (order_id, trade_id, account, strategy, symbol, time, side, qty, price, fee, "
            "action, pnl) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order, trade_id, self.account, strategy, symbol, time, side, qty, price, fee, action, pnl),
        )
        info = {"action": action, "pnl": pnl, "order_id": order, "trade_id": trade_id, "strategy": strategy}
        return Fill(symbol=symbol, side=side, qty=qty, price=price, fee_usd=fee, time=time, info=info)

    def _cash(self, amount: float) -> None:
        self.conn.execute(
            "UPDATE paper_accounts SET balance = balance + ? WHERE account = ?", (amount, self.account)
        )

    def _settle(
        self, trade: Trade, price: float | None, rate: float | None, until: int
    ) -> list[FundingPayment]:
        step = self.funding_ms
        first = (trade.funded_to // step + 1) * step  # the first settlement after funded_to
        if first > until:
            return []
        mark = price if price is not None and math.isfinite(price) and price > 0 else trade.mark_price
        known = rate is not None and math.isfinite(rate)
        payments = []
        for t in range(first, until + 1, step):
            notional = trade.qty * mark
            amount = -trade.sign * notional * rate / 100 if rate is not None and known else 0.0
            payments.append(FundingPayment(trade.id, t, rate if known else None, notional, amount))
        self.conn.executemany(
            "INSERT INTO paper_funding (trade_id, time, account, strategy, symbol, rate, notional, amount) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trade_id, time) DO NOTHING",
            [
                (p.trade_id, p.time, self.account, trade.strategy, trade.symbol, p.rate, p.notional, p.amount)
                for p in payments
            ],
        )
        total = sum(p.amount for p in payments)
        self.conn.execute(
            "UPDATE paper_trades SET funding = funding + ?, funded_to = ? WHERE id = ?",
            (total, until, trade.id),
        )
        self._cash(total)
        return payments


@hookimpl
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    register(PaperExecutor)


__all__ = ["FundingPayment", "PaperExecutor", "Trade"]
