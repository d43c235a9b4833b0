"""Hook specifications: the one place that says what a perpwatch plugin can provide.

A plugin is a module with ``@hookimpl`` functions, found through the ``perpwatch`` entry-point
group, ``--plugin path.py`` or ``PERPWATCH_PLUGINS``. Each ``register_*`` hook receives a
``register`` callable, typed below; a class that does not implement its kind's abstract methods is
refused by ``register`` (see ``perpwatch.api.interfaces``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import pluggy

from perpwatch.api.executors import Executor
from perpwatch.api.history import HistoryReader
from perpwatch.api.notifiers import Notifier
from perpwatch.api.sources import Source

if TYPE_CHECKING:
    import click
    import numpy as np

hookspec = pluggy.HookspecMarker("perpwatch")
hookimpl = pluggy.HookimplMarker("perpwatch")


class RegisterFunction(Protocol):
    """The ``register`` of ``register_functions``."""

    def __call__(
        self,
        name: str,
        func: Callable[..., np.ndarray],
        windows: Iterable[int] = (),
        lookback: Callable[..., int] | None = None,
        returns: str = "num",
    ) -> None: ...


@hookspec
def register_sources(register: Callable[[type[Source]], None]) -> None:
    """Register data source classes: ``register(SourceClass)``."""


@hookspec
def register_notifiers(register: Callable[[type[Notifier]], None]) -> None:
    """Register notifier classes: ``register(NotifierClass)``."""


@hookspec
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    """Register executor classes: ``register(ExecutorClass)``."""


@hookspec
def register_functions(register: RegisterFunction) -> None:
    """Register expression functions.

    ``register(name, func, windows=(), lookback=None, returns="num")``: ``func`` takes numpy
    float64 arrays (one value per bar, NaN = unknown) and, at the ``windows`` argument positions,
    ints (window lengths in bars); it returns an array of the same length and must be causal.
    ``lookback(*windows)`` gives the bars of history it needs (default: largest window - 1).
    """


@hookspec
def register_history_readers(register: Callable[[type[HistoryReader]], None]) -> None:
    """Register history reader classes: ``register(ReaderClass)``.

    A :class:`~perpwatch.api.history.HistoryReader` turns ``perpwatch backtest --data PATH`` and
    ``perpwatch explain --data PATH`` paths (replay files, saved API responses, ...) into frames.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``perpwatch`` command group: ``cli.add_command(...)``."""
