"""The live loop behind ``perpwatch run``: fetch, evaluate, step, record, then deliver.

A cycle runs shortly after bars close (``runner.settle_seconds`` after the close of each
strategy's interval). For every (source instance, symbol, interval) it fetches, concurrently and
bounded by ``runner.concurrency``, the union of the metrics its strategies need over their
warm-up, each fetch with a timeout (``runner.source_timeout``). Frames are reindexed onto the
expected bar grid, so a bar a source did not return is unknown. Each strategy's rules step over
the newest closed bar (and, after a restart or an outage, over the bars they missed, up to
``CATCH_UP_BARS``); events are recorded and notifications queued in the state database's outbox,
and the trading layer acts on the newest bar, all in one transaction per cycle. Delivery happens
after the commit, from the outbox, one task per notifier, with retries and backoff.

Failure policy: a source failure leaves its metrics missing for the cycle; rules that need them
are *held* (they neither fire nor resolve, and their state does not advance) and catch up on the
missed bars once the source answers again. The failure is logged once per cycle and source.
The held symbols are retried within the bar, ``RETRY_HELD_SECONDS`` later (doubling while the
failure lasts), so an outage of a minute delays their alerts by a minute, not by a bar; a restarted
process retries them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perpwatch.api.interfaces import (
    Executor,
    FetchRequest,
    Notifier,
    NotifierError,
    PluginContext,
    Source,
    SourceError,
)
from perpwatch.api.registry import Registry
from perpwatch.common.clock import Clock
from perpwatch.common.errors import PerpwatchError
from perpwatch.common.timeutil import floor_to_bar, format_time
from perpwatch.evaluation.evaluate import Evaluation, evaluate, evaluate_last
from perpwatch.evaluation.events import Event, severity_rank
from perpwatch.evaluation.frame import Frame
from perpwatch.evaluation.rules import RuleState, build_event, step
from perpwatch.language.compiler import Rule, Strategy
from perpwatch.live.config import Config
from perpwatch.live.state import StateStore

log = logging.getLogger("perpwatch.live.runner")

DEFAULT_NOTIFY = ("console",)
CATCH_UP_BARS = 24  # the most missed bars a rule steps through when it catches up
DELIVERY_BATCH = 200  # outbox items one delivery round takes per notifier
MAX_SLEEP_SECONDS = 300.0  # the loop looks at the wall clock at least this often (suspend, clock jumps)
RETRY_CYCLE_SECONDS = 30.0  # after a cycle failed as a whole (the database, a bug)
RETRY_HELD_SECONDS = 60.0  # first retry of the symbols a source failure held, within the bar
RETRY_HELD_MAX_SECONDS = 900.0  # the retry delay doubles while the failure lasts, up to this


@dataclass
class RunnerOptions:
    settle_seconds: float = 5.0
    concurrency: int = 8
    source_timeout: float = 60.0
    notify_timeout: float = 30.0
    catch_up_bars: int = CATCH_UP_BARS

    @classmethod
    def from_config(cls, runner: Mapping[str, Any]) -> RunnerOptions:
        known = {k: runner[k] for k in ("settle_seconds", "concurrency", "source_timeout") if k in runner}
        return cls(**known)


# What the trading layer reads from the evaluated frame (fill and mark price, funding rate), fetched
# for every strategy with ``execute:`` whether or not its rules name them.
TRADING_METRICS = frozenset({"price.close", "funding.close"})


@dataclass
class Job:
    """One strategy as the runner runs it."""

    strategy: Strategy
    source: str  # source instance name
    symbols: list[str]
    notify: list[str]
    deps: dict[str, frozenset[str]]  # rule name -> the metrics its condition needs
    metrics: frozenset[str] = field(init=False)  # what to fetch and keep for it

    def __post_init__(self) -> None:
        extra = TRADING_METRICS if self.strategy.execute else frozenset()
        self.metrics = frozenset(self.strategy.metrics) | extra


@dataclass
class Fetched:
    """One (source, symbol, interval) fetch: the frame on the expected grid and what failed."""

    frame: Frame
    failed: frozenset[str] = frozenset()  # metrics missing because the source failed
    reason: str | None = None


@dataclass
class CycleReport:
    """What one cycle did, and where its time went."""

    time: float
    bars: dict[str, int] = field(default_factory=dict)  # strategy -> newest bar processed
    fetches: int = 0
    failures: list[str] = field(default_factory=list)  # "source SYMBOL interval: reason"
    events: int = 0
    queued: int = 0
    wall: float = 0.0  # seconds, the whole cycle
    fetch_wall: float = 0.0  # seconds waiting for the sources
    process_wall: float = 0.0  # seconds evaluating, stepping, recording (one transaction)
    process_cpu: float = 0.0  # CPU seconds of the event-loop thread in that phase
    commit_wall: float = 0.0  # seconds of it spent committing (fsync)
    cpu: float = 0.0  # CPU seconds of the event-loop thread in the whole cycle

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def rule_metrics(strategy: Strategy, rule: Rule) -> frozenset[str]:
    """The metric names a rule's condition depends on (through its lets)."""
    nodes = strategy.plan.nodes
    seen: set[int] = set()
    todo = [rule.cond]
    out: set[str] = set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        node = nodes[n]
        if node.op == "metric":
            out.add(node.data)
        todo.extend(node.args)
    return frozenset(out)


def accepts(notifier: Notifier, event: Event) -> bool:
    """Whether ``notifier`` takes ``event`` (its own ``accepts`` or its ``min_severity`` option)."""
    own = getattr(notifier, "accepts", None)
    if callable(own):
        return bool(own(event))
    try:
        return severity_rank(event.severity) >= severity_rank(notifier.options.get("min_severity", "info"))
    except ValueError:
        return True


def load_trading() -> type | None:
    """The trading layer's class (``perpwatch.live.trading.Trading``), or None when it is not installed."""
    try:
        from perpwatch.live.trading import Trading
    except ModuleNotFoundError as e:
        if e.name == f"{__package__}.trading":
            return None
        raise
    return Trading


class Runner:
    """Runs strategies live: :meth:`run_cycle` once, or :meth:`run_forever`."""

    def __init__(
        self,
        jobs: list[Job],
        sources: dict[str, Source],
        notifiers: dict[str, Notifier],
        store: StateStore,
        clock: Clock | None = None,
        *,
        options: RunnerOptions | None = None,
        trading: Any = None,
        executors: dict[str, Executor] | None = None,
        redact: Callable[[str], str] = lambda s: s,
    ):
        self.jobs = jobs
        self.sources = sources
        self.notifiers = notifiers
        self.executors = executors or {}
        self.store = store
        self.clock = clock or Clock()
        self.options = options or RunnerOptions()
        self.trading = trading
        self.redact = redact
        self.provides = {name: frozenset(src.provides()) for name, src in sources.items()}
        self._db = asyncio.Lock()
        self._sem: asyncio.Semaphore | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._blocked: dict[str, float] = {}  # notifier -> no tries before this time
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        # strategy -> (when to retry its held symbols, the delay that set it); (0, 0): look at start
        self._retry: dict[str, tuple[float, float]] = {job.strategy.name: (0.0, 0.0) for job in jobs}

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        strategies: list[Strategy],
        cfg: Config,
        registry: Registry,
        store: StateStore,
        clock: Clock | None = None,
        *,
        options: RunnerOptions | None = None,
        transport: Any = None,
        secrets: Iterable[str] = (),
    ) -> Runner:
        """Plugin instances for the strategies, from the config (raises PerpwatchError, redacted)."""
        clock = clock or Clock()
        all_secrets = frozenset({*cfg.secrets, *secrets})

        def redact(text: str) -> str:
            for s in sorted(all_secrets, key=len, reverse=True):
                text = text.replace(s, "***")
            return text

        names = [s.name for s in strategies]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise PerpwatchError(f"two strategy files have the same name: {', '.join(dup)}")
        ctx = PluginContext(
            clock=clock, transport=transport, state_path=store.path, secrets=all_secrets, store=store
        )

        def make(kind: str, name: str) -> Any:
            inst = getattr(cfg, kind[:-1])(name)
            table = getattr(registry, kind)
            plugin = table.get(inst.plugin)
            if plugin is None:
                listing = ", ".join(sorted(table)) or "none"
                raise PerpwatchError(
                    f"no {kind[:-1]} plugin {inst.plugin!r} for {name!r} (installed: {listing})"
                )
            try:
                return plugin(dict(inst.options), ctx)
            except Exception as e:
                raise PerpwatchError(redact(f"{kind[:-1]} {name!r}: {e}")) from None

        jobs, sources, notifiers = [], {}, {}
        for s in strategies:
            source = s.source or cfg.default_source()
            if source not in sources:
                sources[source] = make("sources", source)
            notify = list(s.notify) if s.notify is not None else list(DEFAULT_NOTIFY)
            for n in notify:
                if n not in notifiers:
                    if n not in cfg.notifiers and n not in registry.notifiers:
                        known = ", ".join(sorted(cfg.notifiers)) or "none configured"
                        raise PerpwatchError(f"strategy {s.name}: notify: no notifier named {n!r} ({known})")
                    notifiers[n] = make("notifiers", n)
            deps = {r.name: rule_metrics(s, r) for r in s.rules}
            jobs.append(Job(s, source, list(s.symbols or cfg.symbols), notify, deps))
        trading, executors = None, {}
        trading_cls = load_trading()
        wanted = sorted({s.execute for s in strategies if s.execute})
        if wanted and trading_cls is None:
            log.warning("execute: %s ignored: the trading layer is not installed", ", ".join(wanted))
        elif wanted:
            executors = {name: make("executors", name) for name in wanted}
            trading = trading_cls(store, executors, clock)
        return cls(
            jobs,
            sources,
            notifiers,
            store,
            clock,
            options=options,
            trading=trading,
            executors=executors,
            redact=redact,
        )

    async def aclose(self) -> None:
        for plugin in [*self.sources.values(), *self.notifiers.values(), *self.executors.values()]:
            try:
                await plugin.aclose()
            except Exception as e:  # closing must not hide the real outcome
                log.debug("closing %s: %s", plugin.name, self.redact(str(e)))

    # -- one cycle ---------------------------------------------------------------------------

    def newest_closed(self, job: Job, now: float) -> int:
        """Open time of the job's newest bar closed ``settle_seconds`` before ``now``."""
        now_ms = int(round((now - self.options.settle_seconds) * 1000))
        return floor_to_bar(now_ms, job.strategy.step_ms) - job.strategy.step_ms

    def has_work(self, now: float) -> bool:
        return any(self._todo(job, now) is not None for job in self.jobs)

    def _todo(self, job: Job, now: float) -> tuple[int, list[str]] | None:
        """The bar to process for ``job`` at ``now`` and for which symbols; None when nothing is due.

        A newly closed bar is processed for every symbol; the last processed bar again, once its
        retry is due, for the symbols whose rules a failure held there."""
        name = job.strategy.name
        end = self.newest_closed(job, now)
        last = self.store.last_processed(name)
        if last is None or end > last:
            return end, list(job.symbols)
        retry = self._retry.get(name)
        if retry is None or now < retry[0]:
            return None
        held = self._held_symbols(job, last) if end == last else []
        if not held:
            del self._retry[name]
            return None
        return last, held

    def _held_symbols(self, job: Job, bar: int) -> list[str]:
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

    def _schedule_retry(self, job: Job, end: int, held: list[str], now: float) -> None:
        """After processing ``end``: retry the ``held`` symbols later, or forget the retry."""
        name = job.strategy.name
        if not held:
            self._retry.pop(name, None)
            return
        before = self._retry.get(name, (0.0, 0.0))[1]
        delay = min(before * 2, RETRY_HELD_MAX_SECONDS) if before else RETRY_HELD_SECONDS
        self._retry[name] = (now + delay, delay)
        shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
        log.info("%s: %s held at bar %s; retrying in %gs", name, shown, format_time(end), delay)

    def next_retry(self, now: float) -> float | None:
        """When held symbols are next retried (after ``now``)."""
        return min((t for t, _ in self._retry.values() if t > now), default=None)

    def next_close(self, now: float) -> float:
        """The next time (after ``now``) a bar of some strategy closes, plus the settle delay."""
        settle = self.options.settle_seconds
        now_ms = int(round((now - settle) * 1000))
        return (
            min((floor_to_bar(now_ms, j.strategy.step_ms) + j.strategy.step_ms) / 1000 for j in self.jobs)
            + settle
        )

    async def run_cycle(self, now: float | None = None) -> CycleReport:
        """Process every strategy with a newly closed bar at ``now`` (default: the clock's time)."""
        now = self.clock.time() if now is None else float(now)
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        report = CycleReport(time=now)
        plans = []
        for job in self.jobs:
            todo = self._todo(job, now)
            if todo is None:
                continue
            end, symbols = todo
            states = self.store.load_strategy_states(job.strategy.name)
            plans.append((job, end, symbols, self._bars_behind(job, end, states), states))
        if not plans:
            return report
        fetched = await self._fetch_all(plans, report)
        report.fetch_wall = time.perf_counter() - wall0
        t1, c1 = time.perf_counter(), time.thread_time()
        async with self._db:
            with self.store.transaction():
                newest = []
                for job, end, symbols, k, states in plans:
                    key = (job.source, job.strategy.interval)
                    held = []
                    for symbol in symbols:
                        got = fetched[(*key, symbol)]
                        try:
                            with self.store.savepoint():
                                ev, events, was_held = self._step(job, symbol, got, k, states, now, report)
                        except Exception as e:  # one broken evaluation must not stop the others
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
                        newest.append((job, symbol, end, ev, events))
                    self.store.set_processed(job.strategy.name, end)
                    report.bars[job.strategy.name] = end
                    self._schedule_retry(job, end, held, now)
                if self.trading is not None:
                    await self._trade(newest, now, report)
                t2 = time.perf_counter()
        report.commit_wall = time.perf_counter() - t2
        report.process_wall = time.perf_counter() - t1
        report.process_cpu = time.thread_time() - c1
        report.wall = time.perf_counter() - wall0
        report.cpu = time.thread_time() - cpu0
        self.kick()
        return report

    def _bars_behind(self, job: Job, end: int, states: dict[tuple[str, str], RuleState]) -> int:
        """How many bars up to ``end`` the furthest-behind rule must step (1 when none is behind)."""
        step_ms = job.strategy.step_ms
        behind = 1
        for rule in job.strategy.rules:
            for symbol in job.symbols:
                st = states.get((rule.name, symbol))
                if st is not None and st.last_bar is not None:
                    behind = max(behind, (end - st.last_bar) // step_ms)
        return int(min(behind, max(1, self.options.catch_up_bars)))

    async def _fetch_all(self, plans: list, report: CycleReport) -> dict[tuple[str, str, str], Fetched]:
        groups: dict[tuple[str, str, str], tuple[set[str], int, int, int]] = {}
        for job, end, symbols, k, _ in plans:
            s = job.strategy
            for symbol in symbols:
                key = (job.source, s.interval, symbol)
                metrics, bars, _, _ = groups.get(key, (set(), 0, end, s.step_ms))
                groups[key] = (metrics | job.metrics, max(bars, s.warmup + k), end, s.step_ms)
        if self._sem is None:
            self._sem = asyncio.Semaphore(max(1, self.options.concurrency))
        keys = list(groups)
        results = await asyncio.gather(*(self._fetch(key, *groups[key]) for key in keys))
        report.fetches = len(keys)
        failed: dict[tuple[str, str], list[str]] = {}
        for (source, interval, symbol), got in zip(keys, results, strict=True):
            if got.reason is not None:
                failed.setdefault((source, got.reason), []).append(f"{symbol} {interval}")
                report.failures.append(f"{source} {symbol} {interval}: {got.reason}")
        for (source, reason), which in failed.items():
            shown = ", ".join(which[:10]) + (f" and {len(which) - 10} more" if len(which) > 10 else "")
            log.warning(
                "source %s failed for %s: %s (rules needing it are held this cycle)", source, shown, reason
            )
        return dict(zip(keys, results, strict=True))

    async def _fetch(
        self, key: tuple[str, str, str], metrics: set[str], bars: int, end: int, step_ms: int
    ) -> Fetched:
        source_name, interval, symbol = key
        start = end - (bars - 1) * step_ms
        grid = np.arange(start, end + step_ms, step_ms, dtype=np.int64)
        wanted = frozenset(metrics)
        request = FetchRequest(symbol=symbol, interval=interval, metrics=wanted, start=start, end=end)
        timeout = self.options.source_timeout
        assert self._sem is not None
        async with self._sem:
            try:
                frame = await asyncio.wait_for(self.sources[source_name].fetch(request), timeout)
            except SourceError as e:
                return Fetched(Frame(grid), wanted, self.redact(str(e)) or type(e).__name__)
            except TimeoutError:
                return Fetched(Frame(grid), wanted, f"timed out after {timeout:g}s")
            except Exception as e:  # a plugin bug must not stop the other symbols
                return Fetched(Frame(grid), wanted, self.redact(f"unexpected {type(e).__name__}: {e}"))
        if not isinstance(frame, Frame):
            return Fetched(Frame(grid), wanted, f"returned {type(frame).__name__}, not a frame")
        missing = (wanted & self.provides[source_name]) - frame.columns.keys()
        reason = None
        if missing:
            reason = self.redact("; ".join(frame.problems) or f"no data for {', '.join(sorted(missing))}")
        elif frame.problems:
            log.debug("%s %s %s: %s", source_name, symbol, interval, self.redact("; ".join(frame.problems)))
        return Fetched(frame.reindex(grid), frozenset(missing), reason)

    def _step(
        self,
        job: Job,
        symbol: str,
        got: Fetched,
        k: int,
        states: dict[tuple[str, str], RuleState],
        now: float,
        report: CycleReport,
    ) -> tuple[Evaluation, list[Event], bool]:
        """Step every rule of ``job`` for ``symbol``; record and route its events.

        Returns the evaluation, the newest bar's events, and whether a failed source held a rule."""
        s = job.strategy
        frame = got.frame
        lo = max(0, len(frame) - (s.warmup + k))
        sub = Frame(
            frame.times[lo:],
            {m: frame.columns[m][lo:] for m in job.metrics if m in frame.columns},
            {m: frame.observed[m][lo:] for m in job.metrics if m in frame.observed},
        )
        ev = evaluate_last(s, sub, symbol) if k == 1 else evaluate(s, sub, symbol)
        times = ev.frame.times
        last_i = len(times) - 1
        newest: list[Event] = []
        held = False
        for rule in s.rules:
            if job.deps[rule.name] & got.failed:
                held = True
                continue  # held: its data did not come this cycle
            st = states.get((rule.name, symbol)) or RuleState()
            truths = ev.series(rule.cond)
            first = last_i if st.last_bar is None else max(0, len(times) - k)
            for i in range(first, len(times)):
                before = st.episode_suppressed
                x = truths[i]
                kind = step(st, None if x != x else float(x), int(times[i]), rule.for_bars, rule.cooldown_ms)
                if kind is None:
                    continue
                event = self._clean(build_event(s, rule, ev, i, kind))
                if self._record(job, rule, event, before, now, report) and i == last_i:
                    newest.append(event)
            self.store.save_rule_state(s.name, rule.name, symbol, st)
        return ev, newest, held

    def _record(
        self, job: Job, rule: Rule, event: Event, suppressed_before: bool, now: float, report: CycleReport
    ) -> bool:
        event_id = self.store.record_event(event, now)
        if event_id is None:
            return False
        report.events += 1
        for name in self._routes(job, rule, event, suppressed_before, now):
            self.store.enqueue(event_id, name, now)
            report.queued += 1
        return True

    def _routes(self, job: Job, rule: Rule, event: Event, suppressed_before: bool, now: float) -> list[str]:
        """The notifiers that get ``event``: fired ones, and resolved ones the rule asks for."""
        if event.kind == "resolved":
            if not rule.notify_resolved or suppressed_before:
                return []
        elif event.kind != "fired":
            return []
        if self.store.is_muted(event.strategy, event.rule, event.symbol, now):
            return []
        return [n for n in job.notify if accepts(self.notifiers[n], event)]

    async def _trade(self, newest: list, now: float, report: CycleReport) -> None:
        """Second phase: the trading layer acts on each executing strategy's newest bar."""
        for job, symbol, end, ev, events in newest:
            if not job.strategy.execute:
                continue
            try:
                with self.store.savepoint():
                    extra = await self.trading.on_bar(
                        job.strategy, symbol, end, ev, len(ev.frame) - 1, events
                    )
                    for event in extra or ():
                        if self.store.record_event(self._clean(event), now) is not None:
                            report.events += 1
            except Exception as e:
                log.error(
                    "trading %s %s: %s", job.strategy.name, symbol, self.redact(f"{type(e).__name__}: {e}")
                )

    def _clean(self, event: Event) -> Event:
        """``event`` with secrets redacted from its message and text values."""
        event.message = self.redact(event.message)
        event.values = {k: self.redact(v) if isinstance(v, str) else v for k, v in event.values.items()}
        return event

    # -- delivery ----------------------------------------------------------------------------

    def kick(self) -> None:
        """Start a delivery task for each idle notifier with something due."""
        now = self.clock.time()
        for name in self.notifiers:
            task = self._tasks.get(name)
            if task is not None and not task.done():
                continue
            if self._blocked.get(name, 0.0) > now:
                continue
            due = self.store.next_due(name)
            if due is not None and due <= now:
                self._tasks[name] = asyncio.create_task(self._deliver(name), name=f"deliver-{name}")

    def next_delivery(self) -> float | None:
        """When an idle notifier next has something to try."""
        times = []
        for name in self.notifiers:
            task = self._tasks.get(name)
            if task is not None and not task.done():
                continue
            due = self.store.next_due(name)
            if due is not None:
                times.append(max(due, self._blocked.get(name, 0.0)))
        return min(times, default=None)

    async def _deliver(self, name: str) -> None:
        """Send what is due for one notifier, oldest first; stop at a retryable failure."""
        notifier = self.notifiers[name]
        tried: set[int] = set()  # each item once per task, whatever happens to its mark
        try:
            while True:
                async with self._db:
                    items = self.store.due(self.clock.time(), name, DELIVERY_BATCH + len(tried))
                items = [item for item in items if item.event_id not in tried]
                if not items:
                    return
                for item in items:
                    tried.add(item.event_id)
                    error = await self._send(notifier, item.event)
                    now = self.clock.time()
                    async with self._db:
                        if error is None:
                            self.store.mark_delivered(item.event_id, name, now)
                            continue
                        next_try = self.store.mark_failed(
                            item.event_id, name, error.args[0], now, error.retry_after, error.retryable
                        )
                    log.warning(
                        "notifier %s: %s not delivered (try %d): %s; next try %s",
                        name,
                        item.event.key,
                        item.attempts + 1,
                        error.args[0],
                        format_time(int(next_try * 1000)),
                    )
                    if error.retryable:
                        self._blocked[name] = next_try
                        return
        finally:
            self._wake.set()

    async def _send(self, notifier: Notifier, event: Event) -> NotifierError | None:
        timeout = self.options.notify_timeout
        try:
            await asyncio.wait_for(notifier.send(event), timeout)
        except NotifierError as e:
            return NotifierError(self.redact(str(e)), retryable=e.retryable, retry_after=e.retry_after)
        except TimeoutError:
            return NotifierError(f"timed out after {timeout:g}s", retryable=True)
        except Exception as e:
            return NotifierError(self.redact(f"unexpected {type(e).__name__}: {e}"), retryable=False)
        return None

    async def flush(self, timeout: float | None = None) -> None:
        """Deliver everything due now (not what waits for a retry), within ``timeout`` seconds."""
        deadline = time.monotonic() + (self.options.notify_timeout * 2 if timeout is None else timeout)
        for _ in range(5):  # a few rounds: a task may end just before another item comes due
            self.kick()
            running = [t for t in self._tasks.values() if not t.done()]
            left = deadline - time.monotonic()
            if not running or left <= 0:
                break
            await asyncio.wait(running, timeout=left)

    # -- the loop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current cycle, flush and return (what SIGINT/SIGTERM do)."""
        self._stop.set()
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        _, pending = await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def run_forever(
        self,
        *,
        max_cycles: int | None = None,
        until: float | None = None,
        handle_signals: bool = True,
        on_cycle: Callable[[CycleReport], None] | None = None,
    ) -> None:
        """Cycle at each bar close (plus the settle delay) until stopped, ``max_cycles`` or ``until``."""
        loop = asyncio.get_running_loop()
        installed = []
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
        cycles = 0
        try:
            while not self._stop.is_set():
                self._wake.clear()  # set again by a delivery that ends from here on
                now = self.clock.time()
                if until is not None and now > until:
                    break
                if self.has_work(now):
                    try:
                        report = await self.run_cycle(now)
                    except Exception as e:  # rolled back whole: try again shortly, never exit
                        log.error(
                            "cycle at %s failed and was rolled back (retrying in %gs): %s",
                            format_time(int(now * 1000)),
                            RETRY_CYCLE_SECONDS,
                            self.redact(f"{type(e).__name__}: {e}"),
                            exc_info=log.isEnabledFor(logging.DEBUG),
                        )
                        await self._sleep(RETRY_CYCLE_SECONDS)
                        continue
                    cycles += 1
                    if on_cycle is not None:
                        on_cycle(report)
                    after = self.clock.time()
                    if after > self.next_close(now):
                        log.warning(
                            "cycle at %s took %.1fs, past the next bar close; skipping ahead "
                            "(rules catch up on the bars they missed)",
                            format_time(int(now * 1000)),
                            after - now,
                        )
                    if max_cycles is not None and cycles >= max_cycles:
                        break
                    continue
                self.kick()
                wake = self.next_close(now)
                if until is not None and wake > until:
                    break
                delivery = self.next_delivery()
                if delivery is not None:
                    wake = min(wake, max(delivery, now))
                retry = self.next_retry(now)
                if retry is not None:
                    wake = min(wake, retry)
                await self._sleep(min(wake - now, MAX_SLEEP_SECONDS))
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.flush()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: finishing the cycle, then exiting", sig.name)
        self.stop()
