"""Compiled window kernels (numba, the ``speed`` extra) for ``functions.py``'s window helpers.

Each kernel performs exactly the float operations of its numpy counterpart, in the same order,
so results are identical bit for bit (``tests/test_kernels.py`` compares them, signs of zero
and NaN included): ``fold`` is ``window_fold`` for ``np.add`` / ``np.maximum`` / ``np.minimum``
(the doubling table built in place), ``mean_m2`` is ``window_mean_m2`` (the same pairwise Chan
merges), ``flat`` is ``flat_window``. What they save is numpy's per-call overhead and temporary
arrays, most of the cost on the short windows of the live path. No fast-math: LLVM may then
neither reorder nor fuse (FMA) the operations. Importing this module imports numba;
``functions.py`` does so lazily, the first time a window function runs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NAN = np.nan

#: ``fold``'s ``kind`` for each numpy operation it replaces.
ADD, MAXIMUM, MINIMUM = 0, 1, 2


@njit(cache=True, nogil=True)
def _op(kind: int, a: float, b: float) -> float:
    if kind == ADD:
        return a + b
    if kind == MAXIMUM:  # np.maximum: a if a > b or a is NaN, else b (b on a tie, as 0.0 vs -0.0)
        return a if (a > b or a != a) else b
    return a if (a < b or a != a) else b  # np.minimum, the same way


@njit(cache=True, nogil=True)
def fold(x: np.ndarray, n: int, kind: int) -> np.ndarray:
    """``window_fold(x, n, op)`` for op = ``kind`` (``ADD``, ``MAXIMUM``, ``MINIMUM``); x float64."""
    t = len(x)
    out = np.full(t, NAN)
    if n < 1 or n > t:
        return out
    m = t - n + 1
    level = x.copy()  # level[s]: op over x[s : s + size], for s < length
    length = t
    acc = np.empty(m)
    have = False
    size = 1
    covered = 0
    while True:
        if n & size:
            covered += size
            lo = n - covered
            if have:
                for j in range(m):
                    acc[j] = _op(kind, level[lo + j], acc[j])
            else:
                for j in range(m):
                    acc[j] = level[lo + j]
                have = True
        if 2 * size > n:
            break
        length -= size
        for s in range(length):  # reads level[s + size] before it is overwritten
            level[s] = _op(kind, level[s], level[s + size])
        size *= 2
    out[n - 1 :] = acc
    return out


@njit(cache=True, nogil=True)
def mean_m2(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``window_mean_m2(x, n)``: the mean and M2 of each window of n values; x float64."""
    t = len(x)
    mean_out = np.full(t, NAN)
    m2_out = np.full(t, NAN)
    if n < 1 or n > t:
        return mean_out, m2_out
    m = t - n + 1
    mean = x.copy()
    m2 = np.empty(t)
    for s in range(t):
        m2[s] = NAN if mean[s] != mean[s] else 0.0
    acc_mean = np.empty(m)
    acc_m2 = np.empty(m)
    have = False
    size = 1
    covered = 0
    length = t
    while True:
        if n & size:
            covered += size
            lo = n - covered
            if have:  # merge(older block: size values, newer acc: covered - size values)
                na = size
                nb = covered - size
                w_mean = nb / (na + nb)
                w_m2 = na * nb / (na + nb)
                for j in range(m):
                    ma = mean[lo + j]
                    delta = acc_mean[j] - ma
                    acc_mean[j] = ma + delta * w_mean
                    acc_m2[j] = m2[lo + j] + acc_m2[j] + delta * delta * w_m2
            else:
                for j in range(m):
                    acc_mean[j] = mean[lo + j]
                    acc_m2[j] = m2[lo + j]
                have = True
        if 2 * size > n:
            break
        length -= size
        w_mean = size / (size + size)
        w_m2 = size * size / (size + size)
        for s in range(length):
            ma = mean[s]
            delta = mean[s + size] - ma
            mean[s] = ma + delta * w_mean
            m2[s] = m2[s] + m2[s + size] + delta * delta * w_m2
        size *= 2
    mean_out[n - 1 :] = acc_mean
    m2_out[n - 1 :] = acc_m2
    return mean_out, m2_out


@njit(cache=True, nogil=True)
def flat(x: np.ndarray, n: int) -> np.ndarray:
    """``flat_window(x, n)``: the last n values known and all equal; x float64."""
    t = len(x)
    out = np.zeros(t, np.bool_)
    if n < 1 or n > t:
        return out
    run = 0
    for i in range(t):
        if x[i] != x[i]:
            run = 0
        elif i > 0 and x[i] == x[i - 1]:
            run += 1
            out[i] = run >= n
        else:
            run = 1
            out[i] = run >= n
    return out


def warm_up() -> None:
    """Compile the kernels for float64 arrays, or load them from numba's on-disk cache (the first
    compilation takes seconds; ``functions.compiled`` calls this once per process)."""
    x = np.arange(4.0)
    fold(x, 2, ADD)
    mean_m2(x, 2)
    flat(x, 2)
