"""The webhook's raw format is Alertmanager's webhook payload, version 4 (issue 16 #1), checked
against the JSON schema written from Alertmanager's documentation (tests/schemas/)."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import pytest
from helpers import ROOT

from perpwatch.api.alertmanager import ZERO_TIME, fingerprint, group_key, payload
from perpwatch.api.interfaces import Event, Notification, OrderIntent
from perpwatch.api.plugin import PluginContext
from perpwatch.common.clock import FakeClock
from perpwatch.plugins.webhook import WebhookNotifier

SCHEMA = json.loads((ROOT / "tests" / "schemas" / "alertmanager-webhook-v4.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
BAR = 1760126400000  # 2025-10-10T20:00:00Z


def event(rule: str, severity: str, kind: str = "fired", **kw) -> Event:
    return Event(
        kind=kind,
        strategy="derivatives-monitor",
        rule=rule,
        symbol="BTC",
        time=BAR,
        severity=severity,
        message=f"BTC: {rule}",
        values={"oi_change_pct": -17.79, "liq.long_usd": 235601013.09, "missing": None},
        interval="4h",
        **kw,
    )


def group(
    *events: Event, snapshot=(("Open interest", "$70,505,795,930 (-17.79% in the bar)"),)
) -> Notification:
    return Notification(
        events=list(events),
        key="group:abc",
        group={"strategy": "derivatives-monitor", "symbol": "BTC", "bar": "2025-10-10T20:00:00Z"},
        snapshot=list(snapshot),
    )


def test_a_group_is_a_valid_v4_payload():
    doc = payload(
        group(
            event("oi_high", "high"),
            event("liq_high", "high", signal=OrderIntent("short", 1000.0)),
            event("oi_medium", "medium", kind="resolved"),
        ),
        receiver="am",
    )
    VALIDATOR.validate(doc)
    assert doc["version"] == "4" and doc["status"] == "firing" and doc["receiver"] == "am"
    assert doc["groupKey"] == '{}:{strategy="derivatives-monitor", symbol="BTC", bar="2025-10-10T20:00:00Z"}'
    assert doc["groupLabels"] == {
        "strategy": "derivatives-monitor",
        "symbol": "BTC",
        "bar": "2025-10-10T20:00:00Z",
    }
    assert doc["commonLabels"] == {
        "strategy": "derivatives-monitor",
        "symbol": "BTC",
        "interval": "4h",
    }  # alertname, rule and severity differ
    assert doc["commonAnnotations"]["snapshot"] == "Open interest: $70,505,795,930 (-17.79% in the bar)"
    first, second, resolved = doc["alerts"]
    assert first["labels"] == {
        "alertname": "oi_high",
        "strategy": "derivatives-monitor",
        "rule": "oi_high",
        "symbol": "BTC",
        "severity": "high",
        "interval": "4h",
    }
    assert first["status"] == "firing" and first["endsAt"] == ZERO_TIME
    assert first["startsAt"] == "2025-10-10T20:00:00Z"
    assert first["annotations"]["event_key"] == "derivatives-monitor/oi_high/BTC/1760126400000/fired"
    assert (
        first["annotations"]["values"]
        == "oi_change_pct = -17.79; liq.long_usd = 2.35601e+08; missing = unknown"
    )
    assert second["annotations"]["signal"] == "short 1000 USD"
    assert resolved["status"] == "resolved" and resolved["endsAt"] == "2025-10-10T20:00:00Z"
    # an alert and its resolution share their fingerprint; other alerts do not
    assert resolved["fingerprint"] == payload(group(event("oi_medium", "medium")))["alerts"][0]["fingerprint"]
    assert len({a["fingerprint"] for a in doc["alerts"]}) == 3


def test_all_resolved_and_repeats():
    doc = payload(group(event("oi_high", "high", kind="resolved"), snapshot=()))
    VALIDATOR.validate(doc)
    assert doc["status"] == "resolved" and "snapshot" not in doc["commonAnnotations"]
    doc = payload(group(event("oi_high", "high", kind="repeat")))
    VALIDATOR.validate(doc)
    assert doc["alerts"][0]["annotations"]["repeat"] == "true" and doc["status"] == "firing"


@pytest.mark.parametrize(
    "broken",
    [
        lambda d: d.pop("groupKey"),
        lambda d: d.update(version=4),
        lambda d: d["alerts"][0]["labels"].update(x=1),
        lambda d: d["alerts"][0].update(startsAt="yesterday"),
        lambda d: d.update(status="pending"),
    ],
)
def test_the_schema_can_fail(broken):
    doc = payload(group(event("oi_high", "high")))
    broken(doc)
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(doc)


def test_fingerprint_and_group_key():
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"}) and len(fingerprint({})) == 16
    assert group_key({}) == "{}:{}"


def test_the_webhook_posts_the_payload_with_the_group_s_dedupe_key():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    ctx = PluginContext(clock=FakeClock(0), transport=httpx.MockTransport(handler))
    hook = WebhookNotifier({"url": "https://am.invalid/alerts"}, ctx)
    asyncio.run(hook.send_group(group(event("oi_high", "high"), event("liq_high", "high"))))
    [request] = seen
    VALIDATOR.validate(json.loads(request.content))
    assert request.headers["X-Perpwatch-Event"] == "group:abc"
    # format: event keeps one request per event, each with its own key
    seen.clear()
    hook = WebhookNotifier({"url": "https://am.invalid/alerts", "format": "event"}, ctx)
    asyncio.run(hook.send_group(group(event("oi_high", "high"), event("liq_high", "high"))))
    assert [r.headers["X-Perpwatch-Event"] for r in seen] == [
        "derivatives-monitor/oi_high/BTC/1760126400000/fired",
        "derivatives-monitor/liq_high/BTC/1760126400000/fired",
    ]
    assert json.loads(seen[0].content)["rule"] == "oi_high"
