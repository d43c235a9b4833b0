"""Shared machinery of the HTTP data sources (``coinglass``, ``binance``).

* :class:`RateLimiter`: a sliding-window limiter (requests or weight per period) driven by the
  plugin's :class:`~perpwatch.common.clock.Clock`, shared by every concurrent request of one source
  instance; it can also be paused (``Retry-After``, server-reported usage).
* :class:`HttpSource`: the base class of those sources (client wiring from the options, ``aclose``).
* :class:`HttpClient`: GET with retries (exponential backoff with jitter, ``Retry-After``
  honoured), timeouts and connection errors mapped to :class:`RequestError`, an IP-ban gate
  (Binance HTTP 418) and secret redaction in every message. A server that cannot be reached at
  all (name resolution, connection refused, no route, TLS: :func:`connect_failure`) is one
  message naming the host and the cause, retried at most ``CONNECT_RETRIES`` times, quietly.
  Each response is streamed with a byte limit (``max_response_bytes``, raw and decompressed:
  ``_http_body``) and must arrive whole within ``timeout``; a large body is decoded (JSON parsed)
  in a worker thread, off the event loop.
* Bar helpers: the closed-bar grid of a request, range chunking for pagination, rows onto the
  grid (:func:`align_job`, with the checks of ``_rows``: times in seconds or in the future,
  missing fields, impossible values, each named once per endpoint), and :func:`run_jobs`, which
  runs one job per endpoint concurrently and assembles the frame: a failed endpoint leaves its
  metrics absent with one reason in ``frame.problems``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import random
import socket
import ssl
from abc import abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np

from perpwatch.api.interfaces import FetchRequest, PluginContext, Source, SourceError
from perpwatch.common.clock import Clock
from perpwatch.common.redact import redact
from perpwatch.common.retry_after import retry_after_seconds
from perpwatch.common.timeutil import floor_to_bar, interval_ms
from perpwatch.evaluation.frame import Cat, Frame

from ._http_body import ACCEPT_ENCODING, BodyError, read_body
from ._rows import align as align
from ._rows import align_rows, span
from ._rows import check_times as check_times
from ._rows import drop_impossible as drop_impossible
from ._rows import to_ms as to_ms

T = TypeVar("T")

#: ``observed`` value of a cell that has no observation (the convention of ``Frame.merge``).
NO_OBSERVATION = np.iinfo(np.int64).min
#: HTTP statuses (and CoinGlass body codes) worth another attempt.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: A body larger than this is decoded in a worker thread, so parsing it never blocks the event loop.
PARSE_INLINE_BYTES = 64 * 1024
#: Extra attempts (at most; never more than the ``retries`` option) after a connection could not be
#: made at all: no network, no such host or nothing listening does not heal within a cycle, and the
#: runner retries held symbols a minute later anyway.
CONNECT_RETRIES = 1


# --------------------------------------------------------------------------------------------
# Errors


class RequestError(SourceError):
    """One HTTP request failed; ``retry_after`` is the server's wish in seconds, ``ban`` an IP ban,
    ``unreachable`` that no connection could be made (nothing was sent: see :func:`connect_failure`)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        ban: bool = False,
        unreachable: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.retry_after = retry_after
        self.ban = ban
        self.unreachable = unreachable


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (httpx wraps httpcore, which wraps the OS's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _target(exc: httpx.TransportError, fallback: httpx.URL) -> str:
    """``host`` or ``host:port`` (a port only when the URL names one) of the failed request."""
    try:
        url = exc.request.url
    except RuntimeError:  # raised without its request
        url = fallback
    return f"{url.host}:{url.port}" if url.port else url.host


def connect_failure(exc: httpx.TransportError, fallback: httpx.URL) -> RequestError | None:
    """The reason no connection could be made, as ``cannot reach HOST: CAUSE`` (``unreachable``),
    or None when ``exc`` happened on a connection that was made (a reset, a protocol error).

    Name resolution, a refused connection, no route and a TLS handshake that failed are each named;
    an untrusted certificate is not retryable (it will not change by itself)."""
    if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.ProxyError):
        return None
    host = _target(exc, fallback)

    def failure(cause: str, retryable: bool = True) -> RequestError:
        return RequestError(f"cannot reach {host}: {cause}", retryable=retryable, unreachable=True)

    if isinstance(exc, httpx.ConnectTimeout):  # its causes hold the TLS read it was waiting for
        return failure("no connection within the timeout")
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            said = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or "not trusted"
            return failure(f"TLS certificate not accepted ({short_msg(said)})", retryable=False)
        if isinstance(cause, ssl.SSLError):
            said = getattr(cause, "reason", None) or cause.strerror or cause
            return failure(f"TLS handshake failed ({short_msg(said)})")
        if isinstance(cause, socket.gaierror):
            return failure("name resolution failed — no network?")
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return failure("connection refused (nothing listening there?)")
        if getattr(cause, "errno", None) in (errno.ENETUNREACH, errno.ENETDOWN):
            return failure("network unreachable — no network?")
        if getattr(cause, "errno", None) == errno.EHOSTUNREACH:
            return failure("no route to host")
    if isinstance(exc, httpx.ProxyError):
        return failure(f"the proxy failed ({short_msg(exc)})")
    return failure(f"connection failed ({short_msg(exc) or type(exc).__name__})")


def is_retryable_status(status: int) -> bool:
    """408, 425, 429 and every 5xx are worth another attempt."""
    return status in RETRYABLE_STATUS or 500 <= status < 600


def status_error(status: int, detail: str = "") -> RequestError:
    """The generic meaning of an HTTP error status (plugins refine the provider-specific ones).

    The client fills ``retry_after`` from the response's ``Retry-After`` header.
    """
    if is_retryable_status(status):
        return RequestError(f"HTTP {status}{detail}", retryable=True)
    return RequestError(f"HTTP {status}, {status_meaning(status)}{detail}", retryable=False)


#: What a non-retryable HTTP status means, for error messages.
STATUS_MEANINGS: dict[int, str] = {
    400: "bad request (invalid parameters)",
    401: "unauthorized",
    403: "forbidden",
    404: "unknown endpoint path",
    405: "method not allowed",
    422: "parameters not acceptable",
}


def status_meaning(status: int, refined: Mapping[int, str] | None = None) -> str:
    """What ``status`` means: ``refined`` (a provider's own wording) first, then :data:`STATUS_MEANINGS`."""
    return {**STATUS_MEANINGS, **(refined or {})}.get(status, "request refused")


def json_body(response: httpx.Response) -> Any:
    """The decoded JSON body; HTML, truncated or empty bodies are a retryable error."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "").split(";")[0] or "unknown content type"
        raise RequestError(
            f"HTTP {response.status_code} with a body that is not JSON ({kind}, {len(response.content)} bytes)",
            retryable=True,
        ) from None


def short_msg(value: object, limit: int = 120) -> str:
    """A server-supplied message, trimmed for a one-line reason."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Rate limiting


class RateLimiter:
    """At most ``capacity`` units (requests or weight) in any ``period`` seconds.

    Waiters queue on one lock, so concurrent requests of a source instance share the budget and
    the clock is slept by one waiter at a time (which keeps :class:`FakeClock` exact in tests).
    """

    def __init__(self, capacity: float, period: float, clock: Clock) -> None:
        if capacity <= 0 or period <= 0:
            raise ValueError("a rate limit needs a positive capacity and period")
        self.capacity = float(capacity)
        self.period = float(period)
        self.clock = clock
        self._grants: deque[tuple[float, float]] = deque()
        self._used = 0.0
        self._resume_at = float("-inf")
        self._blocked_until = float("-inf")
        self._blocked_reason = ""
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<RateLimiter {self.capacity:g} per {self.period:g}s>"

    def block(self, seconds: float, reason: str) -> None:
        """Fail every :meth:`acquire` for ``seconds`` (a wait too long for this cycle), saying ``reason``."""
        until = self.clock.monotonic() + max(0.0, seconds)
        if until > self._blocked_until:
            self._blocked_until, self._blocked_reason = until, reason

    def pause(self, seconds: float) -> None:
        """Let no request through for ``seconds`` from now (``Retry-After``, exhausted server quota)."""
        self._resume_at = max(self._resume_at, self.clock.monotonic() + max(0.0, seconds))

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` units fit in the window, then spend them.

        Raises a non-retryable :class:`RequestError` while the limiter is blocked."""
        left = self._blocked_until - self.clock.monotonic()
        if left > 0:
            raise RequestError(
                f"paused for another {left:.0f} s after: {self._blocked_reason}", retryable=False
            )
        cost = min(float(cost), self.capacity)
        async with self._lock:
            while True:
                now = self.clock.monotonic()
                if now < self._resume_at:
                    await self.clock.sleep(self._resume_at - now)
                    continue
                self._expire(now)
                if self._used + cost <= self.capacity:
                    self._grants.append((now, cost))
                    self._used += cost
                    return
                await self.clock.sleep(self._wait_for(cost, now))

    def _expire(self, now: float) -> None:
        while self._grants and self._grants[0][0] + self.period <= now:
            self._used -= self._grants.popleft()[1]

    def _wait_for(self, cost: float, now: float) -> float:
        freed = 0.0
        for granted_at, units in self._grants:
            freed += units
            if self._used - freed + cost <= self.capacity:
                return max(granted_at + self.period - now, 1e-3)
        return self.period


# --------------------------------------------------------------------------------------------
# Requests with retries


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a retryable failure (the options in :data:`COMMON_OPTIONS`)."""

    retries: int
    backoff_base: float
    backoff_max: float
    max_retry_after: float

    @classmethod
    def from_options(cls, option: Callable[[str], Any]) -> RetryPolicy:
        """The policy of a source's options; ``option(name)`` gives an option's value or default."""
        return cls(
            retries=int(option("retries")),
            backoff_base=float(option("backoff_base")),
            backoff_max=float(option("backoff_max")),
            max_retry_after=float(option("max_retry_after")),
        )

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds before attempt ``attempt + 1``: exponential backoff with jitter, at least ``retry_after``."""
        ceiling = min(self.backoff_max, self.backoff_base * 2**attempt)
        backoff = ceiling * (0.5 + 0.5 * rng.random())
        return max(backoff, retry_after or 0.0)


#: Options every HTTP source accepts (merged into each plugin's schema by :func:`http_options_schema`).
COMMON_OPTIONS: dict[str, Any] = {
    "timeout": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 10,
        "description": "seconds per request, until its whole response has arrived",
    },
    "max_response_bytes": {
        "type": "integer",
        "minimum": 1,
        "default": 32 * 1024 * 1024,
        "description": "largest response body, in bytes, on the wire and decompressed",
    },
    "retries": {
        "type": "integer",
        "minimum": 0,
        "default": 3,
        "description": "extra attempts after a retryable failure",
    },
    "backoff_base": {"type": "number", "minimum": 0, "default": 0.5, "description": "first backoff, seconds"},
    "backoff_max": {"type": "number", "minimum": 0, "default": 30, "description": "longest backoff, seconds"},
    "max_retry_after": {
        "type": "number",
        "minimum": 0,
        "default": 60,
        "description": "a longer Retry-After gives up for this cycle instead of waiting",
    },
    "max_connections": {
        "type": "integer",
        "minimum": 1,
        "default": 16,
        "description": "requests in flight at once (more wait here, not in httpx's pool)",
    },
}


def http_options_schema(base_url: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """The ``options_schema`` of an HTTP source: ``base_url`` (default: the public URL), the source's
    own ``properties`` and :data:`COMMON_OPTIONS`, nothing else allowed."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "base_url": {"type": "string", "default": base_url},
            **properties,
            **COMMON_OPTIONS,
        },
    }


Limits = Sequence[tuple[RateLimiter, float]]


class HttpClient:
    """GET requests with rate limits, retries and safe error messages for one source instance."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        clock: Clock,
        policy: RetryPolicy,
        timeout: float,
        max_connections: int,
        max_response_bytes: int,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        secrets: Iterable[str] = (),
        log: logging.Logger | None = None,
        observe: Callable[[httpx.Response], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.policy = policy
        self.secrets = tuple(s for s in secrets if s)
        self.log = log or logging.getLogger(f"perpwatch.{name}")
        self.timeout = float(timeout)
        self.max_response_bytes = int(max_response_bytes)
        self._observe = observe
        self._rng = rng or random.Random()
        self._blocked_until = float("-inf")
        self._blocked_reason = ""
        # httpcore's pool scans every queued request on each change, which grows quadratically with
        # hundreds of concurrent requests; a semaphore keeps the queue here instead.
        self._in_flight = asyncio.Semaphore(max_connections)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"accept-encoding": ACCEPT_ENCODING, **(headers or {})},
            auth=auth,
        )

    def __repr__(self) -> str:
        return f"<HttpClient {self.name} {self.base_url}>"

    @property
    def base_url(self) -> httpx.URL:
        return self._client.base_url

    async def aclose(self) -> None:
        await self._client.aclose()

    def safe(self, text: str) -> str:
        """``text`` with this client's secrets removed."""
        return redact(text, self.secrets)

    async def get(
        self,
        path: str,
        params: Mapping[str, Any],
        decode: Callable[[httpx.Response], T],
        limits: Limits = (),
    ) -> T:
        """GET ``path`` and ``decode`` the response, retrying retryable failures.

        ``decode`` gets every response (any status) and returns the payload or raises
        :class:`RequestError`. Raises :class:`RequestError` with a redacted message in the end.
        """
        attempt = 0
        while True:
            try:
                return await self._attempt(path, params, decode, limits)
            except RequestError as err:
                error = err
            wait_asked = error.retry_after
            if error.ban:
                self._block(wait_asked or 120.0, str(error))
                raise self._error(error)
            if wait_asked is not None and wait_asked > self.policy.max_retry_after:
                error = RequestError(f"{error}, asked to wait {wait_asked:g} s", retryable=True)
                for limiter, _ in limits:
                    limiter.block(wait_asked, self.safe(str(error)))
                if not limits:
                    self._block(wait_asked, str(error))
                raise self._error(error)
            retries = min(self.policy.retries, CONNECT_RETRIES) if error.unreachable else self.policy.retries
            if not error.retryable or attempt >= retries:
                raise self._error(error, attempt + 1)
            if wait_asked:
                for limiter, _ in limits:
                    limiter.pause(wait_asked)
            wait = self.policy.delay(attempt, wait_asked, self._rng)
            self.log.log(  # an unreachable server is reported once, by the runner
                logging.DEBUG if error.unreachable else logging.INFO,
                "%s %s: %s; retry %d in %.2f s",
                self.name,
                path,
                self.safe(str(error)),
                attempt + 1,
                wait,
            )
            await self.clock.sleep(wait)
            attempt += 1

    async def _attempt(
        self, path: str, params: Mapping[str, Any], decode: Callable[[httpx.Response], T], limits: Limits
    ) -> T:
        self._check_blocked()
        for limiter, cost in limits:
            await limiter.acquire(cost)
        self._check_blocked()
        async with self._in_flight:
            response = await self._whole_response(path, params)
        if self._observe is not None:
            self._observe(response)
        try:
            if len(response.content) > PARSE_INLINE_BYTES:
                return await asyncio.to_thread(decode, response)
            return decode(response)
        except RequestError as err:
            if err.retry_after is None:
                err.retry_after = retry_after_seconds(response.headers.get("retry-after"), self.clock.time())
            raise

    async def _whole_response(self, path: str, params: Mapping[str, Any]) -> httpx.Response:
        """One GET, its body read within ``max_response_bytes`` and the whole of it within ``timeout``.

        httpx's own timeouts bound each read, not the response: a server sending a byte now and
        then would hold the request forever. Returns a response whose content is the decoded body.
        """
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client.stream("GET", path, params=dict(params)) as streamed:
                    body = await read_body(streamed, self.max_response_bytes)
        except TimeoutError:
            raise RequestError(
                f"timed out: no whole response within {self.timeout:g} s", retryable=True
            ) from None
        except BodyError as exc:
            raise RequestError(str(exc), retryable=exc.retryable) from None
        except httpx.TransportError as exc:
            unreachable = connect_failure(exc, self.base_url)
            if unreachable is not None:
                raise unreachable from None
            if isinstance(exc, httpx.TimeoutException):
                raise RequestError(f"timed out ({type(exc).__name__})", retryable=True) from None
            raise RequestError(f"connection failed ({type(exc).__name__})", retryable=True) from None
        headers = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in _BODY_HEADERS]
        return httpx.Response(streamed.status_code, headers=headers, content=body, request=streamed.request)

    def _block(self, seconds: float, reason: str) -> None:
        """Send nothing for ``seconds`` (an IP ban): requests fail at once instead of hammering."""
        until = self.clock.monotonic() + seconds
        if until > self._blocked_until:
            self._blocked_until = until
            self._blocked_reason = reason

    def _check_blocked(self) -> None:
        left = self._blocked_until - self.clock.monotonic()
        if left > 0:
            raise RequestError(
                f"paused for another {left:.0f} s after: {self._blocked_reason}", retryable=False
            )

    def _error(self, error: RequestError, attempts: int = 1) -> RequestError:
        tries = f" after {attempts} attempts" if attempts > 1 and not error.unreachable else ""
        message = self.safe(f"{error}{tries}")
        return RequestError(
            message,
            retryable=error.retryable,
            retry_after=error.retry_after,
            ban=error.ban,
            unreachable=error.unreachable,
        )


#: Headers that described the body as sent, not as decoded.
_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class HeaderAuth(httpx.Auth):
    """Adds one secret header to every request; its repr never shows the secret."""

    def __init__(self, header: str, secret: str) -> None:
        self._header = header
        self._secret = secret

    def __repr__(self) -> str:
        return f"<HeaderAuth {self._header}: ***>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._secret
        yield request


# --------------------------------------------------------------------------------------------
# Bars, symbols, rows


def split_symbol(symbol: str, quote: str) -> tuple[str, str]:
    """``"BTC"`` or ``"BTCUSDT"`` -> (coin ``"BTC"``, pair ``"BTCUSDT"``) for the quote asset ``quote``."""
    sym = symbol.strip().upper()
    quote = quote.upper()
    coin = sym[: -len(quote)] if sym.endswith(quote) and len(sym) > len(quote) else sym
    return coin, coin + quote


def request_step(request: FetchRequest) -> int:
    """Milliseconds per bar of the request's interval; SourceError for an unknown interval."""
    try:
        return interval_ms(request.interval)
    except KeyError:
        raise SourceError(f"unsupported interval {request.interval!r}", retryable=False) from None


def last_closed_bar(now_ms: int, step: int) -> int:
    """Open time of the newest closed bar: a bar is closed once ``open + step <= now``."""
    return floor_to_bar(now_ms, step) - step


def closed_bar_grid(start: int, end: int, step: int, now_ms: int) -> np.ndarray:
    """Open times of the closed bars in ``[start, end]``."""
    first = -(-int(start) // step) * step
    last = min(floor_to_bar(int(end), step), last_closed_bar(now_ms, step))
    if last < first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, last + step, step, dtype=np.int64)


def chunks(first: int, last: int, step: int, limit: int) -> list[tuple[int, int, int]]:
    """``(start_ms, end_ms, bars)`` windows of at most ``limit`` bars covering open times first..last.

    ``end_ms`` is the last open time of the window plus ``step - 1``, so it is right whether a
    server compares ``end`` with open or with close times.
    """
    out = []
    start = first
    while start <= last:
        bars = min(limit, (last - start) // step + 1)
        out.append((start, start + bars * step - 1, bars))
        start += bars * step
    return out


def rows_with_time(data: object, time_key: str) -> list[dict[str, Any]]:
    """The rows of a list payload as dicts, each timestamp normalised to int ms (None where it is
    not one; anything but a dict is an empty row): :func:`align_job` names what it ignores.

    Raises a retryable :class:`RequestError` when the payload is not a list, or is a non-empty
    list without a single row with a valid timestamp (malformed data).
    """
    if not isinstance(data, list):
        raise RequestError(f"malformed data: expected a list, got {type(data).__name__}", retryable=True)
    rows = [{**item, time_key: to_ms(item.get(time_key))} if isinstance(item, dict) else {} for item in data]
    if data and all(row.get(time_key) is None for row in rows):
        raise RequestError(f"malformed data: no row has a valid {time_key!r}", retryable=True)
    return rows


def align_job(
    rows: Sequence[Mapping[str, Any]],
    time_key: str,
    fields: Mapping[str, str],
    plan: FetchPlan,
    scale: float = 1.0,
) -> Frame:
    """The rows of one endpoint on the plan's bars (``_rows.align_rows``: what cannot be right is
    unknown and named in ``frame.problems``); a batch of rows none of which falls on a bar is a
    :class:`RequestError` saying why, so its metrics count as missing, not as unknown bars."""
    aligned = align_rows(rows, time_key, fields, plan.grid, now_ms=plan.now_ms, scale=scale)
    if rows and not aligned.landed:
        raise RequestError(
            "; ".join(
                [
                    *aligned.frame.problems,
                    f"no row falls on the requested bars {span(plan.grid)}",
                ]
            ),
            retryable=False,
        )
    return aligned.frame


def buy_pct(buy: np.ndarray, sell: np.ndarray) -> np.ndarray:
    """``buy / (buy + sell) * 100``; unknown where either is unknown or the total is 0."""
    total = buy + sell
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, buy / total * 100.0, np.nan)


# --------------------------------------------------------------------------------------------
# Jobs -> frame


@dataclass
class Columns:
    """What one endpoint job produced: metric columns on the grid, observation times, notes."""

    columns: dict[str, np.ndarray | Cat] = field(default_factory=dict)
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Job:
    """One endpoint's work for a fetch: the metrics it fills and the coroutine factory that fills them."""

    label: str
    metrics: frozenset[str]
    run: Callable[[], Awaitable[Columns]]


async def run_jobs(source: str, grid: np.ndarray, wanted: frozenset[str], jobs: Sequence[Job]) -> Frame:
    """Run ``jobs`` concurrently and assemble the frame of the ``wanted`` metrics.

    A job that raises :class:`SourceError` leaves its metrics absent and adds one reason to
    ``frame.problems``; when every job fails, raises :class:`SourceError` with all reasons, or with
    the one reason when none of them could connect for the same reason (``cannot reach HOST: …``).
    """
    frame = Frame(grid)
    outcomes = await asyncio.gather(*(job.run() for job in jobs), return_exceptions=True)
    unreachable = {str(o) for o in outcomes if isinstance(o, RequestError) and o.unreachable}
    if jobs and len(unreachable) == 1 and all(str(o) in unreachable for o in outcomes):
        # every endpoint failed to connect, for the same reason: that one reason says it all
        raise RequestError(unreachable.pop(), retryable=True, unreachable=True)
    failures: list[SourceError] = []
    for job, outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, SourceError):
            failures.append(outcome)
            missing = ", ".join(sorted(job.metrics & wanted))
            frame.problems.append(f"{source} {job.label}: {outcome} ({missing} missing)")
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        for name, col in outcome.columns.items():
            if name in wanted:
                frame.columns[name] = col
                if name in outcome.observed:
                    frame.observed[name] = outcome.observed[name]
        frame.problems.extend(f"{source} {job.label}: {note}" for note in outcome.notes)
    if jobs and len(failures) == len(jobs):
        raise SourceError("; ".join(frame.problems), retryable=any(f.retryable for f in failures))
    return frame


# --------------------------------------------------------------------------------------------
# The source base class


@dataclass(frozen=True)
class FetchPlan:
    """One fetch of an :class:`HttpSource`: the request, its closed-bar grid and the metrics wanted."""

    request: FetchRequest
    step: int  # ms per bar
    now_ms: int
    grid: np.ndarray  # open times of the closed bars in the request's range (never empty)
    wanted: frozenset[str]  # requested and provided

    @property
    def newest(self) -> bool:
        """Whether the grid ends at the newest closed bar (so a current snapshot belongs to it)."""
        return int(self.grid[-1]) == last_closed_bar(self.now_ms, self.step)


class HttpSource(Source):
    """A source that reads one HTTP API through an :class:`HttpClient` (``self.http``).

    The client is wired from the options (``base_url``, ``timeout``, ``max_connections``, the retry
    policy: see :func:`http_options_schema`, whose defaults are the only ones) and the context
    (transport, clock, secrets, log). Subclasses pass ``auth`` and their own ``secrets`` to
    ``__init__``, may override :meth:`observe` to watch every response (server-reported quota), and
    implement :meth:`jobs`: :meth:`fetch` runs them concurrently (:func:`run_jobs`).
    """

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        ctx: PluginContext | None = None,
        *,
        auth: httpx.Auth | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        super().__init__(options, ctx)
        self.http = HttpClient(
            name=self.name,
            base_url=str(self.option("base_url")),
            clock=self.ctx.clock,
            policy=RetryPolicy.from_options(self.option),
            timeout=float(self.option("timeout")),
            max_connections=int(self.option("max_connections")),
            max_response_bytes=int(self.option("max_response_bytes")),
            transport=self.ctx.transport,
            headers={"accept": "application/json"},
            auth=auth,
            secrets=(*secrets, *self.ctx.secrets),
            log=self.ctx.log.getChild(self.name),
            observe=self.observe,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.http.base_url}>"

    def observe(self, response: httpx.Response) -> None:
        """Called with every response before it is decoded; does nothing unless overridden."""

    async def aclose(self) -> None:
        await self.http.aclose()

    @abstractmethod
    def jobs(self, plan: FetchPlan) -> list[Job]:
        """One job per endpoint that fills some of ``plan.wanted``; raise SourceError to fail the fetch."""

    async def fetch(self, request: FetchRequest) -> Frame:
        """Closed bars of the requested metrics; what this source does not provide is named in ``problems``."""
        step = request_step(request)
        now_ms = int(self.ctx.clock.time() * 1000)
        grid = closed_bar_grid(request.start, request.end, step, now_ms)
        provided = self.provides(self.options)
        wanted = request.metrics & provided
        extra = request.metrics - provided
        unprovided = [f"{self.name} does not provide {', '.join(sorted(extra))}"] if extra else []
        if not len(grid) or not wanted:
            return Frame(grid, problems=unprovided)
        frame = await run_jobs(
            self.name, grid, wanted, self.jobs(FetchPlan(request, step, now_ms, grid, wanted))
        )
        frame.problems.extend(unprovided)
        return frame
