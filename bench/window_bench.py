"""Window-function benchmark: CPU seconds of each built-in window function against its window size.

Run by hand (not part of the test suite)::

    python bench/window_bench.py [--bars 1200000] [--windows 24,1000,100000] [--functions ema,rsi]
                                 [--budget 120]

Each (function, window) pair is called once on ``--bars`` bars of a synthetic random walk (with a
few unknown values) and timed in CPU seconds (``time.process_time``). Next to it: the CPU time of
one plain numpy pass over the same bars (``x * 0.5 + x``), and the ratio of the two, which is what
the cost is measured in: a function whose cost grows with window × bars shows a ratio that grows
with the window; one that is (near) linear in bars keeps it flat. A pair estimated (from the
smaller windows of the same function) to take longer than ``--budget`` CPU seconds is skipped and
reported with its estimate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from perpwatch.language.functions import BUILTINS

WINDOWED = (
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
)


def series(bars: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random-walk price with 0.1 % of its values unknown, and a condition from it."""
    rng = np.random.default_rng(seed)
    x = 60_000.0 + np.cumsum(rng.normal(0.0, 50.0, bars))
    x[rng.random(bars) < 0.001] = np.nan
    cond = np.where(np.isnan(x), np.nan, (x > np.roll(x, 1)).astype(float))
    return x, cond


def cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bars", type=int, default=1_200_000)
    ap.add_argument("--windows", default="24,1000,10000,100000")
    ap.add_argument("--functions", default=",".join(WINDOWED))
    ap.add_argument("--budget", type=float, default=120.0, help="skip pairs estimated above this (s)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    x, cond = series(args.bars, args.seed)
    windows = [int(w) for w in args.windows.split(",")]
    plain = min(cpu(lambda: x * 0.5 + x) for _ in range(5))
    print(f"{args.bars:,} bars; one plain numpy pass (x * 0.5 + x): {plain * 1000:.2f} ms CPU\n")
    print(f"{'function':<12} {'window':>8} {'CPU s':>9} {'× plain pass':>13}")
    for name in args.functions.split(","):
        spec = BUILTINS[name]
        arg = cond if spec.arg_kinds.startswith("b") else x
        per_window: list[tuple[int, float]] = []
        for w in windows:
            if per_window:  # the cost of window w, extrapolated linearly from the largest measured
                w0, s0 = per_window[-1]
                estimate = s0 * w / w0
                if estimate > args.budget:
                    print(
                        f"{name:<12} {w:>8} {'skipped':>9} (estimated ≥ {estimate:,.0f} s if linear in the window)"
                    )
                    continue
            seconds = cpu(lambda f=spec.func, a=arg, w=w: f(a, w))
            per_window.append((w, seconds))
            print(f"{name:<12} {w:>8} {seconds:>9.3f} {seconds / plain:>13,.0f}")


if __name__ == "__main__":
    main()
