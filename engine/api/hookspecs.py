"""Hook specifications: the one place that says what a perpwatch plugin can provide.

A plugin is a module with ``@hookimpl`` functions, found through the ``perpwatch`` entry-point
group, ``--plugin path.py`` or ``PERPWATCH_PLUGINS``. Each hook receives a ``register`` callable.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("perpwatch")
hookimpl = pluggy.HookimplMarker("perpwatch")


@hookspec
def register_sources(register):
    """Register data source classes: ``register(SourceClass)``."""


@hookspec
def register_notifiers(register):
    """Register notifier classes: ``register(NotifierClass)``."""


@hookspec
def register_executors(register):
    """Register executor classes: ``register(ExecutorClass)``."""


@hookspec
def register_functions(register):
    """Register expression functions.

    ``register(name, func, windows=(), lookback=None, returns="num")``: ``func`` takes numpy
    float64 arrays (one value per bar, NaN = unknown) and, at the ``windows`` argument positions,
    ints (window lengths in bars); it returns an array of the same length and must be causal.
    ``lookback(*windows)`` gives the bars of history it needs (default: largest window - 1).
    """


@hookspec
def register_commands(cli):
    """Add click commands to the ``perpwatch`` command group: ``cli.add_command(...)``."""
