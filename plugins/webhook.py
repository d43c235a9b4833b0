"""``webhook``: an HTTP request per grouped notification, as JSON; ``format: raw | event | slack | discord``.

raw is Alertmanager's webhook payload, version 4 (:mod:`perpwatch.api.alertmanager`: ``status``,
``groupKey``, ``commonLabels``, ``alerts[]`` …), one request per group; event is the older
one-request-per-event record (``event.to_dict()`` plus ``time_iso``); slack is an incoming-webhook
message (``text`` fallback plus Block Kit ``blocks``); discord is an execute-webhook message
(``content`` plus one embed) within Discord's limits, with mentions disabled. Slack and Discord
render a group as one message (snapshot, alerts by severity, footer); the ``slack`` and
``discord`` notifiers are this one with the format fixed.
2xx is delivered; 408, 429 (``Retry-After`` honoured) and 5xx, timeouts and connection errors are
retryable; any other status is not. Errors show the URL as ``scheme://host/***`` only: Slack and
Discord webhook URLs carry their credential in the path, so ``url`` and ``headers`` are secret
options (``"x-secret": true``): their values, and the URL's path, query and token-like segments,
are redacted wherever they appear, also from a server's answer that quotes the request path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from perpwatch.api import alertmanager
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Notification, PluginContext
from perpwatch.common.retry_after import retry_after_seconds
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event

from ._notify import (
    TIMEOUT_OPTION,
    HttpNotifier,
    clip,
    clip_atoms,
    event_key,
    event_record,
    format_value,
    group_footer,
    group_title,
    is_plain,
    is_resolved,
    label,
    mark,
    notifier_schema,
    short_url,
    signal_text,
    u16len,
    where,
)

# --- Slack -------------------------------------------------------------------------------------

SLACK_TEXT = 3000  # section text, and our cap on the fallback text
SLACK_HEADER = 150  # header block plain_text
SLACK_FIELD = 2000  # each section field


def slack_atoms(text: str) -> list[str]:
    """``text`` escaped for Slack mrkdwn (``&``, ``<``, ``>``), one atom per character."""
    table = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
    return [table.get(ch, ch) for ch in text]


def slack_escape(text: str) -> str:
    return "".join(slack_atoms(text))


def slack_payload(event: Event) -> dict[str, Any]:
    """A Slack incoming-webhook message: fallback ``text`` and header/section/context blocks."""
    head = f"{mark(event)} {label(event)}"
    place = where(event, " · ")
    message = event.message or place
    fields = [
        ("Strategy", event.strategy),
        ("Rule", event.rule),
        ("Symbol", event.symbol),
        ("Severity", event.severity),
    ]
    signal = signal_text(event.signal)
    if signal:
        fields.append(("Signal", signal))
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": clip(f"{head} · {place}", SLACK_HEADER), "emoji": True},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": clip_atoms(slack_atoms(message), SLACK_TEXT)}},
        {
            "type": "section",
            "fields": [
                {
                    "type": "mrkdwn",
                    "text": clip_atoms([f"*{name}*\n", *slack_atoms(value or "-")], SLACK_FIELD),
                }
                for name, value in fields
            ],
        },
    ]
    if event.values:
        lines = "\n".join(f"{name} = {format_value(value)}" for name, value in event.values.items())
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": clip_atoms(slack_atoms(lines), SLACK_TEXT)},
            }
        )
    context = " · ".join(p for p in (format_time(event.time), event.interval, "perpwatch") if p)
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": clip_atoms(slack_atoms(f"{head} {place}: {message}"), SLACK_TEXT), "blocks": blocks}


def _alert_line(event: Event, many_symbols: bool) -> str:
    """One alert of a group: ``🟠 HIGH oi_high: message | signal: …``."""
    line = f"{mark(event)} {label(event)} {event.rule}"
    if many_symbols:
        line += f" {event.symbol}"
    if event.message:
        line += f": {event.message}"
    signal = signal_text(event.signal)
    return f"{line} | signal: {signal}" if signal else line


def _many_symbols(notification: Notification) -> bool:
    return len({e.symbol for e in notification.events}) > 1


def slack_group_payload(notification: Notification) -> dict[str, Any]:
    """A group as one Slack message: header, snapshot, the alerts by severity, footer."""
    if is_plain(notification):
        return slack_payload(notification.first)
    first = notification.first
    head = f"{mark(first)} {label(first)} · {group_title(notification)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(head, SLACK_HEADER), "emoji": True}}
    ]
    if notification.snapshot:
        atoms: list[str] = []
        for i, (name, text) in enumerate(notification.snapshot):
            atoms += ["\n"] if i else []
            atoms += ([f"*{slack_escape(name)}:* "] if name else []) + slack_atoms(text)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip_atoms(atoms, SLACK_TEXT)}})
    many = _many_symbols(notification)
    lines = "\n".join(_alert_line(e, many) for e in notification.events)
    blocks.append(
        {"type": "section", "text": {"type": "mrkdwn", "text": clip_atoms(slack_atoms(lines), SLACK_TEXT)}}
    )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": group_footer(notification)}]})
    fallback = f"{head}: " + "; ".join(_alert_line(e, many) for e in notification.events)
    return {"text": clip_atoms(slack_atoms(fallback), SLACK_TEXT), "blocks": blocks}


# --- Discord -----------------------------------------------------------------------------------

DISCORD_CONTENT = 2000
DISCORD_TITLE = 256
DISCORD_DESCRIPTION = 4096
DISCORD_FIELD_NAME = 256
DISCORD_FIELD_VALUE = 1024
DISCORD_FIELDS = 25
DISCORD_EMBED_TOTAL = 6000
DISCORD_FOOTER = "perpwatch"

DISCORD_COLORS = {
    "info": 0x95A5A6,
    "low": 0x3498DB,
    "medium": 0xF1C40F,
    "high": 0xE67E22,
    "critical": 0xE74C3C,
}
DISCORD_RESOLVED_COLOR = 0x2ECC71
_DISCORD_SPECIAL = set("\\*_~`|>#-[]()")
_FIXED_VALUE = 256  # strategy, rule, symbol...: short by nature, so the embed total always fits
_RESERVE = 64  # room kept for the "N more values" field


def discord_atoms(text: str) -> list[str]:
    """``text`` with Discord markdown characters backslash-escaped, one atom per character."""
    return [f"\\{ch}" if ch in _DISCORD_SPECIAL else ch for ch in text]


def discord_escape(text: str) -> str:
    return "".join(discord_atoms(text))


def _discord_field(name: str, value: str, limit: int = DISCORD_FIELD_VALUE) -> dict[str, Any]:
    return {
        "name": clip_atoms(discord_atoms(name or "-"), DISCORD_FIELD_NAME),
        "value": clip_atoms(discord_atoms(value or "-"), limit),
        "inline": True,
    }


def _field_size(field: Mapping[str, Any]) -> int:
    return u16len(field["name"]) + u16len(field["value"])


def discord_payload(event: Event) -> dict[str, Any]:
    """A Discord execute-webhook message: a short ``content`` line and one embed, within limits."""
    resolved = is_resolved(event)
    content = clip_atoms(
        [f"{mark(event)} **{label(event)}** ", *discord_atoms(where(event, " · "))], DISCORD_CONTENT
    )
    title = clip_atoms(discord_atoms(f"{label(event)} · {event.rule} · {event.symbol}"), DISCORD_TITLE)
    fixed = [
        ("Strategy", event.strategy),
        ("Rule", event.rule),
        ("Symbol", event.symbol),
        ("Severity", event.severity),
    ]
    if event.interval:
        fixed.append(("Interval", event.interval))
    signal = signal_text(event.signal)
    if signal:
        fixed.append(("Signal", signal))
    fields = [_discord_field(n, v, _FIXED_VALUE) for n, v in fixed]
    budget = DISCORD_EMBED_TOTAL - u16len(title) - len(DISCORD_FOOTER) - sum(map(_field_size, fields))
    room = min(DISCORD_DESCRIPTION, budget - (_RESERVE if event.values else 0))
    description = clip_atoms(discord_atoms(event.message or where(event, " · ")), room)
    budget -= u16len(description)
    fields.extend(_value_fields(event.values.items(), DISCORD_FIELDS - len(fields), budget))
    return {
        "content": content,
        "embeds": [
            {
                "title": title,
                "description": description,
                "color": DISCORD_RESOLVED_COLOR if resolved else DISCORD_COLORS.get(event.severity, 0x95A5A6),
                "timestamp": format_time(event.time),
                "fields": fields,
                "footer": {"text": DISCORD_FOOTER},
            }
        ],
        "allowed_mentions": {"parse": []},
    }


def _value_fields(values: Iterable[tuple[str, Any]], slots: int, budget: int) -> list[dict[str, Any]]:
    """Fields for the condition values that fit ``slots`` and ``budget``, then one saying how many did not."""
    values = list(values)
    out: list[dict[str, Any]] = []
    for i, (name, value) in enumerate(values):
        field = _discord_field(name, format_value(value))
        last = i == len(values) - 1
        room = slots - len(out) - (0 if last else 1)
        cost = _field_size(field) + (0 if last else _RESERVE)
        if room < 1 or cost > budget:
            more = len(values) - i
            out.append(_discord_field("…", f"{more} more value{'s' if more > 1 else ''}"))
            break
        out.append(field)
        budget -= _field_size(field)
    return out


def discord_group_payload(notification: Notification) -> dict[str, Any]:
    """A group as one Discord message: content line, one embed (snapshot, alerts, footer)."""
    if is_plain(notification):
        return discord_payload(notification.first)
    first = notification.first
    title = clip_atoms(discord_atoms(group_title(notification)), DISCORD_TITLE)
    content = clip_atoms(
        [f"{mark(first)} **{label(first)}** ", *discord_atoms(group_title(notification))], DISCORD_CONTENT
    )
    atoms: list[str] = []
    for name, text in notification.snapshot:
        atoms += ([f"**{discord_escape(name)}:** "] if name else []) + discord_atoms(text) + ["\n"]
    if atoms:
        atoms.append("\n")
    many = _many_symbols(notification)
    for i, event in enumerate(notification.events):
        atoms += (["\n"] if i else []) + discord_atoms(_alert_line(event, many))
    footer = group_footer(notification)
    room = min(DISCORD_DESCRIPTION, DISCORD_EMBED_TOTAL - u16len(title) - u16len(footer))
    color = DISCORD_COLORS.get(first.severity, 0x95A5A6)
    if not notification.firing:
        color = DISCORD_RESOLVED_COLOR
    return {
        "content": content,
        "embeds": [
            {
                "title": title,
                "description": clip_atoms(atoms, room),
                "color": color,
                "timestamp": format_time(first.time),
                "footer": {"text": footer},
            }
        ],
        "allowed_mentions": {"parse": []},
    }


# --- the notifier ------------------------------------------------------------------------------

FORMATS = {"raw": event_record, "event": event_record, "slack": slack_payload, "discord": discord_payload}
GROUP_FORMATS = {
    "raw": alertmanager.payload,
    "slack": slack_group_payload,
    "discord": discord_group_payload,
}


class WebhookNotifier(HttpNotifier):
    """Sends each grouped notification (``format: event``: each event) as JSON to ``url``."""

    fixed_format: str | None = None  # the slack and discord notifiers: their one format

    name = "webhook"
    options_schema = notifier_schema(  # webhook URLs and header values are credentials: x-secret
        {
            "url": {
                "type": "string",
                "pattern": "^https?://",
                "x-secret": True,
                "description": "Endpoint (http or https); secret: shown as scheme://host/***.",
            },
            "format": {"enum": list(FORMATS), "default": "raw"},
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "default": {},
                "x-secret": True,
                "description": "Extra HTTP headers; their values are secret.",
            },
            "timeout": TIMEOUT_OPTION,
            "method": {"enum": ["POST", "PUT", "PATCH"], "default": "POST"},
        },
        required=["url"],
    )

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None):
        super().__init__(options, ctx)
        self.format: str = self.fixed_format or self.option("format")
        self.method: str = self.option("method") or "POST"  # slack, discord: no method option
        self.shown = f"{self.method} {short_url(self.secret('url'))}"

    def payload(self, event: Event) -> dict[str, Any]:
        """The JSON body for ``event`` in this notifier's format."""
        return FORMATS[self.format](event)

    def group_payload(self, notification: Notification) -> dict[str, Any]:
        """The JSON body for a grouped notification (raw: Alertmanager's payload, the notifier
        instance's name as its receiver)."""
        if self.format == "raw":
            return alertmanager.payload(notification, receiver=notification.receiver or self.name)
        return GROUP_FORMATS[self.format](notification)

    async def deliver_group(self, notification: Notification) -> None:
        if self.format == "event":  # one request per event, as before grouping
            for event in notification.events:
                with event_key(event.key):
                    await self.deliver(event)
            return
        await self._post(self.group_payload(notification))

    async def deliver(self, event: Event) -> None:
        await self._post(self.payload(event))

    async def _post(self, body: dict[str, Any]) -> None:
        url, headers = self.secret("url"), self.secret("headers") if "headers" in self.options else {}
        response = await self.request(self.method, url, body, self.shown, headers)
        if response.is_success:
            return
        error = self.status_error(response, self.shown, self.body_snippet(response))
        if response.status_code == 429 and error.retry_after is None:
            error.retry_after = _discord_retry_after(response)
        raise error


def _discord_retry_after(response: httpx.Response) -> float | None:
    """Discord also gives ``retry_after`` (seconds) in the JSON body of a 429."""
    try:
        data = response.json()
    except ValueError:
        return None
    return retry_after_seconds(data.get("retry_after"), 0.0) if isinstance(data, dict) else None


@hookimpl
def register_notifiers(register) -> None:
    register(WebhookNotifier)
