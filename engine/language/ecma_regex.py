"""JSON Schema patterns (ECMA-262 regular expressions) compiled for Python's ``re`` with their
ECMA-262 meaning.

The same text means different things to the two engines, and the difference lets bad names
through: Python's ``$`` also matches before a final ``\\n`` (so ``^[a-z]+$`` accepts
``"name\\n"``), its ``\\d`` and ``\\w`` match any script's digits and letters, and its ``.`` matches
``\\r``. :func:`ecma_regex` translates a pattern so that, under ``re.search`` as JSON Schema
applies it:

* ``$`` (outside a character class) matches only at the very end (``\\Z``);
* ``\\d``, ``\\w``, ``\\b`` and their negations are ASCII-only (the ``re.ASCII`` flag);
* ``\\s`` / ``\\S`` are ECMA-262's white space and line terminators (Unicode spaces included),
  except ``\\S`` inside a character class, which keeps Python's ASCII meaning;
* ``.`` matches anything but a line terminator (``\\n``, ``\\r``, U+2028, U+2029);
* ``[]`` matches nothing and ``[^]`` any character;
* named groups ``(?<name>…)`` and back-references ``\\k<name>`` work.
"""

from __future__ import annotations

import functools
import re

# ECMA-262 WhiteSpace and LineTerminator code points (what \s matches there).
_SPACE = "\\t\\n\\v\\f\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_LINE_TERMINATORS = "\\n\\r\\u2028\\u2029"
_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")
_NAMED_REF = re.compile(r"k<([A-Za-z_][A-Za-z0-9_]*)>")


@functools.lru_cache(maxsize=512)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` (ECMA-262 syntax) compiled with its ECMA-262 meaning; ``re.error`` if invalid."""
    return re.compile(translate(pattern), re.ASCII)


def translate(pattern: str) -> str:
    """The Python ``re`` text (for use with ``re.ASCII``) of an ECMA-262 pattern."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            ref = _NAMED_REF.match(pattern, i + 1)
            if nxt in "sS" and not (in_class and nxt == "S"):
                negate = "^" if nxt == "S" else ""
                out.append(_SPACE if in_class else f"[{negate}{_SPACE}]")
            elif ref and not in_class:
                out.append(f"(?P={ref.group(1)})")
                i = ref.end()
                continue
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            elif c == "[":
                c = "\\["  # literal in ECMA-262; Python warns of nested sets
            out.append(c)
            i += 1
            continue
        if c == "[":
            if pattern.startswith("[]", i):
                out.append("(?!)")  # the empty class: never matches
                i += 2
                continue
            if pattern.startswith("[^]", i):
                out.append("[\\s\\S]")  # any character at all
                i += 3
                continue
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            continue
        if c == "$":
            out.append("\\Z")
        elif c == ".":
            out.append(f"[^{_LINE_TERMINATORS}]")
        elif c == "(" and _NAMED_GROUP.match(pattern, i):
            out.append("(?P<")
            i += 3
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)
