"""The live value of the newest bar equals the backtest's value for that bar, bit for bit (spec 2-3).

Over real market data (Binance BTCUSDT 1h klines, CoinGlass 4h BTC metrics): evaluate a strategy
that uses every built-in function (and nested combinations) over the whole history, then, for
many bars t, ``evaluate_last`` on the history up to t. Every plan node's value at t must be the
same float64 bits (or both unknown), and every categorical the same label.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers import SHARED_DATA

from perpwatch.evaluation.evaluate import evaluate, evaluate_last
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.language.compiler import load_strategy
from perpwatch.language.functions import BUILTINS

DATA = SHARED_DATA
KLINES = DATA / "binance-perp-klines-1h-emanuel-goldman" / "BTCUSDT_1h.csv"
COINGLASS = DATA / "coinglass-v4-liquidity-report" / "20251114" / "futures"

if not DATA.is_dir():
    pytest.skip(f"real market data not found at {DATA.resolve()} (../shared/data)", allow_module_level=True)

pa_csv = pytest.importorskip("pyarrow.csv")
pq = pytest.importorskip("pyarrow.parquet")

PRICE_STRATEGY = """\
version: 1
name: every-function-1h
interval: 1h
params:
  w: 20
let:
  f_lag: lag(price.close, 3)
  f_lag_default: lag(price.close)
  f_change: change(price.close, 5)
  f_pct: pct_change(price.close, 24)
  f_sma: sma(price.close, w)
  f_ema: ema(price.close, 12)
  f_stdev: stdev(price.close, w)
  f_z: zscore(price.volume, 48)
  f_rmax: rolling_max(price.high, 24)
  f_rmin: rolling_min(price.low, 24)
  f_rsum: rolling_sum(price.volume, 24)
  f_rsi: rsi(price.close, 14)
  f_xa: crosses_above(ema(price.close, 12), sma(price.close, 26))
  f_xb: crosses_below(price.close, sma(price.close, 50))
  f_rise: rising(price.close, 3)
  f_fall: falling(price.close)
  f_count: count_true(rising(price.close), 24)
  f_since: bars_since(crosses_above(price.close, rolling_max(lag(price.high, 1), w)), 100)
  f_abs: abs(change(price.close, 1))
  f_neg: -f_change
  f_min: min(price.open, price.close, sma(price.low, 3))
  f_max: max(price.open, price.close)
  f_clip: clip(zscore(price.close, 30), -2, 2)
  f_fill: fill(pct_change(price.volume, 1), 0)
  f_missing: is_missing(price.volume)
  nested_z_ema: zscore(ema(price.close, 5), w)
  nested_sma_lag_pct: sma(lag(pct_change(price.close, 3), 2), 10)
  nested_rsi_sma: rsi(sma(price.close, 3), 14)
  nested_stdev_rsi: stdev(rsi(price.close, 7), 10)
  nested_ema_ema: ema(ema(price.close, 4), 4)
  arith: (price.close - f_sma) / f_stdev * 100 // 7 % 5 + price.volume ** 0.5
  regime:
    cases:
      - when: f_z > 2
        then: SPIKE
      - when: f_rsi < 30
        then: OVERSOLD
      - when: f_rsi > 70
        then: OVERBOUGHT
    else: CALM
  regime_lag: lag(regime, 2)
  regime_fill: fill(lag(regime, 1), "NONE")
  regime_missing: is_missing(lag(regime, 3))
  size:
    lookup: regime
    table: {SPIKE: 0.0, OVERSOLD: 1.5, OVERBOUGHT: 0.5}
    default: 1.0
    missing: 0.25
  side: '"long" if f_rsi < 50 else "short"'
  chained: 30 < f_rsi < 70 and regime in ["CALM", "SPIKE"]
rules:
  - name: breakout
    when:
      all:
        - f_since == 0
        - f_z > 1
        - not f_missing
  - name: oversold_bounce
    when: regime == "OVERSOLD" and f_rise
    signal:
      side: side
      size_usd: 1000 * size
"""

METRICS_STRATEGY = """\
version: 1
name: every-function-4h
interval: 4h
let:
  oi_pct: pct_change(oi.close, 6)
  oi_change: change(oi.close, 1)
  oi_lag: lag(oi.high, 2)
  funding_z: zscore(funding.close, 42)
  funding_sma: sma(funding.close, 18)
  funding_ema: ema(funding.close, 6)
  funding_stdev: stdev(funding.close, 18)
  liq_z: zscore(liq.total_usd, 30)
  liq_max: rolling_max(liq.long_usd, 12)
  liq_min: rolling_min(liq.short_usd, 12)
  liq_sum: rolling_sum(liq.total_usd, 6)
  taker_rsi: rsi(taker.buy_pct, 6)
  ls_cross_up: crosses_above(ls.global_long_pct, sma(ls.global_long_pct, 12))
  ls_cross_down: crosses_below(ls.global_long_pct, ls.top_long_pct)
  oi_rising: rising(oi.close, 2)
  oi_falling: falling(oi.close, 1)
  squeezes: count_true(liq.short_usd > 2 * liq.long_usd, 18)
  since_squeeze: bars_since(liq.short_usd > 3 * liq.long_usd, 60)
  spread: abs(ls.global_long_pct - ls.top_long_pct)
  low: min(price.low, price.open)
  high: max(price.high, price.open, price.close)
  clipped: clip(funding_z, -3, 3)
  filled: fill(oi_pct, 0)
  missing: is_missing(oi.close)
  nested: zscore(ema(liq.total_usd, 3), 20)
  nested2: rsi(zscore(oi.close, 12), 5)
  state:
    cases:
      - when: liq_z > 3
        then: RISK_OFF
      - when: funding_z < -1 and oi_rising
        then: SQUEEZE
    else: NEUTRAL
  state_lag: lag(state, 1)
  state_fill: fill(lag(state, 2), "UNSET")
  state_missing: is_missing(state)
rules:
  - name: squeeze
    when: state == "SQUEEZE" and price.close > rolling_max(lag(price.high, 1), 12)
"""


# --- data -----------------------------------------------------------------------------------------


def klines_frame() -> Frame:
    table = pa_csv.read_csv(KLINES)
    times = table.column("open_time").cast("int64").to_numpy() * 1000  # seconds -> ms
    frame = Frame(times)
    for src, metric in [
        ("open", "open"),
        ("high", "high"),
        ("low", "low"),
        ("close", "close"),
        ("volume", "volume"),
    ]:
        frame.columns[f"price.{metric}"] = table.column(src).to_numpy().astype(float)
    return frame


def with_holes(frame: Frame, seed: int = 7) -> Frame:
    """The same real data with a few values removed (unknown), to exercise unknown windows."""
    rng = np.random.default_rng(seed)
    out = Frame(frame.times, dict(frame.columns))
    for name in ("price.close", "price.volume", "price.high"):
        col = frame.columns[name].copy()
        col[rng.random(len(col)) < 0.004] = np.nan
        out.columns[name] = col
    return out


def _parquet(path: str, fields: dict[str, str]) -> Frame:
    table = pq.read_table(COINGLASS / path)
    frame = Frame(table.column("time").to_numpy().astype(np.int64))
    for src, metric in fields.items():
        values = table.column(src).to_pylist()
        frame.columns[metric] = np.asarray([np.nan if v is None else float(v) for v in values])
    return frame


def coinglass_frame() -> Frame:
    parts = [
        _parquet(
            "market/api_price_ohlc_history.parquet",
            {"open": "price.open", "high": "price.high", "low": "price.low", "close": "price.close"},
        ),
        _parquet(
            "open_interest/api_futures_openInterest_ohlc_aggregated_history_BTC.parquet",
            {"open": "oi.open", "high": "oi.high", "low": "oi.low", "close": "oi.close"},
        ),
        _parquet(
            "funding_rate/api_futures_fundingRate_oi_weight_ohlc_history_BTC.parquet",
            {"close": "funding.close"},
        ),
        _parquet(
            "liquidation/api_futures_liquidation_aggregated_coin_history_BTC.parquet",
            {
                "aggregated_long_liquidation_usd": "liq.long_usd",
                "aggregated_short_liquidation_usd": "liq.short_usd",
            },
        ),
        _parquet(
            "long_short_ratio/api_futures_global_long_short_account_ratio_history.parquet",
            {"global_account_long_percent": "ls.global_long_pct"},
        ),
        _parquet(
            "long_short_ratio/api_futures_top_long_short_account_ratio_history.parquet",
            {"top_account_long_percent": "ls.top_long_pct"},
        ),
        _parquet(
            "taker_buy_sell/api_futures_aggregated_taker_buy_sell_volume_history.parquet",
            {"aggregated_buy_volume_usd": "taker.buy_usd", "aggregated_sell_volume_usd": "taker.sell_usd"},
        ),
    ]
    frame = parts[0]
    for part in parts[1:]:
        frame = frame.merge(part)
    c = frame.columns
    c["liq.total_usd"] = c["liq.long_usd"] + c["liq.short_usd"]
    with np.errstate(invalid="ignore", divide="ignore"):
        c["taker.buy_pct"] = c["taker.buy_usd"] / (c["taker.buy_usd"] + c["taker.sell_usd"]) * 100
    return frame


# --- comparison -----------------------------------------------------------------------------------


def same(full, live, t: int) -> bool:
    """Bit-identical float64 (or both unknown), or the same label."""
    if isinstance(full, Cat) or isinstance(live, Cat):
        return full.value(t) == live.value(len(live) - 1)
    a, b = float(full[t]), float(live[-1])
    if a != a or b != b:
        return a != a and b != b
    return np.float64(a).view(np.uint64) == np.float64(b).view(np.uint64)


def check_bars(strategy, frame: Frame, bars: list[int]) -> int:
    full = evaluate(strategy, frame, "BTC")
    nodes = range(len(strategy.plan.nodes))
    full_series = [full.series(i) for i in nodes]
    checked = 0
    for t in bars:
        live = evaluate_last(strategy, frame.slice(0, t + 1), "BTC")
        assert len(live.frame) == min(t + 1, strategy.warmup + 1)
        for i in nodes:
            if not same(full_series[i], live.series(i), t):
                node = strategy.plan.nodes[i]
                raise AssertionError(
                    f"bar {t}: node {i} {node.op} {node.data!r} differs: full {full.value(i, t)!r}, "
                    f"live {live.value(i, len(live.frame) - 1)!r}"
                )
        checked += 1
    return checked


def pick_bars(n: int, warmup: int, stretch_at: int, stretch: int, randoms: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    bars = set(range(0, min(n, warmup + 5)))  # before and just after the warm-up
    bars |= set(range(stretch_at, min(n, stretch_at + stretch)))  # every bar of a long stretch
    bars |= {rng.randrange(warmup, n) for _ in range(randoms)}
    bars.add(n - 1)
    return sorted(bars)


# --- tests ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def klines() -> Frame:
    if not KLINES.exists():
        pytest.skip(f"{KLINES} not found")
    return klines_frame()


@pytest.fixture(scope="module")
def price_strategy():
    return load_strategy("every-function-1h.yaml", text=PRICE_STRATEGY)


@pytest.fixture(scope="module")
def metrics_strategy():
    return load_strategy("every-function-4h.yaml", text=METRICS_STRATEGY)


def functions_used(strategy) -> set[str]:
    return {node.data[0] for node in strategy.plan.nodes if node.op == "call"}


def test_every_builtin_is_exercised(price_strategy, metrics_strategy):
    assert functions_used(price_strategy) == set(BUILTINS)
    assert functions_used(metrics_strategy) == set(BUILTINS)
    ops = {node.op for node in price_strategy.plan.nodes}
    assert {"cases", "lookup", "if", "in", "arith", "cmp", "and", "not", "neg"} <= ops


def test_the_data_is_real_and_large(klines):
    assert len(klines) > 30_000
    step = np.diff(klines.times)
    assert np.median(step) == 3_600_000


def test_live_equals_full_on_binance_1h_klines(klines, price_strategy):
    s = price_strategy
    assert s.warmup == 120  # bars_since(crosses_above(close, rolling_max(lag(high, 1), 20)), 100)
    bars = pick_bars(len(klines), s.warmup, stretch_at=20_000, stretch=300, randoms=120, seed=1)
    assert check_bars(s, klines, bars) == len(bars)


def test_live_equals_full_with_unknown_values(klines, price_strategy):
    holes = with_holes(klines)
    assert np.isnan(holes.columns["price.close"]).sum() > 50
    bars = pick_bars(len(holes), price_strategy.warmup, stretch_at=8_000, stretch=300, randoms=60, seed=2)
    # the stretch holds holes, so windows with unknowns are compared too
    assert np.isnan(holes.columns["price.close"][8_000:8_300]).any()
    assert check_bars(price_strategy, holes, bars) == len(bars)


def test_live_equals_full_on_coinglass_4h_metrics(metrics_strategy):
    if not COINGLASS.is_dir():
        pytest.skip(f"{COINGLASS} not found")
    frame = coinglass_frame()
    assert len(frame) >= 1100
    # the price history starts earlier than the others, so the first bars have unknown metrics
    assert np.isnan(frame.columns["oi.close"][:10]).all()
    s = metrics_strategy
    bars = pick_bars(len(frame), s.warmup, stretch_at=s.warmup, stretch=400, randoms=100, seed=3)
    assert check_bars(s, frame, bars) == len(bars)


def test_the_comparison_can_fail(klines, price_strategy):
    """A running-sum sma differs from the fixed-order window sum in the last bits: ``same`` sees it."""
    x = klines.columns["price.close"][:5000]
    running = np.cumsum(x)
    running_sma = (running[19:] - np.concatenate([[0.0], running[:-20]])) / 20
    s = load_strategy(
        "sma.yaml", text="version: 1\nname: s\nrules:\n  - name: r\n    when: sma(price.close, 20) > 0\n"
    )
    full = evaluate(s, Frame(klines.times[:5000], {"price.close": x}), "BTC")
    node = next(i for i, n in enumerate(s.plan.nodes) if n.op == "call")
    differ = [t for t in range(19, 5000) if not same(full.series(node), running_sma[: t - 18], t)]
    assert differ  # bit-level differences exist, and are caught


class RandomExpressions:
    """Random nested expressions over the price metrics: every function, arithmetic, if/else, logic."""

    METRICS = ["price.close", "price.high", "price.low", "price.volume", "price.open"]

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def num(self, depth: int) -> str:
        rng = self.rng
        if depth <= 0 or rng.random() < 0.2:
            return rng.choice([*self.METRICS, "2.5", "-3"])
        n = rng.choice([1, 2, 3, 5, 8])
        x = self.num(depth - 1)
        choices = [
            f"sma({x}, {n})",
            f"ema({x}, {n})",
            f"stdev({x}, {n + 1})",
            f"zscore({x}, {n + 1})",
            f"rsi({x}, {n})",
            f"lag({x}, {n})",
            f"change({x}, {n})",
            f"pct_change({x}, {n})",
            f"rolling_max({x}, {n})",
            f"rolling_min({x}, {n})",
            f"rolling_sum({x}, {n})",
            f"({x} {rng.choice(['+', '-', '*', '/', '//', '%'])} {self.num(depth - 1)})",
            f"count_true({self.cond(depth - 1)}, {n})",
            f"bars_since({self.cond(depth - 1)}, {n})",
            f"clip({x}, -1, 1)",
            f"abs({x})",
            f"min({x}, {self.num(depth - 1)})",
            f"max({x}, {self.num(depth - 1)}, 0)",
            f"fill({x}, 0)",
            f"({x} if {self.cond(depth - 1)} else {self.num(depth - 1)})",
        ]
        return rng.choice(choices)

    def cond(self, depth: int) -> str:
        rng = self.rng
        if depth <= 0:
            return f"{self.num(0)} > {self.num(0)}"
        a, b = self.num(depth - 1), self.num(depth - 1)
        return rng.choice(
            [
                f"{a} > {b}",
                f"crosses_above({a}, {b})",
                f"crosses_below({a}, {b})",
                f"rising({a}, 2)",
                f"falling({a})",
                f"({self.cond(depth - 1)} and {self.cond(depth - 1)})",
                f"({self.cond(depth - 1)} or {self.cond(depth - 1)})",
                f"(not {self.cond(depth - 1)})",
                f"is_missing({a})",
                f"fill({self.cond(depth - 1)}, False)",
            ]
        )


def test_live_equals_full_for_random_nested_expressions(klines):
    """40 random nested expressions over 700 bars of real klines with holes and a flat stretch."""
    frame = with_holes(klines.slice(20_000, 20_700), seed=11)
    frame.columns["price.close"][300:330] = frame.columns["price.close"][300]  # flat: exact-mean paths
    gen = RandomExpressions(seed=5)
    for k in range(40):
        text = f"version: 1\nname: random{k}\nrules:\n  - name: r\n    when: '{gen.cond(4)}'\n"
        s = load_strategy(f"random{k}.yaml", text=text)
        bars = sorted({*range(0, 700, 23), *range(300, 340), 699})
        assert check_bars(s, frame, bars) == len(bars), text
