"""Evaluation benchmark: the column-wise engine against a naive row-by-row simpleeval baseline.

Run by hand (not part of the test suite)::

    python bench/eval_bench.py [--bars 100000] [--baseline-bars 2000] [--seed 42]

A realistic strategy of 10 rules (z-scores, moving averages, pct_change, rolling max/min, a cases
block, condition sets, for/cooldown) runs over synthetic 1h market data generated here:

(a) the engine: ``evaluate`` over the whole history plus ``rules.walk`` (events included);
(b) the baseline: the same expressions evaluated bar by bar with simpleeval, the naive way: each
    bar builds its names, window functions compute from Python lists of the trailing values, and
    the rule state machine is stepped per bar. Each expression is parsed once, and events are
    recorded as bare tuples (no messages or values): both kind to the baseline. It is measured on a subset of bars and scaled linearly (its cost per bar does not
    depend on the bar's position), which the output says;
(c) the live path: ``evaluate_last`` for the newest bar (a warm-up + 1 bar window), per second;
(d) the same rule set written by hand in pandas and in polars (``dataframe_rules.py``: the ten
    rules' truths over every bar) against the engine's ``evaluate`` alone, in the same run, with
    the rule-bar truths each agrees on. pandas and polars come with ``pip install 'perpwatch[test]'``;
    without one, its row says so and the rest runs;
(e) the window helpers in numba (``perpwatch/language/kernels.py``, ``pip install 'perpwatch[speed]'``)
    against numpy, in the same run: the live path (c) and the whole history, each checked to give
    identical truths; and the one-off cost of importing numba and compiling the kernels into a
    fresh cache (a child process).

Times are medians of ``--runs`` runs (at least 5) with their spread (min .. max), wall clock and
process CPU time (polars uses several threads, so its CPU time can exceed its wall time). The
machine is shared: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import simpleeval
import yaml
from dataframe_rules import load, pandas_rules, polars_rules

from perpwatch.common.extras import MissingExtra
from perpwatch.evaluation.evaluate import evaluate, evaluate_last
from perpwatch.evaluation.frame import Frame
from perpwatch.evaluation.rules import RuleState, step, walk
from perpwatch.language.compiler import load_strategy
from perpwatch.language.functions import compiled

HOUR = 3_600_000

STRATEGY = """\
version: 1
name: bench
interval: 1h
params:
  z_hi: 2
  z_lo: -2
  w: 24
let:
  funding_z: zscore(funding.close, w)
  oi_chg: pct_change(oi.close, 4)
  oi_z: zscore(oi.close, 48)
  liq_z: zscore(liq.total_usd, w)
  short_liq_z: zscore(liq.short_usd, w)
  long_liq_z: zscore(liq.long_usd, w)
  trend_up: sma(price.close, 20) > sma(price.close, 50)
  breakout: price.close > rolling_max(lag(price.high, 1), w)
  breakdown: price.close < rolling_min(lag(price.low, 1), w)
  taker_z: zscore(taker.buy_pct, w)
  ret_24: pct_change(price.close, 24)
  vol_z: zscore(price.volume, 48)
  state:
    cases:
      - when: liq_z > 4
        then: RISK_OFF
      - when: short_liq_z > z_hi and funding.close < 0
        then: SHORT_SQUEEZE
      - when: long_liq_z > z_hi and funding.close > 0.03
        then: LONG_SQUEEZE
    else: NEUTRAL
rules:
  - name: squeeze_long
    when:
      all:
        - state == "SHORT_SQUEEZE"
        - oi_chg > 0
        - breakout
    severity: high
    cooldown: 4h
  - name: squeeze_short
    when:
      all:
        - state == "LONG_SQUEEZE"
        - oi_chg < 0
        - breakdown
    severity: high
    cooldown: 4h
  - name: funding_hot
    when: funding_z > z_hi and oi_z > 1
  - name: funding_cold
    when:
      all:
        - funding_z < z_lo
        - not: trend_up
  - name: liq_cascade
    when:
      any:
        - liq_z > 4
        - all: [long_liq_z > 3, ret_24 < -5]
    cooldown: 2h
  - name: oi_build
    when: oi_chg > 1 and abs(ret_24) < 1
    for: 1
  - name: taker_flow
    when: taker_z > z_hi and trend_up
  - name: trend_break
    when: breakdown and trend_up
    for: 2
  - name: risk_off
    when: state == "RISK_OFF"
    cooldown: 4h
  - name: volume_spike
    when: vol_z > 4 and sma(price.close, 5) > sma(price.close, 20)
"""


# --- data -----------------------------------------------------------------------------------------


def synthetic_frame(n: int, seed: int) -> Frame:
    """Market-like 1h bars: a GBM price, OI that drifts with it, sticky funding, bursty liquidations."""
    rng = np.random.default_rng(seed)
    ret = rng.standard_t(4, n) * 0.004
    close = 60_000 * np.exp(np.cumsum(ret))
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.normal(0, 0.003, (2, n)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = np.exp(rng.normal(18, 0.6, n)) * (1 + 40 * np.abs(ret))
    oi = 1.5e10 * np.exp(np.cumsum(rng.normal(0, 0.002, n) + 0.3 * ret))
    shocks, funding = rng.normal(0, 0.003, n), np.empty(n)
    level = 0.01
    for i in range(n):  # mean-reverting around the usual 0.01 %
        level = 0.01 + 0.97 * (level - 0.01) + shocks[i] - 0.2 * ret[i]
        funding[i] = level
    funding = np.round(funding, 4)
    funding = np.where(rng.random(n) < 0.3, 0.01, funding)  # often pinned at the 0.01 floor
    long_liq = np.exp(rng.normal(13, 0.8, n)) * (1 + 200 * np.maximum(-ret, 0))
    short_liq = np.exp(rng.normal(13, 0.8, n)) * (1 + 200 * np.maximum(ret, 0))
    buy = volume * close * rng.uniform(0.4, 0.6, n)
    sell = volume * close - buy
    frame = Frame(np.arange(n, dtype=np.int64) * HOUR + 1_704_067_200_000)
    frame.columns.update(
        {
            "price.open": open_,
            "price.high": high,
            "price.low": low,
            "price.close": close,
            "price.volume": volume * close,
            "oi.close": oi,
            "funding.close": funding,
            "liq.long_usd": long_liq,
            "liq.short_usd": short_liq,
            "liq.total_usd": long_liq + short_liq,
            "taker.buy_pct": buy / (buy + sell) * 100,
        }
    )
    return frame


# --- the naive baseline ---------------------------------------------------------------------------


class At(float):
    """A value at bar ``t`` that remembers its series, so window functions can look back."""

    __slots__ = ("t", "values")

    def __new__(cls, values: list[float], t: int):
        obj = float.__new__(cls, values[t] if t >= 0 else math.nan)
        obj.values, obj.t = values, t
        return obj


class Group:
    """``price`` in ``price.close``: attributes are the group's metrics at the current bar."""

    def __init__(self, **fields: At):
        self.__dict__.update(fields)


def _window(x: At, n: int) -> list[float] | None:
    if x.t - n + 1 < 0:
        return None
    vals = x.values[x.t - n + 1 : x.t + 1]
    return None if any(v != v for v in vals) else vals


def b_lag(x, n=1):
    return At(x.values, x.t - n)


def b_pct_change(x, n=1):
    prev = x.values[x.t - n] if x.t - n >= 0 else math.nan
    return (x / prev - 1) * 100 if prev else math.nan


def b_sma(x, n):
    vals = _window(x, n)
    return math.nan if vals is None else sum(vals) / n


def b_stdev_mean(x, n):
    vals = _window(x, n)
    if vals is None:
        return math.nan, math.nan
    mean = sum(vals) / n
    return math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)), mean


def b_zscore(x, n):
    sd, mean = b_stdev_mean(x, n)
    return (x - mean) / sd if sd == sd and sd > 0 else math.nan


def b_rolling_max(x, n):
    vals = _window(x, n)
    return math.nan if vals is None else max(vals)


def b_rolling_min(x, n):
    vals = _window(x, n)
    return math.nan if vals is None else min(vals)


FUNCTIONS = {
    "lag": b_lag,
    "pct_change": b_pct_change,
    "sma": b_sma,
    "zscore": b_zscore,
    "rolling_max": b_rolling_max,
    "rolling_min": b_rolling_min,
    "abs": abs,
}


def condition_text(spec) -> str:
    """A condition set as one Python expression."""
    if isinstance(spec, dict):
        (op, arg), *_ = spec.items()
        if op == "not":
            return f"not ({condition_text(arg)})"
        return f" {'and' if op == 'all' else 'or'} ".join(f"({condition_text(c)})" for c in arg)
    return str(spec)


class Baseline:
    """The strategy's YAML, evaluated per bar with simpleeval."""

    def __init__(self, text: str, frame: Frame):
        doc = yaml.safe_load(text)
        self.params = doc.get("params", {})
        self.series = {name: col.tolist() for name, col in frame.columns.items()}
        self.evaluator = simpleeval.SimpleEval(functions=FUNCTIONS)
        self.lets = []  # (name, kind, parsed...) in file (= dependency) order
        for name, spec in doc["let"].items():
            if isinstance(spec, dict):
                cases = [(self.parse(condition_text(c["when"])), c["then"]) for c in spec["cases"]]
                self.lets.append((name, "cases", cases, spec.get("else")))
            else:
                self.lets.append((name, "expr", self.parse(spec), None))
        self.rules = [(r["name"], self.parse(condition_text(r["when"]))) for r in doc["rules"]]

    def parse(self, text: str):
        return (text, self.evaluator.parse(text))

    def eval(self, parsed):
        text, tree = parsed
        return self.evaluator.eval(text, previously_parsed=tree)

    def bar(self, t: int) -> list[bool]:
        groups: dict[str, dict[str, At]] = {}
        for name, values in self.series.items():
            group, field = name.split(".")
            groups.setdefault(group, {})[field] = At(values, t)
        names = {g: Group(**fields) for g, fields in groups.items()}
        names.update(self.params)
        self.evaluator.names = names
        for name, kind, parsed, other in self.lets:
            if kind == "expr":
                names[name] = self.eval(parsed)
            else:
                names[name] = next((then for cond, then in parsed if self.eval(cond)), other)
        return [bool(self.eval(parsed)) for _, parsed in self.rules]


# --- main -----------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], list[float], Any]:
    """Wall and CPU seconds of ``runs`` calls of ``fn`` (after one untimed warm-up call), and its result."""
    out = fn()
    walls, cpus = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return walls, cpus, out


def spread(xs: list[float]) -> str:
    """``median ms [min .. max]``."""
    return f"{statistics.median(xs) * 1000:8.1f} ms [{min(xs) * 1000:.1f} .. {max(xs) * 1000:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bars", type=int, default=100_000)
    ap.add_argument("--baseline-bars", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", type=int, default=7, help="timed runs per measurement (at least 5)")
    args = ap.parse_args()
    n, runs = args.bars, max(5, args.runs)

    t0 = time.perf_counter()
    s = load_strategy("bench.yaml", text=STRATEGY)
    compile_s = time.perf_counter() - t0
    frame = synthetic_frame(n, args.seed)

    print("perpwatch evaluation benchmark")
    print(
        f"  strategy: {len(s.rules)} rules, {len(s.lets)} lets, {len(s.metrics)} metrics, "
        f"warm-up {s.warmup} bars, {len(s.plan.nodes)} plan nodes"
    )
    print(f"  data:     {n:,} synthetic 1h bars (seed {args.seed}); {runs} timed runs per row")
    print(f"  compile (load_strategy, once):                 {compile_s * 1000:8.2f} ms")

    # (a) the column-wise engine
    def engine_all() -> list:
        return walk(s, evaluate(s, frame, "BTC"), {})

    walls, cpus, events = timed(engine_all, runs)
    engine_s = statistics.median(walls)
    kinds = {k: sum(e.kind == k for e in events) for k in ("fired", "suppressed", "resolved")}
    print(
        f"  (a) engine, evaluate + walk, {n:,} bars:  {spread(walls)}  "
        f"({n / engine_s / 1e6:.2f} M bars/s; CPU median {statistics.median(cpus) * 1000:.1f} ms)"
    )
    print(
        f"      events: {kinds['fired']} fired, {kinds['suppressed']} suppressed, {kinds['resolved']} resolved"
    )

    # (b) the naive row-by-row baseline, on a subset after the warm-up
    m = min(args.baseline_bars, n - s.warmup)
    base = Baseline(STRATEGY, frame)
    first = n - m
    truths = np.empty((m, len(s.rules)), dtype=bool)
    runs_b = []
    for _ in range(3):
        states = [RuleState() for _ in s.rules]
        base_events: list[tuple[int, str, str]] = []
        t0 = time.perf_counter()
        for k, t in enumerate(range(first, n)):
            row = base.bar(t)
            truths[k] = row
            for state, rule, truth in zip(states, s.rules, row, strict=True):
                kind = step(state, truth, int(frame.times[t]), rule.for_bars, rule.cooldown_ms)
                if kind:
                    base_events.append((t, rule.name, kind))
        runs_b.append(time.perf_counter() - t0)
    measured_s = statistics.median(runs_b)
    baseline_s = measured_s * n / m
    scaled = "" if m == n else f" -> {baseline_s:8.1f} s for {n:,} bars (scaled linearly x{n / m:g})"
    print(f"  (b) row-by-row simpleeval, {m:,} bars measured: {measured_s:8.3f} s{scaled}")
    print(f"      (median of 3; {len(base_events)} events on the measured bars)")
    ev = evaluate(s, frame, "BTC")
    engine_truths = np.stack([ev.series(rule.cond)[first:] == 1 for rule in s.rules], axis=1)
    agree = int((engine_truths == truths).sum())
    print(
        f"      the baseline agrees with the engine on {agree:,} of {truths.size:,} rule-bar truths "
        f"({int(truths.sum()):,} True)"
    )
    ratio = baseline_s / engine_s
    print(f"  speed-up (b) / (a):                            {ratio:8.0f} x   (target >= 100 x)")

    # (c) the live path: one newest bar
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        evaluate_last(s, frame, "BTC")
        calls += 1
    live_s = (time.perf_counter() - t0) / calls
    print(
        f"  (c) live path, evaluate_last on {s.warmup + 1} bars:      {1 / live_s:8,.0f} evaluations/s "
        f"({live_s * 1000:.3f} ms each; window helpers in {'numba' if compiled() else 'numpy'}: see (e))"
    )

    # (d) the same rules in pandas and polars, against evaluate alone
    print(
        f"  (d) the ten rules' truths over {n:,} bars (median [min .. max] wall; CPU median; "
        "time as a multiple of perpwatch's):"
    )
    walls, cpus, ev = timed(lambda: evaluate(s, frame, "BTC"), runs)
    mine = {rule.name: ev.series(rule.cond) == 1 for rule in s.rules}
    base_wall = statistics.median(walls)
    base_cpu = statistics.median(cpus)
    print(
        f"      perpwatch evaluate  {spread(walls)}  CPU {base_cpu * 1000:7.1f} ms   1.00 x wall,  1.00 x CPU"
    )
    columns = {name: np.asarray(col) for name, col in frame.columns.items()}
    for name, rules in (("pandas", pandas_rules), ("polars", polars_rules)):
        try:
            lib = load(name)
        except MissingExtra as e:
            print(f"      {name:<18}  not measured: {e}")
            continue
        walls, cpus, theirs = timed(lambda lib=lib, rules=rules: rules(lib, columns), runs)
        same = sum(int((theirs[r] == mine[r]).sum()) for r in mine)
        print(
            f"      {name} {lib.__version__:<11} {spread(walls)}  CPU {statistics.median(cpus) * 1000:7.1f} ms  "
            f"{statistics.median(walls) / base_wall:5.2f} x wall, {statistics.median(cpus) / base_cpu:5.2f} x CPU;  agrees on {same:,} of {n * len(mine):,} rule-bar truths"
        )

    kernels_vs_numpy(s, frame, runs)


COLD = """
import os, sys, tempfile, time
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp()
import numpy as np
t = time.process_time()
from perpwatch.language import kernels
imported = time.process_time() - t
kernels.warm_up()
print(imported, time.process_time() - t - imported)
"""


def kernels_vs_numpy(s: Any, frame: Frame, runs: int) -> None:
    """(e): the same evaluations with the numba kernels and with numpy (``functions.compiled``)."""
    from perpwatch.language import functions

    fast = functions.compiled()
    if fast is None:
        print("  (e) numba kernels not measured: numba is not installed (pip install 'perpwatch[speed]')")
        return
    rows: dict[str, dict[str, list[float]]] = {}
    answers: dict[str, list[Any]] = {}
    for mode, module in (("numpy", None), ("numba", fast), ("numpy", None), ("numba", fast)):  # interleaved
        functions._kernels = module  # what compiled() hands out (the bench's switch)
        live_walls, live_cpus, last = timed(lambda: evaluate_last(s, frame, "BTC"), runs * 40)
        full_walls, full_cpus, ev = timed(lambda: evaluate(s, frame, "BTC"), runs)
        row = rows.setdefault(mode, {"live": [], "live_cpu": [], "full": [], "full_cpu": []})
        row["live"] += live_walls
        row["live_cpu"] += live_cpus
        row["full"] += full_walls
        row["full_cpu"] += full_cpus
        answers.setdefault(mode, []).append(
            [ev.series(r.cond).tobytes() + last.series(r.cond)[-1:].tobytes() for r in s.rules]
        )
    functions._kernels = fast
    same = all(a == answers["numpy"][0] for group in answers.values() for a in group)
    print("  (e) window helpers in numba against numpy (medians [min .. max] of interleaved runs; speed-up):")
    for what, key in (("live path, evaluate_last", "live"), ("whole history, evaluate", "full")):
        base = statistics.median(rows["numpy"][key])
        cpu_base = statistics.median(rows["numpy"][key + "_cpu"])
        for mode in ("numpy", "numba"):
            xs = rows[mode][key]
            print(
                f"      {what:<25} {mode}  {spread(xs)}  CPU {statistics.median(rows[mode][key + '_cpu']) * 1000:8.3f} ms"
                f"  {base / statistics.median(xs):5.2f} x wall, "
                f"{cpu_base / statistics.median(rows[mode][key + '_cpu']):5.2f} x CPU"
            )
    print(f"      identical truths, numba and numpy, live and whole history: {'yes' if same else 'NO'}")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True)
    imported, compiled = map(float, done.stdout.split())
    print(
        f"      once per process, CPU: import numba {imported * 1000:.0f} ms; compiling the kernels into an "
        f"empty cache {compiled * 1000:.0f} ms (loaded from the cache afterwards)"
    )


if __name__ == "__main__":
    main()
