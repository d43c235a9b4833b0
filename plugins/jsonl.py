"""``jsonl``: one JSON object per event (``event.to_dict()`` plus ``time_iso``) appended to a file.

Every line is whole or absent. A line is appended with ``O_APPEND`` under a lock (a thread lock,
and ``flock`` against other processes), then ``fsync``'d; if the write or the fsync fails (a full
disk, an I/O error), the file is cut back to its size before the write and a retryable
NotifierError makes the outbox try again, so a reader never sees a torn line and the retry writes
the line once.

Idempotent: an event whose key (``strategy/rule/symbol/time/kind``, ``Event.key``) is already in
the file is not written again, so a resend after a crash between writing and recording the
delivery leaves exactly one line. The keys already in the file are read once, at the first send;
a last line without its newline (a crash mid-write, or an older version on a full disk) is
repaired then: cut off if it is not a whole JSON object — it is not a delivered event, and the
outbox resends it — or given its newline if it is.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import NotifierError, PluginContext
from perpwatch.evaluation.events import Event

from ._notify import BaseNotifier, dumps, event_record, notifier_schema

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: the thread lock alone
    fcntl = None  # type: ignore[assignment]

#: OS errors that retrying cannot fix.
_PERMANENT = (errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EROFS, errno.ENAMETOOLONG)


class JsonlNotifier(BaseNotifier):
    """Appends events to ``path`` (parent directories are created)."""

    name = "jsonl"
    options_schema = notifier_schema(
        {"path": {"type": "string", "minLength": 1, "description": "File to append to; ~ is expanded."}},
        required=["path"],
    )

    def __init__(self, options: dict[str, Any] | None = None, ctx: PluginContext | None = None):
        super().__init__(options, ctx)
        self.path = Path(os.path.expanduser(self.options["path"]))
        self._lock = threading.Lock()
        # keys of the events in the file, read (and a torn last line repaired) at the first send;
        # None again after a failure that may have left a torn line
        self._keys: set[str] | None = None

    async def deliver(self, event: Event) -> None:
        line = (dumps(event_record(event)) + "\n").encode()
        await asyncio.to_thread(self._append, line, event.key)

    def _append(self, data: bytes, key: str) -> None:
        with self._lock:
            try:
                with _locked(self.path) as fd:
                    if self._keys is None:
                        self._keys = _repair_and_read_keys(fd)
                    if key in self._keys:
                        return
                    _append_whole(fd, data)
                    self._keys.add(key)
            except OSError as exc:
                self._keys = None  # read the file again (and repair it) at the next send
                raise NotifierError(
                    f"jsonl: cannot append to {self.path}: {exc.strerror or exc}",
                    retryable=exc.errno not in _PERMANENT,
                ) from None


@contextmanager
def _locked(path: Path) -> Iterator[int]:
    """``path`` opened for appending (created with its directories), under an exclusive ``flock``."""
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        if created:
            _fsync_dir(path.parent)
        yield fd
    finally:
        os.close(fd)  # releases the flock


def _append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` and fsync it; on any failure cut the file back to its size before, so no part
    of ``data`` stays (if even the cut fails, the next send finds the torn line and repairs it)."""
    start = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        try:
            os.ftruncate(fd, start)
            os.fsync(fd)
        except OSError:
            pass
        raise


def _repair_and_read_keys(fd: int) -> set[str]:
    """The event keys of the whole lines in the file (unparsable lines are skipped).

    A last line without its newline is cut off, unless it is a whole JSON record (only its newline
    is missing), which gets its newline and counts.
    """
    keys: set[str] = set()
    offset = 0
    tail: bytes = b""
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
        for raw in fh:
            if not raw.endswith(b"\n"):
                tail = raw
                break
            offset += len(raw)
            key = _key_of(raw)
            if key is not None:
                keys.add(key)
    if tail:
        key = _key_of(tail)
        if key is None:
            os.ftruncate(fd, offset)
        else:
            os.write(fd, b"\n")
            keys.add(key)
        os.fsync(fd)
    return keys


def _key_of(raw: bytes) -> str | None:
    """The event key of one line, or None when it is not a JSON event record."""
    try:
        rec = json.loads(raw)
        return f"{rec['strategy']}/{rec['rule']}/{rec['symbol']}/{rec['time']}/{rec['kind']}"
    except (ValueError, KeyError, TypeError):
        return None


def _fsync_dir(path: Path) -> None:
    """Make a new file's directory entry durable (where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@hookimpl
def register_notifiers(register) -> None:
    register(JsonlNotifier)
