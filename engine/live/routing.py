"""Who gets an alert: the config's ``route:`` (Alertmanager's route tree, flattened), its
``notify:`` policy (``group_by``, per-severity ``repeat``, ``inhibit``) and silences.

A strategy's own ``notify:`` wins; a strategy without one goes through ``route:``: the first route
whose matchers all match gives the receivers (a route with ``continue: true`` adds its receivers
and lets the next ones match too); when none matches, the default ``receivers``. Without a
``route:`` block the default receivers are every notifier the config names, else ``console``.

Matchers compare an alert's labels ``strategy``, ``rule``, ``symbol`` and ``severity`` with a
value or a list of values (any of them); a value may end in ``*`` to match a prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from perpwatch.common.timeutil import parse_duration
from perpwatch.evaluation.events import SEVERITIES, Event

#: The labels an alert has for matchers, grouping and silences.
LABELS = ("strategy", "rule", "symbol", "severity")
#: What ``group_by`` may name: the labels and ``bar`` (the event's bar time).
GROUP_LABELS = (*LABELS, "bar")
DEFAULT_GROUP_BY = ("strategy", "symbol", "bar")
DEFAULT_RECEIVERS = ("console",)
#: The strategy name of the engine's own alerts (meta-alerts).
ENGINE = "perpwatch"


def labels_of(event: Event) -> dict[str, str]:
    """An event's labels: strategy, rule, symbol, severity."""
    return {
        "strategy": event.strategy,
        "rule": event.rule,
        "symbol": event.symbol,
        "severity": event.severity,
    }


def _values(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else (str(value),)


@dataclass(frozen=True)
class Matchers:
    """Label -> accepted values; an empty set of matchers matches everything."""

    match: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> Matchers:
        return cls(tuple((k, _values(v)) for k, v in (raw or {}).items()))

    def matches(self, labels: Mapping[str, str]) -> bool:
        for name, accepted in self.match:
            value = labels.get(name, "")
            if not any(value.startswith(a[:-1]) if a.endswith("*") else value == a for a in accepted):
                return False
        return True

    def text(self) -> str:
        """``strategy=x rule=a|b`` (``*`` when empty)."""
        return " ".join(f"{k}={'|'.join(v)}" for k, v in self.match) or "*"


@dataclass(frozen=True)
class Route:
    matchers: Matchers
    receivers: tuple[str, ...]
    cont: bool = False


@dataclass(frozen=True)
class Inhibit:
    """While ``source`` (``strategy/rule``, or a whole ``strategy``) fires for a symbol, alerts
    matching ``target`` for that symbol are not notified (they are still recorded)."""

    source: str
    target: Matchers

    @property
    def strategy(self) -> str:
        return self.source.partition("/")[0]

    @property
    def rule(self) -> str | None:
        return self.source.partition("/")[2] or None


@dataclass
class NotifyPolicy:
    """The config's ``notify:`` and ``route:`` blocks, parsed."""

    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    repeat_ms: dict[str, int] = field(default_factory=dict)  # severity -> repeat interval
    inhibit: list[Inhibit] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    default: tuple[str, ...] = DEFAULT_RECEIVERS

    @classmethod
    def from_config(
        cls, notify: Mapping[str, Any] | None, route: Mapping[str, Any] | None, configured: Iterable[str]
    ) -> NotifyPolicy:
        """From the (schema-checked) ``notify:`` and ``route:`` blocks; ``configured``: the config's
        notifier names (the default receivers when there is no ``route:``)."""
        notify, route = notify or {}, route or {}
        named = tuple(configured)
        default = tuple(route.get("receivers") or named or DEFAULT_RECEIVERS)
        return cls(
            group_by=tuple(notify.get("group_by") or DEFAULT_GROUP_BY),
            repeat_ms={sev: parse_duration(text) for sev, text in (notify.get("repeat") or {}).items()},
            inhibit=[
                Inhibit(str(item["source"]), Matchers.of(item.get("target")))
                for item in notify.get("inhibit") or ()
            ],
            routes=[
                Route(Matchers.of(r.get("match")), tuple(r["receivers"]), bool(r.get("continue", False)))
                for r in route.get("routes") or ()
            ],
            default=default,
        )

    def receivers(self, event: Event, explicit: Sequence[str] | None = None) -> list[str]:
        """The notifier names for ``event``: ``explicit`` (a strategy's ``notify:``) when given, else
        the routes, else the default receivers (in order, without repeats)."""
        if explicit is not None:
            return list(dict.fromkeys(explicit))
        labels = labels_of(event)
        out: list[str] = []
        for route in self.routes:
            if route.matchers.matches(labels):
                out += route.receivers
                if not route.cont:
                    return list(dict.fromkeys(out))
        return list(dict.fromkeys(out or self.default))

    def all_receivers(self) -> list[str]:
        """Every notifier the routes can name (what a strategy without ``notify:`` may reach)."""
        names = [*self.default, *(n for r in self.routes for n in r.receivers)]
        return list(dict.fromkeys(names))

    def repeat_for(self, severity: str, rule_repeat_ms: int | None) -> int:
        """A rule's repeat interval in ms: its own ``repeat:``, else its severity's default; 0: never."""
        if rule_repeat_ms is not None:
            return rule_repeat_ms
        return self.repeat_ms.get(severity, 0)


def check_severities(names: Iterable[str]) -> list[str]:
    """The names in ``names`` that are not severities."""
    return [n for n in names if n not in SEVERITIES]
