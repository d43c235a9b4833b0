"""Notifier URLs and options marked secret never show, even when a server echoes them back.

A real HTTP server on 127.0.0.1 answers every request with an error whose body quotes the request
path and query (raw, percent-decoded, with JSON-escaped slashes, or only the last path segment),
as misconfigured proxies and frameworks do. The tokens in webhook URLs (path and query, written
plainly in the config or read from ``${ENV}``), a Telegram bot token and the secret option of a
third-party notifier must stay out of stderr, the log file, ``perpwatch events`` (text and JSON)
and the state database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from helpers import H, run_perpwatch

from perpwatch.api.interfaces import NotifierError
from perpwatch.api.plugin import secret_option_names, secret_values
from perpwatch.api.registry import load_registry
from perpwatch.common.errors import ErrorList
from perpwatch.common.redact import redact, secret_parts
from perpwatch.evaluation.events import Event
from perpwatch.live.config import load_config
from perpwatch.plugins.telegram import TelegramNotifier
from perpwatch.plugins.webhook import WebhookNotifier

PATH_TOKEN = "Xq7PathTokenZ9w2Lk4"
QUERY_TOKEN = "qtok83jdK2mZpQ"
ENV_TOKEN = "EnvHookTok5521aa"
BOT_TOKEN = "555111222:AAEbotTOKENsecret_q1"
PLUGIN_TOKEN = "plugTok-9911-zz"
TOKENS = (PATH_TOKEN, QUERY_TOKEN, ENV_TOKEN, BOT_TOKEN.split(":")[1], PLUGIN_TOKEN)

START = 1_704_067_200_000  # 2024-01-01T00:00Z
BARS = 60


class Echo:
    """An HTTP server on 127.0.0.1 that fails every request, quoting its path and query back.

    ``style`` says how: ``raw`` (the request target as sent), ``decoded`` (percent-decoded),
    ``json`` (a JSON body with ``\\/``-escaped slashes, as PHP writes it), ``relative`` (the path
    without its leading slash) or ``segment`` (only the last path segment). Paths starting with
    ``/gone`` get 404 (not retryable), every other one 500.
    """

    def __init__(self, style: str = "raw"):
        self.style = style
        self.targets: list[str] = []
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                echo.targets.append(self.path)
                status = 404 if self.path.startswith("/gone") else 500
                body = echo.body(self.path).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:
                """Silent."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})

    def body(self, target: str) -> str:
        split = urlsplit(target)
        if self.style == "decoded":
            return f"no route for {unquote(split.path)} (query {unquote(split.query)})"
        if self.style == "json":
            return json.dumps({"error": "no route", "path": split.path, "query": split.query}).replace(
                "/", "\\/"
            )
        if self.style == "relative":
            return f"cannot POST {target.lstrip('/')}"
        if self.style == "segment":
            return f"unknown hook {split.path.rsplit('/', 1)[-1]}"
        return f"Cannot POST {target}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Echo:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(params=["raw", "decoded", "json", "relative", "segment"])
def echo(request) -> Iterator[Echo]:
    with Echo(request.param) as server:
        yield server


def make_event() -> Event:
    return Event("fired", "s", "r", "BTC", START, "high", "funding high", {"f": 1.0}, interval="1h")


def send_error(notifier, event: Event) -> NotifierError:
    import asyncio

    async def go() -> None:
        try:
            await notifier.send(event)
        finally:
            await notifier.aclose()

    with pytest.raises(NotifierError) as info:
        asyncio.run(go())
    return info.value


def hook_url(base: str, token: str = PATH_TOKEN, prefix: str = "/services/T0AB12/B0CD34") -> str:
    return f"{base}{prefix}/{token}?token={QUERY_TOKEN}&v=1"


# --- the notifiers on their own ----------------------------------------------------------------


def test_a_webhook_error_quoting_the_path_shows_no_token(echo):
    notifier = WebhookNotifier({"url": hook_url(echo.base_url)})
    exc = send_error(notifier, make_event())
    assert echo.targets and PATH_TOKEN in echo.targets[0]  # the server did get (and echo) it
    text = str(exc)
    assert text.startswith(f"webhook: POST {echo.base_url}/***: HTTP 500")
    for token in (PATH_TOKEN, QUERY_TOKEN):
        assert token not in text
    assert "***" in text.split("HTTP 500", 1)[1]  # the body was shown, redacted


def test_a_telegram_error_quoting_the_path_shows_no_token(echo):
    notifier = TelegramNotifier({"token": BOT_TOKEN, "chat_id": 1, "base_url": echo.base_url})
    exc = send_error(notifier, make_event())
    assert BOT_TOKEN.split(":")[1] not in str(exc) and BOT_TOKEN.split(":")[0] not in str(exc)


def test_secret_parts_of_a_url():
    url = f"https://user:pw-Secret99@hooks.example.com/services/T0AB12/B0CD34/{PATH_TOKEN}?token={QUERY_TOKEN}&v=1"
    parts = secret_parts(url)
    for text in (
        f"POST /services/T0AB12/B0CD34/{PATH_TOKEN}?token={QUERY_TOKEN}&v=1 failed",
        f"path services/T0AB12/B0CD34/{PATH_TOKEN}",
        f'{{"path":"\\/services\\/T0AB12\\/B0CD34\\/{PATH_TOKEN}"}}',
        f"bad token {PATH_TOKEN}",
        f"query token={QUERY_TOKEN}",
        "auth pw-Secret99",
    ):
        clean = redact(text, parts)
        assert PATH_TOKEN not in clean and QUERY_TOKEN not in clean and "pw-Secret99" not in clean, clean
    # what tells a reader which service failed stays, and so do ordinary words
    assert redact("hooks.example.com said: services unavailable, v=1", parts) == (
        "hooks.example.com said: services unavailable, v=1"
    )
    assert all("127.0.0.1" in part for part in secret_parts("http://127.0.0.1:8080/alerts"))
    assert secret_parts("Bearer abcDEF123456789") >= {"Bearer abcDEF123456789", "abcDEF123456789"}
    assert "555111222%3AAAEbotTOKENsecret_q1" in secret_parts(BOT_TOKEN)  # a path may carry it encoded


def test_secret_markers_in_an_options_schema():
    schema = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "x-secret": True},
            "password": {"type": "string", "writeOnly": True},
            "headers": {"type": "object", "x-secret": True},
            "name": {"type": "string"},
        },
    }
    assert secret_option_names(schema) == ("url", "password", "headers")
    values = secret_values(
        schema,
        {"url": "https://h.example/hook/Tok3nValue99", "headers": {"A": "Bearer k-123456789"}, "name": "n"},
    )
    assert {"https://h.example/hook/Tok3nValue99", "/hook/Tok3nValue99", "Tok3nValue99"} <= values
    assert "Bearer k-123456789" in values and "n" not in values
    assert secret_option_names(WebhookNotifier.options_schema) == ("url", "headers")
    assert secret_option_names(TelegramNotifier.options_schema) == ("token",)


# --- the config --------------------------------------------------------------------------------


def test_the_config_collects_secret_options_and_their_url_parts(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_URL", hook_url("https://hooks.example.com", ENV_TOKEN))
    cfg_path = tmp_path / "perpwatch.yaml"
    cfg_path.write_text(
        "notifiers:\n"
        f"  plain: {{plugin: webhook, url: '{hook_url('https://hooks.example.com')}'}}\n"
        "  env: {plugin: webhook, url: '${HOOK_URL}'}\n"
        f"  tg: {{plugin: telegram, token: '{BOT_TOKEN}', chat_id: 1}}\n"
    )
    cfg = load_config(str(cfg_path), load_registry())
    echoed = (
        f"Cannot POST /services/T0AB12/B0CD34/{PATH_TOKEN}?token={QUERY_TOKEN} or {ENV_TOKEN} bot{BOT_TOKEN}"
    )
    clean = cfg.redact(echoed)
    for token in (PATH_TOKEN, QUERY_TOKEN, ENV_TOKEN, BOT_TOKEN):
        assert token not in clean


def test_a_config_error_never_quotes_a_secret_option(tmp_path):
    cfg_path = tmp_path / "perpwatch.yaml"
    cfg_path.write_text(
        f"notifiers:\n  hook: {{plugin: webhook, url: 'ftp://hooks.example.com/services/{PATH_TOKEN}'}}\n"
    )
    with pytest.raises(ErrorList) as info:
        load_config(str(cfg_path), load_registry())
    text = str(info.value)
    assert "notifiers.hook.url" in text or "url" in text
    assert PATH_TOKEN not in text


# --- a full run --------------------------------------------------------------------------------

STRATEGY = """
version: 1
name: leaky
interval: 1h
symbols: [BTC]
rules:
  - name: up
    when: price.close > 0
    severity: high
    message: "{symbol} up"
  - name: flip
    when: pct_change(price.close, 1) > 0
    notify_resolved: true
notify: [plain, env, gone, tg, third]
"""

#: A third-party notifier that marks its ``endpoint`` option secret in its schema and, carelessly,
#: puts the server's whole answer in its error: the engine must redact it all the same.
THIRD_PARTY = """
import httpx
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Notifier, NotifierError


class Careless(Notifier):
    name = "careless"
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["endpoint"],
        "properties": {"endpoint": {"type": "string", "writeOnly": True}},
    }

    async def send(self, event):
        async with httpx.AsyncClient() as client:
            response = await client.post(self.options["endpoint"], json={"key": event.key})
        if response.status_code >= 400:
            raise NotifierError(f"careless: {response.status_code}: {response.text}", retryable=True)


@hookimpl
def register_notifiers(register):
    register(Careless)
"""


def write_run_files(tmp: Path, base: str) -> Path:
    data = tmp / "data"
    data.mkdir()
    price = 40_000 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, BARS)))
    lines = ["time,price.close"] + [f"{START + i * H},{price[i]:.2f}" for i in range(BARS)]
    (data / "BTC_1h.csv").write_text("\n".join(lines) + "\n")
    (tmp / "leaky.yaml").write_text(STRATEGY)
    (tmp / "careless.py").write_text(THIRD_PARTY)
    (tmp / "perpwatch.yaml").write_text(
        "state: state.db\n"
        f"sources:\n  replay: {{path: '{data}'}}\n"
        "notifiers:\n"
        f"  plain: {{plugin: webhook, url: '{hook_url(base)}'}}\n"
        "  env: {plugin: webhook, url: '${HOOK_URL}', format: slack}\n"
        f"  gone: {{plugin: webhook, url: '{hook_url(base, prefix='/gone/x')}'}}\n"
        f"  tg: {{plugin: telegram, token: '{BOT_TOKEN}', chat_id: 1, base_url: '{base}'}}\n"
        f"  third: {{plugin: careless, endpoint: '{base}/plug/{PLUGIN_TOKEN}'}}\n"
    )
    return tmp


@pytest.mark.parametrize("style", ["raw", "json", "segment"])  # each style alone: the tests above
def test_no_url_token_in_any_output_of_a_full_run(tmp_path, style):
    with Echo(style) as echo:
        write_run_files(tmp_path, echo.base_url)
        env = {
            "HOOK_URL": hook_url(echo.base_url, ENV_TOKEN),
            "PERPWATCH_PLUGINS": str(tmp_path / "careless.py"),
        }
        run = run_perpwatch(
            "run",
            "leaky.yaml",
            "--simulate-from",
            "2024-01-02T00:00:00Z",
            "--simulate-to",
            "2024-01-02T08:00:00Z",
            "-v",
            "--log-file",
            "run.log",
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        seen = list(echo.targets)
    assert run.returncode == 0, run.stderr
    outputs = [run.stdout, run.stderr, (tmp_path / "run.log").read_text()]
    listing = run_perpwatch("events", "--json", "--limit", "1000", env=env, cwd=tmp_path)
    text = run_perpwatch("events", "--limit", "1000", env=env, cwd=tmp_path)
    assert listing.returncode == 0 and text.returncode == 0, listing.stderr + text.stderr
    outputs += [listing.stdout, listing.stderr, text.stdout, text.stderr]
    con = sqlite3.connect(tmp_path / "state.db")
    outputs.append("\n".join(con.iterdump()))
    con.close()
    everything = "\n".join(outputs)

    # every notifier really reached the server with its token, and its errors were recorded
    for token in (PATH_TOKEN, ENV_TOKEN, BOT_TOKEN, PLUGIN_TOKEN):
        assert any(token in target for target in seen), token
    rows = json.loads(listing.stdout)
    errors = {d["notifier"]: d["last_error"] for r in rows for d in r["deliveries"] if d["last_error"]}
    assert set(errors) == {"plain", "env", "gone", "tg", "third"}, errors
    assert "HTTP 500" in errors["plain"] and "HTTP 404" in errors["gone"]
    assert f"{echo.base_url}/***" in errors["plain"]
    for token in TOKENS:
        assert token not in everything, token
