"""The fast path of a backtest (``perpwatch.backtest.fastloop``) gives the walk's results exactly.

Each case runs the same backtest twice, ``engine="walk"`` (bar by bar through the trading layer and
the paper executor) and ``engine="fast"``, over real market data (CoinGlass BTC 4h year; Binance
BTCUSDT and ETHUSDT 1h klines), and compares with ``==``: every trade (times, prices, qty, fees,
funding, PnL), every rule and trading event, the funding counts, the equity curve and exposure,
the bust time and the figures. The fallbacks (daily-loss limits, inhibitors, leverage) are checked
to take the walk and say why. A synthetic crash drives the account bust in both paths.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import COINGLASS_REPORT, ROOT, SHARED_DATA, H, invoke
from helpers import write_csv as write_rows

from perpwatch.api.history import History
from perpwatch.backtest.fastloop import why_not_fast
from perpwatch.backtest.history import load_history, symbols_for
from perpwatch.backtest.lazyevent import LazyEvent
from perpwatch.backtest.result import BacktestOptions, BacktestResult
from perpwatch.backtest.walk import run_backtest
from perpwatch.common.errors import PerpwatchError
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.evaluate import evaluate
from perpwatch.evaluation.frame import Frame
from perpwatch.evaluation.rules import build_event, walk
from perpwatch.language.compiler import Strategy, load_strategy

SNAPSHOTS = [COINGLASS_REPORT / "20250529", COINGLASS_REPORT / "20251114"]
KLINES = SHARED_DATA / "binance-perp-klines-1h-emanuel-goldman"
TRADING = ["derivatives-state", "short-squeeze", "trend-confirmation", "long-squeeze-filter"]
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z

needs_coinglass = pytest.mark.skipif(
    not SNAPSHOTS[1].is_dir(), reason=f"CoinGlass snapshots not found at {COINGLASS_REPORT}"
)
needs_klines = pytest.mark.skipif(not KLINES.is_dir(), reason=f"Binance klines not found at {KLINES}")


def bundled(name: str, rename: str | None = None, **risk: Any) -> Strategy:
    """A bundled strategy at 4h, with ``risk`` limits added and optionally a new name."""
    path = ROOT / "strategies" / f"{name}.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["interval"] = "4h"
    if rename:
        doc["name"] = rename
    if risk:
        doc.setdefault("risk", {}).update(risk)
    return load_strategy(str(path), text=yaml.safe_dump(doc, sort_keys=False))


def both(
    strategies: list[Strategy], history: History, **options: Any
) -> tuple[BacktestResult, BacktestResult]:
    symbols = symbols_for(strategies, history, None)
    slow = run_backtest(strategies, history, symbols, BacktestOptions(engine="walk", **options))
    fast = run_backtest(strategies, history, symbols, BacktestOptions(engine="fast", **options))
    return slow, fast


def assert_same(a: BacktestResult, b: BacktestResult) -> None:
    """Equal, to the last bit: trades, events, orders, funding counts, equity, exposure, bust, figures."""
    assert len(a.trades) == len(b.trades)
    for x, y in zip(a.trades, b.trades, strict=True):
        assert vars(x) == vars(y)
    assert a.funding_settlements == b.funding_settlements
    assert a.funding_skipped == b.funding_skipped
    assert a.equity.tolist() == b.equity.tolist()
    assert a.exposed.tolist() == b.exposed.tolist()
    assert a.bust_time == b.bust_time
    assert [e.to_dict() for e in a.events] == [e.to_dict() for e in b.events]
    assert [e.to_dict() for e in a.trading] == [e.to_dict() for e in b.trading]
    assert json.dumps(a.stats, sort_keys=True, default=str) == json.dumps(
        b.stats, sort_keys=True, default=str
    )


@pytest.fixture(scope="module")
def btc_4h() -> History:
    return load_history([str(p) for p in SNAPSHOTS], "4h", None)


@needs_coinglass
def test_bundled_strategies_on_the_real_btc_4h_year(btc_4h):
    ss = [bundled(name) for name in TRADING]
    assert why_not_fast(ss, BacktestOptions()) is None
    slow, fast = both(ss, btc_4h)
    assert_same(slow, fast)
    assert len(fast.trades) > 50 and fast.funding_settlements > 500
    assert {e.kind for e in fast.trading} == {"order", "no_order"}
    assert any("traded bar by bar" in line for line in slow.assumptions)
    assert not any("traded bar by bar" in line for line in fast.assumptions)


@needs_coinglass
def test_several_settlements_per_bar_a_window_and_other_costs(btc_4h):
    """Funding every hour (four settlements per 4h bar, summed in turn), no fee, 50 bps slippage,
    a --from/--to window inside the data (earlier bars only warm up; the last bar fills)."""
    ss = [bundled(name) for name in TRADING]
    times = btc_4h.frames["BTC"].times
    start, end = int(times[300]), int(times[-200])
    slow, fast = both(
        ss,
        btc_4h,
        funding_interval_hours=1,
        fee_bps=0,
        slippage_bps=50,
        balance_usd=3000,
        start=start,
        end=end,
    )
    assert_same(slow, fast)
    assert fast.times[0] == start and fast.times[-1] == end
    assert fast.funding_settlements > 4 * 100


@needs_coinglass
def test_position_limits_take_the_fast_path(btc_4h):
    """max_position_usd clips (noted on the order), max_open_positions refuses a second symbol: both
    are decided signal by signal on the fast path."""
    ss = [
        bundled("derivatives-state", max_position_usd=600, max_open_positions=1),
        bundled("trend-confirmation", max_position_usd=250),
    ]
    assert why_not_fast(ss, BacktestOptions()) is None
    slow, fast = both(ss, btc_4h)
    assert_same(slow, fast)
    assert any("clipped to max_position_usd" in e.message for e in fast.trading)
    assert max(t.size_usd for t in fast.trades) <= 600


def klines(name: str, bars: int) -> Frame:
    """The last ``bars`` 1h klines of a Binance file: price only (funding unknown: skipped)."""
    with open(KLINES / name, newline="") as fh:
        rows = list(csv.DictReader(fh))[-bars:]
    times = np.array([int(datetime.fromisoformat(r["open_time"]).timestamp() * 1000) for r in rows])
    cols = {f"price.{c}": np.array([float(r[c]) for r in rows]) for c in ("open", "high", "low", "close")}
    return Frame(times, cols)


PRICE_ONLY = """
version: 1
name: swing
interval: 1h
params: {fast: 12, slow: 48}
let:
  up: sma(price.close, fast) > sma(price.close, slow) and price.close > lag(price.high, 1)
  down: sma(price.close, fast) < sma(price.close, slow) and price.close < lag(price.low, 1)
rules:
  - name: go_long
    when: up
    message: "{symbol} long at {price.close}"
    signal: {side: long, size_usd: 2000}
  - name: go_short
    when: down
    cooldown: 6h
    signal: {side: short, size_usd: 1500}
  - name: calm
    when: abs(pct_change(price.close, 1)) < 0.05
    for: 3
    signal: {side: flat}
risk:
  max_open_positions: 1
  max_position_usd: 1800
"""


@needs_klines
def test_two_symbols_share_a_position_limit_on_real_1h_klines():
    """BTC and ETH, a year of 1h bars, one strategy allowed one open position across both."""
    history = History(
        {"BTC": klines("BTCUSDT_1h.csv", 8760), "ETH": klines("ETHUSDT_1h.csv", 8760)}, "1h", "klines"
    )
    s = load_strategy("swing.yaml", text=PRICE_ONLY)
    slow, fast = both([s], history)
    assert_same(slow, fast)
    assert {t.symbol for t in fast.trades} == {"BTC", "ETH"}
    assert any("max_open_positions" in e.message for e in fast.trading)
    assert fast.funding_skipped > 0 and fast.funding_settlements == 0  # no funding data: unknown


def test_lazy_events_equal_built_ones(tmp_path):
    """The backtest's events (built when read) equal rules.walk's, built at once by build_event."""
    frame = klines("BTCUSDT_1h.csv", 3000) if KLINES.is_dir() else _synthetic_frame(3000)
    s = load_strategy("swing.yaml", text=PRICE_ONLY)
    history = History({"BTC": frame}, "1h", "klines")
    r = run_backtest([s], history, {"swing": ["BTC"]}, BacktestOptions())
    ev = evaluate(s, frame, "BTC")
    expected = walk(s, ev, {})
    assert len(r.events) == len(expected) > 20
    assert all(isinstance(e, LazyEvent) for e in r.events)
    assert "LazyEvent(swing/" in repr(r.events[0])  # a repr never builds
    assert [e.to_dict() for e in r.events] == [e.to_dict() for e in expected]
    first = next(e for e in r.events if e.rule == "go_long")
    i = int(np.searchsorted(frame.times, first.time))
    assert first.eager() == build_event(s, s.rules[0], ev, i, first.kind)
    assert first.message.startswith("BTC long at ")


def _synthetic_frame(n: int) -> Frame:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    cols = {
        "price.open": open_,
        "price.high": np.maximum(open_, close) * 1.002,
        "price.low": np.minimum(open_, close) * 0.998,
        "price.close": close,
    }
    return Frame(T0 + H * np.arange(n, dtype=np.int64), cols)


@needs_coinglass
@pytest.mark.parametrize(
    ("risk", "reason"),
    [
        ({"max_daily_loss_pct": 2}, "max_daily_loss_pct"),
        ({"inhibited_by": ["risk-off/risk_off"]}, "inhibited_by"),
        ({"stop_loss": "3%"}, "protective exits"),
    ],
)
def test_path_dependent_limits_take_the_walk(btc_4h, risk, reason):
    ss = [bundled("derivatives-state", **risk), bundled("risk-off")]
    why = why_not_fast(ss, BacktestOptions())
    assert why is not None and reason in why
    with pytest.raises(PerpwatchError, match="fast path cannot run"):
        run_backtest(ss, btc_4h, symbols_for(ss, btc_4h, None), BacktestOptions(engine="fast"))
    auto = run_backtest(ss, btc_4h, symbols_for(ss, btc_4h, None), BacktestOptions())
    walked = run_backtest(ss, btc_4h, symbols_for(ss, btc_4h, None), BacktestOptions(engine="walk"))
    assert_same(auto, walked)
    assert any(f"not on the fast path: {why}" in line for line in auto.assumptions)


def test_other_executors_and_leverage_take_the_walk():
    ss = [bundled("short-squeeze")]
    assert "not paper" in (why_not_fast(ss, BacktestOptions(executor="other")) or "")
    assert "leverage" in (why_not_fast(ss, BacktestOptions(executor_options={"leverage": 5})) or "")
    assert why_not_fast(ss, BacktestOptions(engine="walk")) == "asked for (engine walk)"


def test_an_unknown_engine_is_refused(tmp_path):
    s = load_strategy("swing.yaml", text=PRICE_ONLY)
    history = History({"BTC": _synthetic_frame(100)}, "1h", "synthetic")
    with pytest.raises(PerpwatchError, match="engine 'quick': expected one of auto, fast, walk"):
        run_backtest([s], history, {"swing": ["BTC"]}, BacktestOptions(engine="quick"))


# --- bust --------------------------------------------------------------------------------------------

CRASH = """
version: 1
name: crash
interval: 4h
rules:
  - name: enter
    when: oi.close == 1
    signal: {side: long, size_usd: 5000}
  - name: leave
    when: oi.close == 3
    signal: {side: flat}
"""


def crash_history(tmp_path: Path) -> Path:
    """A long of 5000 USD on a 1000 USD account, then the price falls from 100 to 70 (-1500 USD):
    bust at bar 4; later entries are refused, the close still fills."""
    data = tmp_path / "data"
    data.mkdir()
    open_ = [100, 100, 100, 90, 80, 70, 70, 70, 70, 70, 70, 70]
    close = [100, 100, 90, 80, 70, 70, 70, 70, 70, 70, 70, 70]
    oi = [0, 1, 0, 0, 0, 0, 1, 0, 3, 0, 1, 0]
    funding = [0.01] * len(close)
    write_rows(
        data / "BTC_4h.csv",
        {"price.open": open_, "price.close": close, "oi.close": oi, "funding.close": funding},
        T0,
        4 * H,
    )
    strat = tmp_path / "crash.yaml"
    strat.write_text(CRASH)
    return data


def test_bust_stops_entries_in_both_paths(tmp_path):
    data = crash_history(tmp_path)
    s = load_strategy(str(tmp_path / "crash.yaml"))
    history = load_history([str(data)], "4h", None)
    slow, fast = both([s], history, balance_usd=1000)
    assert_same(slow, fast)
    curve = fast.equity
    k = int(np.flatnonzero(curve <= 0)[0])
    assert fast.bust_time == int(fast.times[k]) + 4 * H  # the close of the first bar at or below 0
    assert all(curve[:k] > 0)
    refused = [e for e in fast.trading if e.kind == "rejected"]
    assert refused and all("the account is bust" in e.message for e in refused)
    assert all(e.time > fast.bust_time - 4 * H for e in refused)
    assert [t.entry_bar for t in fast.trades] == [T0 + 4 * H]  # the only entry came before the bust
    assert fast.trades[0].status == "closed" and fast.trades[0].exit_bar == T0 + 8 * 4 * H  # closing allowed
    assert fast.stats["bust_time"] == format_time(fast.bust_time)


def test_no_bust_when_equity_stays_positive(tmp_path):
    data = crash_history(tmp_path)
    s = load_strategy(str(tmp_path / "crash.yaml"))
    history = load_history([str(data)], "4h", None)
    slow, fast = both([s], history, balance_usd=10_000)
    assert_same(slow, fast)
    assert fast.bust_time is None and len(fast.trades) == 2


def test_cli_engine_switch(tmp_path):
    """``--engine walk`` prints the same report as the default fast path, plus the line saying it
    walked; ``--engine fast`` on a strategy that needs the walk is bad input naming the reason."""
    data = crash_history(tmp_path)
    strat = tmp_path / "crash.yaml"
    fast = invoke("backtest", strat, "--data", data, "--balance", 1000)
    walked = invoke("backtest", strat, "--data", data, "--balance", 1000, "--engine", "walk")
    assert fast.exit_code == walked.exit_code == 0, fast.output + walked.output
    note = "traded bar by bar (the walk), not on the fast path: asked for (engine walk)"
    assert note in walked.output and "traded bar by bar" not in fast.output
    assert [x for x in walked.output.splitlines() if note not in x] == fast.output.splitlines()
    assert "bust" in fast.output.lower()
    daily = tmp_path / "daily.yaml"
    daily.write_text(CRASH.replace("name: crash", "name: daily") + "risk:\n  max_daily_loss_pct: 5\n")
    refused = invoke("backtest", daily, "--data", data, "--engine", "fast")
    assert refused.exit_code == 2
    assert "fast path cannot run this backtest: daily has max_daily_loss_pct" in refused.output


@needs_klines
def test_gaps_in_the_data(tmp_path):
    """Bars missing from the data are unknown on the grid: positions held across them keep their
    last mark, their settlements are skipped, and no order fills at an unknown open."""
    frames = {}
    for sym, name in (("BTC", "BTCUSDT_1h.csv"), ("ETH", "ETHUSDT_1h.csv")):
        f = klines(name, 3000)
        keep = np.ones(len(f.times), dtype=bool)
        for start in (200, 900, 901, 1500, 2200):  # single and longer holes
            keep[start : start + (1 if start % 2 else 7)] = False
        times = f.times[keep]
        funding = np.where(np.arange(len(times)) % 5 == 0, np.nan, 0.01)  # some rates unknown
        frames[sym] = Frame(times, {**{k: v[keep] for k, v in f.columns.items()}, "funding.close": funding})
    history = History(frames, "1h", "klines with holes")
    s = load_strategy("swing.yaml", text=PRICE_ONLY)
    slow, fast = both([s], history, funding_interval_hours=1)
    assert_same(slow, fast)
    assert fast.funding_skipped > 0 and fast.funding_settlements > 0
    assert any("next bar's open is unknown" in e.message or "unknown" in e.message for e in fast.trading)
