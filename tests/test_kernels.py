"""The numba window kernels (``language/kernels.py``, the ``speed`` extra) against the numpy helpers
they replace: identical bits (NaN positions and signs of zero included) on awkward inputs, in the
helpers and in every window function built on them, and used when numba is installed and a process
asks for them (the live runner) or ``PERPWATCH_NUMBA=1``."""

from __future__ import annotations

import numpy as np
import pytest

from perpwatch.evaluation.evaluate import evaluate, evaluate_last
from perpwatch.evaluation.frame import Frame
from perpwatch.language import functions as F
from perpwatch.language.compiler import load_strategy

pytest.importorskip("numba", reason="the kernels need numba (perpwatch[speed])")
from perpwatch.language import kernels  # noqa: E402

WINDOWS = (1, 2, 3, 5, 7, 24, 48, 63, 64, 65, 100, 399, 400, 401)


def numpy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(F, "_kernels", None)


@pytest.fixture(autouse=True)
def kernels_wanted(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the live runner (``prefer_compiled``), whatever the environment says."""
    monkeypatch.delenv("PERPWATCH_NUMBA", raising=False)
    monkeypatch.setattr(F, "_wanted", False)
    monkeypatch.setattr(F, "_kernels", False)
    F.prefer_compiled()


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.dtype == b.dtype
        and np.array_equal(a, b, equal_nan=True)
        and np.array_equal(np.signbit(a), np.signbit(b))
    )


def awkward(rng: np.random.Generator, k: int) -> np.ndarray:
    """Random walks of every scale, ties and flat runs, heavy tails, unknowns, 0.0 and -0.0."""
    t = int(rng.integers(1, 420))
    shape = k % 5
    if shape == 0:
        x = np.cumsum(rng.normal(0, 1, t)) * 10.0 ** int(rng.integers(-8, 13))
    elif shape == 1:
        x = np.round(rng.normal(0, 1, t), 2)
    elif shape == 2:
        x = np.repeat(rng.normal(size=t // 6 + 1), 6)[:t]
    elif shape == 3:
        x = rng.standard_t(1.5, t) * 1e9
    else:
        x = rng.choice([0.0, -0.0, 1.0, -1.0, 0.1], t)
    x[rng.random(t) < 0.04] = np.nan
    return x


def test_the_kernels_give_the_numpy_helpers_bits(monkeypatch):
    rng = np.random.default_rng(14)
    cases = [awkward(rng, k) for k in range(250)] + [np.empty(0), np.full(70, np.nan), np.zeros(70)]
    numpy_only(monkeypatch)
    checked = 0
    for x in cases:
        for n in WINDOWS:
            for op, kind in (
                (np.add, kernels.ADD),
                (np.maximum, kernels.MAXIMUM),
                (np.minimum, kernels.MINIMUM),
            ):
                assert identical(kernels.fold(x, n, kind), F.window_fold(x, n, op)), (op, n, x)
            mean, m2 = kernels.mean_m2(x, n)
            want_mean, want_m2 = F.window_mean_m2(x, n)
            assert identical(mean, want_mean) and identical(m2, want_m2), (n, x)
            assert np.array_equal(kernels.flat(x, n), F.flat_window(x, n)), (n, x)
            checked += 1
    assert checked == len(cases) * len(WINDOWS)


def test_window_functions_are_the_same_with_and_without_numba(monkeypatch):
    rng = np.random.default_rng(15)
    names = ("sma", "stdev", "zscore", "ema", "rsi", "rolling_max", "rolling_min", "rolling_sum")
    xs = [awkward(rng, k) for k in range(60)]
    conds = [
        np.where(rng.random(300) < 0.05, np.nan, (rng.random(300) < 0.3).astype(float)) for _ in range(5)
    ]
    fast = {}
    for name in names:
        for k, x in enumerate(xs):
            for n in (2, 5, 24):
                fast[name, k, n] = F.BUILTINS[name].func(x, n)
    for k, c in enumerate(conds):
        for n in (3, 24):
            fast["count_true", k, n] = F.f_count_true(c, n)
            fast["bars_since", k, n] = F.f_bars_since(c, n)
    numpy_only(monkeypatch)
    for (name, k, n), got in fast.items():
        x = conds[k] if name in ("count_true", "bars_since") else xs[k]
        assert identical(got, F.BUILTINS[name].func(x, n)), (name, n, x)


STRATEGY = """
version: 1
name: kern
interval: 1h
let:
  z: zscore(funding.close, 24)
  hi: rolling_max(lag(price.close, 1), 48)
rules:
  - name: hot
    when: z > 1.5 and price.close > sma(price.close, 20)
  - name: breakout
    when: price.close > hi and stdev(price.close, 12) > 0
"""


def test_the_live_path_and_the_whole_history_agree_across_numba_and_numpy(monkeypatch):
    s = load_strategy("kern.yaml", text=STRATEGY)
    rng = np.random.default_rng(16)
    n = 3000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    funding = np.round(0.01 + np.cumsum(rng.normal(0, 0.001, n)) * 0.1, 4)
    funding[rng.random(n) < 0.02] = np.nan
    frame = Frame(
        1_704_067_200_000 + 3_600_000 * np.arange(n, dtype=np.int64),
        {"price.close": close, "funding.close": funding},
    )
    full = evaluate(s, frame, "BTC")
    fast = {rule.name: full.series(rule.cond) for rule in s.rules}
    last = evaluate_last(s, frame, "BTC")
    numpy_only(monkeypatch)
    slow = evaluate(s, frame, "BTC")
    for rule in s.rules:
        assert identical(fast[rule.name], slow.series(rule.cond))
    assert sum(np.nansum(v) for v in fast.values()) > 10  # the rules do fire
    again = evaluate_last(s, frame, "BTC")
    for rule in s.rules:  # live (the newest bar, from its window) equals the whole history's last bar
        assert identical(np.atleast_1d(last.series(rule.cond))[-1:], fast[rule.name][-1:])
    for rule in s.rules:
        assert identical(
            np.atleast_1d(last.series(rule.cond))[-1:], np.atleast_1d(again.series(rule.cond))[-1:]
        )


def test_the_kernels_are_used_unless_switched_off(monkeypatch):
    calls: list[str] = []
    for name in ("fold", "mean_m2", "flat"):
        real = getattr(kernels, name)
        monkeypatch.setattr(
            kernels, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a)
        )
    F.f_zscore(np.arange(50.0), 24)
    F.f_rolling_max(np.arange(50.0), 24)
    assert sorted(set(calls)) == ["flat", "fold", "mean_m2"]
    calls.clear()
    monkeypatch.setattr(F, "_kernels", False)  # looked up again, with the switch off
    monkeypatch.setenv("PERPWATCH_NUMBA", "0")
    assert F.compiled() is None
    F.f_zscore(np.arange(50.0), 24)
    assert calls == []


def test_one_shot_processes_keep_numpy_unless_told(monkeypatch):
    monkeypatch.setattr(F, "_wanted", False)  # nothing called prefer_compiled (backtest, test, sweep)
    monkeypatch.setattr(F, "_kernels", False)
    assert F.compiled() is None
    monkeypatch.setenv("PERPWATCH_NUMBA", "1")  # told
    assert F.compiled() is kernels
    monkeypatch.setattr(F, "_kernels", False)
    monkeypatch.delenv("PERPWATCH_NUMBA")
    F.prefer_compiled()  # the live runner
    assert F.compiled() is kernels
