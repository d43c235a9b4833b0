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
process retries them at once. A source raising something other than ``SourceError``, a failed
evaluation and a failure in the trading layer are failures of the cycle too (``run --once`` exits 1).

The parts: :mod:`~perpwatch.live.jobs` (jobs, options, the cycle report),
:mod:`~perpwatch.live.assembly` (plugin instances from the config), :mod:`~perpwatch.live.schedule`
(what is due when), :mod:`~perpwatch.live.fetching`, :mod:`~perpwatch.live.stepping` (step, record,
route, trade), :mod:`~perpwatch.live.delivery` and :mod:`~perpwatch.live.loop` (``run_forever``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from perpwatch.api.interfaces import Executor, Notifier, PluginContext, Source
from perpwatch.api.registry import Registry
from perpwatch.common.clock import Clock
from perpwatch.common.errors import PerpwatchError
from perpwatch.common.redact import redact as redact_secrets
from perpwatch.language.compiler import Strategy
from perpwatch.language.functions import prefer_compiled
from perpwatch.live import loop
from perpwatch.live.alerting import Alerting
from perpwatch.live.alertstate import AlertState
from perpwatch.live.assembly import assemble
from perpwatch.live.config import Config, instance_secrets
from perpwatch.live.delivery import Delivery
from perpwatch.live.fetching import Fetcher
from perpwatch.live.heartbeat import Heartbeat
from perpwatch.live.jobs import TRADING_METRICS, CycleReport, Job, RunnerOptions
from perpwatch.live.meta import MetaAlerts, MetaSettings
from perpwatch.live.routing import NotifyPolicy
from perpwatch.live.schedule import Schedule
from perpwatch.live.staleness import Staleness
from perpwatch.live.state import StateStore
from perpwatch.live.stepping import Stepped, Stepper
from perpwatch.live.telemetry import Telemetry

__all__ = ["TRADING_METRICS", "CycleReport", "Job", "Runner", "RunnerOptions"]

log = logging.getLogger("perpwatch.live.runner")


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
        telemetry: Telemetry | None = None,
        policy: NotifyPolicy | None = None,
        meta: MetaSettings | None = None,
        heartbeat: Heartbeat | None = None,
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
        self._db = asyncio.Lock()  # held while a cycle or a delivery task uses the store
        self.wakeup = loop.Wakeup(self.clock)
        self.schedule = Schedule(jobs, store, self.options)
        self.fetcher = Fetcher(sources, self.options, redact)
        # routing, grouping, repeats, meta-alerts (policy None: each job's own notifiers)
        self.alerting = Alerting(store, AlertState(store), policy, notifiers)
        self.meta = MetaAlerts(self.alerting, meta)
        self.heartbeat = heartbeat
        self.stepper = Stepper(store, notifiers, redact, self.wakeup, self.alerting)
        self.delivery = Delivery(
            notifiers,
            store,
            self.clock,
            self.options,
            redact,
            self._db,
            self.wakeup.event,
            self.alerting.policy.group_by,
            self.meta,
        )
        self.provides = self.fetcher.provides  # source instance -> the metrics it provides
        self.staleness = Staleness(sources)
        # kept in the store with each cycle (perpwatch.web shows it)
        self.telemetry = telemetry or Telemetry()
        self.telemetry.start(self.clock.time(), (job.strategy.step_ms for job in jobs))

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
        all_secrets = frozenset({*cfg.secrets, *secrets, *instance_secrets(cfg, registry)})

        def redact(text: str) -> str:
            return redact_secrets(text, all_secrets)

        ctx = PluginContext(
            clock=clock, transport=transport, state_path=store.path, secrets=all_secrets, store=store
        )
        parts = assemble(strategies, cfg, registry, ctx, redact)
        return cls(
            parts.jobs,
            parts.sources,
            parts.notifiers,
            store,
            clock,
            options=options,
            trading=parts.trading,
            executors=parts.executors,
            redact=redact,
            policy=parts.policy,
            meta=MetaSettings.from_config(cfg.meta),
            heartbeat=Heartbeat.from_config(cfg.heartbeat, transport, redact),
        )

    def check_sources(self) -> None:
        """Start-up: each job's source checks its symbols and interval (``Source.check``, e.g. a
        replay file that does not exist); everything found is one PerpwatchError (exit 2)."""
        problems: list[str] = []
        for job in self.jobs:
            source = self.sources[job.source]
            try:
                found = source.check(list(job.symbols), job.strategy.interval)
            except Exception as e:  # a plugin bug is said, not a traceback
                found = [f"check raised {type(e).__name__}: {e}"]
            for problem in found:
                line = self.redact(f"source {job.source} ({job.strategy.name}): {problem}")
                if line not in problems:
                    problems.append(line)
        if problems:
            raise PerpwatchError("\nerror: ".join(problems))  # one line each, as report_errors shows them

    async def aclose(self) -> None:
        try:  # a snapshot held back by a simulation's pace
            if self.store.file_problem() is None:
                self.telemetry.flush(self.store)
        except Exception as e:  # closing must not hide the real outcome
            log.debug("telemetry not saved: %s", self.redact(str(e)))
        if self.heartbeat is not None:
            await self.heartbeat.aclose()
        for plugin in [*self.sources.values(), *self.notifiers.values(), *self.executors.values()]:
            try:
                await plugin.aclose()
            except Exception as e:  # closing must not hide the real outcome
                log.debug("closing %s: %s", plugin.name, self.redact(str(e)))

    # -- one cycle ---------------------------------------------------------------------------

    def newest_closed(self, job: Job, now: float) -> int:
        """Open time of the job's newest bar closed ``settle_seconds`` before ``now``."""
        return self.schedule.newest_closed(job, now)

    def has_work(self, now: float) -> bool:
        """Whether a cycle at ``now`` has something to do (a newly closed bar, or a due retry)."""
        return self.schedule.has_work(now)

    def next_close(self, now: float) -> float:
        """The next time (after ``now``) a bar of some strategy closes, plus the settle delay."""
        return self.schedule.next_close(now)

    def next_retry(self, now: float) -> float | None:
        """When held symbols are next retried (after ``now``)."""
        return self.schedule.next_retry(now)

    async def run_cycle(self, now: float | None = None) -> CycleReport:
        """Process every strategy with a newly closed bar at ``now`` (default: the clock's time)."""
        now = self.clock.time() if now is None else float(now)
        self.store.check_file()  # StateLost when the database was deleted or replaced: stop, lose nothing more
        wall0, cpu0 = time.perf_counter(), time.process_time()
        report = CycleReport(time=now)
        plans = self.schedule.plans(now)
        if not plans:
            return report
        fetched = await self.wakeup.bounded(self.fetcher.fetch_all(plans, report))  # a stop's grace
        self.staleness.observe(plans, fetched)
        report.fetch_wall = time.perf_counter() - wall0
        t1, c1 = time.perf_counter(), time.process_time()  # evaluations run in a thread of their own
        async with self._db:
            with self.store.transaction():
                self.alerting.begin()
                newest: list[Stepped] = []
                for plan in plans:
                    stepped, held = await self.stepper.step_plan(plan, fetched, now, report)
                    newest += stepped
                    self.store.set_processed(plan.job.strategy.name, plan.end)
                    report.bars[plan.job.strategy.name] = plan.end
                    self.schedule.processed(plan.job, plan.end, held, now)
                if self.trading is not None:
                    await self.stepper.trade(self.trading, newest, now, report)
                fetch_failures = sum(1 for got in fetched.values() if got.reason is not None)
                self.meta.observe_cycle(now, plans, fetched, report, fetch_failures)
                self.alerting.finish(now, report)  # routed once every strategy has stepped
                self.store.check_file()  # gone during the cycle: roll back and stop
                self.telemetry.cycle_recorded(report, newest, time.perf_counter() - wall0)
                self.telemetry.save(self.store)  # commits with the cycle
                t2 = time.perf_counter()
        report.commit_wall = time.perf_counter() - t2
        report.process_wall = time.perf_counter() - t1
        report.process_cpu = time.process_time() - c1
        report.wall = time.perf_counter() - wall0
        report.cpu = time.process_time() - cpu0
        if self.heartbeat is not None:
            self.heartbeat.after_cycle(not report.failed)
        self.kick()
        return report

    def meta_cycle_failed(self, now: float, reason: str) -> None:
        """A cycle failed as a whole and was rolled back: the ``cycle_failed`` meta-alert."""
        try:
            self.meta.cycle_rolled_back(now, self.redact(reason))
        except Exception as e:  # the database itself may be what failed
            log.debug("meta-alert cycle_failed not recorded: %s", self.redact(str(e)))

    # -- delivery ----------------------------------------------------------------------------

    def kick(self) -> None:
        """Start a delivery task for each idle notifier with something due."""
        self.delivery.kick()

    def next_delivery(self) -> float | None:
        """When an idle notifier next has something to try."""
        return self.delivery.next_delivery()

    async def flush(self, timeout: float | None = None) -> None:
        """Deliver everything due now (not what waits for a retry), within ``timeout`` seconds."""
        await self.delivery.flush(timeout)

    @property
    def db_lock(self) -> asyncio.Lock:
        """Held while a cycle or a delivery uses the store: a writer beside them takes it too."""
        return self._db

    @property
    def _tasks(self) -> dict[str, asyncio.Task]:
        """The delivery task per notifier (the latest one started)."""
        return self.delivery.tasks

    # -- the loop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current cycle (within ``loop.STOP_GRACE_SECONDS``, else it is rolled back),
        flush and return (what SIGINT/SIGTERM do)."""
        self.wakeup.stop()

    async def run_forever(
        self,
        *,
        max_cycles: int | None = None,
        until: float | None = None,
        handle_signals: bool = True,
        on_cycle: Callable[[CycleReport], None] | None = None,
    ) -> None:
        """Cycle at each bar close (plus the settle delay) until stopped, ``max_cycles`` or ``until``.
        A process that runs for long evaluates the newest bars many times: it takes the compiled
        window kernels when numba is installed (``functions.prefer_compiled``; the same bits)."""
        prefer_compiled()
        await loop.run_forever(
            self,
            self.wakeup,
            max_cycles=max_cycles,
            until=until,
            handle_signals=handle_signals,
            on_cycle=on_cycle,
        )
