"""``perpwatch explain``: every name's value and each condition's truth at one bar.

Over a strategy test file's series (``--at`` a bar index or time) here; over history
(``perpwatch explain STRATEGY --data PATH --at TIME``) in ``perpwatch.backtest.explain``, which
reads it as a backtest does and uses this module's :func:`report`.
"""

from __future__ import annotations

import re
from typing import Any

from perpwatch.common.errors import Loc, LocatedError
from perpwatch.common.numbers import int_from_digits, too_large_int
from perpwatch.common.text import printable
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.evaluate import Evaluation
from perpwatch.language.compiler import Strategy
from perpwatch.language.yamlsrc import LDict, load_yaml_file
from perpwatch.testing.testfile import BarResult, load_test_file, run_case


def is_test_file(path: str) -> bool:
    doc = load_yaml_file(path)
    return isinstance(doc, LDict) and "tests" in doc and "strategy" in doc


def explain_test(path: str, at: str, test_name: str | None, functions=None, extra_metrics=None) -> str:
    """A readable report of one bar of one test of a test file."""
    doc = load_test_file(path)
    tests = doc["tests"]
    index = 0
    if test_name is not None:
        names = [t["name"] for t in tests]
        if test_name not in names:
            raise LocatedError(
                doc.val_loc("tests"), f"no test named {test_name!r}; tests: {', '.join(names)}"
            )
        index = names.index(test_name)
    run = run_case(doc, path, tests[index], tests.item_loc(index), functions, extra_metrics)
    at_value: Any = at
    if re.fullmatch(r"-?[0-9]+", at.strip()):  # a bar index (ASCII digits); anything else is a time
        at_value = int_from_digits(at.strip())
        if at_value is None:
            raise LocatedError(Loc("--at"), too_large_int(at.strip()))
    i = run.index_of(at_value, tests.item_loc(index))
    return report(run.strategy, run.ev, i, run.bars[i], f"test {run.name!r}")


def report(s: Strategy, ev: Evaluation, i: int, bar: BarResult, origin: str) -> str:
    """Metrics, params, lets and every rule's condition parts at bar ``i``."""
    lines = [f"{s.name} — {origin}, bar {i} ({format_time(int(ev.frame.times[i]))}), symbol {ev.symbol}"]
    metrics = sorted(s.metrics)
    if metrics:
        lines.append("metrics:")
        lines += [f"  {m} = {_fmt(ev.named_value(m, i))}" for m in metrics]
    if s.params:
        lines.append("params:")
        lines += [f"  {k} = {_fmt(v)}" for k, v in s.params.items()]
    if s.lets:
        lines.append("let:")
        lines += [f"  {k} = {_fmt(ev.named_value(k, i))}" for k in s.lets]
    lines.append("rules:")
    for rule in s.rules:
        state = (
            "fired"
            if rule.name in bar.fired
            else "suppressed"
            if rule.name in bar.suppressed
            else (
                "firing"
                if rule.name in bar.firing
                else "resolved"
                if rule.name in bar.resolved
                else "not firing"
            )
        )
        lines.append(f"  {rule.name}: {_fmt(ev.value(rule.cond, i))} ({state})")
        for text, node in rule.parts:
            lines.append(f"    {_fmt(ev.value(node, i)):>7}  {text}")
    return "\n".join(printable(line) for line in lines)  # text metrics are data: one line each


def _fmt(v: Any) -> str:
    if v is None:
        return "unknown"
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
