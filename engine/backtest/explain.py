"""``perpwatch explain STRATEGY --data PATH --at TIME``: one bar of a strategy run over history.

The history is read as a backtest reads it (the registry's history readers: replay files, CoinGlass
snapshot folders, ...); the report is :func:`perpwatch.testing.explain.report`, the same as for a
strategy test file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from perpwatch.api.registry import Registry
from perpwatch.backtest.history import read_history
from perpwatch.common.errors import Loc, LocatedError
from perpwatch.common.timeutil import format_time, parse_time
from perpwatch.evaluation.evaluate import evaluate
from perpwatch.evaluation.rules import FIRING, RuleState, walk
from perpwatch.language.compiler import compile_strategy
from perpwatch.language.yamlsrc import LDict, load_yaml_file
from perpwatch.testing.explain import report
from perpwatch.testing.testfile import BarResult


def explain_data(
    path: str,
    data: str | Sequence[str],
    at: str,
    symbol: str | None,
    params: Mapping[str, str] | None = None,
    functions: Any = None,
    extra_metrics: Any = None,
    registry: Registry | None = None,
    interval: str | None = None,
) -> str:
    """A readable report of one bar of the strategy at ``path`` run over the history at ``data``
    (every form ``backtest --data`` takes: one path, or several snapshot folders to join).

    ``symbol`` defaults to the strategy's first, else BTC; ``interval`` runs the strategy at
    another interval than its own (as ``backtest --interval``); ``registry`` holds the history
    readers (default: every installed plugin).
    """
    doc = load_yaml_file(path)
    if interval is not None and isinstance(doc, LDict):
        doc["interval"] = interval
    strategy = compile_strategy(doc, path, overrides=params, functions=functions, extra_metrics=extra_metrics)
    symbol = (symbol or (strategy.symbols[0] if strategy.symbols else "BTC")).upper()
    paths = [data] if isinstance(data, str) else list(data)
    history = read_history(paths, strategy.interval, [symbol], registry)
    frame = history.frames[symbol]
    try:
        t = parse_time(at)
    except ValueError as e:
        raise LocatedError(Loc("--at"), str(e)) from None
    i = int(np.searchsorted(frame.times, t))
    if i >= len(frame) or frame.times[i] != t:
        span = (
            f"{format_time(int(frame.times[0]))} .. {format_time(int(frame.times[-1]))}"
            if len(frame)
            else "no bars"
        )
        raise LocatedError(Loc("--at"), f"{at} is not a bar of {history.source} ({span})")
    ev = evaluate(strategy, frame.slice(0, i + 1), symbol)
    states: dict[str, RuleState] = {}
    bar = BarResult()
    for event in walk(strategy, ev, states):
        if event.time == t:
            getattr(bar, event.kind).add(event.rule)
    bar.firing = {name for name, st in states.items() if st.status == FIRING}
    return report(strategy, ev, i, bar, f"data {history.source}")
