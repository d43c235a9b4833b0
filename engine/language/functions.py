"""The expression functions (strategy language, section 3), column-wise over numpy arrays.

Values are float64 arrays, NaN meaning unknown; booleans are 1.0 / 0.0 / NaN. Every function is
causal, and a window that is not yet full or that holds an unknown value gives unknown.

Live and backtest agree bit for bit: a window function's value at bar t is a fixed expression over
the values of its own window only, never a running sum carried in from earlier bars, so it is the
same whether computed over the whole history or over just the bars the window needs (the live
path). The cost stays near one pass per bar however long the window: the window is cut into
power-of-two blocks (its binary digits, the shortest block newest), and each block's partial
result comes from a table built by doubling, where the block of 2^k bars starting at s combines the
two blocks of 2^(k-1) bars starting at s and s + 2^(k-1). That is O(bars × log2(window)) work, and
each partial result depends only on the bars it covers. With numba installed (the ``speed`` extra)
the window helpers run as compiled kernels (``kernels.py``) doing the same operations in the same
order: the same bits, faster on the live path's short columns.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from perpwatch.common.extras import available

NAN = np.nan


@dataclass(frozen=True)
class FunctionSpec:
    """An expression function: the callable, its parameters, which are windows, and its look-back."""

    name: str
    func: Callable[..., np.ndarray]
    params: tuple[str, ...]  # parameter names, for keywords and messages
    required: int  # how many leading parameters are required
    windows: tuple[int, ...] = ()  # positions of window parameters (ints known at load time)
    defaults: dict[int, int] = field(default_factory=dict)  # default window values by position
    arg_kinds: str = "n"  # per-argument kind: n = number, b = boolean, a = any (last letter repeats)
    returns: str = "num"  # num | bool | same (same kind as the first argument)
    lookback: Callable[..., int] | None = None  # bars of history needed, from the windows
    variadic: bool = False
    origin: str = "perpwatch"
    doc: str = ""  # its documentation; empty: the docstring of ``func`` (see ``documentation``)

    @property
    def documentation(self) -> str:
        """The reference text: ``doc``, else the callable's docstring (``perpwatch functions``)."""
        own = inspect.getdoc(self.func) if self.func is not None else None
        return inspect.cleandoc(self.doc or own or "")

    def bars_back(self, windows: list[int]) -> int:
        if self.lookback is not None:
            return int(self.lookback(*windows))
        return max(windows, default=1) - 1


# --- helpers ---------------------------------------------------------------------------------------

_kernels: ModuleType | None | bool = False  # not looked up yet
_wanted = False  # prefer_compiled() was called


def prefer_compiled() -> None:
    """Use the compiled kernels from now on, when numba is installed. A long-running process (the
    live runner) calls this: its short windows gain 1.6x. One-shot commands (backtest, test,
    sweep) keep numpy unless ``PERPWATCH_NUMBA=1``: loading the kernels (~0.2 s) costs them more
    than the ~15 % they save on whole histories."""
    global _wanted
    _wanted = True


def compiled() -> ModuleType | None:
    """``kernels.py`` (numba, the ``speed`` extra) when installed and wanted (``prefer_compiled()``,
    or ``PERPWATCH_NUMBA=1``; ``PERPWATCH_NUMBA=0`` never), else None: the window helpers below then
    run in numpy. Both give the same bits (``kernels.py``), so live and backtest agree whichever
    each one uses."""
    global _kernels
    if _kernels is False:
        switch = os.environ.get("PERPWATCH_NUMBA", "")
        if switch != "1" and not (_wanted and switch != "0"):
            return None
        _kernels = None
        if available("numba"):
            from perpwatch.language import kernels

            kernels.warm_up()  # compiled (or loaded from numba's cache) now, not inside some later call
            _kernels = kernels
    return _kernels if isinstance(_kernels, ModuleType) else None


def _fold_kind(op: object) -> int | None:
    """``kernels.fold``'s kind for ``op`` (``ADD``, ``MAXIMUM``, ``MINIMUM``), None for another op."""
    return next((k for k, known in enumerate((np.add, np.maximum, np.minimum)) if op is known), None)


def lagged(x: np.ndarray, n: int) -> np.ndarray:
    """x shifted n bars later (unknown for the first n bars)."""
    out = np.full(len(x), NAN)
    if n < len(x):
        out[n:] = x[: len(x) - n]
    return out


Fold = Callable[[np.ndarray, np.ndarray], np.ndarray]


def window_fold(x: np.ndarray, n: int, op: Fold) -> np.ndarray:
    """op folded over each window of the last n values (bar t included), for an associative op.

    The window is cut into power-of-two blocks, the shortest newest; block results come from a
    doubling table, so each output is the same expression over its own window (see the module
    docstring) and the cost is O(len(x) × log2(n)). ``op(older, newer)``.
    """
    fast, kind = compiled(), _fold_kind(op)
    if fast is not None and kind is not None:
        return fast.fold(np.ascontiguousarray(x, dtype=float), int(n), kind)
    t = len(x)
    out = np.full(t, NAN)
    if n < 1 or n > t:
        return out
    m = t - n + 1
    level = np.asarray(x, dtype=float)  # level k: op over x[s : s + 2**k], for s < t - 2**k + 1
    size, covered = 1, 0
    acc: np.ndarray | None = None
    while True:
        if n & size:
            covered += size
            block = level[n - covered : n - covered + m]
            acc = block.copy() if acc is None else op(block, acc)
        if 2 * size > n:
            break
        level = op(level[:-size], level[size:])
        size *= 2
    out[n - 1 :] = acc
    return out


def affine_window(c: np.ndarray, n: int, p: float) -> tuple[float, np.ndarray]:
    """The recursion e -> p * e + c[j] over the last n bars j (bar t included), as (P, C).

    Applying it to a start value e0 gives P * e0 + C[t]: P = p**n (one number), C[t] the sum of the
    c[j] weighted by the powers of p. Blocks compose like ``window_fold``'s: older (P1, C1) then
    newer (P2, C2) is (P2 * P1, P2 * C1 + C2). C is unknown until n values exist.
    """
    t = len(c)
    out = np.full(t, NAN)
    if n < 1 or n > t:
        return 1.0, out
    m = t - n + 1
    level, p_level = np.asarray(c, dtype=float), p  # level k: the block of 2**k bars from s
    size, covered = 1, 0
    acc: np.ndarray | None = None
    p_acc = 1.0
    while True:
        if n & size:
            covered += size
            block = level[n - covered : n - covered + m]
            acc = block.copy() if acc is None else p_acc * block + acc
            p_acc *= p_level
        if 2 * size > n:
            break
        level = p_level * level[:-size] + level[size:]
        p_level *= p_level
        size *= 2
    out[n - 1 :] = acc
    return p_acc, out


def window_sum(x: np.ndarray, n: int) -> np.ndarray:
    """Sum of the last n values (a fixed pairwise order: see ``window_fold``)."""
    return window_fold(x, n, np.add)


def window_mean_m2(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sum of squared deviations from it (M2) of each window of the last n values.

    Blocks merge by Chan et al.'s pairwise update (count, mean, M2), which never subtracts large
    sums: M2 is never negative and exactly 0 when the window's values are all equal.
    """
    fast = compiled()
    if fast is not None:
        return fast.mean_m2(np.ascontiguousarray(x, dtype=float), int(n))
    t = len(x)
    mean_out, m2_out = np.full(t, NAN), np.full(t, NAN)
    if n < 1 or n > t:
        return mean_out, m2_out
    m = t - n + 1

    def merge(na: int, ma: np.ndarray, qa: np.ndarray, nb: int, mb: np.ndarray, qb: np.ndarray):
        total = na + nb
        delta = mb - ma
        return ma + delta * (nb / total), qa + qb + delta * delta * (na * nb / total)

    mean = np.asarray(x, dtype=float)  # level k: mean and M2 of x[s : s + 2**k]
    m2 = np.where(np.isnan(mean), NAN, 0.0)
    size, covered = 1, 0
    acc: tuple[np.ndarray, np.ndarray] | None = None
    while True:
        if n & size:
            covered += size
            bm, bq = mean[n - covered : n - covered + m], m2[n - covered : n - covered + m]
            acc = (bm.copy(), bq.copy()) if acc is None else merge(size, bm, bq, covered - size, *acc)
        if 2 * size > n:
            break
        mean, m2 = merge(size, mean[:-size], m2[:-size], size, mean[size:], m2[size:])
        size *= 2
    assert acc is not None
    mean_out[n - 1 :], m2_out[n - 1 :] = acc
    return mean_out, m2_out


def window_unknowns(x: np.ndarray, n: int) -> np.ndarray:
    """How many of the last n values are unknown (exact integer counts, as floats; NaN until n)."""
    t = len(x)
    out = np.full(t, NAN)
    if n < 1 or n > t:
        return out
    counts = np.concatenate([[0], np.cumsum(np.isnan(x), dtype=np.int64)])
    out[n - 1 :] = counts[n:] - counts[: t - n + 1]
    return out


def flat_window(x: np.ndarray, n: int) -> np.ndarray:
    """True where the last n values (bar t included) are known and all equal.

    A sum divided by n is not exactly the value of a flat window (0.1 * 3 / 3 != 0.1), so the
    functions whose exact answer on a flat window is known (mean = the value, deviation = 0) use
    this mask to give that answer instead of a rounding artefact. O(len(x)): the length of the run
    of equal values ending at each bar.
    """
    fast = compiled()
    if fast is not None:
        return fast.flat(np.ascontiguousarray(x, dtype=float), int(n))
    t = len(x)
    out = np.zeros(t, bool)
    if n < 1 or n > t:
        return out
    index = np.arange(t)
    same = np.zeros(t, bool)
    same[1:] = x[1:] == x[:-1]  # NaN is equal to nothing
    run_start = np.maximum.accumulate(np.where(same, 0, index))
    out[:] = ~np.isnan(x) & (index - run_start + 1 >= n)
    return out


def finite(x: np.ndarray) -> np.ndarray:
    """Infinities (division by zero, overflow) become unknown."""
    x = np.asarray(x, dtype=float)
    if not np.isfinite(x).all():
        x = np.where(np.isfinite(x), x, NAN)
    return x


def truth(mask: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """A boolean series from a bool mask and an unknown mask."""
    out = mask.astype(float)
    out[unknown] = NAN
    return out


# --- the built-ins ---------------------------------------------------------------------------------


def f_lag(x: np.ndarray, n: int = 1) -> np.ndarray:
    """lag(x, n=1) -> same kind as x

    The value of x n bars earlier. Works on numbers, conditions and text series alike.

    Unit: the unit of x.
    Lookback: n bars.
    Unknown: on the first n bars, and wherever x was unknown n bars earlier.
    Example: price.close > rolling_max(lag(price.high, 1), 24)
    """
    return lagged(x, n)


def f_change(x: np.ndarray, n: int = 1) -> np.ndarray:
    """change(x, n=1) -> number

    How much x moved over the last n bars: x - lag(x, n).

    Unit: the unit of x.
    Lookback: n bars.
    Unknown: on the first n bars, and wherever x is unknown now or n bars earlier.
    Example: change(oi.close, 1) > 0
    """
    return x - lagged(x, n)


def f_pct_change(x: np.ndarray, n: int = 1) -> np.ndarray:
    """pct_change(x, n=1) -> number

    The change of x over the last n bars, in percent. It is (x / lag(x, n) - 1) * 100, relative
    to the value n bars earlier. For a series that crosses zero, such as funding, the percentage
    is meaningless (from -0.01 to 0.01 is -200); use change() there.

    Unit: percent (5 means +5 %).
    Lookback: n bars.
    Unknown: on the first n bars, wherever x is unknown now or n bars earlier, and where x was 0 n
    bars earlier.
    Example: pct_change(oi.close, 4) > 3
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return finite((x / lagged(x, n) - 1.0) * 100.0)


def f_sma(x: np.ndarray, n: int) -> np.ndarray:
    """sma(x, n) -> number

    Simple moving average: the mean of the last n values of x, bar t included. On n equal values it
    is exactly that value.

    Unit: the unit of x.
    Lookback: n - 1 bars.
    Unknown: until n values exist, and wherever one of the last n values is unknown.
    Example: sma(price.close, 20) > sma(price.close, 60)
    """
    out = window_sum(x, n) / n
    flat = flat_window(x, n)
    out[flat] = x[flat]  # the mean of n equal values is that value, exactly
    return out


def f_stdev(x: np.ndarray, n: int) -> np.ndarray:
    """stdev(x, n) -> number

    Sample standard deviation of the last n values of x, bar t included. The denominator is
    n - 1 and n is at least 2; on n equal values it is exactly 0.

    Unit: the unit of x.
    Lookback: n - 1 bars.
    Unknown: until n values exist, and wherever one of the last n values is unknown.
    Example: stdev(funding.close, 24) < 0.002
    """
    _, m2 = window_mean_m2(x, n)
    return np.sqrt(m2 / (n - 1))


def f_zscore(x: np.ndarray, n: int) -> np.ndarray:
    """zscore(x, n) -> number

    How many standard deviations x lies above the mean of its last n values. It is
    (x - sma(x, n)) / stdev(x, n), n at least 2. Bar t is part of its own window, so the z-score
    can never exceed (n - 1) / sqrt(n) in size: 4.69 for n = 24, 2.04 for n = 6.

    Unit: standard deviations (no unit).
    Lookback: n - 1 bars.
    Unknown: until n values exist, wherever one of the last n values is unknown, and where the n
    values are all equal (the standard deviation is 0).
    Example: zscore(liq.total_usd, 24) > 3
    """
    mean = f_sma(x, n)
    sd = f_stdev(x, n)  # exactly 0 on a flat window
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - mean) / sd
    z[sd == 0] = NAN
    return finite(z)


def f_ema(x: np.ndarray, n: int) -> np.ndarray:
    """ema(x, n) -> number

    Exponential moving average of x over the last 4n bars, with alpha = 2 / (n + 1). It
    starts from x at bar t - 4n + 1 and applies e = alpha * x + (1 - alpha) * e for each later bar
    up to t. The bars before that window would carry a weight under 0.05 % in an average started at
    the beginning of the history; leaving them out makes the value the same live and in a backtest.
    On 4n equal values it is exactly that value.

    Unit: the unit of x.
    Lookback: 4n - 1 bars.
    Unknown: until 4n values exist, and wherever one of the last 4n values is unknown.
    Example: price.close > ema(price.close, 50)
    """
    span = 4 * n
    t = len(x)
    out = np.full(t, NAN)
    if span > t:
        return out
    alpha = 2.0 / (n + 1)
    # the seed x[t - span + 1], then span - 1 steps e -> (1 - alpha) * e + alpha * x[j]
    p, c = affine_window(alpha * np.asarray(x, dtype=float), span - 1, 1.0 - alpha)
    out[span - 1 :] = p * x[: t - span + 1] + c[span - 1 :]
    flat = flat_window(x, span)
    out[flat] = x[flat]  # the exponential mean of equal values is that value, exactly
    return out


def f_rsi(x: np.ndarray, n: int) -> np.ndarray:
    """rsi(x, n) -> number

    Wilder's relative strength index of x, computed over the last 4n bars only. The average gain
    and the average loss start as the plain means of the window's first n bar-to-bar changes, then
    each later change is smoothed in as avg = (avg * (n - 1) + change) / n; the result is
    100 - 100 / (1 + gain / loss). A window without losses gives 100, a flat window 50.

    Unit: index points, 0 to 100.
    Lookback: 4n - 1 bars.
    Unknown: until 4n values exist, and wherever one of the last 4n values is unknown.
    Example: rsi(price.close, 14) < 30
    """
    span = 4 * n
    t = len(x)
    out = np.full(t, NAN)
    if span > t:
        return out
    rest = span - 1 - n  # changes smoothed in after the n that seed the averages
    d = np.full(t, NAN)
    d[1:] = x[1:] - x[:-1]  # the change into bar j
    averages = []
    for moves in (np.maximum(d, 0.0), np.maximum(-d, 0.0)):  # gains, losses (NaN stays NaN)
        seed = window_sum(moves, n) / n  # the mean of the n changes ending at bar j
        p, c = affine_window(moves / n, rest, (n - 1) / n)
        avg = np.full(t, NAN)
        avg[span - 1 :] = p * seed[n : t - rest] + c[span - 1 :]
        averages.append(avg)
    gain, loss = averages
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 - 100.0 / (1.0 + gain / loss)
    rsi = np.where(loss == 0, np.where(gain == 0, 50.0, 100.0), rsi)
    rsi[np.isnan(gain) | np.isnan(loss)] = NAN
    out[span - 1 :] = rsi[span - 1 :]
    return out


def f_rolling_max(x: np.ndarray, n: int) -> np.ndarray:
    """rolling_max(x, n) -> number

    The highest of the last n values of x, bar t included. To compare x with the high before this
    bar, lag the series: rolling_max(lag(price.high, 1), 24).

    Unit: the unit of x.
    Lookback: n - 1 bars.
    Unknown: until n values exist, and wherever one of the last n values is unknown.
    Example: price.close > rolling_max(lag(price.high, 1), 24)
    """
    return window_fold(x, n, np.maximum)


def f_rolling_min(x: np.ndarray, n: int) -> np.ndarray:
    """rolling_min(x, n) -> number

    The lowest of the last n values of x, bar t included.

    Unit: the unit of x.
    Lookback: n - 1 bars.
    Unknown: until n values exist, and wherever one of the last n values is unknown.
    Example: price.close < rolling_min(lag(price.low, 1), 24)
    """
    return window_fold(x, n, np.minimum)


def f_rolling_sum(x: np.ndarray, n: int) -> np.ndarray:
    """rolling_sum(x, n) -> number

    The sum of the last n values of x, bar t included.

    Unit: the unit of x (a total over n bars).
    Lookback: n - 1 bars.
    Unknown: until n values exist, and wherever one of the last n values is unknown.
    Example: rolling_sum(liq.long_usd, 4) > 50e6
    """
    return window_sum(x, n)


def _gt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return truth(a > b, np.isnan(a) | np.isnan(b))


def and3(*xs: np.ndarray) -> np.ndarray:
    """Three-valued and: False if any is False, else unknown if any is unknown, else True."""
    false = np.zeros(np.shape(xs[0]), bool)
    unknown = np.zeros(np.shape(xs[0]), bool)
    for x in xs:
        false |= x == 0
        unknown |= np.isnan(x)
    return np.where(false, 0.0, np.where(unknown, NAN, 1.0))


def or3(*xs: np.ndarray) -> np.ndarray:
    """Three-valued or: True if any is True, else unknown if any is unknown, else False."""
    true = np.zeros(np.shape(xs[0]), bool)
    unknown = np.zeros(np.shape(xs[0]), bool)
    for x in xs:
        true |= x == 1
        unknown |= np.isnan(x)
    return np.where(true, 1.0, np.where(unknown, NAN, 0.0))


def not3(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), NAN, 1.0 - x)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a > b at t and a <= b at t-1; unknown when any of the four values is (a 2-bar window)."""
    la, lb = lagged(a, 1), lagged(b, 1)
    unknown = np.isnan(a) | np.isnan(b) | np.isnan(la) | np.isnan(lb)
    return truth((a > b) & (la <= lb), unknown)


def f_crosses_above(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """crosses_above(a, b) -> condition

    True on the bar where a goes above b: a > b now and a <= b one bar earlier.

    Unit: none (a condition).
    Lookback: 1 bar.
    Unknown: on the first bar, and wherever a or b is unknown now or one bar earlier.
    Example: crosses_above(sma(price.close, 20), sma(price.close, 60))
    """
    return _cross(a, b)


def f_crosses_below(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """crosses_below(a, b) -> condition

    True on the bar where a goes below b: a < b now and a >= b one bar earlier.

    Unit: none (a condition).
    Lookback: 1 bar.
    Unknown: on the first bar, and wherever a or b is unknown now or one bar earlier.
    Example: crosses_below(funding.close, 0)
    """
    return _cross(b, a)


def f_rising(x: np.ndarray, n: int = 1) -> np.ndarray:
    """rising(x, n=1) -> condition

    True where x is higher than n bars earlier: x > lag(x, n) (equal is False).

    Unit: none (a condition).
    Lookback: n bars.
    Unknown: on the first n bars, and wherever x is unknown now or n bars earlier.
    Example: rising(oi.close, 4)
    """
    return _gt(x, lagged(x, n))


def f_falling(x: np.ndarray, n: int = 1) -> np.ndarray:
    """falling(x, n=1) -> condition

    True where x is lower than n bars earlier: x < lag(x, n) (equal is False).

    Unit: none (a condition).
    Lookback: n bars.
    Unknown: on the first n bars, and wherever x is unknown now or n bars earlier.
    Example: falling(oi.close, 4) and rising(price.close, 4)
    """
    return _gt(lagged(x, n), x)


def f_count_true(c: np.ndarray, n: int) -> np.ndarray:
    """count_true(c, n) -> number

    On how many of the last n bars, bar t included, the condition c was True.

    Unit: bars (0 to n).
    Lookback: n - 1 bars.
    Unknown: until n bars exist, and wherever c is unknown on one of the last n bars; write
    count_true(fill(c, False), n) to count unknown bars as not True.
    Example: count_true(funding.close > 0.05, 24) >= 20
    """
    return window_sum(c, n)


def f_bars_since(c: np.ndarray, n: int) -> np.ndarray:
    """bars_since(c, n) -> number

    How many bars ago the condition c was last True, within the last n bars. The window includes
    bar t: 0 when c is True now, at most n - 1.

    Unit: bars.
    Lookback: n - 1 bars.
    Unknown: until n bars exist, wherever c is unknown on one of the last n bars, and where c was not
    True on any of them.
    Example: bars_since(zscore(liq.total_usd, 24) > 3, 12) <= 3
    """
    t = len(c)
    out = np.full(t, NAN)
    if n > t:
        return out
    index = np.arange(t)
    last_true = np.maximum.accumulate(np.where(c == 1, index, -1))
    ago = (index - last_true).astype(float)
    ago[(last_true < 0) | (ago >= n)] = NAN  # not True within the window
    ago[window_unknowns(c, n) > 0] = NAN
    out[n - 1 :] = ago[n - 1 :]
    return out


def f_abs(x: np.ndarray) -> np.ndarray:
    """abs(x) -> number

    The absolute value of x.

    Unit: the unit of x.
    Lookback: 0 bars.
    Unknown: wherever x is unknown.
    Example: abs(funding.close) > 0.05
    """
    return np.abs(x)


def f_min(*xs: np.ndarray) -> np.ndarray:
    """min(a, b, ...) -> number

    The smallest of two or more numbers or series, bar by bar. For the lowest value over time, use
    rolling_min.

    Unit: the unit of the arguments.
    Lookback: 0 bars.
    Unknown: wherever one of the arguments is unknown.
    Example: min(ls.global_long_pct, ls.top_long_pct) > 60
    """
    out = xs[0]
    for x in xs[1:]:
        out = np.minimum(out, x)
    return out


def f_max(*xs: np.ndarray) -> np.ndarray:
    """max(a, b, ...) -> number

    The largest of two or more numbers or series, bar by bar. For the highest value over time, use
    rolling_max.

    Unit: the unit of the arguments.
    Lookback: 0 bars.
    Unknown: wherever one of the arguments is unknown.
    Example: max(liq.long_usd, liq.short_usd) > 10e6
    """
    out = xs[0]
    for x in xs[1:]:
        out = np.maximum(out, x)
    return out


def f_clip(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """clip(x, lo, hi) -> number

    x kept within lo and hi: min(max(x, lo), hi) (hi when lo > hi).

    Unit: the unit of x.
    Lookback: 0 bars.
    Unknown: wherever x, lo or hi is unknown.
    Example: 1000 * clip(zscore(oi.close, 24), 0, 2)
    """
    return np.minimum(np.maximum(x, lo), hi)


def _win(
    name,
    func,
    params,
    windows=(1,),
    defaults=None,
    kinds="n",
    returns="num",
    lookback=None,
    required=None,
    doc="",
):
    return FunctionSpec(
        name=name,
        func=func,
        params=params,
        required=len(params) - len(defaults or {}) if required is None else required,
        windows=windows,
        defaults=defaults or {},
        arg_kinds=kinds,
        returns=returns,
        lookback=lookback,
        doc=doc,
    )


#: ``fill`` and ``is_missing`` are computed by the evaluator (they take text series too): their
#: documentation is given here.
_FILL_DOC = """fill(x, v) -> same kind as x

x where it is known, v where it is unknown. It is the one explicit way to turn unknown into a
value; v is of x's kind: a number or numeric series for numbers, True, False or a condition for
conditions, a quoted label or a text series for text.

Unit: the unit of x.
Lookback: 0 bars.
Unknown: only where x is unknown and v is unknown too (v can be a series).
Example: count_true(fill(funding.close > 0.05, False), 24)
"""

_IS_MISSING_DOC = """is_missing(x) -> condition

True where x is unknown, False where it is known. Unknown means missing, not yet computable or
older than risk.max_data_age; it works on numbers, conditions and text series alike.

Unit: none (a condition).
Lookback: 0 bars.
Unknown: never.
Example: is_missing(liq.total_usd)
"""


#: Built-ins that need the evaluator's help (categorical arguments, fill values) are handled there:
#: ``lag``, ``fill`` and ``is_missing`` accept categorical series too.
BUILTINS: dict[str, FunctionSpec] = {
    s.name: s
    for s in [
        _win("lag", f_lag, ("x", "n"), defaults={1: 1}, kinds="a", returns="same", lookback=lambda n: n),
        _win("change", f_change, ("x", "n"), defaults={1: 1}, lookback=lambda n: n),
        _win("pct_change", f_pct_change, ("x", "n"), defaults={1: 1}, lookback=lambda n: n),
        _win("sma", f_sma, ("x", "n")),
        _win("ema", f_ema, ("x", "n"), lookback=lambda n: 4 * n - 1),
        _win("stdev", f_stdev, ("x", "n")),
        _win("zscore", f_zscore, ("x", "n")),
        _win("rolling_max", f_rolling_max, ("x", "n")),
        _win("rolling_min", f_rolling_min, ("x", "n")),
        _win("rolling_sum", f_rolling_sum, ("x", "n")),
        _win("rsi", f_rsi, ("x", "n"), lookback=lambda n: 4 * n - 1),
        _win("crosses_above", f_crosses_above, ("a", "b"), windows=(), returns="bool", lookback=lambda: 1),
        _win("crosses_below", f_crosses_below, ("a", "b"), windows=(), returns="bool", lookback=lambda: 1),
        _win("rising", f_rising, ("x", "n"), defaults={1: 1}, returns="bool", lookback=lambda n: n),
        _win("falling", f_falling, ("x", "n"), defaults={1: 1}, returns="bool", lookback=lambda n: n),
        _win("count_true", f_count_true, ("c", "n"), kinds="b"),
        _win("bars_since", f_bars_since, ("c", "n"), kinds="b"),
        _win("abs", f_abs, ("x",), windows=(), lookback=lambda: 0),
        FunctionSpec("min", f_min, ("a", "b"), 2, lookback=lambda: 0, variadic=True),
        FunctionSpec("max", f_max, ("a", "b"), 2, lookback=lambda: 0, variadic=True),
        _win("clip", f_clip, ("x", "lo", "hi"), windows=(), lookback=lambda: 0),
        _win("fill", None, ("x", "v"), (), kinds="a", returns="same", lookback=lambda: 0, doc=_FILL_DOC),
        _win(
            "is_missing", None, ("x",), (), kinds="a", returns="bool", lookback=lambda: 0, doc=_IS_MISSING_DOC
        ),
    ]
}

#: Windows are at least this many bars for these functions (a standard deviation needs two values).
MIN_WINDOW = {"stdev": 2, "zscore": 2}
