"""The cyclic garbage collector paused around work that allocates many small acyclic objects.

A backtest holds its evaluations (numpy columns, events) for as long as its result lives; every
full collection while it builds events, trades or a report would walk all of them again (a third
of the fast path's CPU, and two thirds of the text report's). Refcounting still frees what these
objects drop; only the search for reference cycles waits until the block ends.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def no_collection() -> Iterator[None]:
    """The cyclic collector paused inside the block (restored as it was after)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def without_collection(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` run inside :func:`no_collection`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with no_collection():
            return func(*args, **kwargs)

    return wrapper
