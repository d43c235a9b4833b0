"""Three-valued logic (spec section 2) through real strategies compiled from YAML text.

Booleans are built from comparisons over metric columns: ``price.close > 0`` is True where the
close is 1, False where it is -1 and unknown where it is missing. ``_`` below is unknown.
"""

from __future__ import annotations

import itertools
import textwrap

import numpy as np
import pytest

from perpwatch.common.timeutil import HOUR
from perpwatch.evaluation.evaluate import evaluate
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.evaluation.rules import RuleState, walk
from perpwatch.language.compiler import load_strategy
from perpwatch.language.metrics import CATALOGUE

_ = None
T, F = True, False
TRUTH = {T: 1.0, F: -1.0, _: None}  # the metric value that makes "metric > 0" that truth value


def strategy(text: str):
    return load_strategy("logic.yaml", text=textwrap.dedent(text))


def frame(columns: dict[str, list]) -> Frame:
    n = max(len(v) for v in columns.values())
    fr = Frame(np.arange(n, dtype=np.int64) * HOUR)
    for name, values in columns.items():
        if CATALOGUE[name].kind == "str":
            fr.columns[name] = Cat.from_values(values)
        else:
            fr.columns[name] = np.asarray([np.nan if v is None else float(v) for v in values])
    return fr


def values(s, columns, name, symbol="BTC"):
    ev = evaluate(s, frame(columns), symbol)
    node = s.lets[name] if name in s.lets else next(r.cond for r in s.rules if r.name == name)
    return [ev.value(node, i) for i in range(len(ev.frame))]


# --- and / or / not -------------------------------------------------------------------------------

PAIRS = list(itertools.product([T, F, _], repeat=2))


def kleene_and(a, b):
    if a is F or b is F:
        return F
    if a is _ or b is _:
        return _
    return T


def kleene_or(a, b):
    if a is T or b is T:
        return T
    if a is _ or b is _:
        return _
    return F


LOGIC = """
version: 1
name: logic
let:
  a: price.close > 0
  b: price.open > 0
  c: price.high > 0
  a_and_b: a and b
  a_or_b: a or b
  not_a: not a
  not_not_a: not not a
  and3: a and b and c
  or3: a or b or c
rules:
  - name: all_set
    when:
      all: [a, b]
  - name: any_set
    when:
      any: [a, b]
  - name: not_set
    when:
      not: a
  - name: nested_set
    when:
      any:
        - all: [a, b]
        - not: c
"""


@pytest.fixture(scope="module")
def table():
    """All nine (a, b) combinations, one per bar."""
    s = strategy(LOGIC)
    cols = {
        "price.close": [TRUTH[a] for a, _b in PAIRS],
        "price.open": [TRUTH[b] for _a, b in PAIRS],
    }
    return s, cols


def test_and_truth_table(table):
    s, cols = table
    assert values(s, cols, "a_and_b") == [kleene_and(a, b) for a, b in PAIRS]
    # spelled out: F and _ = F, T and _ = _, _ and _ = _
    assert dict(zip(PAIRS, values(s, cols, "a_and_b"), strict=True))[(F, _)] is F
    assert dict(zip(PAIRS, values(s, cols, "a_and_b"), strict=True))[(T, _)] is _


def test_or_truth_table(table):
    s, cols = table
    assert values(s, cols, "a_or_b") == [kleene_or(a, b) for a, b in PAIRS]
    assert dict(zip(PAIRS, values(s, cols, "a_or_b"), strict=True))[(T, _)] is T
    assert dict(zip(PAIRS, values(s, cols, "a_or_b"), strict=True))[(F, _)] is _


def test_not_truth_table(table):
    s, cols = table
    assert values(s, cols, "not_a") == [{T: F, F: T, _: _}[a] for a, _b in PAIRS]
    assert values(s, cols, "not_not_a") == [a for a, _b in PAIRS]


def test_condition_sets_follow_the_same_tables(table):
    s, cols = table
    assert values(s, cols, "all_set") == [kleene_and(a, b) for a, b in PAIRS]
    assert values(s, cols, "any_set") == [kleene_or(a, b) for a, b in PAIRS]
    assert values(s, cols, "not_set") == [{T: F, F: T, _: _}[a] for a, _b in PAIRS]


def test_three_operands_and_nested_sets():
    s = strategy(LOGIC)
    triples = list(itertools.product([T, F, _], repeat=3))
    cols = {
        "price.close": [TRUTH[a] for a, _b, _c in triples],
        "price.open": [TRUTH[b] for _a, b, _c in triples],
        "price.high": [TRUTH[c] for _a, _b, c in triples],
    }
    assert values(s, cols, "and3") == [kleene_and(kleene_and(a, b), c) for a, b, c in triples]
    assert values(s, cols, "or3") == [kleene_or(kleene_or(a, b), c) for a, b, c in triples]
    nested = [kleene_or(kleene_and(a, b), {T: F, F: T, _: _}[c]) for a, b, c in triples]
    assert values(s, cols, "nested_set") == nested


# --- comparisons and arithmetic -------------------------------------------------------------------

ARITH = """
version: 1
name: arith
let:
  lt: price.close < price.open
  le: price.close <= price.open
  gt: price.close > price.open
  ge: price.close >= price.open
  eq: price.close == price.open
  ne: price.close != price.open
  add: price.close + price.open
  sub: price.close - price.open
  mul: price.close * price.open
  div: price.close / price.open
  floordiv: price.close // price.open
  mod: price.close % price.open
  pow: price.close ** price.open
  neg: -price.close
rules:
  - name: r
    when: lt
"""


def test_comparisons_with_unknown_are_unknown():
    s = strategy(ARITH)
    cols = {"price.close": [1, 2, None, None], "price.open": [2, 2, 2, None]}
    assert values(s, cols, "lt") == [T, F, _, _]
    assert values(s, cols, "le") == [T, T, _, _]
    assert values(s, cols, "gt") == [F, F, _, _]
    assert values(s, cols, "ge") == [F, T, _, _]
    assert values(s, cols, "eq") == [F, T, _, _]
    assert values(s, cols, "ne") == [T, F, _, _]  # NaN != 2 is True in IEEE; here it is unknown


def test_arithmetic_with_unknown_is_unknown():
    s = strategy(ARITH)
    cols = {"price.close": [7, None, 7], "price.open": [2, 2, None]}
    assert values(s, cols, "add") == [9, _, _]
    assert values(s, cols, "sub") == [5, _, _]
    assert values(s, cols, "mul") == [14, _, _]
    assert values(s, cols, "div") == [3.5, _, _]
    assert values(s, cols, "floordiv") == [3, _, _]
    assert values(s, cols, "mod") == [1, _, _]
    assert values(s, cols, "pow") == [49, _, _]
    assert values(s, cols, "neg") == [-7, _, -7]


def test_division_by_zero_is_unknown():
    s = strategy(ARITH)
    cols = {"price.close": [7, 0, -7], "price.open": [0, 0, 0]}
    assert values(s, cols, "div") == [_, _, _]  # 7/0, 0/0, -7/0
    assert values(s, cols, "floordiv") == [_, _, _]
    assert values(s, cols, "mod") == [_, _, _]
    assert values(s, cols, "gt") == [T, F, F]  # the comparison itself is fine
    # an overflow is unknown too, never an infinity: 10 ** 400
    assert values(s, {"price.close": [10.0], "price.open": [400.0]}, "pow") == [_]


# --- cases, lookup, if ----------------------------------------------------------------------------

CASES = """
version: 1
name: cases
let:
  state:
    cases:
      - when: price.close > 0
        then: UP
      - when: price.open > 0
        then: OPEN_UP
    else: NONE
  no_else:
    cases:
      - when: price.close > 0
        then: UP
  number:
    cases:
      - when: price.close > 0
        value: price.close * 10
      - when: price.open > 0
        then: -1
    else: 0
  size:
    lookup: state
    table: {UP: 1.0, OPEN_UP: 0.5}
    default: 0.25
    missing: 0
  size_no_missing:
    lookup: state
    table: {UP: 1.0, OPEN_UP: 0.5}
    default: 0.25
  size_no_default:
    lookup: state
    table: {UP: 1.0, OPEN_UP: 0.5}
    missing: 0
  side:
    lookup: state
    table: {UP: long, OPEN_UP: long}
    default: flat
    missing: flat
  is_up: state == "UP"
  in_list: state in ["UP", "NONE"]
  not_in_list: state not in ["UP", "NONE"]
rules:
  - name: r
    when: is_up
"""

# bar:          0     1        2              3      4
CLOSE = [1, -1, None, -1, 1]
OPEN = [5, 1, 1, -1, None]


def test_cases_first_match_wins_and_unknown_does_not_fall_through():
    s = strategy(CASES)
    cols = {"price.close": CLOSE, "price.open": OPEN}
    # bar 2: the first `when` is unknown, so the result is unknown although the second is True
    assert values(s, cols, "state") == ["UP", "OPEN_UP", _, "NONE", "UP"]
    # without else, no match is unknown
    assert values(s, cols, "no_else") == ["UP", _, _, _, "UP"]
    # numbers, `value:` expressions
    assert values(s, cols, "number") == [10, -1, _, 0, 10]


def test_lookup_missing_and_default():
    s = strategy(CASES)
    cols = {"price.close": CLOSE, "price.open": OPEN}
    assert values(s, cols, "size") == [1.0, 0.5, 0.0, 0.25, 1.0]  # unknown -> missing: 0
    assert values(s, cols, "size_no_missing") == [1.0, 0.5, _, 0.25, 1.0]  # unknown stays unknown
    assert values(s, cols, "size_no_default") == [1.0, 0.5, 0.0, _, 1.0]  # NONE is not in the table
    assert values(s, cols, "side") == ["long", "long", "flat", "flat", "long"]


def test_comparisons_and_in_on_categoricals():
    s = strategy(CASES)
    cols = {"price.close": CLOSE, "price.open": OPEN}
    assert values(s, cols, "is_up") == [T, F, _, F, T]
    assert values(s, cols, "in_list") == [T, F, _, T, T]
    assert values(s, cols, "not_in_list") == [F, T, _, F, F]


def test_in_with_symbol():
    s = strategy(
        """
        version: 1
        name: sym
        let:
          majors: symbol in ["BTC", "ETH"]
          others: symbol not in ["BTC", "ETH"]
        rules:
          - name: r
            when: majors and price.close > 0
        """
    )
    cols = {"price.close": [1, -1, None]}
    assert values(s, cols, "majors", symbol="BTC") == [T, T, T]
    assert values(s, cols, "majors", symbol="SOL") == [F, F, F]
    assert values(s, cols, "others", symbol="SOL") == [T, T, T]
    assert values(s, cols, "r", symbol="BTC") == [T, F, _]
    assert values(s, cols, "r", symbol="SOL") == [F, F, F]  # False and unknown is False


IFEXP = """
version: 1
name: ifexp
let:
  num: price.close if price.open > 0 else -price.close
  label: '"BUY" if price.open > 0 else "SELL"'
  cond: (price.close > 0) if price.open > 0 else (price.close < 0)
rules:
  - name: r
    when: cond
"""


def test_if_else_with_unknown_condition_is_unknown():
    s = strategy(IFEXP)
    cols = {"price.close": [3, 3, 3, None], "price.open": [1, -1, None, 1]}
    assert values(s, cols, "num") == [3, -3, _, _]
    assert values(s, cols, "label") == ["BUY", "SELL", _, "BUY"]
    assert values(s, cols, "cond") == [T, F, _, _]


CHAINS = """
version: 1
name: chains
let:
  inside: 0 < price.close < 10
  inside_eq: 0 <= price.close <= 10
  around: price.open < 0 < price.close
  three: price.open < price.close < price.high < 100
rules:
  - name: r
    when: inside
"""


def test_chained_comparisons():
    s = strategy(CHAINS)
    cols = {
        "price.close": [5, 10, -1, None, 0, 5],
        "price.open": [-1, -1, -1, 1, None, 6],
        "price.high": [6, 11, 0, 2, 1, 7],
    }
    assert values(s, cols, "inside") == [T, F, F, _, F, T]
    assert values(s, cols, "inside_eq") == [T, T, F, _, T, T]
    # bar 3: open < 0 is False, close unknown: False and unknown = False
    # bar 4: open unknown, 0 < 0 False: False
    assert values(s, cols, "around") == [T, T, F, F, F, F]
    assert values(s, cols, "three") == [T, T, F, _, _, F]


def test_a_rule_fires_only_on_true():
    s = strategy(
        """
        version: 1
        name: fire
        rules:
          - name: r
            when: price.close > 0
        """
    )
    fr = frame({"price.close": [None, None, 1, None, -1, 1]})
    ev = evaluate(s, fr, "BTC")
    events = walk(s, ev, {"r": RuleState()})
    # unknown never fires; unknown after True resolves it like False
    assert [(int(e.time // HOUR), e.kind) for e in events] == [(2, "fired"), (3, "resolved"), (5, "fired")]


def test_fill_is_the_explicit_way_out_of_unknown():
    s = strategy(
        """
        version: 1
        name: fill
        let:
          strict: price.close > 0
          lenient: fill(price.close, 1) > 0
          decided: fill(price.close > 0, False)
        rules:
          - name: r
            when: decided
        """
    )
    cols = {"price.close": [None, -1, 1]}
    assert values(s, cols, "strict") == [_, F, T]
    assert values(s, cols, "lenient") == [T, F, T]
    assert values(s, cols, "decided") == [F, F, T]


# --- data older than max_data_age is unknown ------------------------------------------------------


def test_stale_values_are_unknown():
    text = """
        version: 1
        name: stale
        let:
          hot: funding.close > 0.1
        rules:
          - name: r
            when: hot
        {risk}
        """
    fr = frame({"funding.close": [0.2] * 6, "oi.close": [1, 2, 3, 4, 5, 6]})
    # funding settled at bar 0 and carried forward; oi observed every bar
    fr.observed["funding.close"] = np.zeros(6, dtype=np.int64)
    fr.observed["oi.close"] = np.arange(6, dtype=np.int64) * HOUR
    # default max_data_age: 2 bars; 2h old is still fresh (older than, not as old as)
    s = strategy(text.format(risk=""))
    ev = evaluate(s, fr, "BTC")
    assert [ev.value(s.lets["hot"], i) for i in range(6)] == [T, T, T, _, _, _]
    s = strategy(text.format(risk="risk: {max_data_age: 4h}"))
    ev = evaluate(s, fr, "BTC")
    assert [ev.value(s.lets["hot"], i) for i in range(6)] == [T, T, T, T, T, _]
    # never observed (the minimum time) is unknown
    fr.observed["funding.close"] = np.full(6, np.iinfo(np.int64).min)
    assert [evaluate(s, fr, "BTC").value(s.lets["hot"], i) for i in range(6)] == [_] * 6
