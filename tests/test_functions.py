"""Every function of the strategy language (spec section 3) against values worked out by hand.

Each expression goes through the real pipeline: a strategy compiled from YAML text, evaluated
column-wise over a small frame. ``_`` in the comments is unknown. Values that are exact in binary
floating point are compared exactly; the others (thirds, square roots) with a relative 1e-12.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from perpwatch.common.timeutil import HOUR
from perpwatch.evaluation.evaluate import evaluate
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.language.compiler import load_strategy
from perpwatch.language.functions import BUILTINS
from perpwatch.language.metrics import CATALOGUE

_ = None  # unknown, in expected lists
NAN = float("nan")


def run(expr, columns, *, lets=None, params=None, symbol="BTC"):
    """The values of ``expr`` at every bar (None = unknown) over ``columns`` (metric -> list)."""
    all_lets = dict(lets or {})
    all_lets["out"] = expr
    doc = {
        "version": 1,
        "name": "t",
        "interval": "1h",
        "let": all_lets,
        "rules": [{"name": "r", "when": True}],
    }
    if params:
        doc["params"] = params
    strategy = load_strategy("t.yaml", text=yaml.safe_dump(doc, sort_keys=False))
    n = max(len(v) for v in columns.values())
    frame = Frame(np.arange(n, dtype=np.int64) * HOUR)
    for name, values in columns.items():
        if CATALOGUE[name].kind == "str":
            frame.columns[name] = Cat.from_values(values)
        else:
            frame.columns[name] = np.asarray([NAN if v is None else float(v) for v in values], dtype=float)
    ev = evaluate(strategy, frame, symbol)
    node = strategy.lets["out"]
    return [ev.value(node, i) for i in range(n)]


def close(values):
    return {"price.close": values}


def approx_list(values):
    return [v if v is None or isinstance(v, bool | str) else pytest.approx(v, rel=1e-12) for v in values]


# --- lag, change, pct_change ----------------------------------------------------------------------


def test_lag():
    x = [1, 2, 4, 7, 11]
    assert run("lag(price.close, 1)", close(x)) == [_, 1, 2, 4, 7]
    assert run("lag(price.close, 2)", close(x)) == [_, _, 1, 2, 4]
    assert run("lag(price.close)", close(x)) == [_, 1, 2, 4, 7]  # n defaults to 1
    assert run("lag(x=price.close, n=3)", close(x)) == [_, _, _, 1, 2]  # keywords
    assert run("lag(price.close, 9)", close(x)) == [_] * 5  # longer than the history


def test_change():
    x = [1, 2, 4, 7, 11]
    assert run("change(price.close)", close(x)) == [_, 1, 2, 3, 4]  # 2-1, 4-2, 7-4, 11-7
    assert run("change(price.close, 2)", close(x)) == [_, _, 3, 5, 7]  # 4-1, 7-2, 11-4


def test_pct_change_and_division_by_zero():
    x = [8, 10, 5, 0, 0, 3]
    # 10/8 = 1.25 -> +25 %; 5/10 -> -50 %; 0/5 -> -100 %; 0/0 and 3/0 divide by zero -> unknown
    assert run("pct_change(price.close, 1)", close(x)) == [_, 25.0, -50.0, -100.0, _, _]
    # two bars back: 5/8 = 0.625 -> -37.5 %; 0/10 -> -100 %; 0/5 -> -100 %; 3/0 -> unknown
    assert run("pct_change(price.close, 2)", close(x)) == [_, _, -37.5, -100.0, -100.0, _]


# --- means and deviations -------------------------------------------------------------------------


def test_sma():
    x = [3, 6, 9, 12, 3]
    # (3+6+9)/3 = 6, (6+9+12)/3 = 9, (9+12+3)/3 = 8
    assert run("sma(price.close, 3)", close(x)) == [_, _, 6.0, 9.0, 8.0]
    assert run("sma(price.close, 1)", close(x)) == [3.0, 6.0, 9.0, 12.0, 3.0]


def test_sma_of_a_flat_window_is_the_value_exactly():
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004 and / 3 = 0.10000000000000002: a naive mean of a flat
    # window is off by one ulp, so "price.close < sma(price.close, 3)" would be True on flat prices.
    x = [0.1] * 5
    assert run("sma(price.close, 3)", close(x)) == [_, _, 0.1, 0.1, 0.1]
    assert run("price.close < sma(price.close, 3)", close(x)) == [_, _, False, False, False]


def test_ema_alpha_window_and_seed():
    # n = 2: alpha = 2/3, a window of 4n = 8 bars, seeded with its first value.
    x = [1000, 0, 0, 0, 0, 0, 0, 0, 3]
    got = run("ema(price.close, 2)", close(x))
    # bar 7, window bars 0..7: seed 1000, then seven zeros: 1000 * (1/3)**7 = 0.457247370827...
    # bar 8, window bars 1..8: seed 0 (the 1000 has left the window), zeros, then 2/3 * 3 = 2
    assert got == approx_list([_, _, _, _, _, _, _, 1000 / 3**7, 2.0])


def test_ema_steps():
    # n = 1: alpha = 1, window 4 bars: the ema is the value itself once 4 bars exist
    assert run("ema(price.close, 1)", close([5, 6, 7, 8, 9])) == [_, _, _, 8.0, 9.0]
    # n = 2 over 0,0,0,0,0,0,3,9 (bar 7, window 0..7): ... 0, then 2/3*3 = 2, then 2/3*9 + 1/3*2 = 20/3
    got = run("ema(price.close, 2)", close([0, 0, 0, 0, 0, 0, 3, 9]))
    assert got == approx_list([_] * 7 + [20 / 3])


def test_stdev_is_the_sample_deviation():
    x = [1, 2, 3, 5]
    got = run("stdev(price.close, 3)", close(x))
    # bar 2: mean 2, squares 1+0+1 = 2, / (n-1 = 2) = 1 -> 1 (with n in the denominator: 0.816...)
    # bar 3: [2,3,5], mean 10/3, squares 16/9+1/9+25/9 = 42/9, / 2 = 7/3 -> sqrt(7/3)
    assert got == approx_list([_, _, 1.0, math.sqrt(7 / 3)])
    assert run("stdev(price.close, 3)", close([4, 4, 4, 4])) == [_, _, 0.0, 0.0]


def test_zscore_and_flat_window():
    x = [1, 2, 3, 3, 3, 3]
    got = run("zscore(price.close, 3)", close(x))
    # bar 2: (3 - 2) / 1 = 1
    # bar 3: [2,3,3], mean 8/3, squares 4/9+1/9+1/9 = 6/9, /2 = 1/3, sd = 1/sqrt(3); (3-8/3)/sd = 1/sqrt(3)
    # bars 4, 5: [3,3,3] has stdev 0 -> unknown
    assert got == approx_list([_, _, 1.0, 1 / math.sqrt(3), _, _])


@pytest.mark.parametrize("value", [0.1, 0.01, 0.0123, 1 / 3, 65000.1])
@pytest.mark.parametrize("n", [3, 7, 24, 30])
def test_zscore_of_flat_windows_is_unknown_not_a_rounding_artefact(value, n):
    # A flat funding rate (0.01 for days) must not produce a z-score of about +-1 from rounding.
    got = run(f"zscore(funding.close, {n})", {"funding.close": [value] * (n + 3)})
    assert got[n - 1 :] == [_] * 4
    assert run(f"stdev(funding.close, {n})", {"funding.close": [value] * (n + 3)})[-1] == 0.0
    assert run(f"ema(funding.close, {max(1, n // 4)})", {"funding.close": [value] * (n + 3)})[-1] == value


# --- rolling windows ------------------------------------------------------------------------------


def test_rolling_max_min_sum():
    x = [5, 1, 4, 2, 8, 3]
    assert run("rolling_max(price.close, 3)", close(x)) == [_, _, 5, 4, 8, 8]
    assert run("rolling_min(price.close, 3)", close(x)) == [_, _, 1, 1, 2, 2]
    assert run("rolling_sum(price.close, 3)", close(x)) == [_, _, 10, 7, 14, 13]  # 5+1+4, 1+4+2, ...


# --- rsi ------------------------------------------------------------------------------------------


def test_rsi_wilder_seeded_with_mean_of_first_n_changes():
    # n = 2: a window of 4n = 8 bars, i.e. 7 changes.
    x = [10, 11, 13, 12, 12, 15, 14, 16]
    # changes: +1 +2 -1 0 +3 -1 +2
    # seed (mean of the first 2 changes): gain (1+2)/2 = 1.5, loss 0
    # then avg = (avg*(n-1) + new)/n:
    #   -1: gain 0.75,     loss 0.5
    #    0: gain 0.375,    loss 0.25
    #   +3: gain 1.6875,   loss 0.125
    #   -1: gain 0.84375,  loss 0.5625
    #   +2: gain 1.421875, loss 0.28125
    # RS = 1.421875 / 0.28125 = 91/18; RSI = 100 - 100/(1 + 91/18) = 100 - 1800/109 = 9100/109
    got = run("rsi(price.close, 2)", close(x))
    assert got[:7] == [_] * 7
    assert got[7] == pytest.approx(9100 / 109, rel=1e-12)


def test_rsi_only_looks_at_its_4n_window():
    # a huge move before the window does not matter: bar 8's window is bars 1..8
    x = [1000, 10, 11, 13, 12, 12, 15, 14, 16]
    assert run("rsi(price.close, 2)", close(x))[8] == pytest.approx(9100 / 109, rel=1e-12)


def test_rsi_edges():
    assert run("rsi(price.close, 2)", close([7] * 9))[-2:] == [50.0, 50.0]  # flat window: 50
    assert run("rsi(price.close, 2)", close(list(range(9))))[-1] == 100.0  # only gains
    assert run("rsi(price.close, 2)", close(list(range(9, 0, -1))))[-1] == 0.0  # only losses


# --- crosses, rising, falling ---------------------------------------------------------------------


def test_crosses_above_and_below():
    cols = {"price.close": [1, 3, 3, 1, 3], "price.open": [2, 2, 2, 2, 2]}
    # bar 0 has no bar t-1: unknown. bar 1: 3 > 2 and 1 <= 2. bar 2: was already above.
    assert run("crosses_above(price.close, price.open)", cols) == [_, True, False, False, True]
    assert run("crosses_below(price.close, price.open)", cols) == [_, False, False, True, False]


def test_crosses_from_equal_counts():
    # a <= b at t-1 includes equality: 2 -> 3 against 2 crosses above
    cols = {"price.close": [2, 3, 2], "price.open": [2, 2, 2]}
    assert run("crosses_above(price.close, price.open)", cols) == [_, True, False]
    # a >= b at t-1 for below: 3 -> 2 against 2 is not below (2 < 2 is false), 2 -> 1 is
    cols = {"price.close": [3, 2, 1], "price.open": [2, 2, 2]}
    assert run("crosses_below(price.close, price.open)", cols) == [_, False, True]


def test_crosses_with_unknown_is_unknown():
    cols = {"price.close": [1, None, 3, 3, 1], "price.open": [2, 2, 2, 2, 2]}
    # bar 1 unknown now, bar 2 unknown at t-1; bar 3 known: already above -> False
    assert run("crosses_above(price.close, price.open)", cols) == [_, _, _, False, False]
    assert run("crosses_below(price.close, price.open)", cols) == [_, _, _, False, True]


def test_rising_falling():
    x = [1, 2, 2, 1, 5]
    assert run("rising(price.close)", close(x)) == [_, True, False, False, True]
    assert run("falling(price.close)", close(x)) == [_, False, False, True, False]
    # n = 2: 2 > 1, 1 > 2 no, 5 > 2
    assert run("rising(price.close, 2)", close(x)) == [_, _, True, False, True]
    assert run("falling(price.close, 2)", close(x)) == [_, _, False, True, False]  # 1 < 2


# --- count_true, bars_since -----------------------------------------------------------------------


def test_count_true():
    x = [3, 3, 3, 1, 1, 1, 3]  # c = x > 2: T T T F F F T
    assert run("count_true(price.close > 2, 3)", close(x)) == [_, _, 3, 2, 1, 0, 1]


def test_bars_since():
    x = [3, 3, 3, 1, 1, 1, 3]  # c: T T T F F F T
    # bar 2: True now -> 0; bar 3: 1; bar 4: 2; bar 5: none of bars 3..5 -> unknown; bar 6: 0
    assert run("bars_since(price.close > 2, 3)", close(x)) == [_, _, 0, 1, 2, _, 0]


def test_bars_since_and_count_true_with_unknown_in_window():
    x = [3, None, 1, 1, 3]  # c: T _ F F T
    # windows of 3: bars 0..2 and 1..3 hold the unknown; bars 2..4 do not
    assert run("bars_since(price.close > 2, 3)", close(x)) == [_, _, _, _, 0]
    assert run("count_true(price.close > 2, 3)", close(x)) == [_, _, _, _, 1]


# --- element-wise ---------------------------------------------------------------------------------


def test_abs_min_max_clip():
    cols = {"price.close": [-2, 0, 3, None], "price.open": [1, -1, 5, 1]}
    assert run("abs(price.close)", cols) == [2, 0, 3, _]
    assert run("min(price.close, price.open)", cols) == [-2, -1, 3, _]
    assert run("max(price.close, price.open, 0)", cols) == [1, 0, 5, _]  # variadic
    assert run("min(price.close, price.open, -1.5)", cols) == [-2, -1.5, -1.5, _]
    assert run("clip(price.close, -1, 2)", cols) == [-1, 0, 2, _]
    assert run("clip(price.close, price.open, 4)", cols) == [1, 0, 4, _]


def test_fill_and_is_missing():
    x = [None, 1, None, 4]
    assert run("fill(price.close, 0)", close(x)) == [0, 1, 0, 4]
    assert run("fill(price.close, price.open)", {"price.close": x, "price.open": [7, 8, None, 9]}) == [
        7,
        1,
        _,  # the fill value is unknown too
        4,
    ]
    assert run("is_missing(price.close)", close(x)) == [True, False, True, False]
    # fill turns an unknown condition into a decision; is_missing is never unknown itself
    assert run("fill(price.close > 2, False)", close(x)) == [False, False, False, True]
    assert run("is_missing(sma(price.close, 2))", close(x)) == [True, True, True, True]


# --- the window rules, for every windowed function ------------------------------------------------

#: expression -> the bar offsets (0 = bar t) its value at bar t reads. Window functions read every
#: bar of their window; lag, change, pct_change, rising and falling read two points.
WINDOWED = {
    "lag": ("lag(price.close, 2)", {2}),
    "change": ("change(price.close, 2)", {0, 2}),
    "pct_change": ("pct_change(price.close, 2)", {0, 2}),
    "sma": ("sma(price.close, 3)", {0, 1, 2}),
    "ema": ("ema(price.close, 1)", {0, 1, 2, 3}),  # 4n bars
    "stdev": ("stdev(price.close, 3)", {0, 1, 2}),
    "zscore": ("zscore(price.close, 3)", {0, 1, 2}),
    "rolling_max": ("rolling_max(price.close, 3)", {0, 1, 2}),
    "rolling_min": ("rolling_min(price.close, 3)", {0, 1, 2}),
    "rolling_sum": ("rolling_sum(price.close, 3)", {0, 1, 2}),
    "rsi": ("rsi(price.close, 1)", {0, 1, 2, 3}),  # 4n bars
    "crosses_above": ("crosses_above(price.close, price.open)", {0, 1}),
    "crosses_below": ("crosses_below(price.close, price.open)", {0, 1}),
    "rising": ("rising(price.close, 2)", {0, 2}),
    "falling": ("falling(price.close, 2)", {0, 2}),
    "count_true": ("count_true(price.close > 3, 3)", {0, 1, 2}),
    "bars_since": ("bars_since(price.close > 3, 3)", {0, 1, 2}),
}


def test_every_windowed_builtin_is_covered():
    elementwise = {"abs", "min", "max", "clip", "fill", "is_missing"}
    assert set(WINDOWED) | elementwise == set(BUILTINS)


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_window_not_yet_full_is_unknown(name):
    expr, offsets = WINDOWED[name]
    lookback = max(offsets)
    cols = {"price.close": [1, 4, 2, 5, 3, 6, 2, 7], "price.open": [3, 3, 3, 3, 3, 3, 3, 3]}
    got = run(expr, cols)
    assert got[:lookback] == [_] * lookback
    assert all(v is not None for v in got[lookback:]), got


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_window_holding_an_unknown_is_unknown(name):
    expr, offsets = WINDOWED[name]
    hole = 3
    x = [1, 4, 2, None, 3, 6, 2, 7, 1, 8, 4, 9]
    got = run(expr, {"price.close": x, "price.open": [3] * len(x)})
    # a bar that reads bar 3 is unknown; every other bar with a full window is known
    for t, v in enumerate(got):
        if t < max(offsets) or (t - hole) in offsets:
            assert v is None, (t, v)
        else:
            assert v is not None, (t, v)


# --- categorical series ---------------------------------------------------------------------------


def test_categorical_lag_fill_is_missing():
    ex = {"funding.max_exchange": ["binance", None, "okx", "okx"]}
    assert run("lag(funding.max_exchange, 1)", ex) == [_, "binance", _, "okx"]
    assert run('fill(funding.max_exchange, "none")', ex) == ["binance", "none", "okx", "okx"]
    assert run("is_missing(funding.max_exchange)", ex) == [False, True, False, False]
    assert run('lag(funding.max_exchange, 1) == "binance"', ex) == [_, True, _, False]
    assert run('fill(lag(funding.max_exchange, 1), "binance") == "binance"', ex) == [True, True, True, False]
    assert run("lag(funding.max_exchange, 1) == funding.max_exchange", ex) == [_, _, _, True]


# --- windows from params --------------------------------------------------------------------------


def test_window_from_a_param():
    x = [3, 6, 9, 12, 3]
    assert run("sma(price.close, w)", close(x), params={"w": 3}) == [_, _, 6.0, 9.0, 8.0]
    assert run("sma(price.close, w)", close(x), params={"w": 2.0}) == [_, 4.5, 7.5, 10.5, 7.5]
