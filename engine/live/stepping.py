"""Stepping and recording: each (strategy, symbol)'s rules step over the fetched bars in a savepoint
of the cycle's transaction, their events are recorded and routed to the outbox, then the trading
layer acts on the newest bar of each executing strategy.

A rule whose metrics a failed source did not deliver is *held*: it neither fires nor resolves and
its state does not advance; it catches up on the bars it missed once the source answers again.

Evaluations run in an :class:`EvaluationThread`, off the event loop, so the loop stays free for
signals and deliveries while a long one runs; the state database is only touched from the loop.
After a stop, each step waits only within the stop's grace (``Wakeup.bounded``, ``Wakeup.check``):
past it the cycle raises CycleStopped and its transaction rolls back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perpwatch.api.interfaces import Notifier
from perpwatch.evaluation.evaluate import Evaluation, evaluate, evaluate_last
from perpwatch.evaluation.events import Event
from perpwatch.evaluation.frame import Frame
from perpwatch.evaluation.rules import RuleState, build_event, step
from perpwatch.language.compiler import Rule
from perpwatch.live.alerting import Alerting
from perpwatch.live.alertstate import AlertState
from perpwatch.live.fetching import Fetched, FetchKey
from perpwatch.live.grouping import snapshot_lines
from perpwatch.live.jobs import CycleReport, Job
from perpwatch.live.loop import CycleStopped, Wakeup
from perpwatch.live.schedule import Plan
from perpwatch.live.state import StateStore

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner


@dataclass
class Stepped:
    """One (strategy, symbol) stepped up to its newest bar: what the trading layer acts on."""

    job: Job
    symbol: str
    end: int  # open time of the newest bar
    ev: Evaluation
    events: list[Event]  # the newest bar's events
    bars: int = 1  # the bars stepped this cycle (more when catching up): protective exits judge each


class EvaluationThread:
    """One daemon thread that runs the evaluations handed to it, in order.

    A daemon, so a process that stops need not wait for an evaluation it gave up on; it ends after
    ``IDLE_SECONDS`` without work and starts again with the next one."""

    IDLE_SECONDS = 5.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._running = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._jobs.put((future, fn, args))
            if not self._running:
                self._running = True
                threading.Thread(target=self._work, name="perpwatch-evaluate", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            try:
                future, fn, args = self._jobs.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._running = False
                        return
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # handed to the awaiting cycle, which decides
                future.set_exception(e)


class Stepper:
    """Steps rules and records what happens in the state store (inside the caller's transaction)."""

    def __init__(
        self,
        store: StateStore,
        notifiers: dict[str, Notifier],
        redact: Callable[[str], str],
        wakeup: Wakeup | None = None,
        alerting: Alerting | None = None,
    ):
        self.store = store
        self.notifiers = notifiers
        self.redact = redact
        self.wakeup = wakeup  # its stop's grace bounds each step; None: unbounded
        self.worker = EvaluationThread()
        # routing, repeats, silences, inhibition; without a config's policy, each job's notifiers
        self.alerting = alerting or Alerting(store, AlertState(store), None, notifiers)

    async def step_plan(
        self, plan: Plan, fetched: dict[FetchKey, Fetched], now: float, report: CycleReport
    ) -> tuple[list[Stepped], list[str]]:
        """Step every symbol of ``plan``, each in its own savepoint; returns what was stepped and the
        symbols held (by a failed source or a failed evaluation)."""
        job = plan.job
        stepped: list[Stepped] = []
        held: list[str] = []
        for symbol in plan.symbols:
            got = fetched[(job.source, job.strategy.interval, symbol)]
            mark = self.alerting.mark()
            try:
                with self.store.savepoint():
                    ev, events, was_held = await self.step(
                        job, symbol, got, plan.bars, plan.states, now, report
                    )
            except CycleStopped:
                raise
            except Exception as e:  # one broken evaluation must not stop the others
                self.alerting.rollback(mark)
                log.error(
                    "%s %s: evaluation failed, its rules are held: %s",
                    job.strategy.name,
                    symbol,
                    self.redact(f"{type(e).__name__}: {e}"),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                report.failures.append(f"{job.strategy.name} {symbol}: evaluation failed")
                held.append(symbol)
                continue
            if was_held:
                held.append(symbol)
            stepped.append(Stepped(job, symbol, plan.end, ev, events, plan.bars))
        return stepped, held

    async def step(
        self,
        job: Job,
        symbol: str,
        got: Fetched,
        k: int,
        states: dict[tuple[str, str], RuleState],
        now: float,
        report: CycleReport,
    ) -> tuple[Evaluation, list[Event], bool]:
        """Step every rule of ``job`` for ``symbol`` over its last ``k`` bars; record and route its events.

        Returns the evaluation, the newest bar's events, and whether a failed source held a rule."""
        s = job.strategy
        frame = got.frame
        lo = max(0, len(frame) - (s.warmup + k))
        sub = Frame(
            frame.times[lo:],
            {m: frame.columns[m][lo:] for m in job.metrics if m in frame.columns},
            {m: frame.observed[m][lo:] for m in job.metrics if m in frame.observed},
        )
        ev = await self.evaluate(evaluate_last if k == 1 else evaluate, s, sub, symbol)
        times = ev.frame.times
        last_i = len(times) - 1
        newest: list[Event] = []
        held = False
        for rule in s.rules:
            if job.deps[rule.name] & got.failed:
                held = True
                continue  # held: its data did not come this cycle
            st = states.get((rule.name, symbol)) or RuleState()
            truths = ev.truths(rule.cond)
            first = last_i if st.last_bar is None else max(0, len(times) - k)
            for i in range(first, len(times)):
                before = st.episode_suppressed
                x = truths[i]
                kind = step(st, None if x != x else float(x), int(times[i]), rule.for_bars, rule.cooldown_ms)
                if kind is None:
                    if i != last_i or not self.alerting.repeat_due(s, rule, st, symbol, int(times[i])):
                        continue
                    kind = "repeat"  # still firing, its repeat interval passed: notified again
                event = self.clean(build_event(s, rule, ev, i, kind))
                recorded = self.record(job, rule, event, before, now, report, ev, i)
                if recorded and i == last_i and kind != "repeat":
                    newest.append(event)
            self.store.save_rule_state(s.name, rule.name, symbol, st)
        return ev, newest, held

    async def evaluate(self, fn: Callable[..., Evaluation], *args: Any) -> Evaluation:
        """``fn(*args)`` in the evaluation thread, awaited within a stop's grace."""
        if self.wakeup is None:
            return await asyncio.wrap_future(self.worker.submit(fn, *args))
        self.wakeup.check()
        try:
            return await self.wakeup.bounded(asyncio.wrap_future(self.worker.submit(fn, *args)))
        except CycleStopped:
            self.worker = EvaluationThread()  # the old one finishes the abandoned evaluation alone
            raise

    def record(
        self,
        job: Job,
        rule: Rule,
        event: Event,
        suppressed_before: bool,
        now: float,
        report: CycleReport,
        ev: Evaluation | None = None,
        i: int = -1,
    ) -> bool:
        """Record ``event`` and hand it to the routing (:meth:`Alerting.finish` queues it at the end
        of the stepping); False when it was already recorded."""
        event_id = self.store.record_event(event, now)
        if event_id is None:
            return False
        report.events += 1
        snapshot = (lambda: snapshot_lines(job.strategy, ev, i)) if ev is not None else None
        self.alerting.add(event_id, event, job, rule, suppressed_before, snapshot, now)
        return True

    async def trade(self, trading: Any, stepped: list[Stepped], now: float, report: CycleReport) -> None:
        """Second phase: the trading layer acts on each executing strategy's newest bar, each
        (strategy, symbol) in its own savepoint; a failure there is one of the cycle's failures.
        A stop does not cut it short, nor does a second signal (``Wakeup.finishing``): an executor
        may have placed orders the cycle must record."""
        with self.wakeup.finishing() if self.wakeup is not None else contextlib.nullcontext():
            await self._trade(trading, stepped, now, report)

    async def _trade(self, trading: Any, stepped: list[Stepped], now: float, report: CycleReport) -> None:
        await self._reconcile(trading, now, report)
        for item in stepped:
            strategy = item.job.strategy
            if not strategy.execute:
                continue
            try:
                with self.store.savepoint():
                    extra = await trading.on_bar(
                        strategy,
                        item.symbol,
                        item.end,
                        item.ev,
                        len(item.ev.frame) - 1,
                        item.events,
                        exit_bars=item.bars,
                    )
                    for event in extra or ():
                        if self.store.record_event(self.clean(event), now) is not None:
                            report.events += 1
            except Exception as e:
                reason = self.redact(f"{type(e).__name__}: {e}")
                log.error("trading %s %s: %s", strategy.name, item.symbol, reason)
                log.debug("trading %s %s failed", strategy.name, item.symbol, exc_info=True)
                report.failures.append(f"{strategy.name} {item.symbol}: trading failed")

    async def _reconcile(self, trading: Any, now: float, report: CycleReport) -> None:
        """Executors that reconcile with an exchange do so before any signal of the cycle; what they
        find is recorded, and a halt goes to every notifier."""
        reconcile = getattr(trading, "reconcile", None)
        if reconcile is None:
            return
        try:
            with self.store.savepoint():
                for event in await reconcile(int(now * 1000)):
                    event_id = self.store.record_event(self.clean(event), now)
                    if event_id is None:
                        continue
                    report.events += 1
                    if event.kind == "halted":
                        for name in self.notifiers:
                            self.store.enqueue(event_id, name, now)
        except Exception as e:
            log.error("reconciliation: %s", self.redact(f"{type(e).__name__}: {e}"))
            report.failures.append("reconciliation failed")

    def clean(self, event: Event) -> Event:
        """``event`` with secrets redacted from its message and text values."""
        event.message = self.redact(event.message)
        event.values = {k: self.redact(v) if isinstance(v, str) else v for k, v in event.values.items()}
        return event
