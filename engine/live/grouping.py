"""Grouping: the outbox items due for one notifier become one :class:`Notification` per group.

A group is the alerts with the same ``group_by`` labels (default: strategy, symbol and bar) that
were queued in the same cycle (the outbox rows' ``created_at``): its members are fixed when the
cycle commits, so a retry sends the same group, and its dedupe key (:func:`dedupe_key`, derived
from the member event keys) is the same at every try. A group is delivered or failed as a whole:
its members' outbox rows are marked together, in one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from perpwatch.api.interfaces import Notification
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.evaluate import Evaluation
from perpwatch.evaluation.events import SEVERITIES, Event
from perpwatch.language.compiler import Strategy
from perpwatch.live.routing import labels_of
from perpwatch.live.state import OutboxItem

#: The order alerts are listed in: firing ones by severity (highest first), then repeats, then resolved.
_KIND_ORDER = {"fired": 0, "repeat": 1, "resolved": 2}


def dedupe_key(keys: Sequence[str]) -> str:
    """One event's own key; for several, ``group:`` and a hash of the sorted keys."""
    if len(keys) == 1:
        return keys[0]
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24]
    return f"group:{digest}"


def sort_events(events: Sequence[Event]) -> list[Event]:
    """Firing alerts by severity, highest first (then repeats), resolved ones last; stable otherwise."""

    def rank(e: Event) -> tuple[int, int]:
        sev = SEVERITIES.index(e.severity) if e.severity in SEVERITIES else len(SEVERITIES)
        return (_KIND_ORDER.get(e.kind, 1) // 2, -sev)

    return sorted(events, key=rank)


def group_values(event: Event, group_by: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The ``group_by`` labels of ``event`` (``bar`` as an ISO time)."""
    labels = labels_of(event)
    return tuple((name, format_time(event.time) if name == "bar" else labels[name]) for name in group_by)


def collect(
    items: Sequence[OutboxItem],
    group_by: Sequence[str],
    snapshot_of: Callable[[str, str, int], list[tuple[str, str]]],
    receiver: str = "",
) -> list[tuple[Notification, list[OutboxItem]]]:
    """``items`` (one notifier's, oldest first) as notifications, in the order of their oldest item.

    ``snapshot_of(strategy, symbol, bar)`` gives the snapshot lines of each (strategy, symbol, bar)
    in a group (a group spanning several shows each one's lines once)."""
    groups: dict[tuple[Any, ...], list[OutboxItem]] = {}
    for item in items:
        key = (item.created_at, group_values(item.event, group_by))
        groups.setdefault(key, []).append(item)
    out: list[tuple[Notification, list[OutboxItem]]] = []
    for (_, values), members in groups.items():
        events = sort_events([m.event for m in members])
        lines: list[tuple[str, str]] = []
        for place in dict.fromkeys((e.strategy, e.symbol, e.time) for e in events):
            for line in snapshot_of(*place):
                if line not in lines:
                    lines.append(line)
        notification = Notification(
            events=events,
            key=dedupe_key([e.key for e in events]),
            group=dict(values),
            snapshot=lines,
            receiver=receiver,
        )
        out.append((notification, members))
    return out


def snapshot_lines(strategy: Strategy, ev: Evaluation, i: int) -> list[tuple[str, str]]:
    """The strategy's ``snapshot:`` lines rendered at bar ``i`` of ``ev``: an unknown value shows as
    ``unknown``, and a line whose every value is unknown reads just ``unknown``."""
    context = {"symbol": ev.symbol, "time": format_time(int(ev.frame.times[i])), "rule": "", "severity": ""}

    def value_of(name: str) -> Any:
        return context[name] if name in context else ev.named_value(name, i)

    lines = []
    for label, template in strategy.snapshot:
        known = [name for name in template.names if name in context or value_of(name) is not None]
        lines.append((label, template.render(value_of) if known or not template.names else "unknown"))
    return lines
