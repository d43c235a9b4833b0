"""Notifiers: what delivers events to people and services."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from perpwatch.api.plugin import Plugin, PluginError
from perpwatch.evaluation.events import SEVERITIES, Event, severity_rank

#: The option every notifier takes, merged into each notifier's ``options_schema``.
MIN_SEVERITY_OPTION: dict[str, Any] = {
    "enum": list(SEVERITIES),
    "default": "info",
    "description": "Lowest severity this notifier receives.",
}


@dataclass
class Notification:
    """One grouped message: the alerts of one group (by default one strategy, symbol and bar).

    ``events`` are sorted by severity, highest first, resolved ones last; ``snapshot`` is the
    strategy's key metrics at the group's bar as (label, text) lines (label "" for a plain line);
    ``group`` holds the ``group_by`` labels and their values; ``key`` is the dedupe key, derived
    from the member events' keys (a single event's own key when it is alone), stable across retries;
    ``receiver`` is the notifier instance's name in the config (what it is delivered to).
    """

    events: list[Event]
    key: str
    group: dict[str, str] = field(default_factory=dict)
    snapshot: list[tuple[str, str]] = field(default_factory=list)
    receiver: str = ""

    @property
    def first(self) -> Event:
        """The most severe alert (what a one-line title shows)."""
        return self.events[0]

    @property
    def firing(self) -> list[Event]:
        """The alerts still firing (fired and repeated ones)."""
        return [e for e in self.events if e.kind != "resolved"]

    @property
    def resolved(self) -> list[Event]:
        return [e for e in self.events if e.kind == "resolved"]


class NotifierError(PluginError):
    """A notifier could not deliver; the outbox retries later (``retry_after`` seconds if known)."""

    def __init__(self, message: str, *, retryable: bool | None = None, retry_after: float | None = None):
        super().__init__(message, retryable=retryable)
        self.retry_after = retry_after


def with_min_severity(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the ``min_severity`` option first among its properties (a new dict)."""
    properties = schema.get("properties", {})
    return {**schema, "properties": {"min_severity": MIN_SEVERITY_OPTION, **properties}}


class Notifier(Plugin, ABC):
    """Delivers events; raise NotifierError to have the outbox retry.

    Every notifier takes a ``min_severity`` option: the base class adds it to each subclass's
    ``options_schema``, and :meth:`accepts` routes by it.
    """

    options_schema: ClassVar[dict[str, Any]] = with_min_severity(Plugin.options_schema)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "min_severity" not in cls.options_schema.get("properties", {}):
            cls.options_schema = with_min_severity(cls.options_schema)

    @property
    def min_severity(self) -> str:
        """The lowest severity this notifier receives (the ``min_severity`` option)."""
        return str(self.option("min_severity"))

    def accepts(self, event: Event) -> bool:
        """Whether this notifier takes ``event``: its severity is ``min_severity`` or above.

        An event with an unknown severity (or a notifier with an unknown ``min_severity``) is
        accepted rather than lost.
        """
        try:
            return severity_rank(event.severity) >= severity_rank(self.min_severity)
        except ValueError:
            return True

    @abstractmethod
    async def send(self, event: Event) -> None:
        """Deliver ``event``; raise NotifierError when it could not be delivered."""

    async def send_group(self, notification: Notification) -> None:
        """Deliver a grouped notification; raise NotifierError when it could not be delivered.

        This default sends each member event with :meth:`send`, so a notifier that knows nothing of
        groups still receives every alert; the built-in notifiers render the group as one message."""
        for event in notification.events:
            await self.send(event)
