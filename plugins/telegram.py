"""``telegram``: Bot API ``sendMessage`` with MarkdownV2 escaping, splitting and ``retry_after``.

Text is escaped per the Bot API's MarkdownV2 rules (every ``_*[]()~`>#+-=|{}.!`` and backslash
gets a backslash). A message longer than 4096 UTF-16 units (counted before entity parsing, so it
always fits after) is split into several, at a line break or space where possible and never inside
an escape sequence; if a later part fails, the retry resumes after the parts already delivered.
The token never appears in errors, logs, ``repr`` or ``options``: the URL is shown as ``bot***``.

A group (several alerts, or one with the strategy's snapshot) is one message: the most severe
mark and level with the symbol and interval, the strategy and bar, the snapshot lines (labels in
bold), the alerts sorted by severity (one line each: mark, level, rule, message, signal) and a
footer; split like any long message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Notification, NotifierError, PluginContext
from perpwatch.common.retry_after import retry_after_seconds
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event

from ._notify import (
    TIMEOUT_OPTION,
    HttpNotifier,
    format_value,
    group_footer,
    is_plain,
    is_resolved,
    label,
    mark,
    notifier_schema,
    signal_text,
    u16len,
)

MAX_LENGTH = 4096
MDV2_SPECIAL = frozenset("_*[]()~`>#+-=|{}.!\\")
_MAX_PENDING = 1000  # events whose multi-part delivery is remembered for resuming


def mdv2_atoms(text: str) -> list[str]:
    """``text`` escaped for MarkdownV2, one atom (a character or its escape) per character."""
    return [f"\\{ch}" if ch in MDV2_SPECIAL else ch for ch in text]


def escape_markdown_v2(text: str) -> str:
    """``text`` with every MarkdownV2 special character (and backslash) escaped."""
    return "".join(mdv2_atoms(text))


def render_atoms(event: Event, markdown: bool = True) -> list[str]:
    """The message for ``event`` as atoms that splitting never cuts (escapes, the bold label)."""
    esc = mdv2_atoms if markdown else list
    head = f"*{label(event)}*" if markdown else label(event)
    place = " · ".join(p for p in (event.symbol, event.interval) if p)
    if is_resolved(event):
        place += f" · was {event.severity}"
    atoms = [mark(event), " ", head, *esc(f" · {place}\n{event.strategy} / {event.rule}")]
    if event.message:
        atoms += esc("\n" + event.message)
    signal = signal_text(event.signal)
    if signal:
        atoms += esc(f"\nSignal: {signal}")
    if event.values:
        atoms += esc("\n\n" + "\n".join(f"{k} = {format_value(v)}" for k, v in event.values.items()))
    atoms += esc(f"\n\n{format_time(event.time)}")
    return atoms


def render_group_atoms(notification: Notification, markdown: bool = True) -> list[str]:
    """A grouped notification as atoms: head, snapshot, the alerts by severity, footer."""
    if is_plain(notification):
        return render_atoms(notification.first, markdown)
    esc = mdv2_atoms if markdown else list

    def bold(text: str) -> list[str]:
        return ["*", *esc(text), "*"] if markdown else list(text)

    first = notification.first
    symbols = sorted({e.symbol for e in notification.events})
    place = " · ".join(p for p in (", ".join(symbols), first.interval) if p)
    times = sorted({e.time for e in notification.events})
    when = format_time(times[0]) if len(times) == 1 else f"{format_time(times[0])} … {format_time(times[-1])}"
    strategies = ", ".join(sorted({e.strategy for e in notification.events}))
    atoms = [mark(first), " ", *bold(label(first)), *esc(f" · {place}\n{strategies} · {when}")]
    if notification.snapshot:
        atoms += esc("\n")
        for name, text in notification.snapshot:
            atoms += esc("\n")
            if name:
                atoms += [*bold(f"{name}:"), " "]
            atoms += esc(text)
    atoms += esc("\n")
    for event in notification.events:
        atoms += [*esc("\n"), mark(event), " ", *bold(label(event)), *esc(f" {event.rule}")]
        if len(symbols) > 1:
            atoms += esc(f" {event.symbol}")
        if event.message:
            atoms += esc(f": {event.message}")
        signal = signal_text(event.signal)
        if signal:
            atoms += esc(f" | signal: {signal}")
    atoms += esc(f"\n\n{group_footer(notification)}")
    return atoms


def split_atoms(atoms: list[str], limit: int = MAX_LENGTH) -> list[str]:
    """Join ``atoms`` into texts of at most ``limit`` UTF-16 units, cutting only between atoms.

    A cut goes after the last line break in the second half of the text, else after the last
    space there, else at the limit. Parts that are only whitespace are dropped.
    """
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for atom in atoms:
        n = u16len(atom)
        while current and size + n > limit:
            k = _cut(current)
            parts.append("".join(current[:k]))
            current = current[k:]
            size = sum(u16len(a) for a in current)
        current.append(atom)
        size += n
    if current:
        parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _cut(atoms: list[str]) -> int:
    half = len(atoms) // 2
    for sep in ("\n", " "):
        for i in range(len(atoms) - 1, half - 1, -1):
            if atoms[i] == sep:
                return i + 1
    return len(atoms)


class TelegramNotifier(HttpNotifier):
    """Sends each event to one chat through a Telegram bot."""

    name = "telegram"
    options_schema = notifier_schema(
        {
            "token": {
                "type": "string",
                "pattern": "^[A-Za-z0-9:_-]+$",
                "x-secret": True,
                "description": "Bot token from @BotFather (secret).",
            },
            "chat_id": {
                "type": ["integer", "string"],
                "minLength": 1,
                "description": "Chat id or @channelname.",
            },
            "base_url": {"type": "string", "pattern": "^https?://", "default": "https://api.telegram.org"},
            "parse_mode": {
                "enum": ["MarkdownV2", "none"],
                "default": "MarkdownV2",
                "description": "none sends plain text (no escaping, no bold).",
            },
            "disable_notification": {"type": "boolean", "default": False},
            "timeout": TIMEOUT_OPTION,
        },
        required=["token", "chat_id"],
    )

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None):
        super().__init__(options, ctx)
        self.chat_id: int | str = self.options["chat_id"]
        self.base_url: str = self.option("base_url").rstrip("/")
        self.markdown: bool = self.option("parse_mode") == "MarkdownV2"
        self.disable_notification: bool = self.option("disable_notification")
        self.shown = f"POST {self.base_url}/bot***/sendMessage"
        self._delivered: dict[str, int] = {}  # event key -> parts already sent

    def messages(self, event: Event) -> list[str]:
        """The texts ``sendMessage`` gets for ``event`` (one unless it is long)."""
        return split_atoms(render_atoms(event, self.markdown))

    def group_messages(self, notification: Notification) -> list[str]:
        """The texts ``sendMessage`` gets for a grouped notification (one unless it is long)."""
        return split_atoms(render_group_atoms(notification, self.markdown))

    def payload(self, text: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"chat_id": self.chat_id, "text": text}
        if self.markdown:
            payload["parse_mode"] = "MarkdownV2"
        payload["disable_notification"] = self.disable_notification
        return payload

    async def deliver(self, event: Event) -> None:
        await self._send_parts(event.key, self.messages(event))

    async def deliver_group(self, notification: Notification) -> None:
        await self._send_parts(notification.key, self.group_messages(notification))

    async def _send_parts(self, key: str, texts: list[str]) -> None:
        """Send ``texts`` in order, resuming a retry after the parts already delivered."""
        for i in range(self._delivered.get(key, 0), len(texts)):
            where = f" (part {i + 1} of {len(texts)})" if len(texts) > 1 else ""
            await self._send_text(texts[i], where)
            self._remember(key, i + 1)
        self._delivered.pop(key, None)

    def _remember(self, key: str, parts: int) -> None:
        self._delivered.pop(key, None)
        self._delivered[key] = parts
        while len(self._delivered) > _MAX_PENDING:
            del self._delivered[next(iter(self._delivered))]

    async def _send_text(self, text: str, where: str) -> None:
        url = f"{self.base_url}/bot{self.secret('token')}/sendMessage"
        response = await self.request("POST", url, self.payload(text), self.shown)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        if response.is_success and data.get("ok") is True:
            return
        raise self._error(response, data, where)

    def _error(self, response: httpx.Response, data: dict[str, Any], where: str) -> NotifierError:
        error_code, parameters = data.get("error_code"), data.get("parameters")
        code = error_code if isinstance(error_code, int) else response.status_code
        description = self.snippet(str(data.get("description") or "")) or self.body_snippet(response)
        description = description or response.reason_phrase
        params: dict[str, Any] = parameters if isinstance(parameters, dict) else {}
        text = f"telegram: {self.shown}{where}: error {code}: {description}"
        if code == 429 or response.status_code == 429:
            retry_after = retry_after_seconds(params.get("retry_after"), self.ctx.clock.time())
            if retry_after is None:
                retry_after = retry_after_seconds(response.headers.get("retry-after"), self.ctx.clock.time())
            return NotifierError(text, retryable=True, retry_after=retry_after)
        if code >= 500 or response.status_code >= 500:
            return NotifierError(text, retryable=True)
        if "migrate_to_chat_id" in params:
            text += f" (the group is now chat {params['migrate_to_chat_id']}; set chat_id to it)"
        return NotifierError(text, retryable=False)


@hookimpl
def register_notifiers(register) -> None:
    register(TelegramNotifier)
