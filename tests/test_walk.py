"""The vectorised rule walk must emit exactly what stepping bar by bar emits."""

from __future__ import annotations

import numpy as np
import pytest

from perpwatch.common.timeutil import HOUR
from perpwatch.evaluation.rules import FIRING, RuleState, step, transitions


def _reference(truth, times, for_bars, cooldown):
    state, out = RuleState(), []
    for i, v in enumerate(truth):
        kind = step(state, None if v != v else float(v), int(times[i]), for_bars, cooldown)
        if kind:
            out.append((i, kind))
    return state, out


@pytest.mark.parametrize("seed", range(5))
def test_transitions_equal_step_in_random_chunks(seed):
    rng = np.random.default_rng(seed)
    for _ in range(400):
        n = int(rng.integers(1, 50))
        truth = rng.choice([1.0, 0.0, np.nan], size=n, p=[0.6, 0.25, 0.15])
        times = 10**12 + np.arange(n, dtype=np.int64) * HOUR
        for_bars = int(rng.integers(0, 4))
        cooldown = int(rng.choice([0, HOUR, 4 * HOUR]))
        ref_state, ref = _reference(truth, times, for_bars, cooldown)
        state, got = RuleState(), []
        cuts = sorted({0, n, *rng.integers(0, n + 1, size=int(rng.integers(0, 4))).tolist()})
        for a, b in zip(cuts, cuts[1:], strict=False):
            got += transitions(state, truth[:b], times[:b], a, for_bars, cooldown)
        got += transitions(state, truth, times, max(0, n - 2), for_bars, cooldown)  # re-stepping: nothing new
        assert got == ref
        assert state == ref_state


def test_saved_firing_state_carries_over_without_a_new_event():
    times = 10**12 + np.arange(4, dtype=np.int64) * HOUR
    state = RuleState(status=FIRING, count=3, last_fired=10**12 - HOUR, last_bar=10**12 - HOUR)
    assert transitions(state, np.array([1.0, 1.0, 0.0, 1.0]), times, 0, 1, 0) == [(2, "resolved")]
    assert state.count == 1 and state.status == "pending"
