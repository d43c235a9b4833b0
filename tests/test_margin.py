"""The paper account's margin model (issue 15 #4): leverage, initial and maintenance margin, a
liquidation price per position, liquidation when a bar crosses it, and no new position without
free margin. Off unless ``leverage`` is set (today's results unchanged)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import H, write_csv

from perpwatch.api.interfaces import ExecutorError, PluginContext
from perpwatch.backtest.history import load_history, symbols_for
from perpwatch.backtest.result import BacktestOptions
from perpwatch.backtest.walk import run_backtest
from perpwatch.evaluation.events import ExitDistance, OrderIntent
from perpwatch.language.compiler import load_strategy
from perpwatch.plugins.paper import PaperExecutor

T0 = 1_704_067_200_000
STEP = 4 * H
NO_COSTS = {"fee_bps": 0, "slippage_bps": 0}


def paper(**options) -> PaperExecutor:
    return PaperExecutor({**NO_COSTS, **options})


def submit(p: PaperExecutor, intent: OrderIntent, price: float = 100.0, time: int = T0):
    return asyncio.run(p.submit("s", "BTC", intent, price, time))


def check(p: PaperExecutor, bar: tuple[float, float, float, float], time: int = T0 + STEP):
    return asyncio.run(p.check_exits("s", "BTC", time, bar, time))


def test_without_leverage_nothing_changes():
    p = paper(balance_usd=100)
    (fill,) = submit(p, OrderIntent("long", 50_000))  # 500 x the balance: no margin model, no limit
    t = p.open_trade("s", "BTC")
    assert t is not None and (t.liq_price, t.margin) == (None, None)
    assert check(p, (100, 100, 1, 2)) == []  # no liquidation either
    assert fill.qty == 500


def test_liquidation_prices_long_and_short():
    p = paper(leverage=10, maintenance_margin_pct=0.5)
    submit(p, OrderIntent("long", 1000))
    t = p.open_trade("s", "BTC")
    assert t is not None
    assert t.margin == pytest.approx(100.0)
    assert t.liq_price == pytest.approx(100 * (1 - 0.1 + 0.005))
    q = PaperExecutor({**NO_COSTS, "leverage": 4, "account": "b"}, p.ctx)
    asyncio.run(q.submit("s", "ETH", OrderIntent("short", 1000), 200.0, T0))
    u = q.open_trade("s", "ETH")
    assert u is not None and u.liq_price == pytest.approx(200 * (1 + 0.25 - 0.005))


def test_a_bar_crossing_the_liquidation_price_liquidates_and_is_recorded():
    p = paper(leverage=10, balance_usd=1000)
    submit(p, OrderIntent("long", 1000))
    assert check(p, (99, 99.5, 90.6, 91)) == []  # above 90.5
    (fill,) = check(p, (95, 96, 90, 91))
    assert (fill.info["reason"], fill.price) == ("liquidation", pytest.approx(90.5))
    t = p.trades()[0]
    assert (t.status, t.exit_reason) == ("closed", "liquidation")
    assert p.balance() == pytest.approx(1000 - 10 * 9.5)  # qty 10 lost 9.5 each: margin less maintenance
    order = p.orders()[-1]
    assert order["status"] == "filled" and order["note"].startswith("liquidation: level 90.5")


def test_a_gap_through_the_liquidation_price_fills_at_the_open():
    p = paper(leverage=10)
    submit(p, OrderIntent("short", 1000))
    (fill,) = check(p, (115, 116, 114, 115))
    assert (fill.info["reason"], fill.price) == ("liquidation", 115.0)


def test_a_protective_stop_before_the_liquidation_price_is_taken_first():
    p = paper(leverage=10)
    submit(p, OrderIntent("long", 1000, ExitDistance("pct", 5)))
    (fill,) = check(p, (100, 100, 80, 85))
    assert (fill.info["reason"], fill.price) == ("stop_loss", 95.0)
    p2 = PaperExecutor({**NO_COSTS, "leverage": 20, "account": "wide"}, p.ctx)
    asyncio.run(p2.submit("s", "BTC", OrderIntent("long", 1000, ExitDistance("pct", 10)), 100.0, T0))
    (fill,) = asyncio.run(p2.check_exits("s", "BTC", T0 + STEP, (100, 100, 80, 85), T0 + STEP))
    assert fill.info["reason"] == "liquidation"  # at 95.5, before the 10% stop


def test_no_new_position_without_free_margin():
    p = paper(leverage=5, balance_usd=1000, fee_bps=10)
    submit(p, OrderIntent("long", 4000))  # 800 margin + 4 fee
    with pytest.raises(
        ExecutorError, match=r"insufficient free margin: 1,000.00 USD at leverage 5 needs 201.00"
    ):
        asyncio.run(p.submit("s", "ETH", OrderIntent("long", 1000), 10.0, T0))
    assert p.orders()[-1]["status"] == "rejected"
    assert p.open_count() == 1
    # a reversal frees the margin of the position it closes
    (close, open_) = submit(p, OrderIntent("short", 4000))
    assert (close.info["action"], open_.info["action"]) == ("close", "open")


def test_maintenance_at_or_above_the_initial_margin_is_refused():
    with pytest.raises(ValueError, match=r"maintenance_margin_pct 10 must be below 100 / leverage \(10\)"):
        paper(leverage=10, maintenance_margin_pct=10)


def test_the_backtest_liquidates_and_refuses_entries_for_want_of_margin(tmp_path: Path):
    text = (
        "version: 1\nname: lev\ninterval: 4h\nexecute: paper\nnotify: []\nrules:\n"
        "  - name: enter\n    when: oi.close == 1\n    signal: {side: long, size_usd: 5000}\n"
    )
    (tmp_path / "lev.yaml").write_text(text)
    data = tmp_path / "data"
    data.mkdir()
    bars = [
        (100, 100, 100, 100),
        (100, 100, 100, 100),
        (100, 101, 99, 100),
        (99, 99, 85, 88),
        (88, 88, 88, 88),
    ]
    write_csv(
        data / "BTC_4h.csv",
        {
            "price.open": [b[0] for b in bars],
            "price.high": [b[1] for b in bars],
            "price.low": [b[2] for b in bars],
            "price.close": [b[3] for b in bars],
            "oi.close": [0, 1, 1, 0, 1],
        },
        T0,
        STEP,
    )
    s = load_strategy(str(tmp_path / "lev.yaml"))
    history = load_history([str(data)], s.interval, None)

    def run(**executor_options):
        opts = BacktestOptions(balance_usd=1000, fee_bps=0, slippage_bps=0, executor_options=executor_options)
        return run_backtest([s], history, symbols_for([s], history, None), opts)

    plain = run()
    assert [t.exit_reason for t in plain.trades] == [None]  # no margin model: still open, deep in loss
    r = run(leverage=10)
    (t,) = r.trades
    assert (t.exit_reason, t.exit_price, t.exit_time) == ("liquidation", pytest.approx(90.5), T0 + 3 * STEP)
    (liq,) = [e for e in r.trading if e.rule == "exit:liquidation"]
    assert liq.kind == "order" and liq.severity == "high"
    assert r.stats["exits_liquidation"] == 1
    assert any(a.startswith("Margin: leverage 10, isolated per position") for a in r.assumptions)
    assert any(a.startswith("No margin model") for a in plain.assumptions)
    r = run(leverage=2)  # 5000 at 2x needs 2500 of margin; the account has 1000
    assert r.trades == []
    rej = [e for e in r.trading if e.kind == "rejected"]
    assert rej[0].time == T0 + STEP
    assert rej[0].message == (
        "executor refused the order: insufficient free margin: 5,000.00 USD at leverage 2 needs "
        "2,500.00 (initial margin and fee), free 1,000.00"
    )


def test_an_account_from_before_exits_and_margin_gets_their_columns(tmp_path: Path):
    import sqlite3

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE paper_trades (
            id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, strategy TEXT NOT NULL,
            symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL, size_usd REAL NOT NULL,
            entry_time INTEGER NOT NULL, entry_price REAL NOT NULL, entry_fee REAL NOT NULL,
            exit_time INTEGER, exit_price REAL, exit_fee REAL NOT NULL DEFAULT 0,
            funding REAL NOT NULL DEFAULT 0, pnl REAL NOT NULL DEFAULT 0,
            mark_price REAL NOT NULL, funded_to INTEGER NOT NULL, status TEXT NOT NULL
        );
        INSERT INTO paper_trades (account, strategy, symbol, side, qty, size_usd, entry_time, entry_price,
            entry_fee, mark_price, funded_to, status)
        VALUES ('paper', 's', 'BTC', 'long', 1, 100, 0, 100, 0, 100, 0, 'open');
        """
    )
    conn.commit()
    conn.close()
    p2 = PaperExecutor({"leverage": 5}, PluginContext(state_path=str(db)))
    (t,) = p2.trades()
    assert (t.status, t.stop_price, t.liq_price, t.margin, t.exit_reason) == ("open", None, None, None, None)
    assert check_with(p2, (100, 100, 1, 2)) == []  # no levels: a position from before is never liquidated
    submit(p2, OrderIntent("flat", None))
    assert p2.trades()[0].exit_reason == "signal"


def check_with(p: PaperExecutor, bar: tuple[float, float, float, float]):
    return asyncio.run(p.check_exits("s", "BTC", T0, bar, T0))


def test_bars_are_judged_only_where_something_can_close_a_position(tmp_path: Path, monkeypatch):
    """Without protective exits and without leverage nothing can close a position between signals:
    the trading layer does not ask the paper account to judge bars at all (backtests pay nothing)."""
    calls = []
    judge = PaperExecutor.check_exits

    async def counted(self, *args):
        calls.append(args)
        return await judge(self, *args)

    monkeypatch.setattr(PaperExecutor, "check_exits", counted)
    text = (
        "version: 1\nname: lev\ninterval: 4h\nexecute: paper\nnotify: []\nrules:\n"
        "  - name: enter\n    when: oi.close == 1\n    signal: {side: long, size_usd: 100}\n"
    )
    (tmp_path / "lev.yaml").write_text(text)
    data = tmp_path / "data"
    data.mkdir()
    write_csv(
        data / "BTC_4h.csv",
        {"price.open": [100.0] * 6, "price.close": [100.0] * 6, "oi.close": [1.0] * 6},
        T0,
        STEP,
    )
    s = load_strategy(str(tmp_path / "lev.yaml"))
    history = load_history([str(data)], s.interval, None)
    for options, judged in (({}, False), ({"leverage": 3}, True)):
        calls.clear()
        opts = BacktestOptions(engine="walk", executor_options=options)
        r = run_backtest([s], history, symbols_for([s], history, None), opts)
        assert len(r.trades) == 1 and bool(calls) is judged
