"""``console``: one compact line per event on the terminal, coloured by severity on a TTY.

``2024-08-05T04:00:00Z HIGH     funding/crowded_longs BTC 4h: Funding hot | signal: long 1,000 USD``
(a resolved event has ``RESOLVED`` after the severity, a repeat ``REPEAT``).

A group of several alerts, or one with the strategy's snapshot, is a block: a title line
(``== strategy · SYMBOL · 4h · time``), the snapshot lines indented, the alerts' lines sorted by
severity, and a footer (``-- 3 firing, 1 resolved · perpwatch``).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Notification, NotifierError
from perpwatch.common.text import printable
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event

from ._notify import (
    BaseNotifier,
    group_footer,
    group_title,
    is_plain,
    is_repeat,
    is_resolved,
    notifier_schema,
    signal_text,
    where,
)

RESET = "\x1b[0m"
COLORS = {
    "info": "\x1b[37m",
    "low": "\x1b[36m",
    "medium": "\x1b[33m",
    "high": "\x1b[31m",
    "critical": "\x1b[1;97;41m",
}
RESOLVED_COLOR = "\x1b[32m"


class ConsoleNotifier(BaseNotifier):
    """Writes each event as one line to stdout or stderr."""

    name = "console"
    options_schema = notifier_schema(
        {
            "stream": {"enum": ["stdout", "stderr"], "default": "stdout"},
            "color": {
                "enum": ["auto", "always", "never"],
                "default": "auto",
                "description": "auto: colour only on a TTY and when NO_COLOR is not set.",
            },
        }
    )

    def stream(self) -> TextIO:
        """The stream to write to, looked up at each send (so redirection and capture work)."""
        return sys.stderr if self.option("stream") == "stderr" else sys.stdout

    def use_color(self, stream: TextIO) -> bool:
        mode = self.option("color")
        if mode != "auto":
            return mode == "always"
        if os.environ.get("NO_COLOR"):
            return False
        try:
            return bool(stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def render(self, event: Event, color: bool = False) -> str:
        """The event's line, without the newline."""

        def paint(text: str, code: str | None) -> str:
            return f"{code}{text}{RESET}" if color and code else text

        severity = event.severity.upper()
        pad = " " * max(0, 8 - len(severity))
        parts = [format_time(event.time), paint(severity, COLORS.get(event.severity)) + pad]
        if is_resolved(event):
            parts.append(paint("RESOLVED", RESOLVED_COLOR))
        elif is_repeat(event):
            parts.append("REPEAT")
        message = printable(event.message).strip()
        place = printable(where(event)).strip()
        parts.append(f"{place}:" if message else place)
        if message:
            parts.append(message)
        line = " ".join(parts)
        signal = signal_text(event.signal)
        return f"{line} | signal: {signal}" if signal else line

    def render_group(self, notification: Notification, color: bool = False) -> str:
        """The group's block (without the last newline); one alert without a snapshot: its line."""
        if is_plain(notification):
            return self.render(notification.first, color)
        lines = [f"== {printable(group_title(notification)).strip()}"]
        width = max((len(label) for label, _ in notification.snapshot), default=0)
        for label, text in notification.snapshot:
            head = f"{label}:".ljust(width + 2) if label else ""
            lines.append(printable(f"   {head}{text}").rstrip())
        lines += [self.render(event, color) for event in notification.events]
        lines.append(f"-- {group_footer(notification)}")
        return "\n".join(lines)

    async def deliver(self, event: Event) -> None:
        stream = self.stream()
        await self._write(stream, self.render(event, self.use_color(stream)))

    async def deliver_group(self, notification: Notification) -> None:
        stream = self.stream()
        await self._write(stream, self.render_group(notification, self.use_color(stream)))

    async def _write(self, stream: TextIO, line: str) -> None:
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:
            raise NotifierError(
                f"console: cannot write to {self.option('stream')}: {exc}", retryable=False
            ) from None


@hookimpl
def register_notifiers(register) -> None:
    register(ConsoleNotifier)
