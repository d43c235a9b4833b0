"""One trial of a sweep, where it runs (a local process or a Dask worker): the strategy compiled
with the trial's params, backtested on each walk-forward window, its figures returned.

The data is loaded once per worker process: :func:`loaded` keeps the registry, the strategy file
and the history by :attr:`Setup.key` (the files and data a sweep reads), so a trial ships only its
params and the small :class:`Setup`, never the history.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from perpwatch.api.registry import Registry, load_registry
from perpwatch.backtest.history import History, load_history, symbols_for
from perpwatch.backtest.result import BacktestOptions, BacktestResult
from perpwatch.backtest.walk import run_backtest
from perpwatch.common.jsonsafe import finite_or_none
from perpwatch.language.compiler import Strategy, compile_strategy
from perpwatch.language.yamlsrc import LDict, load_yaml_file
from perpwatch.research.folds import Fold, Window


@dataclass(frozen=True)
class Setup:
    """What every trial of a sweep shares: small and picklable (paths, options, windows)."""

    strategy_path: str
    data: tuple[str, ...]
    interval: str | None  # --interval, else the strategy's own
    symbols: tuple[str, ...] | None  # --symbols, else the strategy's, else every symbol in the data
    plugin_paths: tuple[str, ...]
    options: BacktestOptions
    folds: tuple[Fold, ...]

    @property
    def key(self) -> str:
        """Names the data a worker loads for this setup (same files and data: same key)."""
        parts = [self.strategy_path, list(self.data), self.interval, self.symbols, list(self.plugin_paths)]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@dataclass
class Loaded:
    """A worker's copy of what a setup reads: loaded once, used by every trial it runs."""

    registry: Registry
    doc: LDict
    history: History
    symbols: dict[str, list[str]]

    def compile(self, setup: Setup, params: dict[str, str]) -> Strategy:
        reg = self.registry
        return compile_strategy(
            self.doc,
            setup.strategy_path,
            overrides=params or None,
            functions=reg.functions,
            extra_metrics=reg.metric_kinds(),
        )


_CACHE: dict[str, Loaded] = {}
_LOCK = threading.Lock()
#: How many times this process loaded a setup's data (a test checks it is once per worker).
LOADS: dict[str, int] = {}


def loaded(setup: Setup) -> tuple[Loaded, bool]:
    """This process's :class:`Loaded` for ``setup``, and whether this call loaded it."""
    with _LOCK:
        got = _CACHE.get(setup.key)
        if got is not None:
            return got, False
        got = load(setup)
        _CACHE.clear()  # one sweep at a time per worker: nothing grows without bound
        _CACHE[setup.key] = got
        LOADS[setup.key] = LOADS.get(setup.key, 0) + 1
        return got, True


def load(setup: Setup) -> Loaded:
    """Read the strategy file and the history as ``perpwatch backtest`` does."""
    reg = load_registry(setup.plugin_paths)
    doc = load_yaml_file(setup.strategy_path)
    if setup.interval is not None and isinstance(doc, LDict):
        doc["interval"] = setup.interval
    strategy = compile_strategy(
        doc, setup.strategy_path, functions=reg.functions, extra_metrics=reg.metric_kinds()
    )
    wanted = list(setup.symbols) if setup.symbols else strategy.symbols
    history = load_history(list(setup.data), strategy.interval, wanted, reg)
    if setup.interval is not None:
        history.notes.append(f"interval set to {setup.interval} by --interval (windows count bars of it)")
    chosen = symbols_for([strategy], history, list(setup.symbols) if setup.symbols else None)
    return Loaded(reg, doc, history, chosen)


def backtest(setup: Setup, params: dict[str, str], window: Window | None) -> BacktestResult:
    """The strategy with ``params`` over ``window`` (None: the whole --from/--to range)."""
    got, _ = loaded(setup)
    strategy = got.compile(setup, params)
    opts = setup.options if window is None else replace(setup.options, start=window.start, end=window.end)
    return run_backtest([strategy], got.history, got.symbols, opts, registry=got.registry)


def run_trial(setup: Setup, params: dict[str, str]) -> dict[str, Any]:
    """A trial: the figures of each fold's train (and test) window, and where and how it ran.

    Returns ``{"folds": [{"train": figures, "test": figures | None}, ...], "worker": ...,
    "loaded": bool, "seconds": float, "cpu_seconds": float}``; ``figures`` are the numeric
    statistics of the window's backtest (unknown ones None)."""
    wall, cpu = time.perf_counter(), time.process_time()
    got, fresh = loaded(setup)
    strategy = got.compile(setup, params)
    folds = []
    for fold in setup.folds:
        row: dict[str, Any] = {}
        for side, window in (("train", fold.train), ("test", fold.test)):
            if window is None:
                row[side] = None
                continue
            opts = replace(setup.options, start=window.start, end=window.end)
            r = run_backtest([strategy], got.history, got.symbols, opts, registry=got.registry)
            row[side] = figures(r.stats)
        folds.append(row)
    return {
        "folds": folds,
        "worker": f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}",
        "process": f"{socket.gethostname()}:{os.getpid()}",
        "loaded": fresh,
        "loads": LOADS.get(setup.key, 0),
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
    }


def figures(stats: dict[str, Any]) -> dict[str, float | int | None]:
    """The numeric statistics (booleans and text left out; NaN and infinities unknown: None)."""
    out: dict[str, float | int | None] = {}
    for key, value in stats.items():
        if value is None:
            out[key] = None
        elif isinstance(value, bool):
            continue
        elif isinstance(value, numbers.Integral):
            out[key] = int(value)
        elif isinstance(value, numbers.Real):
            out[key] = finite_or_none(value)
    return out
