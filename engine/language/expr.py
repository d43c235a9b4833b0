"""Expressions: parsed once with simpleeval, checked, and lowered into a :class:`Plan`.

Allowed: literals, names (metric paths, ``let`` names, params, ``symbol``, ``interval``),
arithmetic, comparisons (chains included), ``and``/``or``/``not``, ``x if c else y``, ``in`` with a
literal list of strings, and calls of known functions. Everything else is a load-time error at the
exact column, with the closest known names for an unknown one.

Names are ASCII: Python's parser NFKC-normalises identifiers (``ｈot`` would silently be ``hot``),
so a non-ASCII character outside a string literal is an error at that character. ``symbol`` is
compared with symbols as they are normalised (upper case): ``symbol == "btc"`` is an error.
"""

from __future__ import annotations

import ast
import io
import tokenize
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import simpleeval

from perpwatch.common.errors import Loc, LocatedError, did_you_mean
from perpwatch.common.symbols import WHAT_A_SYMBOL_IS, normalise_symbol
from perpwatch.language.functions import MIN_WINDOW, FunctionSpec
from perpwatch.language.metrics import CORE_PREFIXES
from perpwatch.language.plan import Plan

MAX_EXPR_CHARS = 4000
MAX_DEPTH = 60
BUILTIN_NAMES = {"symbol": "str", "interval": "str"}

_ARITH = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
_CMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_FORBIDDEN = {
    ast.Subscript: "subscripts ([...]) are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.Starred: "* arguments are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.Slice: "slices are not allowed",
}
_LITERAL_NODES = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.expr_context)


class ExprCompiler:
    """Compiles expression strings of one strategy into nodes of its shared plan."""

    def __init__(
        self,
        plan: Plan,
        functions: Mapping[str, FunctionSpec],
        metrics: Mapping[str, str],
        params: Mapping[str, Any],
        resolve_let: Callable[[str, Loc], int],
        let_names: Callable[[], list[str]],
        param_locs: Mapping[str, Loc] | None = None,
    ):
        self.plan = plan
        self.functions = functions
        self.metrics = metrics  # metric name -> kind
        self.params = params
        self.param_locs = param_locs or {}  # where each param is defined, for errors about its value
        self.resolve_let = resolve_let
        self.let_names = let_names
        self.prefixes = CORE_PREFIXES | {m.split(".")[0] for m in metrics}
        self.names: list[str] = []  # names used by the expression being compiled
        self.last_names: list[str] = []  # names the last finished compile used, in order
        self._text = ""
        self._loc = Loc("")
        self._lead = 0

    # -- entry points ---------------------------------------------------------------------------

    def compile(self, text: Any, loc: Loc) -> int:
        """One expression (string, or a YAML number/bool) -> a node id. Raises LocatedError."""
        saved = (self.names, self._text, self._loc, self._lead)
        self.names = []
        try:
            if isinstance(text, bool | int | float):
                return self.plan.const(text)
            text = str(text)
            self._text, self._loc = text, loc
            self._lead = len(text) - len(text.lstrip())
            if len(text) > MAX_EXPR_CHARS:
                raise LocatedError(loc, f"expression is longer than {MAX_EXPR_CHARS} characters")
            tree = self._parse(text)
            self._check_ascii_names()
            self._check_depth(tree)
            self._check_forbidden(tree)
            return self._node(tree)
        finally:
            self.last_names = self.names
            self.names, self._text, self._loc, self._lead = saved

    def expect_bool(self, node_id: int, loc: Loc, what: str = "a condition") -> int:
        kind = self.plan.nodes[node_id].kind
        if kind != "bool":
            raise LocatedError(
                loc,
                f"{what} must be true or false (a comparison, a boolean function, and/or/not), not a {_kind_name(kind)}",
            )
        return node_id

    # -- parsing --------------------------------------------------------------------------------

    def _parse(self, text: str) -> ast.expr:
        with warnings.catch_warnings():
            warnings.simplefilter("error", simpleeval.MultipleExpressions)
            warnings.simplefilter("error", SyntaxWarning)  # "0and 1": an error here, not a stray stderr line
            try:
                stmt = simpleeval.SimpleEval.parse(text)
            except SyntaxError as e:
                offset = (e.offset or 1) - 1 if (e.lineno or 1) == 1 else 0
                hint = _equals_hint(text.strip())
                if hint is not None:
                    col, meant = hint
                    raise LocatedError(
                        self._loc.shift(self._lead + col),
                        f"syntax error in expression: {meant}",
                    ) from None
                raise LocatedError(
                    self._loc.shift(self._lead + offset), f"syntax error in expression: {e.msg}"
                ) from None
            except simpleeval.MultipleExpressions:
                raise LocatedError(
                    self._loc, "only one expression is allowed (no ';' or several lines)"
                ) from None
            except (simpleeval.InvalidExpression, ValueError) as e:
                raise LocatedError(self._loc, f"invalid expression: {e}") from None
            except (RecursionError, MemoryError):
                raise LocatedError(self._loc, "expression nested too deeply") from None
        if not isinstance(stmt, ast.Expr):
            hint = _equals_hint(text.strip())
            if isinstance(stmt, ast.Assign) and hint is not None:
                raise LocatedError(
                    self._loc.shift(self._lead + hint[0]),
                    f"assign statements are not allowed; {hint[1]}",
                )
            raise LocatedError(
                self._loc, f"{type(stmt).__name__.lower()} statements are not allowed; write an expression"
            )
        return stmt.value

    def _check_ascii_names(self) -> None:
        """A non-ASCII character in a name (outside string literals) is an error at that character:
        Python would read ``ｈot`` as ``hot`` and ``price.ｃlose`` as ``price.close``."""
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(self._text.strip()).readline))
        except (tokenize.TokenError, SyntaxError):  # it parsed: not expected; the parse is the judge
            return
        for tok in tokens:
            if tok.type == tokenize.NAME and not tok.string.isascii():
                i = next(k for k, ch in enumerate(tok.string) if not ch.isascii())
                ch = tok.string[i]
                (row, col) = tok.start
                loc = self._loc.shift(self._lead + col + i) if row == 1 else self._loc
                raise LocatedError(
                    loc,
                    f"non-ASCII character {ch!r} (U+{ord(ch):04X}) in the name {tok.string!r}; names are "
                    f"ASCII letters, digits and _ (Python would read it as "
                    f"{unicodedata.normalize('NFKC', tok.string)!r})",
                )

    def _check_depth(self, tree: ast.AST) -> None:
        stack = [(tree, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise LocatedError(self._at(node), f"expression nested more than {MAX_DEPTH} levels deep")
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))

    def _check_forbidden(self, tree: ast.AST) -> None:
        """Forbidden syntax and '_' names anywhere in the tree, reported before anything else
        (so ``__import__("os").system(...)`` or ``max(x for x in ...)`` name the real problem)."""
        for node in ast.walk(tree):
            for cls, why in _FORBIDDEN.items():
                if isinstance(node, cls):
                    raise self._err(node, why)
            name = getattr(node, "id", None) or getattr(node, "attr", None) or ""
            if isinstance(node, ast.Name | ast.Attribute) and name.startswith("_"):
                raise self._err(node, f"names starting with '_' are not allowed ({name!r})")

    def _at(self, node: ast.AST) -> Loc:
        if getattr(node, "lineno", 1) != 1:
            return self._loc
        offset = getattr(node, "col_offset", 0)  # in UTF-8 bytes: count the characters before it
        chars = len(self._text.strip().encode("utf-8")[:offset].decode("utf-8", "ignore"))
        return self._loc.shift(self._lead + chars)

    def _err(self, node: ast.AST, message: str) -> LocatedError:
        return LocatedError(self._at(node), message)

    def _src(self, node: ast.AST) -> str:
        return ast.get_source_segment(self._text.strip(), node) or ast.dump(node)

    # -- lowering -------------------------------------------------------------------------------

    def _node(self, node: ast.AST) -> int:
        for cls, why in _FORBIDDEN.items():
            if isinstance(node, cls):
                raise self._err(node, why)
        if self._is_literal(node) and not isinstance(node, ast.Constant):
            return self._fold(node)
        method = getattr(self, f"_n_{type(node).__name__}", None)
        if method is None:
            raise self._err(node, f"{type(node).__name__} is not allowed in an expression")
        return method(node)

    def _is_literal(self, node: ast.AST) -> bool:
        return all(isinstance(n, _LITERAL_NODES) for n in ast.walk(node))

    def _fold(self, node: ast.AST) -> int:
        """A literal-only sub-expression, computed once with simpleeval's limits on."""
        for sub in ast.walk(node):
            if isinstance(sub, ast.BinOp) and type(sub.op) not in _ARITH:
                raise self._err(sub, f"operator {type(sub.op).__name__} is not allowed")
            if isinstance(sub, ast.UnaryOp) and isinstance(sub.op, ast.Invert):
                raise self._err(sub, "the ~ operator is not allowed")
        evaluator = simpleeval.SimpleEval(names={}, functions={})
        evaluator.operators = {**evaluator.operators, ast.Pow: _const_power}
        try:
            value = evaluator.eval(self._src(node), previously_parsed=node)
        except (simpleeval.NumberTooHigh, simpleeval.IterableTooLong) as e:
            raise self._err(
                node,
                f"{e} (limits: exponents up to {simpleeval.MAX_POWER}, "
                f"strings up to {simpleeval.MAX_STRING_LENGTH} characters)",
            ) from None
        except ZeroDivisionError:
            raise self._err(node, "division by zero in a constant") from None
        except OverflowError:
            raise self._err(node, "number too large") from None
        except (TypeError, simpleeval.InvalidExpression, ValueError) as e:
            raise self._err(node, f"invalid constant expression: {e}") from None
        return self._const(node, value)

    def _const(self, node: ast.AST, value: Any) -> int:
        if isinstance(value, bool | str):
            return self.plan.const(value)
        if isinstance(value, int | float):
            try:
                f = float(value)
            except OverflowError:
                raise self._err(node, "number too large") from None
            if f != f or f in (float("inf"), float("-inf")):
                raise self._err(node, "number too large")
            return self.plan.const(f)
        raise self._err(node, f"{type(value).__name__} literals are not allowed")

    def _n_Constant(self, node: ast.Constant) -> int:
        if isinstance(node.value, str) and len(node.value) > simpleeval.MAX_STRING_LENGTH:
            raise self._err(node, "string literal too long")
        return self._const(node, node.value)

    def _n_Name(self, node: ast.Name) -> int:
        name = node.id
        if name.startswith("_"):
            raise self._err(node, f"names starting with '_' are not allowed ({name!r})")
        self._use(name)
        if name in BUILTIN_NAMES:
            return self.plan.add("builtin", (), name, BUILTIN_NAMES[name])
        if name in self.params:
            return self.plan.const(self.params[name])
        if name in self.let_names():
            return self.resolve_let(name, self._at(node))
        if name in self.prefixes:
            fields = sorted(m for m in self.metrics if m.startswith(name + "."))
            raise self._err(node, f"{name!r} is a metric group; name a field: {', '.join(fields[:8])}")
        if name in self.functions:
            raise self._err(node, f"{name!r} is a function; call it: {name}(...)")
        known = [*self.let_names(), *self.params, *BUILTIN_NAMES]
        raise self._err(node, f"unknown name {name!r}{did_you_mean(name, [*known, *self.metrics])}")

    def _n_Attribute(self, node: ast.Attribute) -> int:
        parts: list[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if not isinstance(cur, ast.Name):
            raise self._err(node, "attribute access is only allowed in metric paths such as price.close")
        parts.append(cur.id)
        path = ".".join(reversed(parts))
        if any(p.startswith("_") for p in parts):
            raise self._err(node, f"names starting with '_' are not allowed ({path!r})")
        if cur.id not in self.prefixes:
            raise self._err(
                node,
                f"{path!r}: attribute access is only allowed in metric paths such as price.close"
                f"{did_you_mean(path, self.metrics)}",
            )
        if path not in self.metrics:
            raise self._err(node, f"unknown metric {path!r}{did_you_mean(path, self.metrics)}")
        self._use(path)
        kind = self.metrics[path]
        return self.plan.add("metric", (), path, kind)

    def _n_UnaryOp(self, node: ast.UnaryOp) -> int:
        arg = self._node(node.operand)
        if isinstance(node.op, ast.Not):
            self.expect_bool(arg, self._at(node.operand), "the operand of 'not'")
            return self.plan.add("not", (arg,), None, "bool")
        self._numeric(arg, node.operand, "a sign")
        if isinstance(node.op, ast.UAdd):
            return arg
        if isinstance(node.op, ast.USub):
            return self.plan.add("neg", (arg,), None, "num")
        raise self._err(node, "the ~ operator is not allowed")

    def _n_BinOp(self, node: ast.BinOp) -> int:
        op = _ARITH.get(type(node.op))
        if op is None:
            raise self._err(node, f"operator {type(node.op).__name__} is not allowed")
        left, right = self._node(node.left), self._node(node.right)
        self._numeric(left, node.left, f"'{op}'")
        self._numeric(right, node.right, f"'{op}'")
        if op == "**" and isinstance(node.right, ast.Constant | ast.UnaryOp):
            exp = self.plan.nodes[right]
            if exp.op == "const" and abs(exp.data) > simpleeval.MAX_POWER:
                raise self._err(
                    node.right, f"exponent {exp.data:g} is too large (limit {simpleeval.MAX_POWER})"
                )
        return self.plan.add("arith", (left, right), op, "num")

    def _n_BoolOp(self, node: ast.BoolOp) -> int:
        args = []
        for value in node.values:
            arg = self._node(value)
            self.expect_bool(arg, self._at(value), "each operand of 'and'/'or'")
            args.append(arg)
        return self.plan.add("and" if isinstance(node.op, ast.And) else "or", tuple(args), None, "bool")

    def _n_Compare(self, node: ast.Compare) -> int:
        parts = []
        left_node: ast.expr = node.left
        left: int | None = self._node(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                parts.append(self._membership(left, left_node, op, right_node))
                left_node, left = right_node, None
                continue
            if left is None:
                raise self._err(right_node, "'in' can only be the last comparison of a chain")
            right = self._node(right_node)
            parts.append(self._compare(left, left_node, _CMP.get(type(op)), right, right_node, node))
            left_node, left = right_node, right
        if len(parts) == 1:
            return parts[0]
        return self.plan.add("and", tuple(parts), None, "bool")

    def _compare(
        self, left: int, lnode: ast.AST, op: str | None, right: int, rnode: ast.AST, node: ast.AST
    ) -> int:
        if op is None:
            raise self._err(node, "'is' / 'is not' are not allowed; use == or !=")
        lk, rk = self.plan.nodes[left].kind, self.plan.nodes[right].kind
        if (lk == "str") != (rk == "str"):
            text = lnode if lk == "str" else rnode
            param = self._text_param(text)
            if param is not None:
                raise self._err(node, f"cannot compare text param {self._src(text)!r} with a number: {param}")
            raise self._err(
                node,
                f"cannot compare text {self._src(text)!r} with a number; "
                f'compare a categorical with a quoted label such as "RISK_OFF"',
            )
        if lk == "str":
            if op not in ("==", "!="):
                raise self._err(node, f"text values can only be compared with == or !=, not {op}")
            self._check_label(left, right, rnode)
            self._check_label(right, left, lnode)
            self._check_symbol(left, right, rnode)
            self._check_symbol(right, left, lnode)
        return self.plan.add("cmp", (left, right), op, "bool")

    def _check_label(self, series: int, literal: int, lit_node: ast.AST) -> None:
        """A label compared with a categorical whose values are known must be one of them."""
        s, lit = self.plan.nodes[series], self.plan.nodes[literal]
        if lit.op == "const" and s.labels is not None and s.op != "const" and lit.data not in s.labels:
            raise self._err(
                lit_node,
                f"{lit.data!r} is never a value here; possible values: "
                f"{', '.join(sorted(s.labels))}{did_you_mean(lit.data, s.labels)}",
            )

    def _check_symbol(self, series: int, literal: int, lit_node: ast.AST) -> None:
        """``symbol`` compared with a literal: the literal must be a symbol as symbols are
        normalised (upper case), else the comparison could never be true."""
        s, lit = self.plan.nodes[series], self.plan.nodes[literal]
        if s.op == "builtin" and s.data == "symbol" and lit.op == "const" and isinstance(lit.data, str):
            self.check_symbol_label(lit.data, self._at(lit_node))

    @staticmethod
    def check_symbol_label(text: str, loc: Loc) -> None:
        """``text``, compared with ``symbol``, is a symbol in its normal (upper-case) spelling."""
        try:
            normal = normalise_symbol(text)
        except ValueError:
            raise LocatedError(loc, f"{text!r} is never a symbol; {WHAT_A_SYMBOL_IS}") from None
        if normal != text:
            raise LocatedError(loc, f"{text!r} is never a symbol: symbols are upper case; write {normal!r}")

    def _membership(self, left: int | None, lnode: ast.AST, op: ast.cmpop, rnode: ast.AST) -> int:
        if left is None:
            raise self._err(rnode, "'in' can only be the last comparison of a chain")
        if not isinstance(rnode, ast.List | ast.Tuple) or not all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in rnode.elts
        ):
            raise self._err(rnode, '\'in\' needs a literal list of strings, such as ["BTC", "ETH"]')
        if self.plan.nodes[left].kind != "str":
            raise self._err(lnode, "'in' applies to text values (categoricals, symbol, interval)")
        elts = [e for e in rnode.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        labels = tuple(sorted({str(e.value) for e in elts}))
        node = self.plan.nodes[left]
        for e in elts:
            if node.op == "builtin" and node.data == "symbol":
                self.check_symbol_label(str(e.value), self._at(e))
            if node.labels is not None and node.op != "const" and e.value not in node.labels:
                raise self._err(
                    e, f"{e.value!r} is never a value here; possible values: {', '.join(sorted(node.labels))}"
                )
        return self.plan.add("in", (left,), (labels, isinstance(op, ast.NotIn)), "bool")

    def _n_IfExp(self, node: ast.IfExp) -> int:
        cond = self.expect_bool(self._node(node.test), self._at(node.test), "the condition of 'if'")
        a, b = self._node(node.body), self._node(node.orelse)
        kind = self.merge_kinds([a, b], node)
        labels = self.merge_labels([a, b]) if kind == "str" else None
        return self.plan.add("if", (cond, a, b), None, kind, labels=labels)

    def merge_kinds(self, ids: list[int], node: ast.AST | Loc) -> str:
        kinds = {self.plan.nodes[i].kind for i in ids}
        if kinds == {"bool"}:
            return "bool"
        if "str" in kinds and len(kinds) > 1:
            err_loc = node if isinstance(node, Loc) else self._at(node)
            raise LocatedError(err_loc, "the branches mix text labels and numbers; use one or the other")
        return "str" if "str" in kinds else "num"

    def merge_labels(self, ids: list[int]) -> frozenset[str] | None:
        out: set[str] = set()
        for i in ids:
            labels = self.plan.nodes[i].labels
            if labels is None:
                return None
            out |= labels
        return frozenset(out)

    def _n_List(self, node: ast.List) -> int:
        raise self._err(node, "a list is only allowed after 'in'")

    _n_Tuple = _n_List

    def _n_Call(self, node: ast.Call) -> int:
        if not isinstance(node.func, ast.Name):
            raise self._err(node, "only plain function calls such as sma(price.close, 20) are allowed")
        name = node.func.id
        spec = self.functions.get(name)
        if spec is None:
            if name.startswith("_"):
                raise self._err(node.func, f"names starting with '_' are not allowed ({name!r})")
            raise self._err(node.func, f"unknown function {name!r}{did_you_mean(name, self.functions)}")
        args = self._bind(spec, node)
        return self._call(spec, node, args)

    def _bind(self, spec: FunctionSpec, node: ast.Call) -> list[ast.AST | None]:
        if spec.variadic:
            if node.keywords:
                raise self._err(node, f"{spec.name}() takes no keyword arguments")
            if len(node.args) < spec.required:
                raise self._err(node, f"{spec.name}() needs at least {spec.required} arguments")
            return list(node.args)
        if len(node.args) > len(spec.params):
            raise self._err(
                node,
                f"{spec.name}() takes at most {len(spec.params)} arguments "
                f"({', '.join(spec.params)}), got {len(node.args)}",
            )
        bound: list[ast.AST | None] = [*node.args, *[None] * (len(spec.params) - len(node.args))]
        for kw in node.keywords:
            if kw.arg is None or kw.arg not in spec.params:
                raise self._err(
                    kw,
                    f"{spec.name}() has no argument {kw.arg!r}; its arguments are {', '.join(spec.params)}",
                )
            i = spec.params.index(kw.arg)
            if bound[i] is not None:
                raise self._err(kw, f"{spec.name}() got argument {kw.arg!r} twice")
            bound[i] = kw.value
        for i in range(spec.required):
            if bound[i] is None:
                raise self._err(
                    node,
                    f"{spec.name}() is missing its argument {spec.params[i]!r} "
                    f"(usage: {spec.name}({', '.join(spec.params)}))",
                )
        return bound

    def _call(self, spec: FunctionSpec, node: ast.Call, bound: list[ast.AST | None]) -> int:
        args: list[int] = []
        windows: list[int] = []
        first_kind = "num"
        for i, arg in enumerate(bound):
            if i in spec.windows:
                windows.append(self._window(spec, arg, i, node))
                continue
            if arg is None:
                continue
            arg_id = self._node(arg)
            kind = self.plan.nodes[arg_id].kind
            want = spec.arg_kinds[min(i, len(spec.arg_kinds) - 1)]
            if i == 0:
                first_kind = kind
            if want == "n" and kind == "str":
                param = self._text_param(arg)
                if param is not None:
                    raise self._err(
                        arg, f"{spec.name}() needs a number here, not text param {self._src(arg)!r}: {param}"
                    )
                raise self._err(arg, f"{spec.name}() needs a number here, not text")
            if want == "b" and kind != "bool":
                raise self._err(
                    arg, f"{spec.name}() needs a condition (true/false) here, not a {_kind_name(kind)}"
                )
            if spec.name == "fill" and i == 1 and (kind == "str") != (first_kind == "str"):
                raise self._err(arg, "fill() needs a value of the same kind as the series (a label for text)")
            if spec.name == "fill" and i == 1 and first_kind == "bool" and kind != "bool":
                # a number such as 5 would be neither True nor False to and/or and the rules
                raise self._err(arg, "fill() of a condition needs True or False (or a condition) here")
            args.append(arg_id)
        kind = {"same": first_kind, "bool": "bool"}.get(spec.returns, "num")
        if spec.returns == "same" and kind == "bool" and spec.name == "fill":
            kind = "bool"
        labels = None
        if kind == "str" and args:
            labels = self.merge_labels(args)
        own = spec.bars_back(windows)
        return self.plan.add("call", tuple(args), (spec.name, tuple(windows)), kind, own, labels)

    def _window(self, spec: FunctionSpec, arg: ast.AST | None, i: int, node: ast.Call) -> int:
        if arg is None:
            return spec.defaults[i]
        value: Any
        if isinstance(arg, ast.Constant) and not isinstance(arg.value, bool):
            value = arg.value
        elif (
            isinstance(arg, ast.UnaryOp)
            and isinstance(arg.op, ast.USub | ast.UAdd)
            and isinstance(arg.operand, ast.Constant)
            and isinstance(arg.operand.value, int | float)
            and not isinstance(arg.operand.value, bool)
        ):
            value = -arg.operand.value if isinstance(arg.op, ast.USub) else arg.operand.value
        elif isinstance(arg, ast.Name) and arg.id in self.params:
            self._use(arg.id)
            value = self.params[arg.id]
            if isinstance(value, str):
                raise self._err(
                    arg,
                    f"the window of {spec.name}() must be a whole number of bars, not {value!r} "
                    f"(text param {arg.id!r}: {self._text_param(arg)})",
                )
        elif isinstance(arg, ast.Name) and not arg.id.startswith("_"):
            numbers = [
                p for p, v in self.params.items() if isinstance(v, int | float) and not isinstance(v, bool)
            ]
            if arg.id in self.let_names():
                why = f"{arg.id!r} is a let, a series computed bar by bar"
            else:
                known = ", ".join(numbers) if numbers else "none"
                why = f"{arg.id!r} is not a param{did_you_mean(arg.id, numbers) or f' (its number params: {known})'}"
            raise self._err(
                arg,
                f"the window of {spec.name}() must be a whole number or a param, known when the strategy "
                f"loads; {why}",
            )
        else:
            raise self._err(
                arg,
                f"the window of {spec.name}() must be a whole number or a param, "
                f"known when the strategy loads, not {self._src(arg)!r}",
            )
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._err(arg, f"the window of {spec.name}() must be a whole number of bars, not {value!r}")
        least = MIN_WINDOW.get(spec.name, 1)
        if value < least:
            if value < 0:
                raise self._err(
                    arg,
                    f"{spec.name}() with window {value} would look into the future (lookahead); "
                    "windows count bars back and must be positive",
                )
            raise self._err(arg, f"the window of {spec.name}() must be at least {least}, not {value}")
        if value > 100_000:
            raise self._err(arg, f"the window of {spec.name}() is too large ({value} bars; at most 100000)")
        return value

    def _text_param(self, node: ast.AST) -> str | None:
        """When ``node`` names a text param, what to say about it, pointing at its definition
        ("'0.1' (defined at file:line:col) is text because it is quoted; ..."), else None."""
        if not isinstance(node, ast.Name) or not isinstance(self.params.get(node.id), str):
            return None
        name, value = node.id, self.params[node.id]
        where = self.param_locs.get(name)
        defined = f" (defined at {where})" if where is not None else ""
        try:
            float(value.strip())
        except ValueError:
            return f"{value!r}{defined} is a text label; compare it with == or != and a quoted label"
        return (
            f"{value!r}{defined} is text because it is quoted; write {name}: {value.strip()} without quotes"
        )

    def _numeric(self, node_id: int, node: ast.AST, what: str) -> None:
        param = self._text_param(node)
        if param is not None:
            raise self._err(
                node,
                f"text param {self._src(node)!r} cannot be used with {what} (arithmetic needs numbers): {param}",
            )
        if self.plan.nodes[node_id].kind == "str":
            raise self._err(
                node, f"text ({self._src(node)!r}) cannot be used with {what}; arithmetic needs numbers"
            )

    def _use(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)


def _const_power(a: Any, b: Any) -> float:
    """``a ** b`` for constant folding: simpleeval's exponent limit, computed in floats.

    Every value ends up a float anyway; integer powers such as ``3999999 ** 3999999`` would pass
    simpleeval's limits yet take tens of seconds as Python integers.
    """
    if abs(b) > simpleeval.MAX_POWER:
        raise simpleeval.NumberTooHigh(f"exponent {b} is too large")
    return float(a) ** float(b)  # OverflowError: "number too large"


def _equals_hint(text: str) -> tuple[int, str] | None:
    """Where a lone ``=`` stands in ``text`` (outside string literals) and what was probably meant:
    ``=>`` is ``>=``, ``=<`` is ``<=``, and ``=`` alone is ``==``; None when there is none."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    for tok, after in zip(tokens, [*tokens[1:], None], strict=True):
        if tok.type != tokenize.OP or tok.string != "=" or tok.start[0] != 1:
            continue
        col = tok.start[1]  # in characters: tokenize reads text
        if after is not None and after.string in ("<", ">") and after.start == tok.end:
            wrote, meant = "=" + after.string, after.string + "="
            return col, f"'{wrote}' is not an operator; did you mean {meant}?"
        return col, "'=' assigns, it does not compare; did you mean ==?"
    return None


def _kind_name(kind: str) -> str:
    return {"num": "number", "bool": "condition", "str": "text label"}[kind]
