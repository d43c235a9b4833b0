"""Valid input cannot make perpwatch compute for minutes (issue 12, item 9).

* Window functions cost about one pass per bar whatever the window: each runs with a 100,000-bar
  window over 1.2M bars within a CPU budget of a few thousand plain numpy passes over the same bars
  (a cost of window × bars would be 400,000 passes for ema). The budget is enforced by a CPU timer
  (SIGPROF), so a regression fails in seconds instead of running for minutes.
* They still compute what their documentation says (a naive per-window reference on small inputs,
  unknown values exactly where they were), and the value at a bar depends only on that bar's window,
  bit for bit (what lets the live path evaluate only warm-up + 1 bars).
* A strategy's warm-up is bounded: past ``MAX_WARMUP_BARS`` a located error, not a live cycle that
  fetches and evaluates millions of bars.
* The expanding notation of test files parses in time linear in its length; hostile series fail
  at once with a located, short error.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import yaml
from helpers import invoke

from perpwatch.common.errors import ErrorList, LocatedError
from perpwatch.evaluation.evaluate import evaluate, evaluate_last
from perpwatch.evaluation.frame import Frame
from perpwatch.language.compiler import MAX_WARMUP_BARS, load_strategy
from perpwatch.language.functions import BUILTINS, FunctionSpec, compiled
from perpwatch.testing.notation import expand

WINDOWED = [
    "sma",
    "ema",
    "rsi",
    "stdev",
    "zscore",
    "rolling_max",
    "rolling_min",
    "rolling_sum",
    "count_true",
    "bars_since",
]
CONDITIONS = {"count_true", "bars_since"}


class CpuBudgetExceeded(Exception):
    pass


@contextlib.contextmanager
def cpu_budget(seconds: float, what: str) -> Iterator[None]:
    """Raise CpuBudgetExceeded in the block once the process has used ``seconds`` of CPU time."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("no CPU timers here (setitimer)")

    def over(signum, frame):
        raise CpuBudgetExceeded(f"{what} used more than {seconds:.2f} s of CPU")

    previous = signal.signal(signal.SIGPROF, over)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def cpu_seconds(fn: Callable[[], object], repeat: int = 1) -> float:
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t0) / repeat


def market(bars: int, seed: int = 3, holes: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """A random-walk price with flat stretches and unknown values, and a condition from it."""
    rng = np.random.default_rng(seed)
    x = 60_000.0 + np.cumsum(rng.normal(0.0, 40.0, bars))
    for start in rng.integers(0, bars, max(1, bars // 500)):
        x[start : start + int(rng.integers(2, 60))] = x[start]  # flat: the exact-value paths
    x[rng.random(bars) < holes] = np.nan
    cond = np.where(np.isnan(x), np.nan, (x > np.roll(x, 3)).astype(float))
    return x, cond


def call(name: str, x: np.ndarray, cond: np.ndarray, n: int) -> np.ndarray:
    return BUILTINS[name].func(cond if name in CONDITIONS else x, n)


# --- cost: about one pass per bar whatever the window ----------------------------------------------


@pytest.fixture(scope="module")
def big() -> tuple[np.ndarray, np.ndarray, float]:
    x, cond = market(1_200_000)
    compiled()  # numba's kernels (the speed extra), when installed, compiled outside the CPU budgets
    plain = min(cpu_seconds(lambda: x * 0.5 + x, repeat=10) for _ in range(3))  # one numpy pass
    return x, cond, plain


@pytest.mark.parametrize("name", WINDOWED)
def test_a_100000_bar_window_over_1_2m_bars_costs_a_few_thousand_plain_passes(big, name):
    x, cond, plain = big
    budget = max(3000 * plain, 0.5)  # the functions need ~30-350 passes; window × bars is 400,000
    with cpu_budget(budget, f"{name}(x, 100000) over 1.2M bars"):
        spent = cpu_seconds(lambda: call(name, x, cond, 100_000))
    assert spent < budget


def test_the_cpu_budget_can_fail():
    with pytest.raises(CpuBudgetExceeded), cpu_budget(0.05, "a busy loop"):
        while True:
            sum(range(1000))


# --- what they compute: a naive per-window reference -----------------------------------------------


def _window(x: list[float], t: int, n: int) -> list[float] | None:
    if t + 1 < n:
        return None
    w = x[t - n + 1 : t + 1]
    return None if any(math.isnan(v) for v in w) else w


def ref_sma(x, t, n):
    w = _window(x, t, n)
    if w is None:
        return None
    return w[0] if all(v == w[0] for v in w) else math.fsum(w) / n


def ref_stdev(x, t, n):
    w = _window(x, t, n)
    if w is None:
        return None
    mean = math.fsum(w) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in w) / (n - 1))


def ref_zscore(x, t, n):
    sd, mean = ref_stdev(x, t, n), ref_sma(x, t, n)
    if sd is None or mean is None or sd == 0 or all(v == x[t] for v in x[t - n + 1 : t + 1]):
        return None
    return (x[t] - mean) / sd


def ref_ema(x, t, n):
    w = _window(x, t, 4 * n)
    if w is None:
        return None
    if all(v == w[0] for v in w):
        return w[0]
    alpha = 2 / (n + 1)
    e = w[0]
    for v in w[1:]:
        e = alpha * v + (1 - alpha) * e
    return e


def ref_rsi(x, t, n):
    w = _window(x, t, 4 * n)
    if w is None:
        return None
    d = [b - a for a, b in zip(w, w[1:], strict=False)]
    gain = math.fsum(max(v, 0.0) for v in d[:n]) / n
    loss = math.fsum(max(-v, 0.0) for v in d[:n]) / n
    for v in d[n:]:
        gain = (gain * (n - 1) + max(v, 0.0)) / n
        loss = (loss * (n - 1) + max(-v, 0.0)) / n
    if loss == 0:
        return 50.0 if gain == 0 else 100.0
    return 100 - 100 / (1 + gain / loss)


def ref_fold(fn):
    def ref(x, t, n):
        w = _window(x, t, n)
        return None if w is None else fn(w)

    return ref


def ref_bars_since(c, t, n):
    w = _window(c, t, n)
    if w is None:
        return None
    ago = [k for k in range(n) if w[n - 1 - k] == 1]
    return float(ago[0]) if ago else None


REFERENCES = {
    "sma": ref_sma,
    "ema": ref_ema,
    "rsi": ref_rsi,
    "stdev": ref_stdev,
    "zscore": ref_zscore,
    "rolling_max": ref_fold(max),
    "rolling_min": ref_fold(min),
    "rolling_sum": ref_fold(math.fsum),
    "count_true": ref_fold(math.fsum),
    "bars_since": ref_bars_since,
}


def _inputs():
    rng = np.random.default_rng(11)
    yield "walk", *market(300, seed=1, holes=0.02)
    ints = rng.integers(0, 3, 300).astype(float)  # ties and flat windows everywhere
    ints[rng.random(300) < 0.02] = np.nan
    yield "small integers", ints, np.where(np.isnan(ints), np.nan, (ints == 2).astype(float))
    wild = rng.normal(0, 1, 300) * 10.0 ** rng.integers(-6, 7, 300)  # magnitudes far apart
    yield "wild magnitudes", wild, (wild > 0).astype(float)


@pytest.mark.parametrize("name", WINDOWED)
def test_window_functions_match_a_naive_reference(name):
    ref = REFERENCES[name]
    for label, x, cond in _inputs():
        arg = cond if name in CONDITIONS else x
        values = arg.tolist()
        for n in (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 50):
            if n < 2 and name in ("stdev", "zscore"):
                continue
            got = BUILTINS[name].func(arg, n)
            for t in range(len(values)):
                want = ref(values, t, n)
                have = None if math.isnan(got[t]) else float(got[t])
                where = f"{name}({label}, {n}) at bar {t}"
                assert (want is None) == (have is None), f"{where}: {have} != {want}"
                if want is not None:
                    scale = 1.0 if name in ("zscore", "rsi") else max(abs(want), 1e-300)
                    assert abs(have - want) <= 1e-10 * scale + 1e-12 * (name == "stdev"), (where, have, want)


def test_flat_windows_give_their_value_exactly():
    x = np.array([0.1] * 40 + [65000.1] * 40)
    for name in ("sma", "ema"):
        got = BUILTINS[name].func(x, 5)
        assert got[39] == 0.1 and got[79] == 65000.1, name
    assert BUILTINS["stdev"].func(x, 7)[79] == 0.0
    assert np.isnan(BUILTINS["zscore"].func(x, 7)[79])
    assert BUILTINS["rsi"].func(x, 5)[79] == 50.0


# --- the value at a bar depends only on its own window, bit for bit --------------------------------


def _same_bits(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return np.float64(a).view(np.uint64) == np.float64(b).view(np.uint64)


@pytest.mark.parametrize("name", WINDOWED)
def test_the_value_at_a_bar_is_the_same_over_just_its_window(name):
    x, cond = market(6000, seed=5, holes=0.001)
    rng = np.random.default_rng(9)
    spec = BUILTINS[name]
    for n in (2, 3, 5, 8, 13, 64, 100, 255, 256, 257, 1000):
        full = call(name, x, cond, n)
        need = spec.bars_back([n])  # bars before the current one
        for t in sorted({need, need + 1, len(x) - 1, *rng.integers(need, len(x), 25).tolist()}):
            lo = t - need
            alone = call(name, x[lo : t + 1], cond[lo : t + 1], n)[-1]
            assert _same_bits(full[t], alone), f"{name}(x, {n}) at bar {t}: {full[t]!r} != {alone!r}"


def test_live_equals_full_with_long_nested_windows():
    text = """\
version: 1
name: long-windows
let:
  slow: ema(price.close, 2000)
  trend: sma(ema(price.close, 300), 1000) - slow
  z: zscore(price.close, 4321)
  r: rsi(sma(price.close, 7), 500)
rules:
  - name: r
    when: trend > 0 and z > -5 and r > 0 and bars_since(price.close > slow, 3000) >= 0
"""
    s = load_strategy("long.yaml", text=text)
    assert s.warmup == 7999 + 2999  # bars_since(price.close > ema(.., 2000), 3000): the longest chain
    x, _ = market(20_000, seed=8, holes=0.0005)
    frame = Frame(np.arange(len(x), dtype=np.int64) * 3_600_000, {"price.close": x})
    full = evaluate(s, frame, "BTC")
    for t in (s.warmup, s.warmup + 1, 12_345, len(x) - 1):
        live = evaluate_last(s, frame.slice(0, t + 1), "BTC")
        for i in range(len(s.plan.nodes)):
            a, b = full.series(i), live.series(i)
            if isinstance(a, np.ndarray):
                assert _same_bits(float(a[t]), float(b[-1])), (t, s.plan.nodes[i])


# --- the warm-up is bounded ------------------------------------------------------------------------


def _errors(text: str, **kw) -> list[str]:
    with pytest.raises((ErrorList, LocatedError)) as info:
        load_strategy("w.yaml", text=text, **kw)
    e = info.value
    return [str(x) for x in e.errors] if isinstance(e, ErrorList) else [str(e)]


def test_nested_windows_past_the_warm_up_limit_are_a_located_error():
    text = """\
version: 1
name: w
let:
  a: ema(price.close, 20000)
  b: ema(a, 20000)
  c: sma(b, 10)
rules:
  - name: r
    when: c > 0
"""
    errors = _errors(text)
    assert len(errors) == 1, errors  # b, reported once: c and the rule depend on it quietly
    assert errors[0].startswith("w.yaml:5:6: error: let 'b' needs 159,998 bars of history")
    assert f"at most {MAX_WARMUP_BARS:,}" in errors[0]


def test_the_warm_up_limit_holds_for_rule_conditions_and_signals():
    cond = "version: 1\nname: w\nrules:\n  - name: r\n    when: rsi(price.close, 30000) > 50\n"
    (error,) = _errors(cond)
    assert error.startswith("w.yaml:5:11: error: the condition of rule 'r' needs 119,999 bars")
    size = (
        "version: 1\nname: w\nexecute: paper\nrules:\n  - name: r\n    when: price.close > 0\n"
        "    signal:\n      side: long\n      size_usd: 100 + lag(sma(price.close, 90000), 20000)\n"
    )
    (error,) = _errors(size)
    assert "signal size_usd needs 109,999 bars" in error and error.startswith("w.yaml:9:")


def test_the_warm_up_limit_is_inclusive_and_counts_plugin_lookbacks():
    at_limit = (
        f"version: 1\nname: w\nrules:\n  - name: r\n    when: lag(price.close, {MAX_WARMUP_BARS}) > 0\n"
    )
    assert load_strategy("w.yaml", text=at_limit).warmup == MAX_WARMUP_BARS
    over = at_limit.replace("lag(price.close,", "lag(change(price.close),")
    assert "needs 100,001 bars" in _errors(over)[0]
    deep = FunctionSpec("deep", lambda x: x, ("x",), 1, lookback=lambda: 10**9)
    text = "version: 1\nname: w\nrules:\n  - name: r\n    when: deep(price.close) > 0\n"
    assert "needs 1,000,000,000 bars" in _errors(text, functions={"deep": deep})[0]


def test_validate_refuses_a_warm_up_bomb_with_exit_2(tmp_path):
    lets = {"l0": "price.close"}
    for i in range(1, 11):
        lets[f"l{i}"] = f"ema(l{i - 1}, 100000)"  # 10 nested: a warm-up of ~4 million bars
    doc = {"version": 1, "name": "bomb", "let": lets, "rules": [{"name": "r", "when": "l10 > 0"}]}
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert "let 'l1' needs 399,999 bars of history" in result.stderr
    assert "Traceback" not in result.stderr


# --- the expanding notation parses in linear time --------------------------------------------------


HOSTILE = {
    "a digit run": lambda k: "1" * k + "a",
    "a digit run before x": lambda k: "1" * (k // 2) + "+" + "1" * (k // 2) + "xa",
    "1+ repeated": lambda k: "1+" * (k // 2),
    "1+1x repeated": lambda k: "1+1x" * (k // 4),
    "x1 repeated in a word": lambda k: "ab" + "x1" * (k // 2),
    "a long count": lambda k: "_x" + "1" * k,
    "a long exponent": lambda k: "1e" + "9" * k,
}


def _parse(text: str) -> None:
    with contextlib.suppress(ValueError):
        expand(text)


def _per_parse(text: str) -> float:
    """CPU seconds of one parse, from enough repeats to be measurable."""
    repeat = 1
    while True:
        spent = cpu_seconds(lambda: _parse(text), repeat)
        if spent * repeat >= 0.02 or repeat >= 4096:
            return spent
        repeat *= 4


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_10x_longer_series_parses_in_about_10x_the_cpu_time(kind):
    make = HOSTILE[kind]
    for size in (4_000, 40_000):  # first, fail fast: one parse costs at most 200 splits of the text
        text = make(size)
        split = min(cpu_seconds(text.split, repeat=100) for _ in range(3))
        with cpu_budget(max(200 * split, 0.05), f"parsing {size:,} characters of {kind}"):
            _parse(text)
    small = min(_per_parse(make(4_000)) for _ in range(3))
    big = min(_per_parse(make(40_000)) for _ in range(3))
    assert big < 30 * small, (kind, small, big)  # linear: about 10x; quadratic: 100x


def test_valid_series_still_expand():
    assert expand("100+1x3 10-2x2 0.05x1 _ _x2 Binance 5 -3e2 .5 1. 6e10+1e8x1 +4") == [
        100.0,
        101.0,
        102.0,
        103.0,
        10.0,
        8.0,
        6.0,
        0.05,
        0.05,
        None,
        None,
        None,
        "Binance",
        5.0,
        -300.0,
        0.5,
        1.0,
        6e10,
        6.01e10,
        4.0,
    ]
    assert expand("1x" + "0" * 5000 + "2") == [1.0, 1.0, 1.0]  # leading zeros of a count


@pytest.mark.parametrize(
    "series, message",
    [
        ("1+" * 10_000, "is not expanding notation"),
        ("1" * 10_000, "holds a number that is not finite"),
        ("1e999x3", "holds a number that is not finite"),
        ("1e308+1e308x3", "counts past the largest number"),
        ("_x" + "9" * 10_000, "expands past 1000000 values"),
        ("5x" + "9" * 10_000, "expands past 1000000 values"),
    ],
)
def test_hostile_series_fail_fast_with_a_short_located_error(tmp_path, series, message):
    (tmp_path / "s.yaml").write_text("version: 1\nname: s\nrules:\n  - name: r\n    when: price.close > 0\n")
    test = {
        "strategy": "s.yaml",
        "tests": [{"name": "t", "series": {"price.close": series}, "expect": [{"at": 0, "fired": []}]}],
    }
    path = tmp_path / "s.test.yaml"
    path.write_text(yaml.safe_dump(test, width=10**9))
    with cpu_budget(5.0, "perpwatch test on a hostile series"):
        result = invoke("test", path)
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.stderr.splitlines() if "error:" in x]
    assert line.startswith(f"{path}:") and message in line, line
    assert len(line) < len(str(path)) + 300  # the token is quoted short, not 10,000 characters
