"""``jsonl``: one JSON object per event (``event.to_dict()`` plus ``time_iso``) appended to a file.

Each line is written with one ``O_APPEND`` write under a lock, then ``fsync``'d, so a line is
either wholly on disk or absent, and concurrent sends never interleave.

Idempotent: an event whose key (``strategy/rule/symbol/time/kind``, ``Event.key``) is already in
the file is not written again, so a resend after a crash between writing and recording the
delivery leaves exactly one line. The keys already in the file are read once, at the first send.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import NotifierError, PluginContext
from perpwatch.evaluation.events import Event

from ._notify import BaseNotifier, dumps, event_record, notifier_schema

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
        self._keys: set[str] | None = None  # keys of the events in the file, read at the first send

    async def deliver(self, event: Event) -> None:
        line = (dumps(event_record(event)) + "\n").encode()
        await asyncio.to_thread(self._append, line, event.key)

    def _append(self, data: bytes, key: str) -> None:
        with self._lock:
            try:
                if self._keys is None:
                    self._keys = _written_keys(self.path)
                if key in self._keys:
                    return
                self._write(data)
                self._keys.add(key)
            except OSError as exc:
                raise NotifierError(
                    f"jsonl: cannot append to {self.path}: {exc.strerror or exc}",
                    retryable=exc.errno not in _PERMANENT,
                ) from None

    def _write(self, data: bytes) -> None:
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)


def _written_keys(path: Path) -> set[str]:
    """The event keys of the lines already in ``path`` (unparsable lines are skipped)."""
    keys: set[str] = set()
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; a missing file has no keys
    except FileNotFoundError:
        return keys
    with fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
                keys.add(f"{rec['strategy']}/{rec['rule']}/{rec['symbol']}/{rec['time']}/{rec['kind']}")
            except (ValueError, KeyError, TypeError):
                continue
    return keys


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
