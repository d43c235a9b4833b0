"""Expanding notation for test series, after ``promtool test rules``.

``a+bxn`` -> a, a+b, ..., a+n*b (n+1 values); ``a-bxn`` counts down; ``axn`` -> n+1 copies of a;
``_`` -> one missing value and ``_xn`` -> n missing values (as in promtool); a plain number is one
value; any other word is a text label (for text metrics such as ``funding.max_exchange``).

Parsing is linear in the length of the text: every quantifier of the token patterns is possessive
(it never gives back what it matched), so a token is accepted or refused in one pass over it, and
no input can make the regular expressions backtrack.
"""

from __future__ import annotations

import math
import re

MAX_VALUES = 1_000_000
_COUNT_DIGITS = len(str(MAX_VALUES))  # a count with more digits is over MAX_VALUES whatever it is
_SHOWN = 40  # characters of a bad token quoted in an error

_UNSIGNED = r"(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][+-]?+\d++)?+"
_TOKEN = re.compile(
    rf"(?P<a>[+-]?+{_UNSIGNED})(?:(?P<op>[+-])(?P<b>{_UNSIGNED})x(?P<n>\d++)|x(?P<reps>\d++))?+"
)
_MISSING = re.compile(r"_(?:x(?P<n>\d++))?+")
_LABEL = re.compile(r"[A-Za-z][\w.\-]*+")
_LOOKS_REPEATED = re.compile(r"x\d++\Z")


def expand(text: str) -> list[float | str | None]:
    """Expand one series string; raise ValueError naming the bad token."""
    out: list[float | str | None] = []
    for token in str(text).split():
        if m := _MISSING.fullmatch(token):
            n = _count(m.group("n"), token) if m.group("n") else 1
            _check(len(out) + n, token)
            out.extend([None] * n)
        elif m := _TOKEN.fullmatch(token):
            a = _number(m.group("a"), token)
            if m.group("n") is not None:
                b = _number(m.group("b"), token) * (1 if m.group("op") == "+" else -1)
                n = _count(m.group("n"), token)
                _check(len(out) + n + 1, token)
                if not math.isfinite(a + n * b):
                    raise ValueError(f"{_show(token)} counts past the largest number (about 1.8e308)")
                out.extend(a + k * b for k in range(n + 1))
            elif m.group("reps") is not None:
                n = _count(m.group("reps"), token)
                _check(len(out) + n + 1, token)
                out.extend([a] * (n + 1))
            else:
                out.append(a)
        elif _LABEL.fullmatch(token) and not _LOOKS_REPEATED.search(token):
            out.append(token)
        else:
            raise ValueError(
                f"{_show(token)} is not expanding notation; write a number, 'a+bxn', 'a-bxn', 'axn', '_' or '_xn'"
            )
    return out


def _number(text: str, token: str) -> float:
    """A number of a token: finite (``1e999`` or 400 digits would be infinity)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{_show(token)} holds a number that is not finite (more than about 1.8e308)")
    return value


def _count(digits: str, token: str) -> int:
    """A repeat count; one of more digits than MAX_VALUES has is refused before int() reads it."""
    digits = digits.lstrip("0") or "0"
    if len(digits) > _COUNT_DIGITS:
        raise ValueError(f"{_show(token)} expands past {MAX_VALUES} values")
    return int(digits)


def _check(size: int, token: str) -> None:
    if size > MAX_VALUES:
        raise ValueError(f"{_show(token)} expands past {MAX_VALUES} values")


def _show(token: str) -> str:
    """The token quoted for an error, cut short when long (a hostile token can be megabytes)."""
    if len(token) <= _SHOWN:
        return repr(token)
    return f"{token[:_SHOWN]!r}… ({len(token):,} characters)"
