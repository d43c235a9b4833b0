"""When the runner works: which bar each job processes next, for which symbols, how many bars its
rules step to catch up, and when the symbols a source failure held are retried within the bar."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from perpwatch.common.timeutil import floor_to_bar, format_time
from perpwatch.evaluation.rules import RuleState
from perpwatch.live.jobs import Job, RunnerOptions
from perpwatch.live.state import StateStore

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner

RETRY_HELD_SECONDS = 60.0  # first retry of the symbols a source failure held, within the bar
RETRY_HELD_MAX_SECONDS = 900.0  # the retry delay doubles while the failure lasts, up to this


@dataclass
class Plan:
    """What one cycle does for one job: step ``bars`` bars up to ``end`` for ``symbols``."""

    job: Job
    end: int  # open time of the newest bar to process
    symbols: list[str]
    bars: int  # how many bars up to ``end`` the furthest-behind rule steps (1 when none is behind)
    states: dict[tuple[str, str], RuleState]  # (rule, symbol) -> its state before the cycle


class Schedule:
    """The bars due for each job at a given time, and the retries of held symbols."""

    def __init__(self, jobs: list[Job], store: StateStore, options: RunnerOptions):
        self.jobs = jobs
        self.store = store
        self.options = options
        # strategy -> (when to retry its held symbols, the delay that set it); (0, 0): look at start
        self.retry: dict[str, tuple[float, float]] = {job.strategy.name: (0.0, 0.0) for job in jobs}

    def newest_closed(self, job: Job, now: float) -> int:
        """Open time of the job's newest bar closed ``settle_seconds`` before ``now``."""
        now_ms = int(round((now - self.options.settle_seconds) * 1000))
        return floor_to_bar(now_ms, job.strategy.step_ms) - job.strategy.step_ms

    def next_close(self, now: float) -> float:
        """The next time (after ``now``) a bar of some strategy closes, plus the settle delay."""
        settle = self.options.settle_seconds
        now_ms = int(round((now - settle) * 1000))
        return (
            min((floor_to_bar(now_ms, j.strategy.step_ms) + j.strategy.step_ms) / 1000 for j in self.jobs)
            + settle
        )

    def has_work(self, now: float) -> bool:
        return any(self.due(job, now) is not None for job in self.jobs)

    def plans(self, now: float) -> list[Plan]:
        """What the cycle at ``now`` does, for every job with something due."""
        plans = []
        for job in self.jobs:
            due = self.due(job, now)
            if due is None:
                continue
            end, symbols = due
            states = self.store.load_strategy_states(job.strategy.name)
            plans.append(Plan(job, end, symbols, self.bars_behind(job, end, states), states))
        return plans

    def due(self, job: Job, now: float) -> tuple[int, list[str]] | None:
        """The bar to process for ``job`` at ``now`` and for which symbols; None when nothing is due.

        A newly closed bar is processed for every symbol; the last processed bar again, once its
        retry is due, for the symbols whose rules a failure held there."""
        name = job.strategy.name
        end = self.newest_closed(job, now)
        last = self.store.last_processed(name)
        if last is None or end > last:
            return end, list(job.symbols)
        retry = self.retry.get(name)
        if retry is None or now < retry[0]:
            return None
        held = self.held_symbols(job, last) if end == last else []
        if not held:
            del self.retry[name]
            return None
        return last, held

    def held_symbols(self, job: Job, bar: int) -> list[str]:
        """The symbols with a rule that has not stepped ``bar`` (held by a failure, or never stepped)."""
        states = self.store.load_strategy_states(job.strategy.name)
        held = []
        for symbol in job.symbols:
            for rule in job.strategy.rules:
                st = states.get((rule.name, symbol))
                if st is None or st.last_bar is None or st.last_bar < bar:
                    held.append(symbol)
                    break
        return held

    def bars_behind(self, job: Job, end: int, states: dict[tuple[str, str], RuleState]) -> int:
        """How many bars up to ``end`` the furthest-behind rule must step (1 when none is behind)."""
        step_ms = job.strategy.step_ms
        behind = 1
        for rule in job.strategy.rules:
            for symbol in job.symbols:
                st = states.get((rule.name, symbol))
                if st is not None and st.last_bar is not None:
                    behind = max(behind, (end - st.last_bar) // step_ms)
        return int(min(behind, max(1, self.options.catch_up_bars)))

    def processed(self, job: Job, end: int, held: list[str], now: float) -> None:
        """After processing ``end``: retry the ``held`` symbols later, or forget the retry."""
        name = job.strategy.name
        if not held:
            self.retry.pop(name, None)
            return
        before = self.retry.get(name, (0.0, 0.0))[1]
        delay = min(before * 2, RETRY_HELD_MAX_SECONDS) if before else RETRY_HELD_SECONDS
        self.retry[name] = (now + delay, delay)
        shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
        log.info("%s: %s held at bar %s; retrying in %gs", name, shown, format_time(end), delay)

    def next_retry(self, now: float) -> float | None:
        """When held symbols are next retried (after ``now``)."""
        return min((t for t, _ in self.retry.values() if t > now), default=None)
