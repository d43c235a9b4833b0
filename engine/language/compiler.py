"""Strategy files -> :class:`Strategy`: schema check, expression compile, warm-up.

``load_strategy(path)`` is the one entry point: it reads the YAML, validates it against
``schemas/strategy.schema.json``, compiles every expression once into a shared :class:`Plan`,
and reports every problem found as ``file:line:col: error: ...`` (an :class:`ErrorList`).
"""

from __future__ import annotations

import functools
import keyword
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from perpwatch.common.errors import ErrorList, Loc, LocatedError, did_you_mean
from perpwatch.common.numbers import number_problem, parse_number
from perpwatch.common.symbols import normalise_symbols
from perpwatch.common.timeutil import DAY, INTERVALS, parse_duration
from perpwatch.language.expr import BUILTIN_NAMES, ExprCompiler
from perpwatch.language.functions import BUILTINS, FunctionSpec
from perpwatch.language.metrics import CATALOGUE
from perpwatch.language.plan import Plan
from perpwatch.language.schemas import validate
from perpwatch.language.templates import Template, compile_template
from perpwatch.language.yamlsrc import LDict, LList, load_yaml, load_yaml_file

SIDES = ("long", "short", "flat")
#: The protective exits a signal (or, as defaults, ``risk:``) may name.
EXITS = ("stop_loss", "take_profit", "trailing_stop")
#: The largest percent each exit may be: a stop 100% away from the fill would lie at zero.
EXIT_MAX_PCT = {"stop_loss": 99.0, "take_profit": 1000.0, "trailing_stop": 99.0}
_PERCENT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*%\s*")
MAX_FOR_BARS = 100_000  # as many bars as the longest window (functions.MAX_WINDOW)
MAX_DURATION_MS = 365 * DAY  # for:, cooldown:, max_data_age:
# The most bars of history an expression may need before the bar it decides (its warm-up): as many
# as the longest window. ema and rsi look back 4n - 1 bars, and nested windows add up.
MAX_WARMUP_BARS = 100_000


@dataclass(frozen=True)
class ExitSpec:
    """A compiled protective exit: ``pct`` percent of the entry fill, or the plan ``node`` giving a
    price distance at the decision bar; ``text`` as written, ``loc`` where."""

    name: str  # stop_loss | take_profit | trailing_stop
    text: str
    loc: Loc
    pct: float | None = None
    node: int | None = None


@dataclass
class Rule:
    name: str
    loc: Loc
    cond: int  # plan node of the condition
    names: list[str]  # every name the condition used, in order
    for_bars: int = 0
    severity: str = "info"
    cooldown_ms: int = 0
    message: Template | None = None
    side: int | None = None  # plan node giving long/short/flat
    size: int | None = None  # plan node giving the size in USD
    notify_resolved: bool = False
    repeat_ms: int | None = None  # re-send while firing at most this often; None: the config's; 0: off
    # protective exits of the positions its signal opens: its own, else the strategy's risk: defaults
    stop_loss: ExitSpec | None = None
    take_profit: ExitSpec | None = None
    trailing_stop: ExitSpec | None = None
    parts: list[tuple[str, int]] = field(
        default_factory=list
    )  # each condition and sub-condition, for explain


@dataclass
class Risk:
    max_position_usd: float | None = None
    max_open_positions: int | None = None
    max_daily_loss_pct: float | None = None
    max_data_age_ms: int = 0
    inhibited_by: list[str] = field(default_factory=list)
    # defaults for every rule's signal that does not name its own
    stop_loss: ExitSpec | None = None
    take_profit: ExitSpec | None = None
    trailing_stop: ExitSpec | None = None


@dataclass
class Strategy:
    file: str
    name: str
    description: str
    symbols: list[str] | None
    interval: str
    step_ms: int
    source: str | None
    params: dict[str, Any]
    plan: Plan
    lets: dict[str, int]
    rules: list[Rule]
    notify: list[str] | None
    execute: str | None
    risk: Risk
    functions: Mapping[str, FunctionSpec]
    #: ``snapshot:`` lines of grouped notifications: (label, template); label "" for a plain line
    snapshot: list[tuple[str, Template]] = field(default_factory=list)

    @property
    def warmup(self) -> int:
        """Bars of history needed before the newest bar (the largest total look-back)."""
        return max((n.lookback for n in self.plan.nodes), default=0)

    @property
    def metrics(self) -> set[str]:
        return self.plan.metrics()

    @property
    def has_exits(self) -> bool:
        """Whether any rule opens positions with protective exits (which need each bar's high and low)."""
        return any(getattr(r, x) is not None for r in self.rules for x in EXITS)

    def node_of(self, name: str) -> int | None:
        """The plan node for a let name or metric path used by this strategy."""
        if name in self.lets:
            return self.lets[name]
        return self._metric_nodes.get(name)

    @functools.cached_property
    def _metric_nodes(self) -> dict[str, int]:
        return {node.data: i for i, node in enumerate(self.plan.nodes) if node.op == "metric"}


class _LetFailed(Exception):
    """A let that failed to compile was already reported; expressions using it stop quietly."""


def load_strategy(
    path: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    functions: Mapping[str, FunctionSpec] | None = None,
    extra_metrics: Mapping[str, str] | None = None,
    text: str | None = None,
) -> Strategy:
    """Read, validate and compile one strategy file; raise ErrorList (or LocatedError)."""
    doc = load_yaml(text, path) if text is not None else load_yaml_file(path)
    return compile_strategy(doc, path, overrides=overrides, functions=functions, extra_metrics=extra_metrics)


def compile_strategy(
    doc: Any,
    file: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    functions: Mapping[str, FunctionSpec] | None = None,
    extra_metrics: Mapping[str, str] | None = None,
) -> Strategy:
    if not isinstance(doc, LDict):
        raise LocatedError(
            getattr(doc, "loc", Loc(file, 1, 1)),
            "a strategy file must be a YAML mapping (version:, name:, rules:, ...)",
        )
    errors = validate(doc, "strategy", file)
    if errors:
        raise ErrorList(errors)
    return _Compiler(doc, file, overrides or {}, functions, extra_metrics).run()


class _Compiler:
    def __init__(
        self,
        doc: LDict,
        file: str,
        overrides: Mapping[str, Any],
        functions: Mapping[str, FunctionSpec] | None,
        extra_metrics: Mapping[str, str] | None,
    ):
        self.doc, self.file = doc, file
        self.errors: list[LocatedError] = []
        self.plan = Plan()
        self.functions = dict(BUILTINS) | dict(functions or {})
        self.metrics = {name: m.kind for name, m in CATALOGUE.items()} | dict(extra_metrics or {})
        self.params = self._params(overrides)
        self.let_src: LDict = doc.get("let") or LDict()
        if not hasattr(self.let_src, "loc"):
            self.let_src.loc, self.let_src.key_locs, self.let_src.val_locs = doc.loc, {}, {}
        self.lets: dict[str, int] = {}
        self.failed: set[str] = set()
        self.visiting: list[str] = []
        self.expr = ExprCompiler(
            self.plan,
            self.functions,
            self.metrics,
            self.params,
            self._resolve_let,
            lambda: list(self.let_src),
            _param_locs(doc.get("params")),
        )
        self.interval = doc.get("interval", "1h")
        self.step = INTERVALS[self.interval]

    # -- top level ----------------------------------------------------------------------------

    def run(self) -> Strategy:
        self._check_names()
        symbols = self._symbols()
        for name in self.let_src:
            try:
                self._resolve_let(name, self.let_src.key_loc(name))
            except _LetFailed:
                pass
            except LocatedError as e:
                self.errors.append(e)
        self.exit_defaults = self._exit_defaults()
        rules = []
        seen: dict[str, Loc] = {}
        for i, raw in enumerate(self.doc["rules"]):
            loc = self.doc["rules"].item_loc(i)
            if raw["name"] in seen:
                self.errors.append(
                    LocatedError(
                        raw.val_loc("name"),
                        f"duplicate rule name {raw['name']!r} (first at line {seen[raw['name']].line})",
                    )
                )
                continue
            seen[raw["name"]] = raw.val_loc("name")
            rule = self._guard(self._rule, raw, loc)
            if rule is not None:
                rules.append(rule)
        snapshot = self._snapshot()
        if self.errors:
            self.errors.sort(key=lambda e: (e.loc.line if e.loc else 0, e.loc.col if e.loc else 0))
            raise ErrorList(self.errors)
        doc = self.doc
        return Strategy(
            file=self.file,
            name=doc["name"],
            description=doc.get("description", ""),
            symbols=symbols,
            interval=self.interval,
            step_ms=self.step,
            source=doc.get("source"),
            params=dict(self.params),
            plan=self.plan,
            lets=dict(self.lets),
            rules=rules,
            notify=list(doc["notify"]) if "notify" in doc else None,
            execute=doc.get("execute"),
            risk=self._risk(self.exit_defaults),
            functions=self.functions,
            snapshot=snapshot,
        )

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except _LetFailed:
            return None
        except LocatedError as e:
            self.errors.append(e)
            return None

    def _params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The params with ``overrides`` applied: ``--param`` texts, or a test file's values (an
        LDict, whose locations the errors use)."""
        params: dict[str, Any] = dict(self.doc.get("params") or {})
        for name, value in overrides.items():
            if name not in params:
                listing = ", ".join(params) or "none"
                hint = did_you_mean(name, params) or f" (its params: {listing})"
                where = overrides.key_loc(name) if isinstance(overrides, LDict) else Loc("--param")
                raise LocatedError(where, f"unknown param {name!r} for {self.file}{hint}")
            where = overrides.val_loc(name) if isinstance(overrides, LDict) else Loc("--param")
            params[name] = _coerce_param(name, value, params[name], where)
        return params

    def _check_names(self) -> None:
        params = self.doc.get("params") or {}
        for name in self.let_src:
            loc = self.let_src.key_loc(name)
            if name in params:
                self.errors.append(LocatedError(loc, f"{name!r} is both a param and a let name"))
            elif name in BUILTIN_NAMES or name in self.expr.prefixes:
                self.errors.append(
                    LocatedError(loc, f"{name!r} is a reserved name (a built-in or a metric group)")
                )
            else:
                self._check_shadowing(name, loc, "let")
        for name in params:
            loc = self.doc["params"].key_loc(name)
            if name in BUILTIN_NAMES or name in self.expr.prefixes:
                self.errors.append(LocatedError(loc, f"{name!r} is a reserved name"))
            else:
                self._check_shadowing(name, loc, "param")

    def _check_shadowing(self, name: str, loc: Loc, what: str) -> None:
        """A param or let named like a function or a Python keyword could never be used as one."""
        if name in self.functions:
            self.errors.append(
                LocatedError(
                    loc, f"{name!r} is a function name; a {what} may not shadow it (rename the {what})"
                )
            )
        elif keyword.iskeyword(name):
            self.errors.append(
                LocatedError(loc, f"{name!r} is a keyword of expressions; a {what} may not be named so")
            )

    def _symbols(self) -> list[str] | None:
        """``symbols:`` in upper case; a coin named twice (``BTC`` and ``btc``) is an error."""
        if "symbols" not in self.doc:
            return None
        items: LList = self.doc["symbols"]
        try:
            return normalise_symbols(items, items.item_loc)
        except ErrorList as e:
            self.errors.extend(e.errors)
            return None

    # -- lets ---------------------------------------------------------------------------------

    def _resolve_let(self, name: str, use_loc: Loc) -> int:
        if name in self.lets:
            return self.lets[name]
        if name in self.failed:
            raise _LetFailed(name)
        if name in self.visiting:
            cycle = [*self.visiting[self.visiting.index(name) :], name]
            first = self.visiting[self.visiting.index(name)]
            self.failed.update(cycle)
            raise LocatedError(
                self.let_src.key_loc(first),
                f"let names depend on each other in a cycle: {' -> '.join(cycle)}",
            )
        self.visiting.append(name)
        try:
            node_id = self._let(name, self.let_src[name], self.let_src.val_loc(name))
            self._check_warmup(node_id, self.let_src.val_loc(name), f"let {name!r}")
        except LocatedError:
            self.failed.add(name)
            raise
        finally:
            self.visiting.pop()
        self.lets[name] = node_id
        return node_id

    def _let(self, name: str, spec: Any, loc: Loc) -> int:
        if isinstance(spec, LDict) and "cases" in spec:
            return self._cases(spec)
        if isinstance(spec, LDict) and "lookup" in spec:
            return self._lookup(spec)
        return self.expr.compile(spec, loc)

    def _cases(self, spec: LDict) -> int:
        args: list[int] = []
        for case in spec["cases"]:
            cond = self._condition(case["when"], case.val_loc("when"), [])
            if "then" in case:
                result = self.plan.const(case["then"])
            else:
                result = self.expr.compile(case["value"], case.val_loc("value"))
            args += [cond, result]
        has_else = "else" in spec
        if has_else:
            args.append(self.plan.const(spec["else"]))
        results = args[1::2] + ([args[-1]] if has_else else [])
        kind = self.expr.merge_kinds(results, spec.loc)
        labels = self.expr.merge_labels(results) if kind == "str" else None
        return self.plan.add("cases", tuple(args), has_else, kind, labels=labels)

    def _lookup(self, spec: LDict) -> int:
        key = self.expr.compile(spec["lookup"], spec.val_loc("lookup"))
        key_node = self.plan.nodes[key]
        if key_node.kind != "str":
            raise LocatedError(
                spec.val_loc("lookup"), "lookup: needs a categorical (text) series, such as a cases let"
            )
        table = spec["table"]
        for label in table:
            if key_node.op == "builtin" and key_node.data == "symbol":
                self.expr.check_symbol_label(str(label), table.key_loc(label))
            if key_node.labels is not None and str(label) not in key_node.labels:
                raise LocatedError(
                    table.key_loc(label),
                    f"{label!r} is never a value of {spec['lookup']!r}; its values: "
                    f"{', '.join(sorted(key_node.labels))}{did_you_mean(str(label), key_node.labels)}",
                )
        values = [*table.values(), *(spec[k] for k in ("default", "missing") if k in spec)]
        kinds = {"str" if isinstance(v, str) else ("bool" if isinstance(v, bool) else "num") for v in values}
        if "str" in kinds and len(kinds) > 1:
            raise LocatedError(spec.loc, "lookup values mix text labels and numbers; use one or the other")
        kind = kinds.pop() if len(kinds) == 1 else "num"
        norm = (lambda v: str(v)) if kind == "str" else (lambda v: float(v))
        data = (
            tuple((str(k), norm(v)) for k, v in table.items()),
            norm(spec["default"]) if "default" in spec else None,
            norm(spec["missing"]) if "missing" in spec else None,
        )
        labels = frozenset(str(v) for v in values) if kind == "str" else None
        return self.plan.add("lookup", (key,), data, kind, labels=labels)

    # -- conditions and rules -----------------------------------------------------------------

    def _condition(
        self, spec: Any, loc: Loc, names: list[str], parts: list | None = None, depth: int = 0
    ) -> int:
        parts = [] if parts is None else parts
        indent = "  " * depth
        if isinstance(spec, LDict):
            (op,) = spec.keys()
            slot = len(parts)
            parts.append((f"{indent}{op}:", -1))
            if op == "not":
                node = self.plan.add(
                    "not",
                    (self._condition(spec["not"], spec.val_loc("not"), names, parts, depth + 1),),
                    None,
                    "bool",
                )
            else:
                items: LList = spec[op]
                args = tuple(
                    self._condition(c, items.item_loc(i), names, parts, depth + 1)
                    for i, c in enumerate(items)
                )
                node = self.plan.add("and" if op == "all" else "or", args, None, "bool")
            parts[slot] = (f"{indent}{op}:", node)
            return node
        node = self.expr.compile(spec, loc)
        names.extend(n for n in self.expr.last_names if n not in names)
        parts.append((f"{indent}{spec}", node))
        return self.expr.expect_bool(node, loc)

    def _rule(self, raw: LDict, loc: Loc) -> Rule:
        names: list[str] = []
        parts: list[tuple[str, int]] = []
        cond = self._condition(raw["when"], raw.val_loc("when"), names, parts)
        self._check_warmup(cond, raw.val_loc("when"), f"the condition of rule {raw['name']!r}")
        rule = Rule(
            name=raw["name"],
            loc=loc,
            cond=cond,
            names=names,
            parts=parts,
            severity=raw.get("severity", "info"),
            notify_resolved=bool(raw.get("notify_resolved", False)),
        )
        if "for" in raw:
            rule.for_bars = self._bars(raw["for"], raw.val_loc("for"))
        if "cooldown" in raw:
            rule.cooldown_ms = _duration_ms(raw["cooldown"], raw.val_loc("cooldown"), "cooldown")
        if "repeat" in raw:
            off = raw["repeat"] == "off"
            rule.repeat_ms = 0 if off else _duration_ms(raw["repeat"], raw.val_loc("repeat"), "repeat")
        if "signal" in raw:
            self._signal(rule, raw["signal"])
        if "message" in raw:
            rule.message = compile_template(
                raw["message"],
                raw.val_loc("message"),
                self._template_kind,
                [*self.let_src, *self.params, *self.metrics, "symbol", "rule", "severity", "time"],
            )
        return rule

    def _snapshot(self) -> list[tuple[str, Template]]:
        """``snapshot:``: each line a message template (a string, or ``{label, value}``)."""
        items: LList = self.doc.get("snapshot") or LList()
        known = [*self.let_src, *self.params, *self.metrics, "symbol", "time"]
        out: list[tuple[str, Template]] = []
        for i, item in enumerate(items):
            if isinstance(item, LDict):
                label, text, loc = item["label"], item["value"], item.val_loc("value")
            else:
                label, text, loc = "", item, items.item_loc(i)
            template = self._guard(compile_template, text, loc, self._template_kind, known)
            if template is not None:
                out.append((label, template))
        return out

    def _check_warmup(self, node_id: int, loc: Loc, what: str) -> None:
        """An expression needing more than MAX_WARMUP_BARS bars of history is an error at ``loc``."""
        need = self.plan.nodes[node_id].lookback
        if need > MAX_WARMUP_BARS:
            raise LocatedError(
                loc,
                f"{what} needs {need:,} bars of history before each bar (its warm-up); at most "
                f"{MAX_WARMUP_BARS:,}: shorten its windows (ema and rsi look back 4n - 1 bars, "
                "and windows of windows add up)",
            )

    def _bars(self, value: Any, loc: Loc) -> int:
        """``for:`` in bars: a whole number, or a duration rounded up to bars; at most MAX_FOR_BARS."""
        if isinstance(value, int):
            if value > MAX_FOR_BARS:
                raise LocatedError(loc, f"for: {value} bars is too long; at most {MAX_FOR_BARS} bars")
            return value
        bars = math.ceil(_duration_ms(value, loc, "for") / self.step)
        if bars > MAX_FOR_BARS:
            raise LocatedError(
                loc, f"for: {value!r} is {bars} bars of {self.interval}; at most {MAX_FOR_BARS} bars"
            )
        return bars

    def _signal(self, rule: Rule, sig: LDict) -> None:
        side = sig["side"]
        if side in SIDES:
            rule.side = self.plan.const(side)
        elif side.isidentifier() and side not in self.let_src and side not in self.params:
            raise LocatedError(
                sig.val_loc("side"),
                f"signal side {side!r} is not long, short or flat{did_you_mean(side, SIDES)}",
            )
        else:
            rule.side = self.expr.compile(side, sig.val_loc("side"))
            self._check_warmup(rule.side, sig.val_loc("side"), "signal side")
            node = self.plan.nodes[rule.side]
            if node.kind != "str":
                raise LocatedError(
                    sig.val_loc("side"),
                    f"signal side must be long, short or flat, or an expression giving one of them; got {side!r}",
                )
            if node.labels is not None and not node.labels <= set(SIDES):
                bad = sorted(node.labels - set(SIDES))
                raise LocatedError(
                    sig.val_loc("side"),
                    f"signal side can be {', '.join(bad)}, which is not long, short or flat",
                )
        if "size_usd" in sig:
            rule.size = self.expr.compile(sig["size_usd"], sig.val_loc("size_usd"))
            self._check_warmup(rule.size, sig.val_loc("size_usd"), "signal size_usd")
            if self.plan.nodes[rule.size].kind == "str":
                raise LocatedError(sig.val_loc("size_usd"), "signal size_usd must be a number (USD)")
        for name in EXITS:
            spec = self.exit_defaults.get(name)
            if name in sig and side == "flat":
                raise LocatedError(
                    sig.val_loc(name),
                    f"signal {name}: a flat signal opens nothing to protect; put {name} on the signals "
                    "that open positions (long, short), or in risk: for all of them",
                )
            if name in sig:
                spec = self._guard(self._exit, name, sig[name], sig.val_loc(name), "signal")
            setattr(rule, name, spec)

    def _exit_defaults(self) -> dict[str, ExitSpec | None]:
        """The ``risk:`` block's protective exits (defaults for every signal), compiled once."""
        raw = self.doc.get("risk")
        if not isinstance(raw, LDict):
            return {}
        return {
            name: self._guard(self._exit, name, raw[name], raw.val_loc(name), "risk")
            for name in EXITS
            if name in raw
        }

    def _exit(self, name: str, value: Any, loc: Loc, where: str) -> ExitSpec:
        """``stop_loss`` / ``take_profit`` / ``trailing_stop``: ``2%`` of the entry fill, or an
        expression giving a price distance at the decision bar."""
        what = f"{where} {name}"
        valid = (
            "write a percent of the entry fill (2%) or an expression giving a price distance, "
            "such as 2 * sma(price.high - price.low, 14)"
        )
        text = str(value)
        if isinstance(value, bool):
            raise LocatedError(loc, f"{what}: {value!r} is not a distance; {valid}")
        if isinstance(value, str) and "%" in value:
            m = _PERCENT.fullmatch(value)
            if m is None:
                raise LocatedError(loc, f"{what}: {_short(value)!r} is not a percent like 2%; {valid}")
            pct = float(m.group(1))
            top = EXIT_MAX_PCT[name]
            if not 0 < pct <= top:
                raise LocatedError(
                    loc, f"{what}: {_short(value)!r} must be more than 0% and at most {top:g}%"
                )
            return ExitSpec(name, text, loc, pct=pct)
        if isinstance(value, int | float):
            problem = number_problem(value)
            if problem:
                raise LocatedError(loc, f"{what}: {problem}")
            if value <= 0:
                raise LocatedError(loc, f"{what}: {value!r} is not a positive price distance; {valid}")
        node = self.expr.compile(value, loc)
        self._check_warmup(node, loc, what)
        got = self.plan.nodes[node]
        if got.kind != "num":
            gives = "text" if got.kind == "str" else "true/false"
            raise LocatedError(loc, f"{what}: {_short(text)!r} gives {gives}, not a price distance; {valid}")
        if got.op == "const" and not (isinstance(got.data, float) and got.data > 0):
            raise LocatedError(loc, f"{what}: {_short(text)!r} is not a positive price distance; {valid}")
        return ExitSpec(name, text, loc, node=node)

    def _template_kind(self, name: str) -> str | None:
        if name in self.params:
            self.plan.const(self.params[name])
            v = self.params[name]
            return "str" if isinstance(v, str) else ("bool" if isinstance(v, bool) else "num")
        if name in self.let_src:
            try:
                return self.plan.nodes[self._resolve_let(name, self.let_src.key_loc(name))].kind
            except (_LetFailed, LocatedError):
                return "num"
        if name in self.metrics:
            self.plan.add("metric", (), name, self.metrics[name])
            return self.metrics[name]
        return None

    def _risk(self, exits: Mapping[str, ExitSpec | None]) -> Risk:
        raw = self.doc.get("risk") or {}
        age = 2 * self.step
        if "max_data_age" in raw:
            age = _duration_ms(raw["max_data_age"], self.doc["risk"].val_loc("max_data_age"), "max_data_age")
        return Risk(
            max_position_usd=raw.get("max_position_usd"),
            max_open_positions=raw.get("max_open_positions"),
            max_daily_loss_pct=raw.get("max_daily_loss_pct"),
            max_data_age_ms=age,
            inhibited_by=list(raw.get("inhibited_by", [])),
            stop_loss=exits.get("stop_loss"),
            take_profit=exits.get("take_profit"),
            trailing_stop=exits.get("trailing_stop"),
        )


def _param_locs(params: Any) -> dict[str, Loc]:
    """Where each param of ``params:`` is defined (its key), for errors about its value."""
    if not isinstance(params, LDict):
        return {}
    return {name: params.key_loc(name) for name in params}


def _duration_ms(value: Any, loc: Loc, key: str) -> int:
    """A duration of the strategy in ms; at most MAX_DURATION_MS (365 days)."""
    text = str(value)
    digits = text.strip()[:-1].strip()
    if len(digits) > 15:  # more than 365 days in any unit, and too long for int() to be sensible
        raise LocatedError(loc, f"{key}: {_short(text)!r} is too long; at most 365 days")
    try:
        ms = parse_duration(text)
    except ValueError as e:
        raise LocatedError(loc, f"{key}: {e}") from None
    if ms > MAX_DURATION_MS:
        raise LocatedError(loc, f"{key}: {_short(text)!r} is too long; at most 365 days")
    return ms


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _coerce_param(name: str, value: Any, current: Any, loc: Loc) -> Any:
    """An override (``--param`` text, or a test file's value) as the type of the param's default:
    a number (finite, within bounds; see ``perpwatch.common.numbers``), true/false, or text."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise LocatedError(loc, f"param {name}: {value!r} is not true or false")
    if isinstance(current, int | float):
        if isinstance(value, str):
            try:
                return parse_number(value)
            except ValueError as e:
                raise LocatedError(loc, f"param {name}: {e}") from None
        problem = number_problem(value)
        if problem:
            raise LocatedError(loc, f"param {name}: {problem}")
        return value
    if isinstance(value, str):
        return value
    raise LocatedError(loc, f"param {name} is text, not {value!r}; quote the value to give it as text")
