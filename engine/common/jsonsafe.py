"""Values as strict JSON data: finite floats or null, plain containers, numpy unwrapped."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def finite_or_none(value: object) -> float | None:
    """A number or numeric string as a finite float; None, booleans, garbage, NaN and infinities -> None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: numpy scalars unwrapped, NaN and infinities as null.

    Mappings become dicts with string keys, sequences and sets become lists, anything else that is
    not a string, an int, a float, a bool or None becomes its ``str``.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int):
        return value
    return str(value)
