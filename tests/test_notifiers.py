"""The built-in notifiers: console, jsonl, webhook (raw, slack, discord) and telegram."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import re
import sys
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import pluggy
import pytest
from fakes.hooks import FakeHooks, check_markdown_v2

from perpwatch.api import hookspecs
from perpwatch.api.interfaces import NotifierError, PluginContext
from perpwatch.common.clock import FakeClock
from perpwatch.evaluation.events import Event, OrderIntent
from perpwatch.plugins import console, jsonl, telegram, webhook
from perpwatch.plugins._notify import event_record, format_value, signal_text, u16len
from perpwatch.plugins.console import ConsoleNotifier
from perpwatch.plugins.jsonl import JsonlNotifier
from perpwatch.plugins.telegram import (
    TelegramNotifier,
    escape_markdown_v2,
    mdv2_atoms,
    render_atoms,
    split_atoms,
)
from perpwatch.plugins.webhook import WebhookNotifier, discord_payload, slack_payload

TOKEN = "123456:AAF-secretTOKENvalue_xyz"
ALL_SPECIAL = "_*[]()~`>#+-=|{}.!\\"
NOTIFIERS = [ConsoleNotifier, JsonlNotifier, WebhookNotifier, TelegramNotifier]
REQUIRED = {
    ConsoleNotifier: {},
    JsonlNotifier: {"path": "events.jsonl"},
    WebhookNotifier: {"url": "http://127.0.0.1:1/hook"},
    TelegramNotifier: {"token": TOKEN, "chat_id": 1},
}


def make_event(**changes) -> Event:
    fields = dict(
        kind="fired",
        strategy="funding_squeeze",
        rule="crowded_longs",
        symbol="BTC",
        time=1722830400000,  # 2024-08-05T04:00:00Z
        severity="high",
        message="Funding 0.05% > limit (OI +12%)!",
        values={"funding.rate": 0.0005, "oi.change_pct": 12.5},
        signal=OrderIntent("long", 1000.0),
        interval="4h",
    )
    fields.update(changes)
    return Event(**fields)


def send(notifier, *events: Event) -> None:
    """Send ``events`` in order on a fresh event loop, then close the notifier."""

    async def go() -> None:
        try:
            for event in events:
                await notifier.send(event)
        finally:
            await notifier.aclose()

    asyncio.run(go())


def send_error(notifier, event: Event) -> NotifierError:
    with pytest.raises(NotifierError) as info:
        send(notifier, event)
    return info.value


@pytest.fixture
def hooks():
    with FakeHooks(telegram_token=TOKEN) as fake:
        yield fake


# --- shared behaviour --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", NOTIFIERS)
def test_options_schema_is_strict_and_valid(cls):
    jsonschema.Draft202012Validator.check_schema(cls.options_schema)
    assert cls.options_schema["additionalProperties"] is False
    assert cls.options_schema["properties"]["min_severity"]["enum"] == [
        "info",
        "low",
        "medium",
        "high",
        "critical",
    ]
    with pytest.raises(ValueError, match="Additional properties"):
        cls({**REQUIRED[cls], "bogus": 1})


def test_required_options():
    with pytest.raises(ValueError, match="'path' is a required property"):
        JsonlNotifier({})
    with pytest.raises(ValueError, match="'url' is a required property"):
        WebhookNotifier({})
    with pytest.raises(ValueError, match="'chat_id' is a required property"):
        TelegramNotifier({"token": TOKEN})


def test_a_bad_token_is_not_quoted_in_the_option_error():
    with pytest.raises(ValueError) as info:
        TelegramNotifier({"token": "has space/" + TOKEN, "chat_id": 1})
    assert "token" in str(info.value)
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("cls", NOTIFIERS)
def test_accepts_routes_by_min_severity(cls):
    notifier = cls({**REQUIRED[cls], "min_severity": "high"})
    assert notifier.accepts(make_event(severity="high"))
    assert notifier.accepts(make_event(severity="critical"))
    assert not notifier.accepts(make_event(severity="medium"))
    assert notifier.accepts(make_event(kind="resolved", severity="critical"))
    assert not notifier.accepts(make_event(kind="resolved", severity="low"))
    assert not notifier.accepts(make_event(kind="suppressed", severity="critical"))
    assert cls(REQUIRED[cls]).accepts(make_event(severity="info"))


def test_each_module_registers_its_notifier_through_the_hook():
    pm = pluggy.PluginManager("perpwatch")
    pm.add_hookspecs(hookspecs)
    for module in (console, jsonl, webhook, telegram):
        pm.register(module)
    found: list[type] = []
    pm.hook.register_notifiers(register=found.append)
    assert {cls.name for cls in found} == {"console", "jsonl", "webhook", "telegram"}


def test_unexpected_exceptions_become_notifier_errors(monkeypatch):
    def boom(self, event, color=False):
        raise KeyError("boom")

    monkeypatch.setattr(ConsoleNotifier, "render", boom)
    exc = send_error(ConsoleNotifier(), make_event())
    assert not exc.retryable
    assert "unexpected KeyError" in str(exc)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "unknown"),
        (float("nan"), "unknown"),
        (np.float64("nan"), "unknown"),
        (True, "true"),
        (np.bool_(False), "false"),
        (7, "7"),
        (np.int64(-3), "-3"),
        (0.0005, "0.0005"),
        (12.5, "12.5"),
        (1234567.89, "1,234,568"),
        (float("-inf"), "-inf"),
        ("up", "up"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_signal_text():
    assert signal_text(None) is None
    assert signal_text(OrderIntent("long", 1000.0)) == "long 1,000 USD"
    assert signal_text(OrderIntent("short", 12.5)) == "short 12.50 USD"
    assert signal_text(OrderIntent("flat", None)) == "flat"
    assert signal_text(OrderIntent(None, None)) == "unknown side size unknown"


# --- console -----------------------------------------------------------------------------------


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_lines(capsys):
    send(
        ConsoleNotifier(),
        make_event(),
        make_event(kind="resolved", signal=None, message="Funding back to normal"),
        make_event(severity="info", message="", signal=OrderIntent("flat", None), interval=""),
    )
    assert capsys.readouterr().out.splitlines() == [
        "2024-08-05T04:00:00Z HIGH     funding_squeeze/crowded_longs BTC 4h: Funding 0.05% > limit (OI +12%)!"
        " | signal: long 1,000 USD",
        "2024-08-05T04:00:00Z HIGH     RESOLVED funding_squeeze/crowded_longs BTC 4h: Funding back to normal",
        "2024-08-05T04:00:00Z INFO     funding_squeeze/crowded_longs BTC | signal: flat",
    ]


def test_console_keeps_each_event_on_one_line(capsys):
    send(ConsoleNotifier(), make_event(message="two\nlines\x1b[31m", signal=None))
    assert (
        capsys.readouterr().out
        == (
            "2024-08-05T04:00:00Z HIGH     funding_squeeze/crowded_longs BTC 4h: two lines\n"  # the escape goes whole
        )
    )


def test_console_stderr(capsys):
    send(ConsoleNotifier({"stream": "stderr"}), make_event())
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("2024-08-05T04:00:00Z HIGH")


def test_console_colour_always():
    notifier = ConsoleNotifier({"color": "always"})
    assert notifier.use_color(io.StringIO())
    line = notifier.render(make_event(severity="critical", signal=None, message="x"), color=True)
    assert line == "2024-08-05T04:00:00Z \x1b[1;97;41mCRITICAL\x1b[0m funding_squeeze/crowded_longs BTC 4h: x"
    resolved = notifier.render(
        make_event(kind="resolved", severity="low", signal=None, message="x"), color=True
    )
    assert resolved == (
        "2024-08-05T04:00:00Z \x1b[36mLOW\x1b[0m      \x1b[32mRESOLVED\x1b[0m funding_squeeze/crowded_longs BTC 4h: x"
    )


@pytest.mark.parametrize(
    ("mode", "stream", "no_color", "coloured"),
    [
        ("auto", TtyStream(), None, True),
        ("auto", io.StringIO(), None, False),
        ("auto", TtyStream(), "1", False),
        ("always", io.StringIO(), "1", True),
        ("never", TtyStream(), None, False),
    ],
)
def test_console_colour_modes(monkeypatch, mode, stream, no_color, coloured):
    monkeypatch.setattr(sys, "stdout", stream)
    if no_color:
        monkeypatch.setenv("NO_COLOR", no_color)
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    send(ConsoleNotifier({"color": mode}), make_event(severity="medium"))
    text = stream.getvalue()
    assert ("\x1b[33mMEDIUM\x1b[0m" in text) is coloured
    assert ("\x1b[" in text) is coloured


def test_console_write_failure_is_a_notifier_error(monkeypatch):
    stream = io.StringIO()
    stream.close()
    monkeypatch.setattr(sys, "stdout", stream)
    exc = send_error(ConsoleNotifier(), make_event())
    assert not exc.retryable and "console: cannot write to stdout" in str(exc)


# --- jsonl -------------------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_lines_parse_back_and_are_fsynced(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "deep" / "er" / "events.jsonl"
    events = [
        make_event(),
        make_event(kind="resolved", signal=None),
        make_event(symbol="ETH", severity="low"),
    ]
    send(JsonlNotifier({"path": str(path)}), *events)
    records = read_lines(path)
    assert records[0] == {
        "kind": "fired",
        "strategy": "funding_squeeze",
        "rule": "crowded_longs",
        "symbol": "BTC",
        "time": 1722830400000,
        "severity": "high",
        "message": "Funding 0.05% > limit (OI +12%)!",
        "values": {"funding.rate": 0.0005, "oi.change_pct": 12.5},
        "signal": {"side": "long", "size_usd": 1000.0},
        "interval": "4h",
        "time_iso": "2024-08-05T04:00:00Z",
    }
    for event, record in zip(events, records, strict=True):
        assert record["time_iso"] == "2024-08-05T04:00:00Z"
        record.pop("time_iso")
        assert Event.from_dict(record) == event
    assert len(synced) >= len(events)  # each line, plus the new file's directory


def test_jsonl_appends_and_writes_strict_json(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"old": true}\n', encoding="utf-8")
    values = {
        "a": float("nan"),
        "b": np.float64(1.5),
        "c": np.int64(3),
        "d": float("inf"),
        "e": np.bool_(True),
    }
    send(JsonlNotifier({"path": str(path)}), make_event(values=values, message="héllo ✓"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"old": true}'
    record = json.loads(lines[1], parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert record["values"] == {"a": None, "b": 1.5, "c": 3, "d": None, "e": True}
    assert record["message"] == "héllo ✓"


def test_jsonl_concurrent_sends_do_not_interleave(tmp_path):
    path = tmp_path / "events.jsonl"
    notifier = JsonlNotifier({"path": str(path)})
    events = [make_event(symbol=f"S{i}", message=chr(65 + i % 26) * 50_000) for i in range(120)]

    async def go() -> None:
        await asyncio.gather(*(notifier.send(e) for e in events))

    asyncio.run(go())
    records = read_lines(path)
    assert len(records) == len(events)
    assert sorted(r["symbol"] for r in records) == sorted(e.symbol for e in events)
    for record in records:
        i = int(record["symbol"][1:])
        assert record["message"] == chr(65 + i % 26) * 50_000


def test_jsonl_failure_to_write(tmp_path):
    (tmp_path / "events.jsonl").mkdir()
    exc = send_error(JsonlNotifier({"path": str(tmp_path / "events.jsonl")}), make_event())
    assert not exc.retryable and "jsonl: cannot append to" in str(exc)


# --- webhook payloads --------------------------------------------------------------------------


def test_webhook_raw_request(hooks):
    notifier = WebhookNotifier(
        {"url": hooks.url("/raw"), "headers": {"X-Api-Key": "k1"}, "method": "PUT", "timeout": 5}
    )
    event = make_event()
    send(notifier, event)
    (request,) = hooks.requests
    assert (request.method, request.path) == ("PUT", "/raw")
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["x-api-key"] == "k1"
    assert request.headers["user-agent"].startswith("perpwatch/")
    assert request.json() == event_record(event)
    assert request.json()["time_iso"] == "2024-08-05T04:00:00Z"


def test_slack_payload():
    assert slack_payload(make_event()) == {
        "text": "🟠 HIGH funding_squeeze/crowded_longs · BTC · 4h: Funding 0.05% &gt; limit (OI +12%)!",
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": "🟠 HIGH · funding_squeeze/crowded_longs · BTC · 4h",
                    "emoji": True,
                },
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": "Funding 0.05% &gt; limit (OI +12%)!"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Strategy*\nfunding_squeeze"},
                    {"type": "mrkdwn", "text": "*Rule*\ncrowded_longs"},
                    {"type": "mrkdwn", "text": "*Symbol*\nBTC"},
                    {"type": "mrkdwn", "text": "*Severity*\nhigh"},
                    {"type": "mrkdwn", "text": "*Signal*\nlong 1,000 USD"},
                ],
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "funding.rate = 0.0005\noi.change_pct = 12.5"},
            },
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "2024-08-05T04:00:00Z · 4h · perpwatch"}],
            },
        ],
    }


def test_slack_resolved_escaping_and_limits(hooks):
    event = make_event(
        kind="resolved", signal=None, values={}, interval="", message="<!channel> & <@U1> " + "x" * 5000
    )
    send(WebhookNotifier({"url": hooks.url("/slack"), "format": "slack"}), event)
    payload = hooks.requests[0].json()
    assert payload == slack_payload(event)
    header, section, fields, context = payload["blocks"]
    assert header["text"]["text"] == "✅ RESOLVED · funding_squeeze/crowded_longs · BTC"
    assert section["text"]["text"].startswith("&lt;!channel&gt; &amp; &lt;@U1&gt; xxx")
    assert len(section["text"]["text"]) == 3000 and section["text"]["text"].endswith("…")
    assert payload["text"].startswith("✅ RESOLVED funding_squeeze/crowded_longs · BTC: &lt;!channel&gt;")
    assert len(payload["text"]) <= 3000
    assert context["elements"][0]["text"] == "2024-08-05T04:00:00Z · perpwatch"


def test_slack_clipping_never_cuts_an_entity():
    event = make_event(message="&" * 2000)
    text = slack_payload(event)["blocks"][1]["text"]["text"]
    assert len(text) <= 3000
    assert re.fullmatch(r"(&amp;)+…", text)


def test_discord_payload():
    assert discord_payload(make_event()) == {
        "content": "🟠 **HIGH** funding\\_squeeze/crowded\\_longs · BTC · 4h",
        "embeds": [
            {
                "title": "HIGH · crowded\\_longs · BTC",
                "description": "Funding 0.05% \\> limit \\(OI +12%\\)!",
                "color": 0xE67E22,
                "timestamp": "2024-08-05T04:00:00Z",
                "fields": [
                    {"name": "Strategy", "value": "funding\\_squeeze", "inline": True},
                    {"name": "Rule", "value": "crowded\\_longs", "inline": True},
                    {"name": "Symbol", "value": "BTC", "inline": True},
                    {"name": "Severity", "value": "high", "inline": True},
                    {"name": "Interval", "value": "4h", "inline": True},
                    {"name": "Signal", "value": "long 1,000 USD", "inline": True},
                    {"name": "funding.rate", "value": "0.0005", "inline": True},
                    {"name": "oi.change\\_pct", "value": "12.5", "inline": True},
                ],
                "footer": {"text": "perpwatch"},
            }
        ],
        "allowed_mentions": {"parse": []},
    }


def test_discord_resolved_over_http(hooks):
    event = make_event(kind="resolved", signal=None, values={})
    send(WebhookNotifier({"url": hooks.url("/discord"), "format": "discord"}), event)
    payload = hooks.requests[0].json()
    assert payload == discord_payload(event)
    assert payload["content"] == "✅ **RESOLVED** funding\\_squeeze/crowded\\_longs · BTC · 4h"
    assert payload["embeds"][0]["title"] == "RESOLVED · crowded\\_longs · BTC"
    assert payload["embeds"][0]["color"] == 0x2ECC71


def test_discord_limits():
    values = {f"metric_{i}": i * 1.5 for i in range(40)}
    event = make_event(strategy="s" * 3000, rule="r" * 300, message="*" * 10_000, values=values)
    payload = discord_payload(event)
    embed = payload["embeds"][0]
    assert len(payload["content"]) <= 2000
    assert len(embed["title"]) <= 256
    assert len(embed["description"]) <= 4096
    assert re.fullmatch(r"(\\\*)+…", embed["description"])  # escapes are never cut in half
    assert len(embed["fields"]) <= 25
    assert all(len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024 for f in embed["fields"])
    total = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
    total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert total <= 6000
    assert embed["fields"][-1]["name"] == "…"
    assert embed["fields"][-1]["value"].endswith("more values")


@pytest.mark.parametrize("n_values", [0, 1, 3, 60])
def test_discord_embed_total_with_huge_names(n_values):
    values = {"v" * 300 + str(i): "x" * 2000 for i in range(n_values)}
    long = {"strategy": "s" * 5000, "rule": "r" * 5000, "symbol": "y" * 5000, "interval": "i" * 5000}
    embed = discord_payload(make_event(message="m" * 9000, values=values, **long))["embeds"][0]
    total = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
    total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert total <= 6000 and len(embed["fields"]) <= 25
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in embed["fields"])


def test_discord_many_values_fit_in_25_fields():
    payload = discord_payload(make_event(values={f"v{i}": i for i in range(30)}))
    fields = payload["embeds"][0]["fields"]
    assert len(fields) == 25
    assert fields[-1] == {"name": "…", "value": "12 more values", "inline": True}  # 6 fixed + 18 + 1


# --- webhook failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "retryable", "expected_after"),
    [
        (500, None, True, None),
        (503, "30", True, 30.0),
        (429, "7", True, 7.0),
        (408, None, True, None),
        (404, None, False, None),
        (400, "5", False, None),
        (301, None, False, None),
    ],
)
def test_webhook_status_mapping(hooks, status, retry_after, retryable, expected_after):
    hooks.fail(status=status, retry_after=retry_after, body="invalid_payload")
    exc = send_error(WebhookNotifier({"url": hooks.url("/hook")}), make_event())
    assert exc.retryable is retryable
    assert exc.retry_after == expected_after
    assert f"HTTP {status}" in str(exc) and "invalid_payload" in str(exc)


def test_webhook_retry_after_http_date(hooks):
    clock = FakeClock(start=1_722_830_400.0)
    when = datetime.fromtimestamp(clock.time() + 120, tz=UTC)
    hooks.fail(status=429, retry_after=format_datetime(when, usegmt=True))
    exc = send_error(WebhookNotifier({"url": hooks.url("/hook")}, PluginContext(clock=clock)), make_event())
    assert exc.retryable and exc.retry_after == 120.0


def test_webhook_discord_retry_after_in_body(hooks):
    hooks.fail(
        status=429, body={"message": "You are being rate limited.", "retry_after": 1.5, "global": False}
    )
    exc = send_error(WebhookNotifier({"url": hooks.url("/hook"), "format": "discord"}), make_event())
    assert exc.retryable and exc.retry_after == 1.5


def test_webhook_retries_then_delivers(hooks):
    hooks.fail(times=2, status=502)
    notifier = WebhookNotifier({"url": hooks.url("/hook")})
    event = make_event()
    for _ in range(2):
        assert send_error(notifier, event).retryable
    send(notifier, event)
    assert len(hooks.requests) == 3


def test_webhook_timeout_is_retryable(hooks):
    hooks.slow(2.0)
    exc = send_error(WebhookNotifier({"url": hooks.url("/hook"), "timeout": 0.2}), make_event())
    assert exc.retryable and "timed out after 0.2s" in str(exc)


def test_webhook_connection_refused_is_retryable(hooks):
    url = hooks.url("/hook")
    hooks.down()
    exc = send_error(WebhookNotifier({"url": url}), make_event())
    assert exc.retryable and "ConnectError" in str(exc)
    hooks.up()
    send(WebhookNotifier({"url": url}), make_event())
    assert len(hooks.requests) == 1


def test_webhook_errors_hide_the_url_path_and_secrets(hooks, caplog):
    caplog.set_level(logging.DEBUG)
    url = hooks.url("/services/T000/B000/XXSECRETPATHXX")
    ctx = PluginContext(secrets=frozenset({"hdr-secret-value"}))
    notifier = WebhookNotifier({"url": url, "headers": {"Authorization": "Bearer hdr-secret-value"}}, ctx)
    hooks.fail(status=401, body="bad credentials Bearer hdr-secret-value")
    exc = send_error(notifier, make_event())
    assert not exc.retryable
    assert str(exc).startswith(f"webhook: POST http://127.0.0.1:{hooks.port}/***: HTTP 401 Unauthorized:")
    for text in (str(exc), repr(notifier), caplog.text):
        assert "XXSECRETPATHXX" not in text
        assert "hdr-secret-value" not in text
    assert "HTTP Request: POST" in caplog.text  # httpx logged the request, redacted


# --- telegram: escaping and splitting ----------------------------------------------------------


def test_markdown_v2_escapes_every_special_character():
    assert escape_markdown_v2(ALL_SPECIAL) == r"\_\*\[\]\(\)\~\`\>\#\+\-\=\|\{\}\.\!\\"
    assert escape_markdown_v2("BTC-PERP 0.05% (8h) > 1.5x!") == r"BTC\-PERP 0\.05% \(8h\) \> 1\.5x\!"
    assert escape_markdown_v2(r"a\b") == r"a\\b"
    plain = "plain: 100% ok, 'q' \"dq\" / @ $ ^ & ; ? , < é 🚀"
    assert escape_markdown_v2(plain) == plain


def test_telegram_message_text():
    text = "".join(render_atoms(make_event()))
    assert text == (
        "🟠 *HIGH* · BTC · 4h\n"
        "funding\\_squeeze / crowded\\_longs\n"
        "Funding 0\\.05% \\> limit \\(OI \\+12%\\)\\!\n"
        "Signal: long 1,000 USD\n"
        "\n"
        "funding\\.rate \\= 0\\.0005\n"
        "oi\\.change\\_pct \\= 12\\.5\n"
        "\n"
        "2024\\-08\\-05T04:00:00Z"
    )
    assert check_markdown_v2(text)[0] is None


def test_telegram_resolved_and_plain_text():
    event = make_event(kind="resolved", signal=None, values={}, message="Back to 0.01%")
    assert "".join(render_atoms(event)) == (
        "✅ *RESOLVED* · BTC · 4h · was high\nfunding\\_squeeze / crowded\\_longs\nBack to 0\\.01%\n\n"
        "2024\\-08\\-05T04:00:00Z"
    )
    assert "".join(render_atoms(event, markdown=False)) == (
        "✅ RESOLVED · BTC · 4h · was high\nfunding_squeeze / crowded_longs\nBack to 0.01%\n\n2024-08-05T04:00:00Z"
    )


def test_split_never_cuts_an_escape():
    text = ALL_SPECIAL * 600  # 11,400 characters, each escaped: 22,800
    parts = split_atoms(mdv2_atoms(text))
    assert "".join(parts) == escape_markdown_v2(text)
    assert len(parts) == math.ceil(2 * len(text) / 4096)
    for part in parts:
        assert u16len(part) <= 4096
        assert re.fullmatch(r"(\\.)+", part, flags=re.S)  # whole escape pairs only
        assert check_markdown_v2(part)[0] is None


def test_split_prefers_line_breaks_then_spaces():
    lines = [f"line {i:03d} " + "x" * 90 for i in range(100)]
    parts = split_atoms(list("\n".join(lines)))
    assert len(parts) == 3
    assert all(p.endswith("\n") for p in parts[:-1])
    assert all(u16len(p) <= 4096 for p in parts)
    words = split_atoms(list("word " * 1000))
    assert [u16len(p) for p in words] == [4095, 905]
    assert words[0].endswith(" ")


def test_split_counts_utf16_units():
    parts = split_atoms(list("🚀" * 3000))  # 2 UTF-16 units each
    assert [len(p) for p in parts] == [2048, 952]


# --- telegram over HTTP ------------------------------------------------------------------------


def telegram_notifier(hooks: FakeHooks, **options) -> TelegramNotifier:
    return TelegramNotifier({"token": TOKEN, "chat_id": -100123, "base_url": hooks.base_url, **options})


def test_telegram_request(hooks):
    send(telegram_notifier(hooks, disable_notification=True), make_event())
    (request,) = hooks.requests
    assert (request.method, request.path) == ("POST", f"/bot{TOKEN}/sendMessage")
    assert request.json() == {
        "chat_id": -100123,
        "text": "".join(render_atoms(make_event())),
        "parse_mode": "MarkdownV2",
        "disable_notification": True,
    }


def test_telegram_plain_mode(hooks):
    send(telegram_notifier(hooks, parse_mode="none"), make_event())
    body = hooks.requests[0].json()
    assert "parse_mode" not in body
    assert body["disable_notification"] is False
    assert body["text"].startswith(
        "🟠 HIGH · BTC · 4h\nfunding_squeeze / crowded_longs\nFunding 0.05% > limit"
    )


def test_telegram_long_message_of_special_characters(hooks):
    message = "\n".join(ALL_SPECIAL * 40 for _ in range(20))  # 15,200 specials
    event = make_event(message=message)
    send(telegram_notifier(hooks), event)
    texts = hooks.telegram_texts()
    assert len(texts) > 1
    assert "".join(texts) == "".join(render_atoms(event))
    assert all(u16len(t) <= 4096 for t in texts)
    assert all(check_markdown_v2(t)[0] is None for t in texts)  # the fake accepted every part


def test_telegram_resumes_a_split_message_after_a_failure(hooks):
    event = make_event(message="." * 6000)
    notifier = telegram_notifier(hooks)
    parts = notifier.messages(event)
    assert len(parts) == 3
    hooks.telegram_fail(error_code=429, retry_after=3, after=1)
    exc = send_error(notifier, event)
    assert exc.retryable and exc.retry_after == 3.0
    assert "(part 2 of 3)" in str(exc)
    send(notifier, event)
    assert hooks.telegram_texts() == [parts[0], parts[1], parts[1], parts[2]]


@pytest.mark.parametrize(
    ("program", "retryable", "retry_after", "fragment"),
    [
        (
            lambda h: h.telegram_fail(error_code=429, retry_after=17),
            True,
            17.0,
            "error 429: Too Many Requests",
        ),
        (
            lambda h: h.telegram_fail(error_code=400, description="Bad Request: chat not found"),
            False,
            None,
            "error 400: Bad Request: chat not found",
        ),
        (lambda h: h.telegram_fail(error_code=403), False, None, "error 403: Forbidden: bot was blocked"),
        (
            lambda h: h.fail(status=502, body="<html>bad gateway</html>"),
            True,
            None,
            "error 502: <html>bad gateway",
        ),
        (lambda h: h.fail(status=429, retry_after=9, body="slow down"), True, 9.0, "error 429: slow down"),
        (
            lambda h: h.telegram_fail(
                error_code=400,
                description="Bad Request: group chat was upgraded to a supergroup chat",
                parameters={"migrate_to_chat_id": -1009},
            ),
            False,
            None,
            "set chat_id to it",
        ),
    ],
)
def test_telegram_error_mapping(hooks, program, retryable, retry_after, fragment):
    program(hooks)
    exc = send_error(telegram_notifier(hooks), make_event())
    assert exc.retryable is retryable
    assert exc.retry_after == retry_after
    assert fragment in str(exc)
    assert str(exc).startswith(f"telegram: POST {hooks.base_url}/bot***/sendMessage: ")


def test_telegram_wrong_token_and_bad_markdown_are_not_retryable(hooks):
    exc = send_error(
        TelegramNotifier({"token": "999:wrong", "chat_id": 1, "base_url": hooks.base_url}), make_event()
    )
    assert not exc.retryable and "error 401: Unauthorized" in str(exc)
    raw = telegram_notifier(hooks)
    raw.markdown = True
    raw.messages = lambda event: ["unescaped."]  # what forgetting to escape would do
    exc = send_error(raw, make_event())
    assert not exc.retryable and "Character '.' is reserved" in str(exc)


def test_telegram_timeout_and_connection_refused(hooks):
    hooks.slow(2.0)
    exc = send_error(telegram_notifier(hooks, timeout=0.2), make_event())
    assert exc.retryable and "timed out" in str(exc)
    notifier = telegram_notifier(hooks)
    hooks.down()
    exc = send_error(notifier, make_event())
    assert exc.retryable and "ConnectError" in str(exc)


def test_telegram_token_and_secrets_never_shown(hooks, caplog):
    caplog.set_level(logging.DEBUG)
    chat = "-100777888999"
    ctx = PluginContext(secrets=frozenset({TOKEN, chat}))
    notifier = TelegramNotifier({"token": TOKEN, "chat_id": chat, "base_url": hooks.base_url}, ctx)
    programs = [
        lambda: hooks.telegram_fail(
            error_code=400, description=f"Bad Request: bot{TOKEN} chat {chat} not found"
        ),
        lambda: hooks.telegram_fail(error_code=429, retry_after=1),
        lambda: hooks.fail(status=500, body=f"upstream said {TOKEN}"),
        lambda: hooks.slow(1.0),
    ]
    errors = []
    for program in programs:
        program()
        notifier.timeout = 0.2
        errors.append(send_error(notifier, make_event()))
    notifier.messages = lambda event: (_ for _ in ()).throw(RuntimeError(f"boom {TOKEN} {chat}"))
    errors.append(send_error(notifier, make_event()))
    hooks.down()
    del notifier.messages
    errors.append(send_error(notifier, make_event()))
    assert len(errors) == 6
    shown = (
        [str(e) for e in errors] + [repr(e) for e in errors] + [repr(notifier), str(notifier), caplog.text]
    )
    for text in shown:
        assert TOKEN not in text
        assert chat not in text
    assert TOKEN not in str(notifier.options)
    assert "***" in str(errors[0]) and "bot***" in caplog.text  # redacted, not dropped
    assert notifier.options["token"] == "***"


def test_fake_hooks_telegram_checks():
    with FakeHooks() as fake:

        def post(text, **extra):
            body = {"chat_id": 1, "text": text, "parse_mode": "MarkdownV2", **extra}
            return httpx.post(fake.url("/botT/sendMessage"), json=body).json()

        assert post("*bold* a\\.b")["ok"] is True
        assert post("*bold* a\\.b")["result"]["text"] == "bold a.b"
        assert "reserved" in post("a.b")["description"]
        assert "end of" in post("*open")["description"]
        assert post("x" * 4097)["description"] == "Bad Request: message is too long"
        assert post("\\." * 4096)["ok"] is True  # the limit counts text after parsing
        assert httpx.post(fake.url("/hook"), content=b"{}").text == "ok"
        fake.fail(status=418, path="/only")
        assert httpx.post(fake.url("/hook")).status_code == 200
        assert httpx.post(fake.url("/only/this")).status_code == 418
        assert [r.path for r in fake.wait_for(9)][-2:] == ["/hook", "/only/this"]
