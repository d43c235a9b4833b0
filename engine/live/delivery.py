"""Delivery: after a cycle commits, each notifier gets what is due in the outbox, oldest first, in its
own task; a retryable failure (with backoff, or the notifier's ``retry_after``) blocks that notifier
until its next try, so one notifier being down never holds up another.

What is due is grouped (:mod:`perpwatch.live.grouping`): one notification per group, sent with
``Notifier.send_group``; its members' outbox rows are marked delivered, or failed, together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from perpwatch.api.interfaces import Notification, Notifier, NotifierError
from perpwatch.common.clock import Clock
from perpwatch.common.timeutil import format_time
from perpwatch.live.alertstate import AlertState
from perpwatch.live.grouping import collect
from perpwatch.live.jobs import RunnerOptions
from perpwatch.live.routing import DEFAULT_GROUP_BY
from perpwatch.live.state import OutboxItem, StateStore

if TYPE_CHECKING:
    from perpwatch.live.meta import MetaAlerts

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner

DELIVERY_BATCH = 200  # outbox items one delivery round takes per notifier


class Delivery:
    """One delivery task at a time per notifier, from the outbox in the state store.

    ``db`` is the lock the cycle holds while it writes; ``done`` is set whenever a task ends."""

    def __init__(
        self,
        notifiers: dict[str, Notifier],
        store: StateStore,
        clock: Clock,
        options: RunnerOptions,
        redact: Callable[[str], str],
        db: asyncio.Lock,
        done: asyncio.Event,
        group_by: Sequence[str] = DEFAULT_GROUP_BY,
        meta: MetaAlerts | None = None,
    ):
        self.group_by = tuple(group_by)
        self.meta = meta  # told of each notifier's failures and recoveries
        self.alert_state = meta.state if meta is not None else AlertState(store)
        self.notifiers = notifiers
        self.store = store
        self.clock = clock
        self.options = options
        self.redact = redact
        self.db = db
        self.done = done
        self.tasks: dict[str, asyncio.Task] = {}
        self.blocked: dict[str, float] = {}  # notifier -> no tries before this time

    def kick(self) -> None:
        """Start a delivery task for each idle notifier with something due."""
        if self.store.file_problem():  # the database is gone: deliver nothing more (the loop stops)
            return
        now = self.clock.time()
        for name in self.notifiers:
            task = self.tasks.get(name)
            if task is not None and not task.done():
                continue
            if self.blocked.get(name, 0.0) > now:
                continue
            due = self.store.next_due(name)
            if due is not None and due <= now:
                self.tasks[name] = asyncio.create_task(self._deliver(name), name=f"deliver-{name}")

    def next_delivery(self) -> float | None:
        """When an idle notifier next has something to try."""
        times = []
        for name in self.notifiers:
            task = self.tasks.get(name)
            if task is not None and not task.done():
                continue
            due = self.store.next_due(name)
            if due is not None:
                times.append(max(due, self.blocked.get(name, 0.0)))
        return min(times, default=None)

    async def flush(self, timeout: float | None = None) -> None:
        """Deliver everything due now (not what waits for a retry), within ``timeout`` seconds."""
        deadline = time.monotonic() + (self.options.notify_timeout * 2 if timeout is None else timeout)
        for _ in range(5):  # a few rounds: a task may end just before another item comes due
            self.kick()
            running = [t for t in self.tasks.values() if not t.done()]
            left = deadline - time.monotonic()
            if not running or left <= 0:
                break
            await asyncio.wait(running, timeout=left)

    async def _deliver(self, name: str) -> None:
        """Send what is due for one notifier, group by group, oldest first; stop at a retryable failure."""
        notifier = self.notifiers[name]
        tried: set[int] = set()  # each item once per task, whatever happens to its mark
        try:
            while True:
                async with self.db:
                    groups = self._batch(name, tried)
                if not groups:
                    return
                for notification, members in groups:
                    if self.store.file_problem():  # gone: its delivery could never be recorded
                        return
                    tried.update(m.event_id for m in members)
                    error = await self._send(notifier, notification)
                    now = self.clock.time()
                    async with self.db:
                        with self.store.transaction():  # a group is delivered, or failed, as a whole
                            if error is None:
                                for m in members:
                                    self.store.mark_delivered(m.event_id, name, now)
                            else:
                                for m in members:
                                    next_try = self.store.mark_failed(
                                        m.event_id,
                                        name,
                                        error.args[0],
                                        now,
                                        error.retry_after,
                                        error.retryable,
                                    )
                        if self.meta is not None:
                            attempts = max(m.attempts for m in members) + 1
                            self.meta.delivery(
                                name, error is None, attempts, error.args[0] if error else "", now
                            )
                    if error is None:
                        continue
                    log.warning(
                        "notifier %s: %s not delivered (try %d): %s; next try %s",
                        name,
                        notification.key,
                        members[0].attempts + 1,
                        error.args[0],
                        format_time(int(next_try * 1000)),
                    )
                    if error.retryable:
                        self.blocked[name] = next_try
                        return
        finally:
            self.done.set()

    def _batch(self, name: str, tried: set[int]) -> list[tuple[Notification, list[OutboxItem]]]:
        """The next due groups of ``name``, whole: a batch that ends inside a group leaves that
        group to the next round, or grows until the group is complete when it is the only one."""
        limit = DELIVERY_BATCH + len(tried)
        while True:
            due = self.store.due(self.clock.time(), name, limit)
            items = [item for item in due if item.event_id not in tried]
            groups = collect(items, self.group_by, self.alert_state.snapshot, name)
            if len(due) < limit:
                return groups
            if len(groups) > 1:
                return groups[:-1]
            limit *= 2

    async def _send(self, notifier: Notifier, notification: Notification) -> NotifierError | None:
        timeout = self.options.notify_timeout
        try:
            await asyncio.wait_for(notifier.send_group(notification), timeout)
        except NotifierError as e:
            return NotifierError(self.redact(str(e)), retryable=e.retryable, retry_after=e.retry_after)
        except TimeoutError:
            return NotifierError(f"timed out after {timeout:g}s", retryable=True)
        except Exception as e:
            return NotifierError(self.redact(f"unexpected {type(e).__name__}: {e}"), retryable=False)
        return None
