"""The rule state machine (strategy language, section 6) and events built from evaluations.

Each (strategy, rule, symbol) is *inactive*, *pending* (True for fewer than ``for`` bars) or
*firing*. Only True counts: an unknown condition is not True, so it resets a pending count and
resolves a firing rule, like a False one. Entering *firing* emits ``fired``, or ``suppressed``
when it comes less than ``cooldown`` after the last fired (not suppressed) event of that rule and
symbol; leaving it emits ``resolved``. The state is a plain object the runner persists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.evaluate import Evaluation
from perpwatch.evaluation.events import Event, ExitDistance, OrderIntent
from perpwatch.language.compiler import ExitSpec, Rule, Strategy

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"


@dataclass
class RuleState:
    status: str = INACTIVE
    count: int = 0  # consecutive True bars so far
    last_fired: int | None = None  # bar time of the last fired (not suppressed) event
    episode_suppressed: bool = False  # the current firing episode began suppressed
    last_bar: int | None = None  # the newest bar already stepped (a bar is stepped once)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RuleState:
        return cls(**d)


def step(
    state: RuleState, truth: float | bool | None, bar_time: int, for_bars: int, cooldown_ms: int
) -> str | None:
    """Advance one bar; return the event kind it emits ("fired", "suppressed", "resolved") or None."""
    if state.last_bar is not None and bar_time <= state.last_bar:
        return None  # already stepped: a restart or an overlapping fetch never repeats an event
    state.last_bar = bar_time
    if truth is True or truth == 1:
        state.count += 1
        if state.status == FIRING:
            return None
        if state.count <= for_bars:
            state.status = PENDING
            return None
        state.status = FIRING
        if state.last_fired is not None and cooldown_ms and bar_time - state.last_fired < cooldown_ms:
            state.episode_suppressed = True
            return "suppressed"
        state.episode_suppressed = False
        state.last_fired = bar_time
        return "fired"
    state.count = 0
    if state.status == FIRING:
        state.status = INACTIVE
        return "resolved"
    state.status = INACTIVE
    return None


def build_event(strategy: Strategy, rule: Rule, ev: Evaluation, i: int, kind: str) -> Event:
    """The event for ``rule`` at bar ``i`` of ``ev``: message, the condition's values, the intent."""
    bar_time = int(ev.frame.times[i])
    values = {name: _plain(ev.named_value(name, i)) for name in rule.names}
    context = {
        "symbol": ev.symbol,
        "rule": rule.name,
        "severity": rule.severity,
        "time": format_time(bar_time),
    }
    message = ""
    if rule.message is not None:
        message = rule.message.render(
            lambda name: context[name] if name in context else ev.named_value(name, i)
        )
    return Event(
        kind=kind,
        strategy=strategy.name,
        rule=rule.name,
        symbol=ev.symbol,
        time=bar_time,
        severity=rule.severity,
        message=message,
        values=values,
        signal=signal_at(rule, ev, i),
        interval=strategy.interval,
    )


def signal_at(rule: Rule, ev: Evaluation, i: int) -> OrderIntent | None:
    """The order intent of ``rule``'s signal at bar ``i`` (None: the rule has no signal)."""
    if rule.side is None:
        return None
    side = ev.value(rule.side, i)
    size = ev.value(rule.size, i) if rule.size is not None else None
    return OrderIntent(
        side=side if side in ("long", "short", "flat") else None,
        size_usd=size,
        stop_loss=_exit(rule.stop_loss, ev, i),
        take_profit=_exit(rule.take_profit, ev, i),
        trailing_stop=_exit(rule.trailing_stop, ev, i),
    )


def _exit(spec: ExitSpec | None, ev: Evaluation, i: int) -> ExitDistance | None:
    """A protective exit as bar ``i`` knows it: its percent, or its expression's value there."""
    if spec is None:
        return None
    if spec.pct is not None:
        return ExitDistance("pct", spec.pct)
    assert spec.node is not None
    value = ev.value(spec.node, i)
    return ExitDistance("price", float(value) if value is not None else None)


def walk(strategy: Strategy, ev: Evaluation, states: dict[str, RuleState], start: int = 0) -> list[Event]:
    """Step every rule over bars ``start..`` of ``ev``; return the events in bar order.

    Equivalent to calling :func:`step` bar by bar, but vectorised: run lengths of True give every
    bar where a rule enters or leaves *firing*, and only those few bars are walked one by one
    (cooldown needs the previous fired time).
    """
    found: list[tuple[int, int, str]] = []
    times = ev.frame.times
    for order, rule in enumerate(strategy.rules):
        state = states.setdefault(rule.name, RuleState())
        for i, kind in transitions(
            state, ev.truths(rule.cond), times, start, rule.for_bars, rule.cooldown_ms
        ):
            found.append((i, order, kind))
    found.sort()
    return [build_event(strategy, strategy.rules[order], ev, i, kind) for i, order, kind in found]


def transitions(
    state: RuleState, truth: np.ndarray, times: np.ndarray, start: int, for_bars: int, cooldown_ms: int
) -> list[tuple[int, str]]:
    """The (bar index, event kind) pairs :func:`step` would emit over ``truth[start:]``; updates ``state``."""
    if state.last_bar is not None:
        start = max(start, int(np.searchsorted(times, state.last_bar, side="right")))
    n = len(times)
    if start >= n:
        return []
    t = truth[start:] == 1
    idx = np.arange(start, n)
    # run length of consecutive True bars ending at each bar, carrying the saved count in
    last_false = np.maximum.accumulate(np.where(~t, idx, start - 1))
    run = idx - last_false
    run = np.where(last_false == start - 1, run + state.count, run)
    firing = run > for_bars
    prev_firing = np.empty_like(firing)
    prev_firing[0] = state.status == FIRING
    prev_firing[1:] = firing[:-1]
    out: list[tuple[int, str]] = []
    for j in np.flatnonzero(firing != prev_firing).tolist():
        i = start + j
        bar_time = int(times[i])
        if firing[j]:
            if state.last_fired is not None and cooldown_ms and bar_time - state.last_fired < cooldown_ms:
                state.episode_suppressed = True
                out.append((i, "suppressed"))
            else:
                state.episode_suppressed = False
                state.last_fired = bar_time
                out.append((i, "fired"))
        else:
            out.append((i, "resolved"))
    state.count = int(run[-1])
    state.status = FIRING if firing[-1] else (PENDING if t[-1] else INACTIVE)
    state.last_bar = int(times[-1])
    return out


def _plain(v):
    return v if v is None or isinstance(v, bool | str) else float(v)
