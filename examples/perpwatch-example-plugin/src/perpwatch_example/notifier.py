"""The ``eventfile`` notifier: one readable line per event, appended to a text file.

A line reads ``<bar time> <severity> <strategy>/<rule> <symbol> <kind>: <message>``. The engine
calls :meth:`send` for each event whose severity is at least the ``min_severity`` option (every
notifier has it); a failed write raises ``NotifierError``, and the outbox retries it later.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from perpwatch.api.interfaces import Notifier, NotifierError
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event


class EventFileNotifier(Notifier):
    """Appends one line per event to ``path``."""

    name: ClassVar[str] = "eventfile"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {"path": {"type": "string", "minLength": 1, "description": "the file to append to"}},
    }

    async def send(self, event: Event) -> None:
        line = (
            f"{format_time(event.time)} {event.severity} {event.strategy}/{event.rule} {event.symbol} "
            f"{event.kind}: {event.message}\n"
        )
        await asyncio.to_thread(self._append, line)  # file I/O off the event loop

    def _append(self, line: str) -> None:
        path = self.option("path")
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as e:
            raise NotifierError(f"eventfile: cannot append to {path}: {e.strerror or e}") from None
