"""Expression functions this plugin adds to the strategy language."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def midrange(x: np.ndarray, n: int) -> np.ndarray:
    """(highest + lowest of the last ``n`` values, bar t included) / 2.

    Causal: the value at bar t uses bars t-n+1..t only. Unknown (NaN) until ``n`` values exist and
    wherever the window holds an unknown value (``max``/``min`` propagate NaN).
    """
    x = np.asarray(x, dtype=float)
    out = np.full(len(x), np.nan)
    if 1 <= n <= len(x):
        window = sliding_window_view(x, n)
        out[n - 1 :] = (window.max(axis=1) + window.min(axis=1)) / 2
    return out
