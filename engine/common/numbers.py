"""The rules every number from outside follows: finite, of the declared type, within bounds.

A number reaches perpwatch from YAML (strategies, test files, the config: checked by the YAML
loader), from ``--param`` and the command line's numeric options (:func:`parse_number`), or from
Python callers (:func:`number_problem`). NaN and the infinities are never numbers, a boolean is
never a number, and an integer may not be larger than :data:`MAX_INT` in size (2^53: every such
integer is exact as a float and fits a 64-bit integer). A float is any finite double.
"""

from __future__ import annotations

import math
import re

MAX_INT = 2**53  # 9,007,199,254,740,992
_MAX_DIGITS = len(str(MAX_INT))  # more decimal digits than this is always too large

#: A number as a trader types it: 12, -2, 0.1, .5, 2., 1e-3 (ASCII digits, no separators).
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_INTEGER = re.compile(r"[-+]?[0-9]+\Z")
_NOT_FINITE = re.compile(r"[-+]?(?:nan|inf|infinity)\Z", re.IGNORECASE)
EXAMPLES = "write a number such as 12, -2, 0.1 or 1e-3"


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error message, cut short when long (a 5,000-digit integer)."""
    return (
        repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...") + f" ({len(text)} characters)"
    )


def too_large_int(text: str) -> str:
    return f"{shown(text)} is too large: integers may be at most {MAX_INT:,} (2^53) in size"


def too_large_float(text: str) -> str:
    return f"{shown(text)} is too large: numbers may be at most about 1.8e308 in size"


def int_from_digits(text: str, base: int = 10) -> int | None:
    """``text`` (optionally signed digits of ``base``) as an int, or None when beyond MAX_INT.

    The length is checked first, so a 5,000-digit integer costs nothing (and never reaches
    Python's limit on converting long digit strings)."""
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > (_MAX_DIGITS if base == 10 else math.ceil(53 / math.log2(base)) + 1):
        return None
    value = int(text, base)
    return value if abs(value) <= MAX_INT else None


def number_problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable number (a bool, NaN, an infinity, an int beyond MAX_INT,
    not a number at all), or None when it is one."""
    if isinstance(value, bool):
        return f"{value} is not a number (it is true or false)"
    if isinstance(value, int):
        if abs(value) <= MAX_INT:
            return None
        return too_large_int(
            str(value) if value.bit_length() < 10_000 else f"<{value.bit_length()}-bit integer>"
        )
    if isinstance(value, float):
        return (
            None
            if math.isfinite(value)
            else f"{value} is not a finite number (NaN and infinities are not allowed)"
        )
    return f"{value!r} is not a number"


def is_number(value: object) -> bool:
    """An int or float (not a bool) that is finite and within :data:`MAX_INT`."""
    return number_problem(value) is None


def parse_number(text: str) -> int | float:
    """A number typed on the command line (``--param``, numeric options): an int when written
    without ``.`` or an exponent, else a float. Raise ValueError saying what would be valid."""
    s = text.strip()
    if not s.isascii():
        raise ValueError(f"{shown(text)} is not a number: use ASCII digits 0-9; {EXAMPLES}")
    if _NOT_FINITE.match(s):
        raise ValueError(f"{shown(text)} is not a number: NaN and infinities are not allowed; {EXAMPLES}")
    if not _NUMBER.match(s):
        if "_" in s and _NUMBER.match(s.replace("_", "")):
            raise ValueError(f"{shown(text)} is not a number: write it without '_' ({s.replace('_', '')})")
        raise ValueError(f"{shown(text)} is not a number; {EXAMPLES}")
    if _INTEGER.match(s):
        value = int_from_digits(s)
        if value is None:
            raise ValueError(too_large_int(s))
        return value
    f = float(s)
    if not math.isfinite(f):
        raise ValueError(too_large_float(s))
    return f
