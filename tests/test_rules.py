"""The rule state machine (spec sections 6 and 7): for, pending, firing, cooldown, resolved.

``step`` is driven bar by bar with hand-written truth sequences; ``walk`` runs the same through a
compiled strategy and must agree with ``step`` exactly.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from perpwatch.common.timeutil import HOUR
from perpwatch.evaluation.evaluate import evaluate
from perpwatch.evaluation.frame import Frame
from perpwatch.evaluation.rules import FIRING, INACTIVE, PENDING, RuleState, step, walk
from perpwatch.language.compiler import load_strategy

T, F, _ = True, False, None


def run_steps(truths, *, for_bars=0, cooldown_h=0, state=None, start_h=0):
    """Step hourly bars; return {bar index: event kind}."""
    state = state or RuleState()
    out = {}
    for i, truth in enumerate(truths):
        kind = step(state, truth, (start_h + i) * HOUR, for_bars, cooldown_h * HOUR)
        if kind:
            out[i] = kind
    return out


# --- for ------------------------------------------------------------------------------------------


def test_for_0_fires_on_the_first_true_bar():
    assert run_steps([F, T, T, F]) == {1: "fired", 3: "resolved"}


def test_for_1_fires_on_the_second_consecutive_true_bar():
    state = RuleState()
    assert step(state, True, 0, 1, 0) is None
    assert state.status == PENDING
    assert step(state, True, HOUR, 1, 0) == "fired"
    assert state.status == FIRING
    assert step(state, True, 2 * HOUR, 1, 0) is None  # still firing: no new event


@pytest.mark.parametrize("n", [2, 3, 5])
def test_for_n_fires_on_the_n_plus_1th_true_bar(n):
    assert run_steps([T] * (n + 3), for_bars=n) == {n: "fired"}


def test_pending_resets_on_false():
    # for 2: T T F resets; the next run needs three True bars again
    assert run_steps([T, T, F, T, T, T], for_bars=2) == {5: "fired"}


def test_pending_resets_on_unknown():
    assert run_steps([T, T, _, T, T, T], for_bars=2) == {5: "fired"}
    state = RuleState()
    run_steps([T, T, _], for_bars=2, state=state)
    assert state.status == INACTIVE and state.count == 0


def test_unknown_resolves_a_firing_rule():
    assert run_steps([T, _, T]) == {0: "fired", 1: "resolved", 2: "fired"}


def test_true_as_numbers_and_nan():
    # walk hands step floats: 1.0 is True, 0.0 False, None (a NaN) unknown
    assert run_steps([1.0, 1.0, 0.0, 1.0, None]) == {0: "fired", 2: "resolved", 3: "fired", 4: "resolved"}


# --- for as a duration ------------------------------------------------------------------------------


def compile_rule(for_value, interval="1h", cooldown=None):
    extra = f"\n    cooldown: {cooldown}" if cooldown else ""
    s = load_strategy(
        "r.yaml",
        text=f"version: 1\nname: r\ninterval: {interval}\nrules:\n  - name: r\n    when: price.close > 0\n"
        f"    for: {for_value}{extra}\n",
    )
    return s.rules[0]


@pytest.mark.parametrize(
    ("for_value", "interval", "bars"),
    [
        (0, "1h", 0),
        (3, "4h", 3),
        ("2h", "1h", 2),
        ("90m", "1h", 2),  # ceil(1.5)
        ("1h", "4h", 1),  # ceil(0.25)
        ("4h", "4h", 1),
        ("8h", "4h", 2),
        ("1d", "1h", 24),
        ("30s", "1m", 1),
        ("0h", "1h", 0),
    ],
)
def test_for_duration_becomes_ceil_of_bars(for_value, interval, bars):
    assert compile_rule(for_value, interval).for_bars == bars


def test_cooldown_is_parsed_to_milliseconds():
    assert compile_rule(0, cooldown="4h").cooldown_ms == 4 * HOUR
    assert compile_rule(0, cooldown="90m").cooldown_ms == 90 * 60_000


# --- cooldown -------------------------------------------------------------------------------------


def test_cooldown_suppresses_inside_and_fires_at_the_exact_boundary():
    # cooldown 4h; fired at 0h; back True at 3h -> suppressed (3h < 4h)
    assert run_steps([T, F, F, T], cooldown_h=4) == {0: "fired", 1: "resolved", 3: "suppressed"}
    # back True at exactly 4h: bar_time - last_fired == cooldown -> fires
    assert run_steps([T, F, F, F, T], cooldown_h=4) == {0: "fired", 1: "resolved", 4: "fired"}


def test_cooldown_counts_from_the_last_fired_event_not_the_suppressed_one():
    # fired 0h, suppressed 2h, True again at 4h: 4h - 0h = 4h >= 4h fires
    # (measured from the suppressed event at 2h it would be 2h and suppressed)
    events = run_steps([T, F, T, F, T], cooldown_h=4)
    assert events == {0: "fired", 1: "resolved", 2: "suppressed", 3: "resolved", 4: "fired"}


def test_suppressed_event_does_not_move_last_fired():
    state = RuleState()
    run_steps([T, F, T], cooldown_h=4, state=state)
    assert state.last_fired == 0
    assert state.episode_suppressed is True
    assert state.status == FIRING  # suppressed still enters firing


def test_flapping_condition_under_cooldown():
    # hourly flapping with a 3h cooldown: fire, suppress, fire once 3h have passed since the last fire
    truths = [T, F, T, F, T, F, T, F, T]
    events = run_steps(truths, cooldown_h=3)
    assert events == {
        0: "fired",
        1: "resolved",
        2: "suppressed",  # 2h after 0h
        3: "resolved",
        4: "fired",  # 4h after 0h
        5: "resolved",
        6: "suppressed",  # 2h after 4h
        7: "resolved",
        8: "fired",  # 4h after 4h
    }
    assert [k for k in events.values()].count("fired") == 3


def test_cooldown_with_for():
    # for 1, cooldown 2h: fires on the second True bar; the next episode fires only 2h after it
    truths = [T, T, F, T, T, F, F, T, T]
    assert run_steps(truths, for_bars=1, cooldown_h=2) == {
        1: "fired",
        2: "resolved",
        4: "fired",  # 4h - 1h >= 2h
        5: "resolved",
        8: "fired",
    }
    assert run_steps([T, T, F, T, T], for_bars=1, cooldown_h=4) == {
        1: "fired",
        2: "resolved",
        4: "suppressed",
    }


def test_no_cooldown_never_suppresses():
    assert run_steps([T, F, T, F, T]) == {0: "fired", 1: "resolved", 2: "fired", 3: "resolved", 4: "fired"}


# --- a bar is stepped once ------------------------------------------------------------------------


def test_a_bar_stepped_twice_emits_nothing_twice():
    state = RuleState()
    assert step(state, True, 10 * HOUR, 0, 0) == "fired"
    assert step(state, True, 10 * HOUR, 0, 0) is None  # the same bar again
    assert step(state, False, 10 * HOUR, 0, 0) is None  # not even a different truth
    assert step(state, True, 9 * HOUR, 0, 0) is None  # nor an older bar
    assert state.status == FIRING
    assert step(state, False, 11 * HOUR, 0, 0) == "resolved"
    assert step(state, False, 11 * HOUR, 0, 0) is None


def test_state_survives_a_round_trip_through_a_dict():
    state = RuleState()
    run_steps([T, T], for_bars=3, state=state)
    restored = RuleState.from_dict(state.to_dict())
    # two more True bars fire (the count carried over), and the already-stepped bar does not repeat
    assert step(restored, True, 1 * HOUR, 3, 0) is None
    assert step(restored, True, 2 * HOUR, 3, 0) is None
    assert step(restored, True, 3 * HOUR, 3, 0) == "fired"


# --- walk over a compiled strategy ----------------------------------------------------------------

STRATEGY = """
version: 1
name: walk
interval: 1h
rules:
  - name: hot
    when: funding.close > 0.1
    for: 1
    cooldown: 3h
    severity: high
    message: "{symbol} funding {funding.close:.2f} at {time} ({rule}, {severity})"
  - name: oi_up
    when: pct_change(oi.close, 1) > 0
"""


def make_frame(funding, oi):
    fr = Frame(np.arange(len(funding), dtype=np.int64) * HOUR)
    fr.columns["funding.close"] = np.asarray([np.nan if v is None else v for v in funding], dtype=float)
    fr.columns["oi.close"] = np.asarray([np.nan if v is None else v for v in oi], dtype=float)
    return fr


def test_walk_matches_hand_computed_events():
    s = load_strategy("walk.yaml", text=STRATEGY)
    # hot (for 1, cooldown 3h): True at bars 1-3 -> fired at 2; False at 4 -> resolved;
    # True at 5, 6 -> enters firing at 6: 6h - 2h = 4h >= 3h -> fired; unknown at 7 -> resolved
    fr = make_frame([0.05, 0.2, 0.2, 0.2, 0.05, 0.2, 0.2, None], [100, 101, 101, 102, 103, 103, 104, 105])
    events = walk(s, evaluate(s, fr, "ETH"), {})
    hot = [(int(e.time // HOUR), e.kind) for e in events if e.rule == "hot"]
    assert hot == [(2, "fired"), (4, "resolved"), (6, "fired"), (7, "resolved")]
    first = next(e for e in events if e.rule == "hot")
    assert first.message == "ETH funding 0.20 at 1970-01-01T02:00:00Z (hot, high)"
    assert first.values == {"funding.close": 0.2}
    assert first.severity == "high" and first.strategy == "walk" and first.symbol == "ETH"
    # oi_up: changes +1, 0, +1, +1, 0, +1, +1 -> fired 1, resolved 2, fired 3, resolved 5, fired 6
    oi = [(int(e.time // HOUR), e.kind) for e in events if e.rule == "oi_up"]
    assert oi == [(1, "fired"), (2, "resolved"), (3, "fired"), (5, "resolved"), (6, "fired")]
    # events come in bar order
    assert [e.time for e in events] == sorted(e.time for e in events)


FLAPPY = """
version: 1
name: flappy
interval: 1h
rules:
  - name: quick
    when: funding.close > 0.1
    cooldown: 3h
  - name: patient
    when: funding.close > 0.1
    for: 2
    cooldown: 5h
"""


def test_walk_with_cooldown_suppresses():
    s = load_strategy("flappy.yaml", text=FLAPPY)
    fr = make_frame([0.2, 0.0, 0.2, 0.0, 0.2, 0.2, 0.0, 0.2], [1] * 8)
    events = walk(s, evaluate(s, fr, "BTC"), {})
    quick = [(int(e.time // HOUR), e.kind) for e in events if e.rule == "quick"]
    # fired 0h; 2h < 3h suppressed; 4h - 0h >= 3h fired; 7h - 4h == 3h fired (the boundary)
    assert quick == [
        (0, "fired"),
        (1, "resolved"),
        (2, "suppressed"),
        (3, "resolved"),
        (4, "fired"),
        (6, "resolved"),
        (7, "fired"),
    ]
    # patient (for 2) never sees three True bars in a row
    assert [e for e in events if e.rule == "patient"] == []


def test_walk_twice_and_in_pieces_emits_each_event_once():
    s = load_strategy("walk.yaml", text=STRATEGY)
    fr = make_frame([0.05, 0.2, 0.2, 0.2, 0.05, 0.2, 0.2, None], [100, 101, 101, 102, 103, 103, 104, 105])
    ev = evaluate(s, fr, "BTC")
    whole = walk(s, ev, {})
    states: dict[str, RuleState] = {}
    pieces = walk(s, evaluate(s, fr.slice(0, 4), "BTC"), states) + walk(s, ev, states)
    assert [(e.time, e.rule, e.kind) for e in pieces] == [(e.time, e.rule, e.kind) for e in whole]
    assert walk(s, ev, states) == []  # every bar was already stepped


@pytest.mark.parametrize("seed", range(8))
def test_walk_agrees_with_step_on_random_sequences(seed):
    rng = random.Random(seed)
    n = 300
    funding = [rng.choice([0.0, 0.2, 0.2, 0.2, None]) for _ in range(n)]
    s = load_strategy("flappy.yaml", text=FLAPPY)
    fr = make_frame(funding, [1] * n)
    ev = evaluate(s, fr, "BTC")
    events = walk(s, ev, {})
    by_step = []
    for rule in s.rules:
        state = RuleState()
        truth = ev.series(rule.cond)
        for i in range(n):
            t = truth[i]
            kind = step(state, None if t != t else float(t), i * HOUR, rule.for_bars, rule.cooldown_ms)
            if kind:
                by_step.append((i, rule.name, kind))
    got = sorted((int(e.time // HOUR), e.rule, e.kind) for e in events)
    assert got == sorted(by_step)
    kinds = [(r, k) for _i, r, k in by_step]
    assert ("quick", "suppressed") in kinds and ("patient", "fired") in kinds
