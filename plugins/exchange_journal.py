"""The ``exchange`` executor's journal: every order it sends and every position it holds, in a SQLite
file next to the state database (``<state>.exchange.sqlite``), committed *before* each request.

Why not the state database itself: the runner writes it in one transaction per cycle, which a crash
rolls back, while an order sent during that cycle stays on the exchange. The journal is written in
autocommit mode from its own connection, so "this client order id is being sent" survives the
crash and the order is looked up by that id after a restart, never sent a second time.

Tables (``account`` keeps several exchange accounts apart in one file):

``ex_orders(cid PK, account, strategy, symbol, event_key, leg, side, qty, price, reduce_only,
exits_json, status, exchange_id, filled, avg_price, fee, note, position_id, created_at, updated_at)``
    ``status``: ``sending`` (written before the request; unknown until looked up), ``open``,
    ``filled``, ``partial`` (part filled, the rest cancelled or expired), ``canceled``, ``expired``,
    ``rejected`` (the exchange said no: ``note`` says why), ``lost`` (looked up after an unknown
    outcome and not found: it never reached the exchange), ``dry_run``.
``ex_positions(id PK, account, strategy, symbol, side, qty, entry_price, opened, entry_cid, stop,
take, trail_pct, mark, realized, fees, status, exit_price, closed, reason)``
    What perpwatch holds; at most one open per (account, strategy, symbol); ``stop``/``take``
    prices and ``trail_pct`` are the protective exits to keep on the exchange.
``ex_setup(account, symbol, leverage, margin_mode)``
    Leverage and margin mode already set for a symbol (set once, before its first order).
``ex_meta(account, name, value)``
    ``errors``: consecutive exchange errors; ``backoff_until``: epoch seconds a 429/418 asked to wait.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ex_orders (
    cid TEXT PRIMARY KEY, account TEXT NOT NULL, strategy TEXT NOT NULL, symbol TEXT NOT NULL,
    event_key TEXT NOT NULL, leg TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL, price REAL,
    reduce_only INTEGER NOT NULL, exits_json TEXT, status TEXT NOT NULL, exchange_id TEXT,
    filled REAL NOT NULL DEFAULT 0, avg_price REAL, fee REAL, note TEXT NOT NULL DEFAULT '',
    position_id INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ex_orders_status ON ex_orders (account, status);
CREATE TABLE IF NOT EXISTS ex_positions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, strategy TEXT NOT NULL,
    symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL, entry_price REAL NOT NULL,
    opened INTEGER NOT NULL, entry_cid TEXT NOT NULL, stop REAL, take REAL, trail_pct REAL,
    mark REAL, realized REAL NOT NULL DEFAULT 0, fees REAL NOT NULL DEFAULT 0,
    status TEXT NOT NULL, exit_price REAL, closed INTEGER, reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS ex_one_open ON ex_positions (account, strategy, symbol) WHERE status = 'open';
CREATE TABLE IF NOT EXISTS ex_setup (
    account TEXT NOT NULL, symbol TEXT NOT NULL, leverage INTEGER NOT NULL, margin_mode TEXT NOT NULL,
    PRIMARY KEY (account, symbol)
);
CREATE TABLE IF NOT EXISTS ex_meta (
    account TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (account, name)
);
"""

FINAL = ("filled", "partial", "canceled", "expired", "rejected", "lost", "dry_run")

_ORDER_COLS = (
    "cid, strategy, symbol, event_key, leg, side, qty, price, reduce_only, exits_json, status, "
    "exchange_id, filled, avg_price, fee, note, position_id"
)
_POS_COLS = (
    "id, strategy, symbol, side, qty, entry_price, opened, entry_cid, stop, take, trail_pct, mark, "
    "realized, fees, status, exit_price, closed, reason"
)


@dataclass
class OrderRow:
    cid: str
    strategy: str
    symbol: str
    event_key: str
    leg: str
    side: str  # buy | sell
    qty: str  # rounded, as sent
    price: float | None  # the reference price (market) or the limit
    reduce_only: int
    exits_json: str | None
    status: str
    exchange_id: str | None
    filled: float
    avg_price: float | None
    fee: float | None
    note: str
    position_id: int | None

    @property
    def exits(self) -> dict[str, Any]:
        return json.loads(self.exits_json) if self.exits_json else {}


@dataclass
class PositionRow:
    id: int
    strategy: str
    symbol: str
    side: str  # long | short
    qty: float
    entry_price: float
    opened: int
    entry_cid: str
    stop: float | None
    take: float | None
    trail_pct: float | None
    mark: float | None
    realized: float
    fees: float
    status: str
    exit_price: float | None
    closed: int | None
    reason: str | None

    @property
    def sign(self) -> int:
        return 1 if self.side == "long" else -1


class Journal:
    """The journal of one account (see the module doc); every write commits at once."""

    def __init__(self, path: str, account: str):
        import sqlite3  # here: loading the plugin (perpwatch validate, plugins) must not import it

        self.path = path
        self.account = account
        self.conn: sqlite3.Connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    def close(self) -> None:
        self.conn.close()

    # -- orders -------------------------------------------------------------------------------------

    def order(self, cid: str) -> OrderRow | None:
        row = self.conn.execute(
            f"SELECT {_ORDER_COLS} FROM ex_orders WHERE cid = ? AND account = ?", (cid, self.account)
        ).fetchone()
        return OrderRow(*row) if row else None

    def orders(self, status: str | None = None) -> list[OrderRow]:
        sql, args = f"SELECT {_ORDER_COLS} FROM ex_orders WHERE account = ?", [self.account]
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        return [OrderRow(*r) for r in self.conn.execute(sql + " ORDER BY created_at, cid", args)]

    def sending(
        self,
        cid: str,
        *,
        strategy: str,
        symbol: str,
        event_key: str,
        leg: str,
        side: str,
        qty: str,
        price: float | None,
        reduce_only: bool,
        exits: dict[str, Any] | None = None,
        position_id: int | None = None,
        status: str = "sending",
    ) -> None:
        """Record that ``cid`` is about to be sent (committed before the request goes out); a row that
        was ``lost`` (never reached the exchange) is reused."""
        now = time.time()
        self.conn.execute(
            "INSERT INTO ex_orders (cid, account, strategy, symbol, event_key, leg, side, qty, price, "
            "reduce_only, exits_json, status, position_id, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cid) DO UPDATE SET "
            "status = excluded.status, qty = excluded.qty, price = excluded.price, note = '', "
            "updated_at = excluded.updated_at WHERE ex_orders.status = 'lost'",
            (
                cid,
                self.account,
                strategy,
                symbol,
                event_key,
                leg,
                side,
                qty,
                price,
                int(reduce_only),
                json.dumps(exits) if exits else None,
                status,
                position_id,
                now,
                now,
            ),
        )

    def settle(
        self,
        cid: str,
        status: str,
        *,
        exchange_id: str | None = None,
        filled: float | None = None,
        avg_price: float | None = None,
        fee: float | None = None,
        note: str | None = None,
        position_id: int | None = None,
    ) -> None:
        """The order's outcome (values left None keep what is recorded)."""
        self.conn.execute(
            "UPDATE ex_orders SET status = ?, exchange_id = COALESCE(?, exchange_id), "
            "filled = COALESCE(?, filled), avg_price = COALESCE(?, avg_price), fee = COALESCE(?, fee), "
            "note = COALESCE(?, note), position_id = COALESCE(?, position_id), updated_at = ? "
            "WHERE cid = ? AND account = ?",
            (status, exchange_id, filled, avg_price, fee, note, position_id, time.time(), cid, self.account),
        )

    # -- positions ----------------------------------------------------------------------------------

    def open_position(self, strategy: str, symbol: str) -> PositionRow | None:
        row = self.conn.execute(
            f"SELECT {_POS_COLS} FROM ex_positions WHERE account = ? AND strategy = ? AND symbol = ? "
            "AND status = 'open'",
            (self.account, strategy, symbol),
        ).fetchone()
        return PositionRow(*row) if row else None

    def positions(self, status: str | None = "open", strategy: str | None = None) -> list[PositionRow]:
        sql, args = f"SELECT {_POS_COLS} FROM ex_positions WHERE account = ?", [self.account]
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        if strategy is not None:
            sql, args = sql + " AND strategy = ?", [*args, strategy]
        return [PositionRow(*r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def position(self, position_id: int) -> PositionRow | None:
        row = self.conn.execute(
            f"SELECT {_POS_COLS} FROM ex_positions WHERE id = ?", (position_id,)
        ).fetchone()
        return PositionRow(*row) if row else None

    def open(
        self,
        *,
        strategy: str,
        symbol: str,
        side: str,
        qty: float,
        entry_price: float,
        opened: int,
        entry_cid: str,
        fee: float,
        stop: float | None,
        take: float | None,
        trail_pct: float | None,
    ) -> int:
        """A position the entry ``entry_cid`` opened; its order is marked with it in the same
        transaction (so a restart finds either both or neither)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            pid = self.conn.execute(
                "INSERT INTO ex_positions (account, strategy, symbol, side, qty, entry_price, opened, "
                "entry_cid, stop, take, trail_pct, mark, fees, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')",
                (
                    self.account,
                    strategy,
                    symbol,
                    side,
                    qty,
                    entry_price,
                    opened,
                    entry_cid,
                    stop,
                    take,
                    trail_pct,
                    entry_price,
                    fee,
                ),
            ).lastrowid
            self.conn.execute(
                "UPDATE ex_orders SET position_id = ? WHERE cid = ? AND account = ?",
                (pid, entry_cid, self.account),
            )
        assert pid is not None
        return int(pid)

    def reduce(self, pid: int, qty: float, price: float, fee: float, time_ms: int, reason: str) -> float:
        """``qty`` of the position closed at ``price``: its realised PnL; closed when nothing is left."""
        pos = self.position(pid)
        assert pos is not None
        closed_qty = min(qty, pos.qty)
        pnl = pos.sign * (price - pos.entry_price) * closed_qty
        left = pos.qty - closed_qty
        done = left <= pos.qty * 1e-9
        self.conn.execute(
            "UPDATE ex_positions SET qty = ?, realized = realized + ?, fees = fees + ?, status = ?, "
            "exit_price = ?, closed = ?, reason = ? WHERE id = ?",
            (
                0.0 if done else left,
                pnl,
                fee,
                "closed" if done else "open",
                price,
                time_ms if done else None,
                reason if done else None,
                pid,
            ),
        )
        return pnl

    def mark(self, strategy: str, symbol: str, price: float) -> None:
        self.conn.execute(
            "UPDATE ex_positions SET mark = ? WHERE account = ? AND strategy = ? AND symbol = ? "
            "AND status = 'open'",
            (price, self.account, strategy, symbol),
        )

    def strategy_pnl(self, strategy: str) -> float:
        row = self.conn.execute(
            "SELECT COALESCE(SUM(realized - fees + CASE status WHEN 'open' THEN "
            "CASE side WHEN 'long' THEN 1 ELSE -1 END * (COALESCE(mark, entry_price) - entry_price) * qty "
            "ELSE 0 END), 0) FROM ex_positions WHERE account = ? AND strategy = ?",
            (self.account, strategy),
        ).fetchone()
        return float(row[0])

    # -- setup and meta -----------------------------------------------------------------------------

    def setup_done(self, symbol: str, leverage: int, margin_mode: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM ex_setup WHERE account = ? AND symbol = ? AND leverage = ? AND margin_mode = ?",
            (self.account, symbol, leverage, margin_mode),
        ).fetchone()
        return row is not None

    def note_setup(self, symbol: str, leverage: int, margin_mode: str) -> None:
        self.conn.execute(
            "INSERT INTO ex_setup (account, symbol, leverage, margin_mode) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (account, symbol) DO UPDATE SET leverage = excluded.leverage, "
            "margin_mode = excluded.margin_mode",
            (self.account, symbol, leverage, margin_mode),
        )

    def get(self, name: str) -> str | None:
        row = self.conn.execute(
            "SELECT value FROM ex_meta WHERE account = ? AND name = ?", (self.account, name)
        ).fetchone()
        return row[0] if row else None

    def put(self, name: str, value: str | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM ex_meta WHERE account = ? AND name = ?", (self.account, name))
        else:
            self.conn.execute(
                "INSERT INTO ex_meta (account, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (account, name) DO UPDATE SET value = excluded.value",
                (self.account, name, value),
            )


def journal_path(state_path: str | None) -> str:
    """The journal next to the state database (``:memory:`` for an in-memory one)."""
    if not state_path or state_path == ":memory:":
        return ":memory:"
    return f"{state_path}.exchange.sqlite"


__all__ = ["FINAL", "Journal", "OrderRow", "PositionRow", "journal_path"]
