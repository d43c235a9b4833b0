"""Message templates: ``{name}`` and ``{name:format_spec}``, checked when the strategy loads.

A name is a metric path, a ``let`` name, a param, or ``symbol``, ``rule``, ``severity``, ``time``.
Nothing else is reachable: no attribute or index traversal, no conversions, no nested fields.
An unknown value renders as ``unknown`` (its format spec is not applied).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perpwatch.common.errors import Loc, LocatedError

CONTEXT_NAMES = {"symbol": "str", "rule": "str", "severity": "str", "time": "str"}
_SAMPLES = {"num": 1.5, "bool": True, "str": "x"}
#: Widths and precisions above this are refused ("{x:>999999999}" would build a gigabyte string).
MAX_SPEC_NUMBER = 100


@dataclass(frozen=True)
class Template:
    parts: tuple[tuple[str, str | None, str], ...]  # (literal text, field name or None, format spec)

    @property
    def names(self) -> list[str]:
        return [f for _, f, _ in self.parts if f is not None]

    def render(self, value_of: Callable[[str], Any]) -> str:
        out = []
        for literal, name, spec in self.parts:
            out.append(literal)
            if name is None:
                continue
            value = value_of(name)
            if value is None:
                out.append("unknown")
                continue
            try:
                out.append(format(value, spec))
            except (ValueError, TypeError):
                out.append(str(value))
        return "".join(out)


def compile_template(text: str, loc: Loc, kind_of: Callable[[str], str | None], known: list[str]) -> Template:
    """Check a template; ``kind_of(name)`` gives "num"/"bool"/"str" for a usable name, else None."""
    from perpwatch.common.errors import did_you_mean

    parts: list[tuple[str, str | None, str]] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise LocatedError(
            loc, f"bad message template: {e} (write {{{{ and }}}} for literal braces)"
        ) from None
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append((literal, None, ""))
            continue
        if field == "" or field.isdigit():
            raise LocatedError(
                loc, "message template fields need a name, such as {symbol} or {funding.close:.4f}"
            )
        if conversion:
            raise LocatedError(
                loc, f"{{{field}!{conversion}}}: conversions are not allowed in message templates"
            )
        if "[" in field or "]" in field:
            raise LocatedError(loc, f"{{{field}}}: indexing is not allowed in message templates")
        if spec and ("{" in spec or "}" in spec):
            raise LocatedError(loc, f"{{{field}:{spec}}}: nested fields are not allowed in a format spec")
        if any(p.startswith("_") for p in field.split(".")):
            raise LocatedError(loc, f"{{{field}}}: names starting with '_' are not allowed")
        kind = CONTEXT_NAMES.get(field) or kind_of(field)
        if kind is None:
            raise LocatedError(
                loc,
                f"{{{field}}} in the message is not a known name "
                f"(metric path, let name, param, symbol, rule, severity or time){did_you_mean(field, known)}",
            )
        widest = max((int(d) for d in re.findall(r"\d+", spec or "")), default=0)
        if widest > MAX_SPEC_NUMBER:
            raise LocatedError(
                loc,
                f"{{{field}:{spec}}}: width or precision {widest} is too wide (at most {MAX_SPEC_NUMBER})",
            )
        if spec:
            try:
                format(_SAMPLES[kind], spec)
            except (ValueError, TypeError) as e:
                raise LocatedError(
                    loc, f"{{{field}:{spec}}}: format spec does not suit a {kind} value ({e})"
                ) from None
        parts.append((literal, field, spec or ""))
    return Template(tuple(parts))
