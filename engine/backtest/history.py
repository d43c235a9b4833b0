"""History for backtests and ``explain --data``: ``--data`` paths through the registry's readers.

Every path must exist; then the registered history readers (``perpwatch.api.history``) are asked,
lowest ``priority`` first, whether they accept the paths, and the first that does loads them. A
backtest also needs ``price.open`` (fills) and ``price.close`` (marks) in every frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from perpwatch.api.history import PRICE_COLUMNS, History, HistoryReader
from perpwatch.api.registry import Registry, load_registry
from perpwatch.common.errors import PerpwatchError
from perpwatch.language.compiler import Strategy

__all__ = ["PRICE_COLUMNS", "History", "load_history", "read_history", "readers", "symbols_for"]


def readers(registry: Registry | None = None) -> list[HistoryReader]:
    """One instance of each registered history reader, in the order they are asked."""
    reg = registry if registry is not None else load_registry()
    ordered = sorted(reg.history_readers.values(), key=lambda cls: (cls.priority, cls.name))
    return [cls() for cls in ordered]


def read_history(
    paths: Sequence[str], interval: str, symbols: Sequence[str] | None, registry: Registry | None = None
) -> History:
    """The frames of the first reader that accepts ``paths`` (``registry``: default, every plugin)."""
    for p in paths:
        if not os.path.exists(p):
            raise PerpwatchError(f"--data {p}: no such file or folder")
    wanted = [s.upper() for s in symbols] if symbols else None
    asked = readers(registry)
    for reader in asked:
        if reader.accepts(paths):
            return reader.load(paths, interval, wanted)
    raise PerpwatchError(_nobody_reads(paths, asked))


def load_history(
    paths: Sequence[str], interval: str, symbols: Sequence[str] | None, registry: Registry | None = None
) -> History:
    """:func:`read_history`, checked for what a backtest needs: bars, with opens and closes."""
    history = read_history(paths, interval, symbols, registry)
    for sym, frame in history.frames.items():
        absent = [c for c in PRICE_COLUMNS if c not in frame.columns]
        if absent:
            raise PerpwatchError(
                f"{sym}: the data has no {', '.join(absent)} column; a backtest marks at price.close and "
                "fills at the next bar's price.open"
            )
        if not len(frame):
            raise PerpwatchError(f"{sym}: the data holds no bars")
    return history


def _nobody_reads(paths: Sequence[str], asked: list[HistoryReader]) -> str:
    """Names the first path that no reader accepts along with the paths before it."""
    if not asked:
        return "--data: no history reader is installed (no plugin registers one)"
    bad = next(
        (p for k, p in enumerate(paths) if not any(r.accepts(paths[: k + 1]) for r in asked)), paths[0]
    )
    kinds = [r.describes or r.name for r in asked]
    if len(kinds) == 1:
        what = f"not {kinds[0]}"
    elif len(kinds) == 2:
        what = f"neither {kinds[0]} nor {kinds[1]}"
    else:
        what = f"none of {', '.join(kinds[:-1])} or {kinds[-1]}"
    return f"--data {bad}: {what}"


def symbols_for(
    strategies: Sequence[Strategy], history: History, given: Sequence[str] | None
) -> dict[str, list[str]]:
    """Which symbols each strategy trades: ``--symbols``, else its own ``symbols:``, else all loaded."""
    out = {}
    loaded = list(history.frames)
    for s in strategies:
        if given:
            syms = [g.upper() for g in given]
        elif s.symbols:
            syms = [x.upper() for x in s.symbols]
            missing = [x for x in syms if x not in history.frames]
            if missing:
                raise PerpwatchError(f"{s.name}: no data for {', '.join(missing)} ({history.source})")
        else:
            syms = loaded
        out[s.name] = syms
    return out
