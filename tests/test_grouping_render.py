"""Each notifier renders a group natively (issue 16 #1): console as a block, Telegram as one
MarkdownV2 message split at 4096, Slack and Discord (the new built-in notifiers, through their
entry points) as one message each, checked through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json

import httpx

from perpwatch.api.interfaces import Event, Notification, OrderIntent
from perpwatch.api.plugin import PluginContext
from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.plugins._notify import u16len
from perpwatch.plugins.console import ConsoleNotifier
from perpwatch.plugins.telegram import MAX_LENGTH, TelegramNotifier
from perpwatch.plugins.webhook import DISCORD_EMBED_TOTAL, SLACK_TEXT

BAR = 1760126400000  # 2025-10-10T20:00:00Z


def ev(rule: str, severity: str, kind: str = "fired", message: str = "", **kw) -> Event:
    return Event(kind, "monitor", rule, "BTC", BAR, severity, message or f"BTC {rule}", interval="4h", **kw)


def group(
    *events: Event, snapshot=(("Funding", "+0.0100% avg"), ("", "OI $70.5B (-17.79%)"))
) -> Notification:
    return Notification(list(events), "group:k", {"strategy": "monitor", "symbol": "BTC"}, list(snapshot))


CRASH = group(
    ev("oi_high", "high"),
    ev("liq_high", "high", signal=OrderIntent("short", 1000.0)),
    ev("taker", "medium", kind="repeat"),
    ev("ls_medium", "medium", kind="resolved"),
)


class Capture:
    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        if request.url.path.endswith("/sendMessage"):
            return httpx.Response(200, json={"ok": True, "result": {}})
        return httpx.Response(204)

    def ctx(self) -> PluginContext:
        return PluginContext(clock=FakeClock(0), transport=httpx.MockTransport(self))


def test_console_block(capsys):
    asyncio.run(ConsoleNotifier({"color": "never"}).send_group(CRASH))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "== monitor · BTC · 4h · 2025-10-10T20:00:00Z"
    assert lines[1:3] == ["   Funding: +0.0100% avg", "   OI $70.5B (-17.79%)"]
    assert lines[3].startswith("2025-10-10T20:00:00Z HIGH     monitor/oi_high BTC 4h: BTC oi_high")
    assert lines[4].endswith("| signal: short 1,000 USD")
    assert "MEDIUM   REPEAT monitor/taker" in lines[5] and "MEDIUM   RESOLVED monitor/ls_medium" in lines[6]
    assert lines[7] == "-- 3 firing, 1 repeated, 1 resolved · perpwatch"
    # one alert without a snapshot: its one line, as before grouping
    asyncio.run(ConsoleNotifier({"color": "never"}).send_group(group(ev("oi_high", "high"), snapshot=())))
    assert capsys.readouterr().out.count("\n") == 1


def test_telegram_one_message_and_split_at_4096():
    cap = Capture()
    bot = TelegramNotifier({"token": "1:A", "chat_id": 7}, cap.ctx())
    asyncio.run(bot.send_group(CRASH))
    [body] = cap.bodies
    text = body["text"]
    assert body["parse_mode"] == "MarkdownV2"
    assert text.splitlines()[:5] == [
        "🟠 *HIGH* · BTC · 4h",
        "monitor · 2025\\-10\\-10T20:00:00Z",
        "",
        "*Funding:* \\+0\\.0100% avg",
        "OI $70\\.5B \\(\\-17\\.79%\\)",
    ]
    assert "🟡 *MEDIUM \\(repeat\\)* taker: BTC taker" in text and "✅ *RESOLVED* ls\\_medium" in text
    assert text.endswith("3 firing, 1 repeated, 1 resolved · perpwatch")
    # a huge group: several messages, each within the limit, never cut inside an escape
    cap.bodies.clear()
    many = group(*(ev(f"r{i}", "high", message="x." * 60) for i in range(100)))
    asyncio.run(bot.send_group(many))
    texts = [b["text"] for b in cap.bodies]
    assert len(texts) > 1 and all(u16len(t) <= MAX_LENGTH for t in texts)
    assert all(not t.endswith("\\") for t in texts)
    assert sum(t.count("🟠 *HIGH* r") for t in texts) == 100


def test_slack_and_discord_notifiers_render_a_group():
    registry = load_registry()
    assert {"slack", "discord"} <= set(registry.notifiers)
    cap = Capture()
    slack = registry.notifiers["slack"]({"url": "https://hooks.slack.invalid/services/T0/B0/xyz"}, cap.ctx())
    asyncio.run(slack.send_group(CRASH))
    [body] = cap.bodies
    header, snap, alerts, footer = body["blocks"]
    assert header["text"]["text"] == "🟠 HIGH · monitor · BTC · 4h · 2025-10-10T20:00:00Z"
    assert snap["text"]["text"] == "*Funding:* +0.0100% avg\nOI $70.5B (-17.79%)"
    assert alerts["text"]["text"].splitlines()[0] == "🟠 HIGH oi_high: BTC oi_high"
    assert footer["elements"][0]["text"] == "3 firing, 1 repeated, 1 resolved · perpwatch"
    assert len(body["text"]) <= SLACK_TEXT
    cap.bodies.clear()
    discord = registry.notifiers["discord"]({"url": "https://discord.invalid/api/webhooks/1/tok"}, cap.ctx())
    asyncio.run(discord.send_group(CRASH))
    [body] = cap.bodies
    embed = body["embeds"][0]
    assert body["allowed_mentions"] == {"parse": []}
    assert embed["title"] == "monitor · BTC · 4h · 2025\\-10\\-10T20:00:00Z"
    assert embed["description"].startswith(
        "**Funding:** +0.0100% avg\nOI $70.5B \\(\\-17.79%\\)\n\n🟠 HIGH oi\\_high"
    )
    assert embed["footer"]["text"] == "3 firing, 1 repeated, 1 resolved · perpwatch"
    # a huge group stays within Discord's limits
    cap.bodies.clear()
    asyncio.run(discord.send_group(group(*(ev(f"r{i}", "low", message="y" * 500) for i in range(50)))))
    embed = cap.bodies[0]["embeds"][0]
    total = sum(u16len(embed[k]) for k in ("title", "description")) + u16len(embed["footer"]["text"])
    assert total <= DISCORD_EMBED_TOTAL and embed["description"].endswith("…")
