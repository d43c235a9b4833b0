"""The loop behind ``run_forever``: a cycle whenever work is due (a bar closed plus the settle delay,
or a retry of held symbols), otherwise delivery and sleep until the next of those; a failed cycle is
retried shortly; SIGINT and SIGTERM finish the current cycle, flush and return. ``run_once`` is
one cycle under the same signals (``perpwatch run --once``).

A stop gives the cycle in progress ``STOP_GRACE_SECONDS`` to finish. One that is still fetching or
evaluating after that is abandoned where it is (``Wakeup.bounded``, ``Wakeup.check``): its
transaction rolls back, so nothing of it is recorded, and its bars are processed at the next start.
Evaluation runs off the event loop (``perpwatch.live.stepping``), so the loop sees the signal at
once however long an evaluation takes. A second signal does not wait for the grace: it cancels the
task that installed the handlers (``Wakeup.abort``) wherever it is, mid-request or mid-delivery,
the cycle's transaction rolls back and nothing more is delivered (``Wakeup.aborted`` says which
signal, for the exit code)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from perpwatch.common.clock import Clock
from perpwatch.common.timeutil import format_time
from perpwatch.live.jobs import CycleReport
from perpwatch.live.state import StateLost

if TYPE_CHECKING:
    from perpwatch.live.runner import Runner

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner

MAX_SLEEP_SECONDS = 300.0  # the loop looks at the wall clock at least this often (suspend, clock jumps)
RETRY_CYCLE_SECONDS = 30.0  # after a cycle failed as a whole (the database, a bug)
STOP_GRACE_SECONDS = 5.0  # after a stop, how long the cycle in progress may still take to finish

T = TypeVar("T")


class CycleStopped(Exception):
    """The loop was told to stop and the cycle in progress did not finish within the grace: it is
    abandoned, its transaction rolled back."""


class Wakeup:
    """The loop's sleep, cut short when a delivery task ends or when the loop is told to stop; and
    the stop's grace, which bounds the cycle in progress."""

    def __init__(self, clock: Clock, grace: float = STOP_GRACE_SECONDS):
        self.clock = clock
        self.grace = grace
        self.stopping = asyncio.Event()
        self.event = asyncio.Event()  # set by a delivery task that ends, and by stop()
        self.deadline: float | None = None  # time.monotonic() by which a stopped cycle must end
        self.aborted: signal.Signals | None = None  # the second signal, which ended the run at once
        self._finishing = 0  # depth of ``finishing`` blocks, which an abort waits for
        self._abort_after: asyncio.Task[Any] | None = None

    def stop(self) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace
        self.stopping.set()
        self.event.set()

    def abort(self, sig: signal.Signals, task: asyncio.Task[Any] | None) -> None:
        """Stop now: cancel ``task`` (the run) wherever it is, or at the end of a ``finishing``
        block; ``aborted`` remembers ``sig``."""
        self.stop()
        if self.aborted is None:
            self.aborted = sig
            if self._finishing:
                self._abort_after = task
            elif task is not None:
                task.cancel()

    @contextlib.contextmanager
    def finishing(self) -> Iterator[None]:
        """A block that an abort does not cut short (the trading layer: an executor may have placed
        orders the cycle must record); the cancel comes at the run's next wait after it, which is
        after the cycle's commit."""
        self._finishing += 1
        try:
            yield
        finally:
            self._finishing -= 1
            if not self._finishing and self._abort_after is not None:
                task, self._abort_after = self._abort_after, None
                task.cancel()

    def check(self) -> None:
        """Between the steps of a cycle: raise CycleStopped once a stop's grace has run out."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise CycleStopped(f"not finished within {self.grace:g}s of the stop")

    async def bounded(self, aw: Awaitable[T]) -> T:
        """The result of ``aw``; after a stop only within the grace, past which ``aw`` is cancelled
        (an evaluation thread is left to finish on its own) and CycleStopped raised."""
        task = asyncio.ensure_future(aw)
        try:
            if not self.stopping.is_set():
                stopped = asyncio.ensure_future(self.stopping.wait())
                try:
                    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopped.cancel()
            if not task.done() and self.deadline is not None:
                await asyncio.wait({task}, timeout=max(0.0, self.deadline - time.monotonic()))
            if not task.done():
                raise CycleStopped(f"not finished within {self.grace:g}s of the stop")
            return task.result()
        finally:
            if not task.done():
                task.cancel()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self.event.wait())
        _, pending = await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()


def _can_handle_signals() -> bool:
    """Whether asyncio can take signal handlers here: on POSIX, in the main thread (a run started
    from another thread, as some embedding programs do, goes on without them)."""
    return sys.platform != "win32" and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stopping_on_signals(stop: Callable[[], None], wakeup: Wakeup, enabled: bool = True) -> Iterator[None]:
    """Within the block, a first SIGINT or SIGTERM logs a line and calls ``stop``; a second one logs
    a line and aborts the task that entered the block (``Wakeup.abort``): the run ends at once."""
    task = asyncio.current_task()
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) == 1:
            log.info(
                "%s: finishing the cycle (rolled back if not done in %gs), then exiting; %s exits at once",
                sig.name,
                wakeup.grace,
                "another Ctrl-C" if sig == signal.SIGINT else f"another {sig.name}",
            )
            stop()
        elif wakeup.aborted is None:
            log.warning("%s again: exiting at once; a cycle in progress is rolled back", sig.name)
            wakeup.abort(sig, task)

    loop = asyncio.get_running_loop()
    installed = []
    if enabled and _can_handle_signals():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_forever(
    runner: Runner,
    wakeup: Wakeup,
    *,
    max_cycles: int | None = None,
    until: float | None = None,
    handle_signals: bool = True,
    on_cycle: Callable[[CycleReport], None] | None = None,
) -> None:
    """Cycle at each bar close (plus the settle delay) until stopped, ``max_cycles`` or ``until``."""
    cycles = 0
    with stopping_on_signals(runner.stop, wakeup, handle_signals):
        try:
            while not wakeup.stopping.is_set():
                wakeup.event.clear()  # set again by a delivery that ends from here on
                now = runner.clock.time()
                if until is not None and now > until:
                    break
                runner.store.check_file()  # a deleted or replaced database ends the run (StateLost)
                if runner.has_work(now):
                    try:
                        report = await runner.run_cycle(now)
                    except StateLost:  # retrying cannot help: everything recorded would be lost
                        raise
                    except CycleStopped as e:
                        _log_stopped(now, e)
                        break
                    except Exception as e:  # rolled back whole: try again shortly, never exit
                        runner.telemetry.cycle_failed()
                        runner.meta_cycle_failed(now, f"{type(e).__name__}: {e}")
                        log.error(
                            "cycle at %s failed and was rolled back (retrying in %gs): %s",
                            format_time(int(now * 1000)),
                            RETRY_CYCLE_SECONDS,
                            runner.redact(f"{type(e).__name__}: {e}"),
                            exc_info=log.isEnabledFor(logging.DEBUG),
                        )
                        await wakeup.sleep(RETRY_CYCLE_SECONDS)
                        continue
                    cycles += 1
                    if on_cycle is not None:
                        on_cycle(report)
                    after = runner.clock.time()
                    if after > runner.next_close(now):
                        log.warning(
                            "cycle at %s took %.1fs, past the next bar close; skipping ahead "
                            "(rules catch up on the bars they missed)",
                            format_time(int(now * 1000)),
                            after - now,
                        )
                    if max_cycles is not None and cycles >= max_cycles:
                        break
                    continue
                runner.kick()
                wake = runner.next_close(now)
                if until is not None and wake > until:
                    break
                delivery = runner.next_delivery()
                if delivery is not None:
                    wake = min(wake, max(delivery, now))
                retry = runner.next_retry(now)
                if retry is not None:
                    wake = min(wake, retry)
                await wakeup.sleep(min(wake - now, MAX_SLEEP_SECONDS))
        finally:
            await _flush_unless_aborted(runner, wakeup)


async def run_once(runner: Runner, wakeup: Wakeup, *, handle_signals: bool = True) -> CycleReport | None:
    """One cycle now, then deliver what is due, under the loop's signals: a stop lets the cycle
    finish within the grace; a cycle that did not is rolled back and None returned."""
    with stopping_on_signals(runner.stop, wakeup, handle_signals):
        now = runner.clock.time()
        try:
            return await runner.run_cycle(now)
        except CycleStopped as e:
            _log_stopped(now, e)
            return None
        finally:
            await _flush_unless_aborted(runner, wakeup)


async def _flush_unless_aborted(runner: Runner, wakeup: Wakeup) -> None:
    """Deliver what is due, unless a second signal aborted the run (then nothing more is sent, and
    an abort that ``Wakeup.finishing`` deferred to the end of the cycle is raised here)."""
    if wakeup.aborted is None:
        await runner.flush()
    else:
        await asyncio.sleep(0)


def _log_stopped(now: float, e: CycleStopped) -> None:
    log.warning(
        "stopping: the cycle at %s was %s and is rolled back; its bars are processed at the next start",
        format_time(int(now * 1000)),
        e,
    )
