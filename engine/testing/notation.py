"""Expanding notation for test series, after ``promtool test rules``.

``a+bxn`` -> a, a+b, ..., a+n*b (n+1 values); ``a-bxn`` counts down; ``axn`` -> n+1 copies of a;
``_`` -> one missing value and ``_xn`` -> n missing values (as in promtool); a plain number is one
value; any other word is a text label (for text metrics such as ``funding.max_exchange``).
"""

from __future__ import annotations

import re

_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_UNSIGNED = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN = re.compile(rf"^(?P<a>{_NUM})(?:(?P<op>[+-])(?P<b>{_UNSIGNED})x(?P<n>\d+)|x(?P<reps>\d+))?$")
_MISSING = re.compile(r"^_(?:x(?P<n>\d+))?$")
MAX_VALUES = 1_000_000


def expand(text: str) -> list[float | str | None]:
    """Expand one series string; raise ValueError naming the bad token."""
    out: list[float | str | None] = []
    for token in str(text).split():
        m = _MISSING.match(token)
        if m:
            n = int(m.group("n")) if m.group("n") else 1
            _check(len(out) + n, token)
            out.extend([None] * n)
        elif m := _TOKEN.match(token):
            a = float(m.group("a"))
            if m.group("n") is not None:
                b = float(m.group("b")) * (1 if m.group("op") == "+" else -1)
                n = int(m.group("n"))
                _check(len(out) + n + 1, token)
                out.extend(a + k * b for k in range(n + 1))
            elif m.group("reps") is not None:
                n = int(m.group("reps"))
                _check(len(out) + n + 1, token)
                out.extend([a] * (n + 1))
            else:
                out.append(a)
        elif re.fullmatch(r"[A-Za-z][\w.\-]*", token) and not re.search(r"x\d+$", token):
            out.append(token)
        else:
            raise ValueError(
                f"{token!r} is not expanding notation; write a number, 'a+bxn', 'a-bxn', 'axn', '_' or '_xn'"
            )
    return out


def _check(size: int, token: str) -> None:
    if size > MAX_VALUES:
        raise ValueError(f"{token!r} expands past {MAX_VALUES} values")
