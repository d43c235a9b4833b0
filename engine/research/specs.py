"""``--param NAME=SPEC`` of ``perpwatch sweep``: the values a sweep tries for one strategy param.

A SPEC is one of:

* a list, ``1.5,2,2.5`` (one value, ``2``, holds the param fixed; text and ``true``/``false`` too);
* a range, ``LOW:HIGH:STEP``: ``LOW``, ``LOW+STEP``, … up to ``HIGH`` — included when it is on the
  grid (``1.5:3:0.25`` ends at 3; ``1:2:0.3`` ends at 1.9), computed in decimal so ``0.1:0.3:0.1``
  is exactly ``0.1, 0.2, 0.3``;
* a distribution, for random and TPE search: ``uniform:LOW:HIGH``, ``log:LOW:HIGH`` (log-uniform,
  LOW > 0), ``int:LOW:HIGH`` or ``int:LOW:HIGH:STEP`` (whole numbers, both ends included).

Lists and ranges are what a grid search walks; random and TPE search draw from all three kinds (a
list is a categorical choice, a range a stepped one).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from perpwatch.common.errors import PerpwatchError
from perpwatch.common.numbers import parse_number

#: A range or a list may hold at most this many values.
MAX_VALUES = 10_000
DISTRIBUTIONS = ("uniform", "log", "int")
VALID = (
    "a list (1.5,2,2.5), a range LOW:HIGH:STEP (1.5:3:0.25), or a distribution uniform:LOW:HIGH, "
    "log:LOW:HIGH, int:LOW:HIGH[:STEP] (int:12:72)"
)

Value = int | float | bool | str


@dataclass(frozen=True)
class ParamSpec:
    """One param's values: ``kind`` is list, range, uniform, log or int."""

    name: str
    text: str
    kind: str
    values: tuple[Value, ...] = ()  # list and range: every value, in order
    low: float = 0.0  # distributions: both ends (included)
    high: float = 0.0
    step: float | None = None  # range: its step; int: its step (None: 1)

    @property
    def gridded(self) -> bool:
        """Whether a grid search can walk it (a list or a range)."""
        return self.kind in ("list", "range")

    @property
    def whole(self) -> bool:
        """Whether every value it can give is a whole number."""
        if self.kind == "int":
            return True
        if self.kind in ("uniform", "log"):
            return False
        return all(isinstance(v, int) and not isinstance(v, bool) for v in self.values)

    def probes(self) -> list[Value]:
        """Values to compile the strategy with before the sweep (each end, and every listed value)."""
        if self.kind == "list":
            return list(self.values)
        if self.kind == "range":
            return list(dict.fromkeys([self.values[0], self.values[-1]]))
        ends: list[Value] = [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]
        return list(dict.fromkeys(ends))

    def describe(self) -> str:
        if self.kind == "list":
            return ", ".join(format_value(v) for v in self.values)
        if self.kind == "range":
            return (
                f"{len(self.values)} values {format_value(self.values[0])} .. {format_value(self.values[-1])}"
            )
        return self.text


def format_value(value: Value) -> str:
    """A value as the compiler reads it back (``--param`` text): 2, 2.5, true, text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.12g}" if "e" not in f"{value:.12g}" else repr(value)
    return str(value)


def parse_specs(items: tuple[str, ...]) -> dict[str, ParamSpec]:
    """Every ``--param NAME=SPEC``; a name given twice or a bad SPEC is an error (exit 2)."""
    out: dict[str, ParamSpec] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise _bad(f"{item!r}: write NAME=SPEC, SPEC being {VALID}")
        if name in out:
            raise _bad(
                f"{name} is given more than once ({name}={out[name].text} and {name}={text}); give each param once"
            )
        out[name] = parse_spec(name, text)
    return out


def parse_spec(name: str, text: str) -> ParamSpec:
    """``text`` as a :class:`ParamSpec` (see the module doc), or an error saying what is valid."""
    head, colon, rest = text.partition(":")
    if not colon:
        values = tuple(_item(name, text, part) for part in text.split(","))
        if len(values) > MAX_VALUES:
            raise _bad(f"{name}={text}: {len(values):,} values, more than {MAX_VALUES:,}")
        return ParamSpec(name, text, "list", values=tuple(dict.fromkeys(values)))
    kind = head.strip().lower()
    parts = text.split(":")
    if kind in DISTRIBUTIONS:
        return _distribution(name, text, kind, parts[1:])
    if _is_number(head):
        return _range(name, text, parts)
    known = ", ".join(f"{k}:" for k in DISTRIBUTIONS)
    raise _bad(f"{name}={text}: {head!r} is neither a number nor a distribution ({known}); write {VALID}")


def _item(name: str, text: str, part: str) -> Value:
    s = part.strip()
    if not s:
        raise _bad(f"{name}={text}: an empty value in the list; write {VALID}")
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    if (
        _is_number(s)
        or s.lstrip("+-")[:1].isdigit()
        or s.lower() in ("nan", "inf", "-inf", "+inf", "infinity")
    ):
        return _number(name, text, s)
    return s


def _range(name: str, text: str, parts: list[str]) -> ParamSpec:
    if len(parts) != 3:
        raise _bad(f"{name}={text}: a range is LOW:HIGH:STEP (three numbers, e.g. 1.5:3:0.25), or {VALID}")
    low, high, step = (_decimal(name, text, p) for p in parts)
    if step <= 0:
        raise _bad(f"{name}={text}: the step {parts[2].strip()} must be above 0")
    if high < low:
        raise _bad(f"{name}={text}: HIGH {parts[1].strip()} is below LOW {parts[0].strip()}")
    count = int((high - low) / step) + 1
    if count > MAX_VALUES:
        raise _bad(f"{name}={text}: {count:,} values, more than {MAX_VALUES:,}; use a larger step")
    whole = all(_is_int_text(p) for p in parts)
    values = tuple(int(low + k * step) if whole else float(low + k * step) for k in range(count))
    return ParamSpec(name, text, "range", values=values, step=int(step) if whole else float(step))


def _distribution(name: str, text: str, kind: str, parts: list[str]) -> ParamSpec:
    shape = "int:LOW:HIGH or int:LOW:HIGH:STEP" if kind == "int" else f"{kind}:LOW:HIGH"
    if len(parts) != 2 and not (kind == "int" and len(parts) == 3):
        raise _bad(f"{name}={text}: write {shape} (e.g. {kind}:{'12:72' if kind == 'int' else '1.5:3'})")
    numbers = [_number(name, text, p.strip()) for p in parts]
    if kind == "int" and not all(isinstance(x, int) for x in numbers):
        bad = next(p.strip() for p, x in zip(parts, numbers, strict=True) if not isinstance(x, int))
        raise _bad(f"{name}={text}: {bad} is not a whole number; int: takes whole numbers ({shape})")
    low, high = float(numbers[0]), float(numbers[1])
    if not high > low:
        raise _bad(f"{name}={text}: HIGH {parts[1].strip()} must be above LOW {parts[0].strip()}")
    if kind == "log" and low <= 0:
        raise _bad(f"{name}={text}: log: needs LOW above 0 (log-uniform), not {parts[0].strip()}")
    step = float(numbers[2]) if len(numbers) == 3 else None
    if step is not None and step <= 0:
        raise _bad(f"{name}={text}: the step {parts[2].strip()} must be above 0")
    return ParamSpec(name, text, kind, low=low, high=high, step=step)


def _number(name: str, text: str, s: str) -> int | float:
    try:
        return parse_number(s)
    except ValueError as e:
        raise _bad(f"{name}={text}: {e}") from None


def _decimal(name: str, text: str, s: str) -> Decimal:
    _number(name, text, s.strip())  # the same rules and messages as every number typed
    try:
        return Decimal(s.strip())
    except InvalidOperation:  # pragma: no cover - parse_number accepted it
        raise _bad(f"{name}={text}: {s.strip()!r} is not a number") from None


def _is_number(s: str) -> bool:
    try:
        parse_number(s)
    except ValueError:
        return False
    return True


def _is_int_text(s: str) -> bool:
    try:
        return isinstance(parse_number(s), int)
    except ValueError:
        return False


def _bad(message: str) -> PerpwatchError:
    return PerpwatchError(f"--param {message}")
