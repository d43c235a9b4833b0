"""Walk-forward folds: the traded bars cut into K consecutive train/test windows.

The bars traded (the history's regular bar grid, within ``--from``/``--to``) are cut into K
consecutive segments of equal length (the last one takes the remainder); in each segment the
first ``1 - test_fraction`` of the bars are the train window (in-sample) and the rest the test
window (out-of-sample). Windows never overlap and every test window follows its train window
(rolling, non-anchored walk-forward). Every window is its own backtest with a fresh account, and
the bars before a window only warm up its indicators (``BacktestOptions.start``/``end``), so no
window reads the future. With K = 0 the whole range is one in-sample window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perpwatch.api.history import History
from perpwatch.common.errors import PerpwatchError
from perpwatch.common.timeutil import format_time

#: The fewest bars a train or test window may have.
MIN_WINDOW_BARS = 10


@dataclass(frozen=True)
class Window:
    """Bars ``start`` .. ``end`` (open times in ms, both included)."""

    start: int
    end: int
    bars: int

    def label(self) -> str:
        return f"{format_time(self.start)} .. {format_time(self.end)} ({self.bars} bars)"


@dataclass(frozen=True)
class Fold:
    train: Window
    test: Window | None  # None: no walk-forward (K = 0)


def traded_bars(history: History, step_ms: int, start: int | None, end: int | None) -> np.ndarray:
    """The open times a backtest of ``history`` walks: its regular grid within ``start``..``end``."""
    lo = min(int(f.times[0]) for f in history.frames.values())
    hi = max(int(f.times[-1]) for f in history.frames.values())
    lo -= lo % step_ms
    grid = np.arange(lo, hi + 1, step_ms, dtype=np.int64)
    keep = np.ones(len(grid), dtype=bool)
    if start is not None:
        keep &= grid >= start
    if end is not None:
        keep &= grid <= end
    times = grid[keep]
    if not len(times):
        span = f"{format_time(int(grid[0]))} .. {format_time(int(grid[-1]))}"
        raise PerpwatchError(f"--from/--to select no bars; the data spans {span}")
    return times


def split(times: np.ndarray, folds: int, test_fraction: float) -> list[Fold]:
    """``folds`` consecutive train/test windows over ``times`` (see the module doc)."""
    n = len(times)
    if folds == 0:
        return [Fold(_window(times, 0, n), None)]
    bounds = np.linspace(0, n, folds + 1).astype(int)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        n_test = int(round((b - a) * test_fraction))
        n_train = (b - a) - n_test
        if min(n_train, n_test) < MIN_WINDOW_BARS:
            raise PerpwatchError(
                f"--folds {folds} with --test-fraction {test_fraction:g}: {n} bars give windows of "
                f"{n_train} train and {n_test} test bars; each needs at least {MIN_WINDOW_BARS} "
                "(use fewer folds, another test fraction, or more history)"
            )
        out.append(Fold(_window(times, a, a + n_train), _window(times, a + n_train, b)))
    return out


def _window(times: np.ndarray, a: int, b: int) -> Window:
    return Window(int(times[a]), int(times[b - 1]), b - a)
