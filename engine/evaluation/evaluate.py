"""Evaluate a compiled strategy over a frame: one pass over the plan, column-wise with numpy.

Numeric and boolean series are float64 arrays (booleans 1.0 / 0.0, NaN = unknown); text series
are :class:`Cat`. Constants stay scalars and broadcast. ``evaluate`` serves both the backtest
(whole history) and the live path (``evaluate_last``: only the bars the warm-up needs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.language.compiler import Strategy
from perpwatch.language.functions import and3, finite, lagged, not3, or3, truth
from perpwatch.language.plan import Node

NAN = np.nan
_MIN_TIME = np.iinfo(np.int64).min


class Evaluation:
    """Every plan node's series for one symbol over one frame."""

    def __init__(self, strategy: Strategy, frame: Frame, symbol: str):
        self.strategy = strategy
        self.frame = frame
        self.symbol = symbol
        self.n = len(frame)
        self.values: list[Any] = []
        for node in strategy.plan.nodes:
            self.values.append(_OPS[node.op](self, node, [self.values[a] for a in node.args]))

    # -- access ---------------------------------------------------------------------------------

    def series(self, node_id: int) -> np.ndarray | Cat:
        """The node's values as a full-length array (or Cat)."""
        v = self.values[node_id]
        if isinstance(v, Cat | np.ndarray):
            return v
        if isinstance(v, str):
            return Cat.constant(v, self.n)
        return np.full(self.n, float(v))

    def truths(self, node_id: int) -> np.ndarray:
        """A condition's values as a full-length float array: 1 true, 0 false, NaN unknown."""
        v = self.series(node_id)
        if isinstance(v, Cat):
            raise TypeError(f"node {node_id} is text, not a condition")
        return v

    def value(self, node_id: int, i: int) -> Any:
        """The node's value at bar ``i`` as a Python value; None for unknown."""
        v = self.values[node_id]
        kind = self.strategy.plan.nodes[node_id].kind
        if isinstance(v, Cat):
            return v.value(i)
        if isinstance(v, str):
            return v
        x = float(v[i]) if isinstance(v, np.ndarray) else float(v)
        if x != x:
            return None
        return bool(x) if kind == "bool" else x

    def named_value(self, name: str, i: int) -> Any:
        """A let, metric or param value at bar ``i`` (None when unknown or not found)."""
        if name in self.strategy.params and name not in self.strategy.lets:
            return self.strategy.params[name]
        node = self.strategy.node_of(name)
        if node is None:
            if name == "symbol":
                return self.symbol
            if name == "interval":
                return self.strategy.interval
            return None
        return self.value(node, i)

    # -- helpers for ops --------------------------------------------------------------------------

    def arr(self, v: Any) -> np.ndarray:
        if isinstance(v, np.ndarray):
            return v
        return np.full(self.n, float(v))

    def cat(self, v: Any) -> Cat:
        if isinstance(v, Cat):
            return v
        if isinstance(v, np.ndarray):  # an absent text metric arrives as all-NaN
            return Cat(np.full(self.n, -1, dtype=np.int32), ())
        return Cat.constant(str(v), self.n)


def evaluate(strategy: Strategy, frame: Frame, symbol: str) -> Evaluation:
    """All of the strategy's series over the whole frame."""
    return Evaluation(strategy, frame, symbol)


def evaluate_last(strategy: Strategy, frame: Frame, symbol: str) -> Evaluation:
    """The live path: evaluate only the last ``warmup + 1`` bars (the newest bar is the last)."""
    need = strategy.warmup + 1
    return Evaluation(strategy, frame.slice(max(0, len(frame) - need)), symbol)


# --- operations ------------------------------------------------------------------------------------


def _metric(ev: Evaluation, node: Node, _args: list) -> Any:
    col = ev.frame.columns.get(node.data)
    if col is None:
        return ev.cat(np.empty(0)) if node.kind == "str" else np.full(ev.n, NAN)
    obs = ev.frame.observed.get(node.data)
    stale = None
    if obs is not None:
        stale = (obs == _MIN_TIME) | (ev.frame.times - obs > ev.strategy.risk.max_data_age_ms)
    if node.kind == "str":
        col = ev.cat(col)
        if stale is not None and stale.any():
            col = Cat(np.where(stale, -1, col.codes).astype(np.int32), col.labels)
        return col
    if isinstance(col, Cat):
        return np.full(ev.n, NAN)
    col = np.asarray(col, dtype=float)
    if stale is not None and stale.any():
        col = np.where(stale, NAN, col)
    return col


def _const(ev: Evaluation, node: Node, _args: list) -> Any:
    return node.data


def _builtin(ev: Evaluation, node: Node, _args: list) -> Any:
    return ev.symbol if node.data == "symbol" else ev.strategy.interval


def _neg(ev: Evaluation, node: Node, args: list) -> Any:
    return -ev.arr(args[0])


def _not(ev: Evaluation, node: Node, args: list) -> Any:
    return not3(ev.arr(args[0]))


_ARITH = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "//": np.floor_divide,
    "%": np.mod,
    "**": np.power,
}


def _arith(ev: Evaluation, node: Node, args: list) -> Any:
    a, b = ev.arr(args[0]), ev.arr(args[1])
    with np.errstate(all="ignore"):
        out = _ARITH[node.data](a, b)
    if node.data in ("/", "//", "%"):
        out = np.where(b == 0, NAN, out)
    return finite(out)


_CMP = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


def _cmp(ev: Evaluation, node: Node, args: list) -> Any:
    a, b = args
    if ev.strategy.plan.nodes[node.args[0]].kind == "str":
        if isinstance(a, str) and isinstance(b, str):
            return float((a == b) == (node.data == "=="))
        ca, cb = ev.cat(a), ev.cat(b)
        labels = tuple(sorted(set(ca.labels) | set(cb.labels)))
        xa, xb = ca.recode(labels), cb.recode(labels)
        eq = xa == xb
        return truth(eq if node.data == "==" else ~eq, (xa < 0) | (xb < 0))
    a, b = ev.arr(a), ev.arr(b)
    return truth(_CMP[node.data](a, b), np.isnan(a) | np.isnan(b))


def _and(ev: Evaluation, node: Node, args: list) -> Any:
    return and3(*(ev.arr(a) for a in args))


def _or(ev: Evaluation, node: Node, args: list) -> Any:
    return or3(*(ev.arr(a) for a in args))


def _in(ev: Evaluation, node: Node, args: list) -> Any:
    labels, negate = node.data
    x = args[0]
    if isinstance(x, str):
        return float((x in labels) != negate)
    c = ev.cat(x)
    codes = [c.code_of(label) for label in labels]
    hit = np.isin(c.codes, codes)
    return truth(hit != negate, c.codes < 0)


def _if(ev: Evaluation, node: Node, args: list) -> Any:
    c = ev.arr(args[0])
    if node.kind == "str":
        a, b = ev.cat(args[1]), ev.cat(args[2])
        labels = tuple(sorted(set(a.labels) | set(b.labels)))
        codes = np.where(c == 1, a.recode(labels), np.where(c == 0, b.recode(labels), -1))
        return Cat(codes.astype(np.int32), labels)
    return np.where(c == 1, ev.arr(args[1]), np.where(c == 0, ev.arr(args[2]), NAN))


def _call(ev: Evaluation, node: Node, args: list) -> Any:
    name, windows = node.data
    x = args[0] if args else None
    if name == "lag" and node.kind == "str":
        c = ev.cat(x)
        codes = np.full(ev.n, -1, dtype=np.int32)
        n = windows[0]
        if n < ev.n:
            codes[n:] = c.codes[: ev.n - n]
        return Cat(codes, c.labels)
    if name == "fill":
        if node.kind == "str":
            c, v = ev.cat(x), str(args[1]) if isinstance(args[1], str) else None
            if v is None:
                fill_c = ev.cat(args[1])
                labels = tuple(sorted(set(c.labels) | set(fill_c.labels)))
                return Cat(
                    np.where(c.codes < 0, fill_c.recode(labels), c.recode(labels)).astype(np.int32), labels
                )
            labels = c.labels if v in c.labels else (*c.labels, v)
            return Cat(np.where(c.codes < 0, labels.index(v), c.codes).astype(np.int32), labels)
        a = ev.arr(x)
        return np.where(np.isnan(a), ev.arr(args[1]), a)
    if name == "is_missing":
        if isinstance(x, Cat) or node.kind == "str" or ev.strategy.plan.nodes[node.args[0]].kind == "str":
            return (ev.cat(x).codes < 0).astype(float)
        return np.isnan(ev.arr(x)).astype(float)
    spec = ev.strategy.functions[name]
    call_args: list[Any] = []
    it_args, it_win = iter(args), iter(windows)
    for pos in range(len(spec.params) if not spec.variadic else len(args)):
        if pos in spec.windows:
            call_args.append(next(it_win))
        else:
            nxt = next(it_args, None)
            if nxt is None:
                continue
            call_args.append(ev.arr(nxt))
    out = spec.func(*call_args)
    out = np.asarray(out, dtype=float)
    if out.shape != (ev.n,):
        raise ValueError(f"function {name}() returned {out.shape} values for {ev.n} bars")
    return out


def _cases(ev: Evaluation, node: Node, args: list) -> Any:
    has_else = node.data
    pairs = args[: len(args) - 1] if has_else else args
    undecided = np.ones(ev.n, bool)
    if node.kind == "str":
        results = [ev.cat(r) for r in pairs[1::2]] + ([ev.cat(args[-1])] if has_else else [])
        labels = tuple(sorted({lab for r in results for lab in r.labels}))
        out = np.full(ev.n, -1, dtype=np.int32)
        for cond, res in zip(pairs[0::2], results, strict=False):
            c = ev.arr(cond)
            take = undecided & (c == 1)
            out[take] = res.recode(labels)[take]
            undecided &= c == 0  # True and unknown both decide (unknown stays unknown)
        if has_else:
            out[undecided] = results[-1].recode(labels)[undecided]
        return Cat(out, labels)
    out = np.full(ev.n, NAN)
    for cond, res in zip(pairs[0::2], pairs[1::2], strict=True):
        c = ev.arr(cond)
        take = undecided & (c == 1)
        out[take] = ev.arr(res)[take]
        undecided &= c == 0
    if has_else:
        out[undecided] = ev.arr(args[-1])[undecided]
    return out


def _lookup(ev: Evaluation, node: Node, args: list) -> Any:
    table, default, missing = node.data
    key = ev.cat(args[0])
    if node.kind == "str":
        out_labels = tuple(sorted({v for _, v in table} | {v for v in (default, missing) if v is not None}))
        unmatched = out_labels.index(default) if default is not None else -1
        mapping = {k: out_labels.index(v) for k, v in table}
        lut = np.asarray([mapping.get(lab, unmatched) for lab in key.labels] + [-1], dtype=np.int32)
        codes = lut[key.codes]
        if missing is not None:
            codes = np.where(key.codes < 0, out_labels.index(missing), codes).astype(np.int32)
        return Cat(codes, out_labels)
    mapping = dict(table)
    fallback = NAN if default is None else default
    lut = np.asarray([mapping.get(lab, fallback) for lab in key.labels] + [NAN], dtype=float)
    out = lut[key.codes]
    if missing is not None:
        out = np.where(key.codes < 0, missing, out)
    return out


_OPS = {
    "metric": _metric,
    "const": _const,
    "builtin": _builtin,
    "neg": _neg,
    "not": _not,
    "arith": _arith,
    "cmp": _cmp,
    "and": _and,
    "or": _or,
    "in": _in,
    "if": _if,
    "call": _call,
    "cases": _cases,
    "lookup": _lookup,
}

__all__ = ["Evaluation", "evaluate", "evaluate_last", "lagged"]
