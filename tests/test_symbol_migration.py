"""State written before symbols were upper-cased (schema 1, ``btc``) is carried over to ``BTC``
when a newer perpwatch opens it, so an old lower-case position or rule state can never stand
beside a new upper-case one (issue 12, item 4); one coin stored under both spellings is refused."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from perpwatch.api.interfaces import ExecutorError, PluginContext
from perpwatch.live.state import StateError, StateStore
from perpwatch.plugins.paper import PaperExecutor


def old_database(path: Path, *rows: tuple[str, str, str]) -> None:
    """A schema-1 database with rule states and a mute under the symbols given."""
    StateStore(str(path)).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        for strategy, rule, symbol in rows:
            conn.execute(
                "INSERT INTO rule_state (strategy, rule, symbol, status, state, updated_at) "
                "VALUES (?, ?, ?, 'firing', '{}', 0)",
                (strategy, rule, symbol),
            )
        conn.execute("INSERT INTO mutes (target, symbol, until) VALUES ('s', 'eth', 9e9)")
    conn.close()


def table(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_lower_case_rule_states_and_mutes_become_upper_case(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old_database(db, ("s", "r", "btc"), ("s", "r", "ETH"))
    StateStore(str(db)).close()
    assert table(db, "SELECT symbol FROM rule_state ORDER BY symbol") == [("BTC",), ("ETH",)]
    assert table(db, "SELECT symbol FROM mutes") == [("ETH",)]
    assert table(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]


def test_one_coin_under_two_spellings_is_refused_naming_them(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old_database(db, ("s", "r", "btc"), ("s", "r", "BTC"))
    with pytest.raises(StateError) as info:
        StateStore(str(db))
    assert "s/r: 'btc' and 'BTC'" in str(info.value)
    assert "DELETE FROM rule_state" in str(info.value)
    assert table(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]  # nothing changed


def open_trade(store: StateStore, symbol: str) -> None:
    store.conn.execute(
        "INSERT INTO paper_trades (account, strategy, symbol, side, qty, size_usd, entry_time, entry_price, "
        "entry_fee, mark_price, funded_to, status) VALUES ('paper', 's', ?, 'long', 1, 100, 0, 100, 0.05, 100, 0, 'open')",
        (symbol,),
    )


def test_a_lower_case_paper_position_is_carried_over(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "p.db"))
    PaperExecutor({}, PluginContext(store=store))
    open_trade(store, "btc")
    paper = PaperExecutor({}, PluginContext(store=store))
    assert [(p.symbol, p.side) for p in asyncio.run(paper.positions())] == [("BTC", "long")]
    store.close()


def test_two_open_paper_positions_on_one_coin_are_refused(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "p.db"))
    PaperExecutor({}, PluginContext(store=store))
    open_trade(store, "btc")
    open_trade(store, "BTC")
    with pytest.raises(ExecutorError) as info:
        PaperExecutor({}, PluginContext(store=store))
    assert "two open positions on one coin (s: 'btc' and 'BTC')" in str(info.value)
    store.close()
