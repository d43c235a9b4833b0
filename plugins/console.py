"""``console``: one compact line per event on the terminal, coloured by severity on a TTY.

``2024-08-05T04:00:00Z HIGH     funding/crowded_longs BTC 4h: Funding hot | signal: long 1,000 USD``
(a resolved event has ``RESOLVED`` after the severity).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import NotifierError
from perpwatch.common.text import printable
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event

from ._notify import BaseNotifier, is_resolved, notifier_schema, signal_text, where

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
        message = printable(event.message).strip()
        place = printable(where(event)).strip()
        parts.append(f"{place}:" if message else place)
        if message:
            parts.append(message)
        line = " ".join(parts)
        signal = signal_text(event.signal)
        return f"{line} | signal: {signal}" if signal else line

    async def deliver(self, event: Event) -> None:
        stream = self.stream()
        line = self.render(event, self.use_color(stream))
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
