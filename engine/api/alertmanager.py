"""A grouped notification as Alertmanager's webhook payload (version 4), so that anything which
consumes Alertmanager webhooks (Karma, alerta, PagerDuty bridges, n8n, …) consumes perpwatch's.

The shape (prometheus.io/docs/alerting/latest/configuration/#webhook_config)::

    {"version": "4", "groupKey": …, "truncatedAlerts": 0, "status": "firing|resolved",
     "receiver": …, "groupLabels": {…}, "commonLabels": {…}, "commonAnnotations": {…},
     "externalURL": …, "alerts": [{"status", "labels", "annotations", "startsAt", "endsAt",
     "generatorURL", "fingerprint"}, …]}

Each alert's labels are ``alertname`` (the rule), ``strategy``, ``rule``, ``symbol``,
``severity`` and ``interval``; its annotations ``summary`` (the message), ``values`` (the
condition's values), ``signal``, ``snapshot`` (the strategy's key metrics, one per line),
``event_key`` (the dedupe key of that event) and ``repeat: "true"`` on a repeat. A firing alert
ends at ``0001-01-01T00:00:00Z`` as in Alertmanager; a resolved one at its bar. The fingerprint
hashes the labels, so an alert and its resolution share it.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import Any

from perpwatch.api.notifiers import Notification
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event

VERSION = "4"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: what Alertmanager sends for "not ended"


def alert_labels(event: Event) -> dict[str, str]:
    labels = {
        "alertname": event.rule,
        "strategy": event.strategy,
        "rule": event.rule,
        "symbol": event.symbol,
        "severity": event.severity,
    }
    if event.interval:
        labels["interval"] = event.interval
    return labels


def fingerprint(labels: dict[str, str]) -> str:
    """16 hex digits identifying a label set (the same for an alert and its resolution)."""
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _value(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Real):
        f = float(value)
        return "unknown" if math.isnan(f) else f"{f:.6g}"
    return str(value)


def alert(event: Event, snapshot: str = "") -> dict[str, Any]:
    """One alert of the payload."""
    labels = alert_labels(event)
    annotations = {"summary": event.message or f"{event.rule} {event.symbol}", "event_key": event.key}
    if event.values:
        annotations["values"] = "; ".join(f"{k} = {_value(v)}" for k, v in event.values.items())
    if event.signal is not None:
        size = "unknown" if event.signal.size_usd is None else f"{event.signal.size_usd:g} USD"
        annotations["signal"] = f"{event.signal.side or 'unknown'} {size}"
    if snapshot:
        annotations["snapshot"] = snapshot
    if event.kind == "repeat":
        annotations["repeat"] = "true"
    resolved = event.kind == "resolved"
    return {
        "status": "resolved" if resolved else "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": format_time(event.time),
        "endsAt": format_time(event.time) if resolved else ZERO_TIME,
        "generatorURL": "",
        "fingerprint": fingerprint(labels),
    }


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def group_key(group: dict[str, str]) -> str:
    """Alertmanager's form: ``{}:{strategy="…", symbol="…"}`` (the route is the root)."""
    inner = ", ".join(f'{k}="{v}"' for k, v in group.items())
    return f"{{}}:{{{inner}}}"


def payload(
    notification: Notification, receiver: str = "perpwatch", external_url: str = ""
) -> dict[str, Any]:
    """The version 4 webhook payload of a grouped notification."""
    snapshot = "\n".join(f"{label}: {text}" if label else text for label, text in notification.snapshot)
    alerts = [alert(e, snapshot) for e in notification.events]
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": VERSION,
        "groupKey": group_key(notification.group),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": dict(notification.group),
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }
