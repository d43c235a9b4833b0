"""What the built-in notifiers share: event routing, rendering helpers, redaction and HTTP errors.

Subclasses of :class:`BaseNotifier` implement ``deliver(event)``; ``send`` wraps it so that only a
:class:`NotifierError` with a redacted message ever comes out. A server's answer is redacted
before it is cut to a snippet, so a cut never leaves the start of a secret behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import math
import numbers
import traceback
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx
import jsonschema
import numpy as np

from perpwatch import __version__
from perpwatch.api.interfaces import Notification, Notifier, NotifierError, PluginContext, secret_values
from perpwatch.common.jsonsafe import jsonable
from perpwatch.common.redact import REDACTED, redact
from perpwatch.common.retry_after import retry_after_seconds
from perpwatch.common.text import printable
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event, OrderIntent
from perpwatch.language.schemas import schema_validator

from ._http_body import ACCEPT_ENCODING, BodyError, read_body

#: HTTP notifiers send each event's stable key in this header, so a receiver can drop a repeat
#: (the engine delivers at least once: a crash between sending and recording the delivery resends).
EVENT_KEY_HEADER = "X-Perpwatch-Event"
_EVENT_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("perpwatch_event_key", default=None)

#: A mark per severity for chat formats, and one for resolved events.
SEVERITY_MARKS = {"info": "⚪", "low": "🔵", "medium": "🟡", "high": "🟠", "critical": "🔴"}
RESOLVED_MARK = "✅"


def notifier_schema(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    """An options schema of ``properties``, nothing else allowed (``Notifier`` adds ``min_severity``)."""
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    return schema


class _RedactLogs(logging.Filter):
    """Redacts registered secrets from httpx's own log lines (they show request URLs)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            clean = redact(message, self.secrets)
            if clean != message:
                record.msg, record.args = clean, None
        return True


_LOG_FILTER = _RedactLogs()
logging.getLogger("httpx").addFilter(_LOG_FILTER)


# --- rendering ---------------------------------------------------------------------------------


def is_resolved(event: Event) -> bool:
    return event.kind == "resolved"


def is_repeat(event: Event) -> bool:
    """A still-firing alert notified again (``repeat:``)."""
    return event.kind == "repeat"


def group_title(notification: Notification) -> str:
    """``strategy · SYMBOL · 4h · 2025-10-10T20:00:00Z``: what the group's alerts share."""
    first = notification.first
    strategies = {e.strategy for e in notification.events}
    symbols = {e.symbol for e in notification.events}
    parts = [
        first.strategy if len(strategies) == 1 else ", ".join(sorted(strategies)),
        first.symbol if len(symbols) == 1 else ", ".join(sorted(symbols)),
    ]
    if first.interval:
        parts.append(first.interval)
    times = {e.time for e in notification.events}
    parts.append(format_time(first.time) if len(times) == 1 else f"{len(times)} bars")
    return " · ".join(p for p in parts if p)


def group_footer(notification: Notification) -> str:
    """``3 firing, 1 resolved · perpwatch``."""
    firing, resolved = len(notification.firing), len(notification.resolved)
    repeats = sum(1 for e in notification.events if is_repeat(e))
    counts = [
        f"{firing} firing" if firing else "",
        f"{repeats} repeated" if repeats else "",
        f"{resolved} resolved" if resolved else "",
    ]
    return ", ".join(c for c in counts if c) + " · perpwatch"


def is_plain(notification: Notification) -> bool:
    """One alert and no snapshot: rendered as that one event's message, as before grouping."""
    return len(notification.events) == 1 and not notification.snapshot


def mark(event: Event) -> str:
    """An emoji for the event: ✅ when resolved, else one per severity."""
    return RESOLVED_MARK if is_resolved(event) else SEVERITY_MARKS.get(event.severity, "⚪")


def label(event: Event) -> str:
    """``RESOLVED`` for a resolved event, else the severity in capitals (``HIGH (repeat)`` for a repeat)."""
    if is_resolved(event):
        return "RESOLVED"
    return f"{event.severity.upper()} (repeat)" if event.kind == "repeat" else event.severity.upper()


def where(event: Event, sep: str = " ") -> str:
    """``strategy/rule SYMBOL [interval]``."""
    parts = [f"{event.strategy}/{event.rule}", event.symbol]
    if event.interval:
        parts.append(event.interval)
    return sep.join(parts)


def format_value(value: Any) -> str:
    """A condition value for people: NaN and None are ``unknown``, large numbers get separators."""
    if value is None:
        return "unknown"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isnan(f):
            return "unknown"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f"{f:,.0f}" if abs(f) >= 1e6 else f"{f:.6g}"
    return str(value)


def format_usd(size: float) -> str:
    text = f"{size:,.2f}"
    return text[:-3] if text.endswith(".00") else text


def signal_text(signal: OrderIntent | None) -> str | None:
    """``long 1,000 USD``, ``flat``, or None when the rule has no signal."""
    if signal is None:
        return None
    side = signal.side or "unknown side"
    if side == "flat":
        return side
    size = "size unknown" if signal.size_usd is None else f"{format_usd(signal.size_usd)} USD"
    return f"{side} {size}"


def one_line(text: str) -> str:
    """``text`` on one line and printable (:func:`perpwatch.common.text.printable`), stripped."""
    return printable(text).strip()


def u16len(text: str) -> int:
    """Length in UTF-16 code units, the way Telegram, Discord and Slack count."""
    return len(text.encode("utf-16-le")) // 2


def clip_atoms(atoms: Iterable[str], limit: int, ellipsis: str = "…") -> str:
    """Join ``atoms`` (never split) up to ``limit`` UTF-16 units, ending in ``ellipsis`` if cut."""
    atoms = list(atoms)
    full = "".join(atoms)
    if u16len(full) <= limit:
        return full
    budget = limit - u16len(ellipsis)
    out: list[str] = []
    used = 0
    for atom in atoms:
        size = u16len(atom)
        if used + size > budget:
            break
        out.append(atom)
        used += size
    return "".join(out) + ellipsis


def clip(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` cut to ``limit`` UTF-16 units, ending in ``ellipsis`` if cut."""
    return clip_atoms(text, limit, ellipsis)


def event_record(event: Event) -> dict[str, Any]:
    """``event.to_dict()`` as strict JSON data, plus ``time_iso``."""
    record = jsonable(event.to_dict())
    record["time_iso"] = format_time(event.time)
    return record


def dumps(data: Any) -> str:
    """Compact strict JSON (UTF-8 text kept as is)."""
    return json.dumps(jsonable(data), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@contextlib.contextmanager
def event_key(key: str) -> Iterator[None]:
    """Within the block, HTTP requests carry ``key`` in the ``X-Perpwatch-Event`` header."""
    token = _EVENT_KEY.set(key)
    try:
        yield
    finally:
        _EVENT_KEY.reset(token)


# --- the base class ----------------------------------------------------------------------------


class BaseNotifier(Notifier):
    """Options checking, routing (only fired and resolved events, by severity), redaction and the
    ``send`` error contract.

    Options the ``options_schema`` marks ``"x-secret": true`` (``secret_options()``) are never
    shown, nor the parts of them a server may echo (a URL's path and query): not in errors, httpx
    log lines, ``repr`` or ``self.options`` (read them with ``secret(name)``). Everything in
    ``ctx.secrets`` is redacted from errors and ``repr`` too.
    """

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None):
        super().__init__(options, ctx)
        hidden = secret_values(self.options_schema, self.options)
        self._secrets = frozenset(s for s in {*self.ctx.secrets, *hidden} if s)
        _LOG_FILTER.secrets.update(hidden)
        self._check_options()
        self._secret_values = {k: self.options[k] for k in self.secret_options() if k in self.options}
        self.options.update(dict.fromkeys(self._secret_values, REDACTED))

    def _check_options(self) -> None:
        validator = schema_validator(self.options_schema)  # patterns read as ECMA-262: $ is the end
        error = jsonschema.exceptions.best_match(validator.iter_errors(self.options))
        if error is not None:
            path = list(error.absolute_path)
            at = "/".join(str(p) for p in path) or "options"
            # A message can quote the value (repr-escaped, so redaction might miss it): not for secrets.
            hidden = bool(path) and path[0] in self.secret_options()
            message = f"invalid value ({error.validator} check failed)" if hidden else error.message
            raise ValueError(self.redact(f"{self.name} notifier: {at}: {message}"))

    def secret(self, option: str) -> Any:
        """The real value of a secret option."""
        return self._secret_values[option]

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def snippet(self, text: str, limit: int = 200) -> str:
        """``text`` (a server's answer) redacted, on one line, then cut to ``limit``."""
        return clip(one_line(self.redact(text)), limit)

    def accepts(self, event: Event) -> bool:
        """Whether this notifier takes ``event``: a fired, repeated or resolved event at
        ``min_severity`` or above.

        An event with an unknown severity is accepted rather than lost.
        """
        return event.kind in ("fired", "repeat", "resolved") and super().accepts(event)

    async def send(self, event: Event) -> None:
        """Deliver ``event``; any failure comes out as a NotifierError with a redacted message."""
        await self._guarded(event.key, self.deliver(event))

    async def send_group(self, notification: Notification) -> None:
        """Deliver a grouped notification (``deliver_group``), with ``send``'s error contract; HTTP
        notifiers send its dedupe key in the ``X-Perpwatch-Event`` header."""
        await self._guarded(notification.key, self.deliver_group(notification))

    async def deliver_group(self, notification: Notification) -> None:
        """Deliver a group; by default each event with ``deliver`` (a notifier that renders groups
        as one message overrides this)."""
        for event in notification.events:
            await self.deliver(event)

    async def _guarded(self, key: str, work: Any) -> None:
        token = _EVENT_KEY.set(key)
        try:
            await work
        except NotifierError as exc:
            raise NotifierError(
                self.redact(str(exc)), retryable=exc.retryable, retry_after=exc.retry_after
            ) from None
        except Exception as exc:
            self.ctx.log.debug("%s", self.redact("".join(traceback.format_exception(exc))))
            raise NotifierError(
                self.redact(f"{self.name}: unexpected {type(exc).__name__}: {exc}"), retryable=False
            ) from None
        finally:
            _EVENT_KEY.reset(token)

    @abstractmethod
    async def deliver(self, event: Event) -> None:
        """Deliver ``event`` (``send`` turns every failure into a redacted NotifierError)."""

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.options.items() if k not in self.secret_options()}
        return self.redact(f"<{type(self).__name__} {shown!r}>")

    __str__ = __repr__


# --- HTTP --------------------------------------------------------------------------------------


def short_url(url: str) -> str:
    """``scheme://host[:port]/***``: enough to tell which service failed, never a path or query
    credential (nor a user or password)."""
    try:
        parsed = httpx.URL(url)
    except Exception:
        return "<invalid url>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}/{REDACTED}"


#: The ``timeout`` option of the HTTP notifiers.
#: How much of a server's answer a notifier reads: answers are short (an ok, an error), and a
#: server that sends more, or a compressed body that decodes to more, is cut off there.
MAX_ANSWER_BYTES = 1 << 20

TIMEOUT_OPTION: dict[str, Any] = {
    "type": "number",
    "exclusiveMinimum": 0,
    "default": 10,
    "description": "Seconds per request, the whole answer included.",
}


class HttpNotifier(BaseNotifier):
    """A notifier that talks HTTP through one lazily created httpx client (``ctx.transport``).

    Its ``options_schema`` has a ``timeout`` option (:data:`TIMEOUT_OPTION`).
    """

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None):
        super().__init__(options, ctx)
        self.timeout = float(self.option("timeout"))
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.ctx.transport,
                timeout=httpx.Timeout(self.timeout),
                headers={"User-Agent": f"perpwatch/{__version__}", "Accept-Encoding": ACCEPT_ENCODING},
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def request(
        self, method: str, url: str, payload: Any, shown: str, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """Send ``payload`` as JSON; transport failures become retryable NotifierErrors about ``shown``.

        The whole exchange, answer included, takes at most ``timeout`` seconds, and at most
        :data:`MAX_ANSWER_BYTES` of the answer are read (raw and decompressed).
        """
        body = dumps(payload).encode()
        key = _EVENT_KEY.get()
        all_headers = {
            "Content-Type": "application/json; charset=utf-8",
            **({EVENT_KEY_HEADER: key} if key else {}),
            **(headers or {}),
        }
        client = self.client()
        request = client.build_request(method, url, content=body, headers=all_headers)
        try:
            async with asyncio.timeout(self.timeout):
                response = await client.send(request, stream=True)
                try:
                    content = await read_body(response, MAX_ANSWER_BYTES, "a notifier's answer limit")
                finally:
                    await response.aclose()
        except (httpx.TimeoutException, TimeoutError):
            raise NotifierError(
                f"{self.name}: {shown}: timed out after {self.timeout:g}s", retryable=True
            ) from None
        except BodyError as exc:
            raise NotifierError(
                f"{self.name}: {shown}: HTTP {response.status_code}: answer {exc}", retryable=exc.retryable
            ) from None
        except httpx.UnsupportedProtocol as exc:
            raise NotifierError(f"{self.name}: {shown}: {exc}", retryable=False) from None
        except httpx.TransportError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise NotifierError(f"{self.name}: {shown}: {detail}", retryable=True) from None
        kept = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(response.status_code, headers=kept, content=content, request=request)

    def body_snippet(self, response: httpx.Response, limit: int = 200) -> str:
        """The start of ``response``'s body, redacted (servers echo the request path), one line."""
        try:
            text = response.text
        except Exception:
            return ""
        return self.snippet(text, limit)

    def status_error(self, response: httpx.Response, shown: str, detail: str = "") -> NotifierError:
        """The error for a non-2xx answer: 408, 429 and 5xx are retryable, other statuses are not."""
        status = response.status_code
        retryable = status in (408, 429) or status >= 500
        retry_after = retry_after_seconds(response.headers.get("retry-after"), self.ctx.clock.time())
        text = f"{self.name}: {shown}: HTTP {status} {response.reason_phrase}".rstrip()
        if detail:
            text += f": {detail}"
        return NotifierError(text, retryable=retryable, retry_after=retry_after if retryable else None)
