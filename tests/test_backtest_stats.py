"""The backtest's statistics (``backtest/stats.py``) on small results built by hand, the bust cut-off,
and the text and JSON reports that show them; then one run on real data for sanity.

Every expectation below is written out from the numbers in the test, not from the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import COINGLASS_REPORT, ROOT

from perpwatch.backtest.history import History, load_history, symbols_for
from perpwatch.backtest.report import format_text, to_json
from perpwatch.backtest.result import BacktestOptions, BacktestResult, TradeRecord
from perpwatch.backtest.stats import assumptions, compute_stats, per_symbol
from perpwatch.backtest.walk import run_backtest
from perpwatch.common.timeutil import DAY, HOUR
from perpwatch.evaluation.frame import Frame
from perpwatch.language.compiler import load_strategy

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z


def trade(
    symbol: str, net: float, entry_day: int, held_days: float | None, strategy: str = "s"
) -> TradeRecord:
    """A trade of ``net`` USD (no fees or funding) entered on day ``entry_day``; open when ``held_days`` is None."""
    entry = T0 + entry_day * DAY
    exit_ = None if held_days is None else entry + int(held_days * DAY)
    return TradeRecord(
        strategy=strategy,
        symbol=symbol,
        side="long",
        size_usd=100.0,
        qty=1.0,
        entry_time=entry,
        entry_price=100.0,
        exit_time=exit_,
        exit_price=None if exit_ is None else 100.0 + net,
        fees=0.0,
        funding=0.0,
        pnl=net,
        net_pnl=net,
        status="open" if exit_ is None else "closed",
    )


def result(
    equity: list[float],
    trades: list[TradeRecord] | None = None,
    closes: dict[str, list[float]] | None = None,
    step: int = DAY,
    balance: float = 1000.0,
) -> BacktestResult:
    """A result of daily bars from T0: ``equity`` after each bar (the start is ``balance``)."""
    n = len(equity)
    closes = closes or {"BTC": [100.0] * n}
    r = BacktestResult(
        strategies=[],
        symbols={"s": list(closes)},
        history=History({}, "1d", "hand-made"),
        options=BacktestOptions(balance_usd=balance),
        step_ms=step,
        times=T0 + step * np.arange(n, dtype=np.int64),
        equity=np.asarray(equity, dtype=float),
        exposed=np.ones(n, dtype=bool),
        closes={sym: np.asarray(c, dtype=float) for sym, c in closes.items()},
        events=[],
        trading=[],
        trades=trades or [],
        funding_settlements=0,
        funding_skipped=0,
    )
    r.stats = compute_stats(r)
    r.assumptions = assumptions(r)
    return r


def figure(text: str, label: str) -> str:
    """The value of the Performance table's row ``label`` in the text report."""
    (line,) = [x for x in text.splitlines() if x.startswith(f"  {label}  ")]
    return line[len(label) + 2 :].strip()


def iso(day: int) -> str:
    return f"2024-01-{day + 1:02d}T00:00:00Z"


def test_every_figure_by_hand():
    trades = [
        trade("BTC", 50.0, 0, 2),  # +50 over 48 h
        trade("BTC", -10.0, 1, 1),  # -10 over 24 h
        trade("ETH", -30.0, 2, 3),  # -30 over 72 h: the largest loss, trade #3
        trade("ETH", 5.0, 3, None),  # open: not in the trade statistics
    ]
    closes = {"BTC": [100.0, 110.0, 99.0, 121.0], "ETH": [10.0, math.nan, 12.0, 15.0]}
    r = result([1100.0, 990.0, 1210.0, 1100.0], trades, closes)
    s = r.stats
    # the curve: 1000, 1100, 990, 1210, 1100 at the start and each day's close
    rets = [0.1, -0.1, 1210 / 990 - 1, 1100 / 1210 - 1]
    mean = sum(rets) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in rets) / 3)
    downside = math.sqrt(sum(min(x, 0) ** 2 for x in rets) / 4)
    assert s["sharpe"] == pytest.approx(mean / sd * math.sqrt(365))
    assert s["sortino"] == pytest.approx(mean / downside * math.sqrt(365))
    assert s["volatility_pct"] == pytest.approx(sd * math.sqrt(365) * 100)
    # the deepest fall: 1100 (day 1's start, the close of day 0) to 990, 10 %
    assert (s["max_drawdown_pct"], s["max_drawdown_usd"]) == (pytest.approx(10.0), pytest.approx(110.0))
    assert (s["max_drawdown_start"], s["max_drawdown_end"]) == (iso(1), iso(2))
    cagr = 1.1 ** (365 / 4) - 1  # +10 % in four days, compounded over a 365-day year
    assert s["cagr_pct"] == pytest.approx(cagr * 100)
    assert s["calmar"] == pytest.approx(cagr / 0.10)
    assert s["profit_factor"] == pytest.approx(50 / 40)
    assert (s["largest_loss_usd"], s["largest_loss_trade"]) == (-30.0, 3)
    assert s["avg_trade_duration_hours"] == pytest.approx((48 + 24 + 72) / 3)
    assert s["win_rate_pct"] == pytest.approx(100 / 3)
    assert s["bust_time"] is None and s["returns_until"] == iso(4)
    # per symbol: first to last known close; an equal share (500 USD) held; the trades' net PnL
    btc, eth = per_symbol(r)
    assert btc == {
        "symbol": "BTC",
        "first_close": 100.0,
        "last_close": 121.0,
        "hold_return_pct": pytest.approx(21.0),
        "hold_pnl_usd": pytest.approx(105.0),
        "trades": 2,
        "net_pnl_usd": 40.0,
    }
    assert (eth["hold_return_pct"], eth["hold_pnl_usd"]) == (pytest.approx(50.0), pytest.approx(250.0))
    assert (eth["trades"], eth["net_pnl_usd"]) == (2, -25.0)


def test_the_text_and_json_reports_show_the_new_figures():
    trades = [trade("BTC", 50.0, 0, 2), trade("BTC", -10.0, 1, 1), trade("BTC", -30.0, 2, 3)]
    r = result([1100.0, 990.0, 1210.0, 1100.0], trades, {"BTC": [100.0, 110.0, 99.0, 121.0]})
    text = format_text(r)
    assert figure(text, "profit factor (gross profit / gross loss)") == "1.25"
    assert figure(text, "largest single loss") == "-30.00 USD: trade #3, s BTC long, entered 2024-01-03 00:00"
    assert figure(text, "average trade duration (closed trades)") == "48.0 h (2.0 days)"
    assert figure(text, "CAGR") == f"{(1.1 ** (365 / 4) - 1) * 100:+.2f} %"
    assert figure(text, "Calmar (CAGR / max drawdown)") == f"{(1.1 ** (365 / 4) - 1) / 0.1:.2f}"
    assert figure(text, "volatility (annualised)").endswith(" %")
    # per symbol: first and last close, hold %, hold USD (the whole balance: one symbol), trades, net PnL
    assert "Buy and hold per symbol (same bars)" in text
    assert figure(text, "BTC").split() == ["100.00", "121.00", "+21.00", "+210.00", "3", "+10.00"]
    assert "bust" not in text.lower()
    doc = json.loads(json.dumps(to_json(r), allow_nan=False))
    assert doc["bust"] is None and doc["stats"]["profit_factor"] == pytest.approx(1.25)
    assert doc["per_symbol"][0]["hold_return_pct"] == pytest.approx(21.0)


def test_after_a_bust_returns_stop_and_the_drawdown_is_at_most_100_percent():
    # 1000 -> 1200 -> 600 -> -200 (bust at the close of day 2) -> -500 -> 100
    r = result([1200.0, 600.0, -200.0, -500.0, 100.0])
    s = r.stats
    rets = [0.2, -0.5, -200 / 600 - 1]  # up to the bust point; after it, the denominators are <= 0
    mean = sum(rets) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in rets) / 2)
    assert s["sharpe"] == pytest.approx(mean / sd * math.sqrt(365)) and s["sharpe"] < 0
    downside = math.sqrt(sum(min(x, 0) ** 2 for x in rets) / 3)
    assert s["sortino"] == pytest.approx(mean / downside * math.sqrt(365))
    assert s["volatility_pct"] == pytest.approx(sd * math.sqrt(365) * 100)
    assert s["bust_time"] == iso(3) and s["returns_until"] == iso(3)
    assert (s["max_drawdown_pct"], s["max_drawdown_usd"]) == (100.0, 1200.0)
    assert (s["max_drawdown_start"], s["max_drawdown_end"]) == (iso(1), iso(3))
    assert (s["cagr_pct"], s["calmar"]) == (-100.0, -1.0)
    assert s["final_equity_usd"] == 100.0 and s["net_pnl_usd"] == -900.0  # the account as it ended
    text = format_text(r)
    assert "*** bust at 2024-01-04 00:00 UTC: equity reached 0 or below" in text
    assert figure(text, "Sharpe (annualised, up to the bust 2024-01-04 00:00)") == f"{s['sharpe']:.2f}"
    assert (
        figure(text, "BUST")
        == "at 2024-01-04 00:00 UTC: equity reached 0 or below; no position opened after it"
    )
    assert figure(text, "CAGR (up to the bust 2024-01-04 00:00)") == "-100.00 %"
    assert any(a.startswith("BUST at 2024-01-04T00:00:00Z") for a in r.assumptions)
    doc = json.loads(json.dumps(to_json(r), allow_nan=False))
    assert doc["bust"]["time"] == T0 + 3 * DAY and doc["bust"]["equity_usd"] == -200.0
    assert doc["stats"]["bust_time"] == iso(3)


def test_the_sign_flipped_returns_of_old_are_gone():
    """Before, returns after a bust were divided by negative equity: a loss read as a gain."""
    r = result([-100.0, -300.0])  # bust at day 0's close; then a further loss of 200
    flipped = np.diff([1000.0, -100.0, -300.0]) / np.asarray([1000.0, -100.0])
    assert flipped[1] > 0  # what the old code took for a +200 % bar
    assert r.stats["sharpe"] is None and r.stats["volatility_pct"] is None  # one return: no spread
    assert r.stats["max_drawdown_pct"] == 100.0 and r.stats["cagr_pct"] == -100.0


def test_a_bust_the_executor_reports_without_the_curve_reaching_zero():
    r = result([900.0, 800.0, 850.0], closes={"BTC": [1.0, 1.0, 1.0]})
    assert r.stats["bust_time"] is None
    r.bust_time = T0 + 2 * DAY  # the point after day 1: equity 800
    s = compute_stats(r)
    assert s["bust_time"] == iso(2) and s["returns_until"] == iso(2)
    assert s["cagr_pct"] == pytest.approx((0.8 ** (365 / 2) - 1) * 100)


def test_profit_factor_without_a_losing_trade_is_not_a_number():
    r = result([1010.0, 1030.0], [trade("BTC", 10.0, 0, 1), trade("BTC", 20.0, 1, 1)])
    s = r.stats
    assert s["profit_factor"] is None and s["largest_loss_usd"] is None and s["largest_loss_trade"] is None
    assert s["avg_loss_usd"] is None
    text = format_text(r)
    assert figure(text, "profit factor (gross profit / gross loss)") == "n/a (no losing trade)"
    assert figure(text, "largest single loss") == "n/a (no losing trade)"
    # a trade of exactly 0 is no loss in the profit factor either (0 gross loss)
    flat = result([1000.0], [trade("BTC", 0.0, 0, 1)])
    assert flat.stats["profit_factor"] is None and flat.stats["largest_loss_trade"] is None
    none = result([1000.0])
    assert figure(format_text(none), "profit factor (gross profit / gross loss)") == "n/a (no closed trade)"
    assert figure(format_text(none), "largest single loss") == "n/a (no closed trade)"


def test_a_zero_length_window_has_no_figures_but_no_error():
    r = result([])
    s = r.stats
    assert (s["bars"], s["start"], s["end"], s["returns_until"]) == (0, None, None, None)
    for key in ("sharpe", "sortino", "volatility_pct", "cagr_pct", "calmar", "profit_factor"):
        assert s[key] is None, key
    assert (s["max_drawdown_pct"], s["net_pnl_usd"], s["bust_time"]) == (0.0, 0.0, None)
    assert per_symbol(r) == [
        {
            "symbol": "BTC",
            "first_close": None,
            "last_close": None,
            "hold_return_pct": None,
            "hold_pnl_usd": None,
            "trades": 0,
            "net_pnl_usd": 0,
        }
    ]
    json.dumps(s, allow_nan=False)
    one = result([1010.0]).stats  # one bar: a return but no spread
    assert one["sharpe"] is None and one["cagr_pct"] == pytest.approx((1.01**365 - 1) * 100)


def test_an_annualised_figure_too_large_for_a_float_is_none_not_infinity():
    r = result([2000.0], step=60_000)  # +100 % in one minute: 2 ** 525600 does not fit a float
    assert r.stats["cagr_pct"] is None and r.stats["calmar"] is None
    json.dumps(r.stats, allow_nan=False)


BUSTS = """
version: 1
name: busts
interval: 1h
rules:
  - name: enter
    when: price.close == 100
    signal: {side: long, size_usd: 1000}
"""


def test_a_backtest_that_goes_bust_says_so(tmp_path: Path):
    """500 USD holding a 1000 USD long through a 70 % fall: equity goes below 0."""
    s = load_strategy("busts.yaml", text=BUSTS)
    close = np.asarray([100.0, 100.0, 90.0, 60.0, 30.0, 30.0, 100.0, 100.0])
    frame = Frame(T0 + HOUR * np.arange(8, dtype=np.int64), {"price.open": close, "price.close": close})
    r = run_backtest([s], History({"BTC": frame}, "1h", "test"), None, BacktestOptions(balance_usd=500.0))
    st = r.stats
    assert st["bust_time"] is not None and st["max_drawdown_pct"] == 100.0 and st["cagr_pct"] == -100.0
    eq = r.equity_curve
    b = int(np.flatnonzero(eq <= 0)[0])
    assert st["bust_time"] == r.stats["returns_until"]
    assert all(eq[:b] > 0) and st["sharpe"] is not None and math.isfinite(st["sharpe"])
    assert f"*** bust at {st['bust_time'][:16].replace('T', ' ')} UTC" in format_text(r)


@pytest.mark.skipif(
    not (COINGLASS_REPORT / "20250529").is_dir(),
    reason=f"CoinGlass snapshots not found at {COINGLASS_REPORT}",
)
def test_figures_on_the_real_btc_year_are_finite():
    path = ROOT / "strategies" / "derivatives-state.yaml"
    s = load_strategy(str(path), text=path.read_text().replace("interval: 1h", "interval: 4h"))
    assert s.interval == "4h"  # the data's interval, as `--interval 4h`
    history = load_history([str(COINGLASS_REPORT / d) for d in ("20250529", "20251114")], "4h", None)
    r = run_backtest([s], history, symbols_for([s], history, None))
    st = r.stats
    assert st["closed_trades"] > 10
    for key in ("sharpe", "sortino", "volatility_pct", "cagr_pct", "calmar", "max_drawdown_pct",
                "avg_trade_duration_hours", "largest_loss_usd", "profit_factor"):  # fmt: skip
        assert isinstance(st[key], float) and math.isfinite(st[key]), key
    assert 0 < st["max_drawdown_pct"] <= 100 and st["largest_loss_usd"] < 0 < st["profit_factor"]
    assert st["avg_trade_duration_hours"] >= 4  # trades last at least one 4h bar
    closed = [t for t in r.trades if t.status == "closed"]
    assert min(t.net_pnl for t in closed) == st["largest_loss_usd"]
    rows = per_symbol(r)
    assert [p["symbol"] for p in rows] == ["BTC"] and math.isfinite(rows[0]["hold_return_pct"])
    assert rows[0]["net_pnl_usd"] == pytest.approx(st["net_pnl_usd"])
    json.dumps(to_json(r)["stats"], allow_nan=False)
