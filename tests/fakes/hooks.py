"""A local fake of webhook endpoints and the Telegram Bot API, for tests (no internet needed).

A real HTTP server on 127.0.0.1 (a free port) in a background thread. It records every request
and answers like a webhook endpoint (``200 ok``) or, for ``/bot<token>/<method>`` paths, like the
Telegram Bot API (``{"ok": true, "result": ...}``, with a rough MarkdownV2 and length check).
Failures are programmed in advance and consumed in order by the next matching requests::

    with FakeHooks(telegram_token="123:ABC") as hooks:
        url = hooks.url("/slack")              # webhook URL; hooks.base_url is the Telegram base_url
        hooks.fail(times=2, status=500)        # the next 2 requests get HTTP 500
        hooks.fail(status=429, retry_after=7)  # then one 429 with "Retry-After: 7"
        hooks.telegram_fail(error_code=429, retry_after=5)  # Telegram-shaped error JSON
        hooks.slow(1.5)                        # the next request is answered after 1.5 s
        hooks.down(); hooks.up()               # connection refused while down; the port stays ours
        hooks.requests                         # [Recorded(method, path, query, headers, body, time)]
        hooks.telegram_texts()                 # the ``text`` of every sendMessage received
        hooks.wait_for(3)                      # block until 3 requests arrived (for async senders)

``fail``/``telegram_fail`` take ``path`` (a prefix the request path must start with) and ``after``
(let that many matching requests through first). Requests are recorded before any delay.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TELEGRAM_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>\w+)$")
TELEGRAM_MAX_LENGTH = 4096
_RESERVED = set("_*[]()~`>#+-=|{}.!")


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes
    time: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Plan:
    """A programmed answer for ``times`` matching requests, after ``after`` have gone through."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    after: int = 0
    path: str | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    allow_reuse_port = True  # shares the port with the holder of ``FakeHooks.down`` (same user only)
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out and hang up are expected here; stay quiet."""


def _hold_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``port`` that does not listen: connections to the port are refused, and no
    other program can bind it meanwhile (it has SO_REUSEPORT, not SO_REUSEADDR, and the kernel never
    hands out a bound port as an ephemeral one)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    return holder


class FakeHooks:
    """A recording HTTP server that answers like a webhook endpoint and like the Telegram Bot API."""

    def __init__(self, telegram_token: str | None = None, host: str = "127.0.0.1", port: int = 0):
        self.telegram_token = telegram_token
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified at every request
        self._requests: list[Recorded] = []
        self._plans: list[_Plan] = []
        self._delays: list[float] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._holder: socket.socket | None = None  # keeps the port while down
        self._thread: threading.Thread | None = None
        self._message_id = 0
        self.default_status = 200
        self.default_body = b"ok"

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> FakeHooks:
        self.up()
        return self

    def close(self) -> None:
        self._stopping.set()
        self._stop_serving()
        if self._holder is not None:
            self._holder.close()
            self._holder = None

    def __enter__(self) -> FakeHooks:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up(self) -> None:
        """Listen (again, on the same port: it was held while down)."""
        if self._server is not None:
            return
        self._stopping.clear()
        server = _Server((self.host, self.port), self._handler_class())
        self.port = server.server_address[1]
        if self._holder is not None:  # the new listener has the port now
            self._holder.close()
            self._holder = None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused until ``up()``. The port is never released
        meanwhile (a bound, non-listening socket holds it), so ``up()`` cannot lose it to another
        program."""
        if self._server is None:
            return
        self._holder = _hold_port(self.host, self.port)
        self._stop_serving()

    def _stop_serving(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wake delayed answers
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- addresses and records -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: also the Telegram ``base_url``."""
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/hook") -> str:
        """The full URL of ``path`` on this server."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def telegram_texts(self) -> list[str]:
        """The ``text`` of every ``sendMessage`` request received (successful or not)."""
        return [r.json()["text"] for r in self.requests if r.path.endswith("/sendMessage")]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """Wait until at least ``count`` requests arrived; AssertionError on timeout."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self._requests)}")
            return list(self._requests)

    def reset(self) -> None:
        """Forget requests, programmed failures and delays."""
        with self._lock:
            self._requests.clear()
            self._plans.clear()
            self._delays.clear()

    # --- programming answers ---------------------------------------------------------------

    def respond(self, status: int = 200, body: bytes | str = b"ok") -> None:
        """The answer to plain (non-Telegram) requests when no failure is programmed."""
        self.default_status = status
        self.default_body = body.encode() if isinstance(body, str) else body

    def fail(
        self,
        times: int = 1,
        status: int = 500,
        *,
        retry_after: float | str | None = None,
        body: bytes | str | dict | None = None,
        headers: dict[str, str] | None = None,
        path: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (and ``Retry-After`` if given).

        ``body`` may be bytes, text or a dict (sent as JSON); the default is the reason phrase.
        """
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = str(retry_after)
        if isinstance(body, dict):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif body is None:
            data = f"fake failure {status}".encode()
        else:
            data = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._plans.append(_Plan(status, data, hdrs, times, after, path))

    def telegram_fail(
        self,
        times: int = 1,
        error_code: int = 400,
        *,
        description: str | None = None,
        retry_after: int | None = None,
        parameters: dict[str, Any] | None = None,
        path: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer like the Bot API does on error: ``{"ok": false, "error_code", "description", "parameters"}``.

        ``retry_after`` goes into ``parameters.retry_after`` (no header), as Telegram does on 429.
        """
        params = dict(parameters or {})
        if retry_after is not None:
            params["retry_after"] = retry_after
        if description is None:
            description = {
                429: f"Too Many Requests: retry after {retry_after}",
                401: "Unauthorized",
                403: "Forbidden: bot was blocked by the user",
            }.get(error_code, "Bad Request: fake failure")
        body: dict[str, Any] = {"ok": False, "error_code": error_code, "description": description}
        if params:
            body["parameters"] = params
        self.fail(times, error_code, body=body, path=path, after=after)

    def slow(self, seconds: float, times: int = 1) -> None:
        """Delay the answer to each of the next ``times`` requests by ``seconds``."""
        with self._lock:
            self._delays.extend([seconds] * times)

    # --- serving ---------------------------------------------------------------------------

    def _take(self, path: str) -> tuple[float, _Plan | None]:
        with self._lock:
            delay = self._delays.pop(0) if self._delays else 0.0
            for plan in self._plans:
                if plan.path is not None and not path.startswith(plan.path):
                    continue
                if plan.after > 0:
                    plan.after -= 1
                    return delay, None
                plan.times -= 1
                if plan.times <= 0:
                    self._plans.remove(plan)
                return delay, plan
            return delay, None

    def _answer(self, record: Recorded) -> tuple[int, dict[str, str], bytes]:
        delay, plan = self._take(record.path)
        if delay:
            self._stopping.wait(delay)
        if plan is not None:
            return plan.status, plan.headers, plan.body
        match = TELEGRAM_PATH.match(record.path)
        if match:
            return self._telegram(match["token"], match["method"], record)
        return self.default_status, {"Content-Type": "text/plain"}, self.default_body

    def _telegram(self, token: str, method: str, record: Recorded) -> tuple[int, dict[str, str], bytes]:
        def reply(status: int, data: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
            return status, {"Content-Type": "application/json"}, json.dumps(data).encode()

        def error(code: int, description: str) -> tuple[int, dict[str, str], bytes]:
            return reply(code, {"ok": False, "error_code": code, "description": description})

        if self.telegram_token is not None and token != self.telegram_token:
            return error(401, "Unauthorized")
        if method == "getMe":
            return reply(200, {"ok": True, "result": {"id": 1, "is_bot": True, "username": "fake_bot"}})
        if method != "sendMessage":
            return error(404, "Not Found")
        try:
            params = record.json() if record.body else {}
        except ValueError:
            return error(400, "Bad Request: can't parse JSON")
        text, chat_id = params.get("text"), params.get("chat_id")
        if chat_id in (None, ""):
            return error(400, "Bad Request: chat_id is empty")
        if not isinstance(text, str) or not text.strip():
            return error(400, "Bad Request: message text is empty")
        if params.get("parse_mode") == "MarkdownV2":
            problem, visible = check_markdown_v2(text)
            if problem:
                return error(400, f"Bad Request: can't parse entities: {problem}")
        else:
            visible = text
        if len(visible.encode("utf-16-le")) // 2 > TELEGRAM_MAX_LENGTH:
            return error(400, "Bad Request: message is too long")
        with self._lock:
            self._message_id += 1
            message_id = self._message_id
        result = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id},
            "text": visible,
        }
        return reply(200, {"ok": True, "result": result})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                record = Recorded(
                    method=self.command,
                    path=split.path,
                    query=parse_qs(split.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    time=time.time(),
                )
                with fake._arrived:
                    fake._requests.append(record)
                    fake._arrived.notify_all()
                status, headers, data = fake._answer(record)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                """Silent."""

        return Handler


def check_markdown_v2(text: str) -> tuple[str | None, str]:
    """A rough Bot API MarkdownV2 parse: ``(problem or None, visible text)``.

    Checks escapes, reserved characters outside entities and unclosed ``* _ __ ~ || `` ` ``
    entities; links and pre blocks are not supported (their brackets count as reserved).
    """
    visible: list[str] = []
    open_: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        in_code = bool(open_) and open_[-1] == "`"
        if ch == "\\":
            if i + 1 >= n:
                return "Character '\\' at the end of the text must be escaped", ""
            visible.append(text[i + 1])
            i += 2
            continue
        if in_code:
            if ch == "`":
                open_.pop()
            else:
                visible.append(ch)
            i += 1
            continue
        token = text[i : i + 2] if text[i : i + 2] in ("__", "||") else ch
        if token in ("*", "_", "__", "~", "||", "`"):
            if open_ and open_[-1] == token:
                open_.pop()
            elif token in open_:
                return f"Can't find end of the entity starting at byte offset {i}", ""
            else:
                open_.append(token)
            i += len(token)
            continue
        if ch == ">" and (i == 0 or text[i - 1] == "\n"):
            i += 1
            continue
        if ch in _RESERVED:
            return f"Character '{ch}' is reserved and must be escaped with the preceding '\\'", ""
        visible.append(ch)
        i += 1
    if open_:
        return f"Can't find end of {open_[-1]!r} entity", ""
    return None, "".join(visible)
