"""Strategy tests (strategy language, section 7): input series, expected events at given bars."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perpwatch.common.errors import ErrorList, Loc, LocatedError, did_you_mean
from perpwatch.common.text import printable
from perpwatch.common.timeutil import format_time, parse_time
from perpwatch.evaluation.evaluate import Evaluation, evaluate
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.evaluation.rules import FIRING, RuleState, step
from perpwatch.language.compiler import Strategy, compile_strategy
from perpwatch.language.metrics import CATALOGUE
from perpwatch.language.schemas import validate
from perpwatch.language.yamlsrc import LDict, load_yaml_file
from perpwatch.testing.notation import expand

DEFAULT_START = "2024-01-01T00:00:00Z"


@dataclass
class BarResult:
    fired: set[str] = field(default_factory=set)
    suppressed: set[str] = field(default_factory=set)
    resolved: set[str] = field(default_factory=set)
    firing: set[str] = field(default_factory=set)


@dataclass
class CaseRun:
    """One test case evaluated: the strategy, its evaluation and what happened at each bar."""

    name: str
    loc: Loc
    strategy: Strategy
    ev: Evaluation
    bars: list[BarResult]
    raw: LDict

    def index_of(self, at: Any, loc: Loc) -> int:
        if isinstance(at, int) and not isinstance(at, bool):
            i = at
        else:
            try:
                t = parse_time(at)
            except ValueError as e:
                raise LocatedError(loc, str(e)) from None
            start, step_ms = int(self.ev.frame.times[0]), self.strategy.step_ms
            if (t - start) % step_ms:
                raise LocatedError(
                    loc,
                    f"{at} is not the open time of a bar (bars start {format_time(start)}, every {self.strategy.interval})",
                )
            i = (t - start) // step_ms
        if not 0 <= i < len(self.bars):
            raise LocatedError(loc, f"bar {at} is outside the series (bars 0..{len(self.bars) - 1})")
        return i


@dataclass
class Failure:
    test: str
    loc: Loc
    bar: int
    time: str
    what: str
    expected: Any
    actual: Any
    inputs: dict[str, Any]

    def format(self) -> str:
        lines = [
            f"{self.loc}: FAIL {self.test!r} at bar {self.bar} ({self.time}): {self.what}",
            f"    expected: {_show(self.expected)}",
            f"    actual:   {_show(self.actual)}",
        ]
        if self.inputs:
            lines.append(
                "    inputs at this bar: " + ", ".join(f"{k}={_show(v)}" for k, v in self.inputs.items())
            )
        return "\n".join(printable(line) for line in lines)  # labels and messages are data: one line each


@dataclass
class FileResult:
    file: str
    passed: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed_tests(self) -> int:
        return len({f.test for f in self.failures})


def load_test_file(path: str) -> LDict:
    doc = load_yaml_file(path)
    if not isinstance(doc, LDict):
        raise LocatedError(Loc(path, 1, 1), "a test file must be a YAML mapping with strategy: and tests:")
    errors = validate(doc, "strategy-test", path)
    if errors:
        raise ErrorList(errors)
    return doc


def load_case_strategy(doc: LDict, path: str, case: LDict, functions=None, extra_metrics=None) -> Strategy:
    from perpwatch.language.yamlsrc import load_yaml_file as _load

    spath = os.path.join(os.path.dirname(path), doc["strategy"])
    if not os.path.exists(spath):
        raise LocatedError(
            doc.val_loc("strategy"), f"strategy file {doc['strategy']!r} not found (looked at {spath})"
        )
    sdoc = _load(spath)
    return compile_strategy(
        sdoc, spath, overrides=_params(doc, case), functions=functions, extra_metrics=extra_metrics
    )


def _params(doc: LDict, case: LDict) -> LDict:
    """The file's params, then the case's, with their locations (the compiler's errors point there)."""
    out = LDict()
    out.loc, out.key_locs, out.val_locs = case.loc, {}, {}
    for source in (doc.get("params"), case.get("params")):
        if isinstance(source, LDict):
            out.update(source)
            out.key_locs.update(source.key_locs)
            out.val_locs.update(source.val_locs)
    return out


def run_case(doc: LDict, path: str, case: LDict, loc: Loc, functions=None, extra_metrics=None) -> CaseRun:
    """Build the series, evaluate the strategy and step its rules over every bar."""
    strategy = load_case_strategy(doc, path, case, functions, extra_metrics)
    frame = build_frame(case, strategy, extra_metrics or {})
    symbol = case["symbol"].upper() if "symbol" in case else (strategy.symbols or ["BTC"])[0]
    ev = evaluate(strategy, frame, symbol)
    states = {rule.name: RuleState() for rule in strategy.rules}
    truths = {rule.name: ev.truths(rule.cond) for rule in strategy.rules}
    bars = []
    for i, t in enumerate(frame.times.tolist()):
        res = BarResult()
        for rule in strategy.rules:
            v = truths[rule.name][i]
            kind = step(states[rule.name], None if v != v else float(v), t, rule.for_bars, rule.cooldown_ms)
            if kind:
                getattr(res, kind).add(rule.name)
            if states[rule.name].status == FIRING:
                res.firing.add(rule.name)
        bars.append(res)
    return CaseRun(case["name"], loc, strategy, ev, bars, case)


def build_frame(case: LDict, strategy: Strategy, extra_metrics: dict[str, str]) -> Frame:
    series: LDict = case["series"]
    known = {name: m.kind for name, m in CATALOGUE.items()} | extra_metrics
    columns: dict[str, list] = {}
    for name, spec in series.items():
        loc = series.key_loc(name)
        if name not in known:
            raise LocatedError(loc, f"unknown metric {name!r} in series{did_you_mean(name, known)}")
        try:
            if isinstance(spec, list):
                values = [None if v in (None, "_") else v for v in spec]
            elif isinstance(spec, int | float) and not isinstance(spec, bool):
                values = [float(spec)]
            else:
                values = expand(str(spec))
        except ValueError as e:
            raise LocatedError(series.val_loc(name), str(e)) from None
        for k, v in enumerate(values):
            if v is not None and (isinstance(v, str) != (known[name] == "str")):
                want = "text labels" if known[name] == "str" else "numbers"
                raise LocatedError(series.val_loc(name), f"{name} takes {want}, not {v!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise LocatedError(
                    series.val_loc(name),
                    f"{name}: value {k} of the series is not a finite number ({v}); "
                    "numbers may be at most about 1.8e308 in size",
                )
        columns[name] = values
    n = max(len(v) for v in columns.values())
    try:
        start = parse_time(case.get("start", DEFAULT_START))
    except ValueError as e:
        raise LocatedError(case.val_loc("start"), str(e)) from None
    frame = Frame(start + np.arange(n, dtype=np.int64) * strategy.step_ms)
    for name, values in columns.items():
        values = values + [None] * (n - len(values))
        if known[name] == "str":
            frame.columns[name] = Cat.from_values(values)
        else:
            frame.columns[name] = np.asarray([np.nan if v is None else float(v) for v in values], dtype=float)
    return frame


def check_case(run: CaseRun, tolerance_default: float | None) -> list[Failure]:
    failures: list[Failure] = []
    rule_names = [r.name for r in run.strategy.rules]
    for j, exp in enumerate(run.raw["expect"]):
        eloc = run.raw["expect"].item_loc(j)
        i = run.index_of(exp["at"], exp.val_loc("at"))
        bar = run.bars[i]
        tol = exp.get("tolerance", run.raw.get("tolerance", tolerance_default))

        def fail(what: str, expected: Any, actual: Any, rules: list[str], _i=i, _eloc=eloc) -> None:
            failures.append(
                Failure(
                    run.name,
                    _eloc,
                    _i,
                    format_time(int(run.ev.frame.times[_i])),
                    what,
                    expected,
                    actual,
                    _inputs(run, rules, _i),
                )
            )

        for key in ("fired", "firing", "suppressed", "resolved"):
            if key not in exp:
                continue
            for name in exp[key]:
                if name not in rule_names:
                    raise LocatedError(
                        exp.val_loc(key), f"no rule named {name!r}{did_you_mean(name, rule_names)}"
                    )
            want, got = set(exp[key]), getattr(bar, key)
            if want != got:
                fail(key, sorted(want), sorted(got), sorted(want ^ got))
        for name, want in (exp.get("values") or {}).items():
            got = _value_of(run, name, i, exp["values"].key_loc(name))
            if not _equal(want, got, tol):
                fail(f"value of {name}", want, got, _rules_using(run, name))
        for rname, sig in (exp.get("signals") or {}).items():
            rule = next((r for r in run.strategy.rules if r.name == rname), None)
            if rule is None or rule.side is None:
                raise LocatedError(exp["signals"].key_loc(rname), f"rule {rname!r} has no signal")
            got = {
                "side": run.ev.value(rule.side, i),
                "size_usd": run.ev.value(rule.size, i) if rule.size is not None else None,
            }
            for name in ("stop_loss", "take_profit", "trailing_stop"):  # the percent, or the distance
                spec = getattr(rule, name)
                if spec is None or spec.node is None:
                    got[name] = spec.pct if spec is not None else None
                else:
                    got[name] = run.ev.value(spec.node, i)
            for k, want in sig.items():
                if not _equal(want, got[k], tol):
                    fail(f"signal {k} of {rname}", want, got[k], [rname])
    return failures


def run_test_file(path: str, functions=None, extra_metrics=None) -> FileResult:
    """Run every test of one file; raise ErrorList/LocatedError for bad input."""
    doc = load_test_file(path)
    result = FileResult(path)
    for k, case in enumerate(doc["tests"]):
        run = run_case(doc, path, case, doc["tests"].item_loc(k), functions, extra_metrics)
        failures = check_case(run, None)
        if failures:
            result.failures.extend(failures)
        else:
            result.passed += 1
    return result


def _value_of(run: CaseRun, name: str, i: int, loc: Loc) -> Any:
    s = run.strategy
    if name in s.lets or name in s.params or s.node_of(name) is not None:
        return run.ev.named_value(name, i)
    if name in CATALOGUE:
        col = run.ev.frame.columns.get(name)
        if col is None:
            return None
        if isinstance(col, Cat):
            return col.value(i)
        return None if np.isnan(col[i]) else float(col[i])
    raise LocatedError(
        loc,
        f"{name!r} is not a let, param or metric of this strategy"
        f"{did_you_mean(name, [*s.lets, *s.params, *s.metrics])}",
    )


def _rules_using(run: CaseRun, name: str) -> list[str]:
    return [r.name for r in run.strategy.rules if name in r.names]


def _inputs(run: CaseRun, rules: list[str], i: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rule in run.strategy.rules:
        if rule.name in rules:
            for name in rule.names:
                out[name] = run.ev.named_value(name, i)
    return out


def _equal(want: Any, got: Any, tol: float | None) -> bool:
    if want is None or want == "_":
        return got is None
    if got is None:
        return False
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(want, bool) and isinstance(got, bool) and want == got
    if isinstance(want, int | float) and isinstance(got, int | float):
        return abs(want - got) <= tol if tol else float(want) == float(got)
    return str(want) == str(got)


def _show(v: Any) -> str:
    if v is None:
        return "unknown"
    if isinstance(v, float):
        return f"{v:.10g}"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)
