"""Where trials run: in this process (one worker), on local processes, or on a Dask cluster.

Each pool takes ``run_trial(setup, params)`` calls and hands back futures; the sweep keeps
:attr:`Pool.slots` trials in flight. Workers load the data once each (``trial.loaded``): a trial
ships its params and the small ``Setup``, never the history.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
from typing import Any

from perpwatch.common.errors import PerpwatchError
from perpwatch.common.extras import require
from perpwatch.research.trial import Setup, run_trial


class WorkerLost(PerpwatchError):
    """A worker process died (not a trial's own error): the sweep stops, resumable."""


class Pool:
    """Runs trials in this process, one at a time (``--workers 1``)."""

    slots = 1
    where = "this process"

    def submit(self, setup: Setup, params: dict[str, str]) -> Any:
        future: cf.Future[dict[str, Any]] = cf.Future()
        try:
            future.set_result(run_trial(setup, params))
        except Exception as e:  # handed to the sweep like a worker's failure
            future.set_exception(e)
        return future

    def wait(self, pending: list[Any]) -> list[Any]:
        """The futures of ``pending`` that are done (at least one; blocks until then)."""
        done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        return [f for f in pending if f in done]

    def result(self, future: Any) -> dict[str, Any]:
        return future.result()

    def cancel(self, pending: list[Any]) -> None:
        for f in pending:
            f.cancel()

    def close(self) -> None:
        pass


class ProcessPool(Pool):
    """``workers`` local processes (spawned: each imports perpwatch and loads the data once)."""

    def __init__(self, workers: int):
        self.slots = workers
        self.where = f"{workers} local processes"
        self.executor = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, setup: Setup, params: dict[str, str]) -> Any:
        return self.executor.submit(run_trial, setup, params)

    def result(self, future: Any) -> dict[str, Any]:
        try:
            return future.result()
        except cf.process.BrokenProcessPool as e:
            raise WorkerLost(f"a sweep worker process died ({e}); run the same command to resume") from None

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class DaskPool(Pool):
    """The workers of the Dask scheduler at ``address`` (every worker thread is a slot, unless
    ``slots`` says how many trials to keep in flight)."""

    def __init__(self, address: str, slots: int | None = None, timeout: float = 30):
        distributed = require("distributed", extra="sweep", purpose="--dask")
        try:
            self.client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise PerpwatchError(f"--dask {address}: cannot reach the Dask scheduler: {e}") from None
        threads = sum(self.client.nthreads().values())
        if not threads:
            self.client.close()
            raise PerpwatchError(
                f"--dask {address}: the scheduler has no workers (start some: docs/sweep.md)"
            )
        self.slots = slots or threads
        self.where = f"Dask at {address} ({len(self.client.nthreads())} workers, {threads} threads)"
        self._done = threading.Condition()

    def submit(self, setup: Setup, params: dict[str, str]) -> Any:
        future = self.client.submit(run_trial, setup, params, pure=False)
        future.add_done_callback(self._notify)
        return future

    def _notify(self, _future: Any) -> None:
        with self._done:
            self._done.notify_all()

    def wait(self, pending: list[Any]) -> list[Any]:
        with self._done:
            while True:
                done = [f for f in pending if f.done()]
                if done:
                    return done
                self._done.wait(timeout=5)  # woken by a trial's end; the timeout is a safety net

    def result(self, future: Any) -> dict[str, Any]:
        return future.result()

    def cancel(self, pending: list[Any]) -> None:
        if pending:
            self.client.cancel(pending)

    def close(self) -> None:
        self.client.close()


def make_pool(workers: int | None, dask: str | None, timeout: float = 30) -> Pool:
    """The pool ``--workers`` / ``--dask`` ask for (``workers`` None: every CPU here, or every
    thread of the Dask cluster)."""
    if dask:
        return DaskPool(dask, workers, timeout)
    workers = workers or os.cpu_count() or 1
    if workers <= 1:
        return Pool()
    return ProcessPool(workers)
