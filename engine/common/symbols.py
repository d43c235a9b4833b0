"""Symbols (coins such as ``BTC``): one spelling, upper case, checked wherever one enters.

A symbol is 1 to 20 ASCII letters and digits; ``btc`` and ``BTC`` are the same coin, so every
symbol is normalised to upper case where it enters (a strategy's or the config's ``symbols:``, a
test file's ``symbol:``, ``--symbols`` / ``--symbol``), and a list naming one coin twice is an
error at the second spelling that names the first. Positions, rule states, mutes and events are
keyed by the normalised symbol.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from perpwatch.common.errors import ErrorList, Loc, LocatedError

MAX_SYMBOL_CHARS = 20
_SYMBOL = re.compile(rf"[A-Za-z0-9]{{1,{MAX_SYMBOL_CHARS}}}")
WHAT_A_SYMBOL_IS = f"a symbol is 1 to {MAX_SYMBOL_CHARS} ASCII letters and digits, such as BTC"


def normalise_symbol(text: object) -> str:
    """``text`` as a symbol, upper case; ValueError (saying what a symbol is) when it is not one."""
    if not isinstance(text, str) or not _SYMBOL.fullmatch(text):
        raise ValueError(f"{text!r} is not a symbol; {WHAT_A_SYMBOL_IS}")
    return text.upper()


def normalise_symbols(values: Sequence[object], where: Callable[[int], Loc]) -> list[str]:
    """Each of ``values`` normalised, in order; ErrorList (at ``where(i)``) for a bad symbol or a
    coin named twice, however it is spelt, at the second spelling and naming the first."""
    out: list[str] = []
    first: dict[str, int] = {}
    errors: list[LocatedError] = []
    for i, value in enumerate(values):
        try:
            symbol = normalise_symbol(value)
        except ValueError as e:
            errors.append(LocatedError(where(i), str(e)))
            continue
        if symbol in first:
            j = first[symbol]
            errors.append(LocatedError(where(i), _duplicate(values[i], values[j], where(j), symbol)))
            continue
        first[symbol] = i
        out.append(symbol)
    if errors:
        raise ErrorList(errors)
    return out


def symbols_option(values: Sequence[str], option: str) -> list[str]:
    """A repeatable comma-separated option (``--symbols BTC,eth``) as normalised unique symbols;
    ErrorList located at the option. Spaces around the commas are allowed."""
    items = [t.strip(" ") for v in values for t in v.split(",") if t.strip(" ")]
    return normalise_symbols(items, lambda _: Loc(option))


def symbol_option(value: str | None, option: str) -> str | None:
    """A one-symbol option (``--symbol eth``) normalised; LocatedError at the option."""
    if value is None:
        return None
    try:
        return normalise_symbol(value)
    except ValueError as e:
        raise LocatedError(Loc(option), str(e)) from None


def _duplicate(second: object, first: object, first_loc: Loc, symbol: str) -> str:
    if first_loc.line:
        at = f"line {first_loc.line}, column {first_loc.col}"
        where = f" (first at {at})" if second == first else f" (at {at})"
    else:
        where = " (given before it)"
    if second == first:
        return f"duplicate symbol {second!r}{where}; name each coin once"
    return (
        f"duplicate symbol {second!r}: the same coin as {first!r}{where}; symbols are not "
        f"case-sensitive (both are {symbol}): name each coin once"
    )
