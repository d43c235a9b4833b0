"""Meta-alerts, the engine's own alerts (issue 16 #3): a source down for three cycles raises one,
routed and delivered like any alert, and its recovery is delivered when the source answers; a
failing notifier is reported through the others; the kill switch; stale data; the heartbeat on a
local server; the daily alive notice."""

from __future__ import annotations

import asyncio
import logging

from fakes.hooks import FakeHooks
from fakes.pipeline import T0, H, Pipeline

from perpwatch.live.heartbeat import Heartbeat
from perpwatch.live.risk import halt, resume

STRATEGY = """\
version: 1
name: heat
interval: 1h
notify: [a]
rules:
  - name: hot
    when: funding.close > 2
    severity: high
"""


def meta_of(pipe: Pipeline, receiver: str) -> list[tuple[str, str, str, int]]:
    """(rule, subject, kind, bar index) of each meta-alert ``receiver`` got."""
    return [
        (e.rule, e.symbol, e.kind, round((e.time - T0) / H) - 1)
        for n in pipe.groups.get(receiver, [])
        for e in n.events
        if e.strategy == "perpwatch"
    ]


def test_a_source_down_three_cycles_alerts_once_and_recovers(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [0] * 10})
    runner = pipe.runner([pipe.strategy(STRATEGY)], pipe.config())

    def before(n: int) -> None:
        pipe.down = 2 <= n < 7  # five failed cycles: alerts on the third, once

    reports = pipe.cycles(runner, range(9), before)
    assert [r.failed for r in reports] == [False] * 2 + [True] * 5 + [False] * 2
    assert meta_of(pipe, "a") == [
        ("source_failing", "scripted", "fired", 4),
        ("source_failing", "scripted", "resolved", 7),
    ]
    fired, resolved = (e for n in pipe.groups["a"] for e in n.events if e.strategy == "perpwatch")
    assert fired.severity == "critical"
    assert fired.message.startswith("source scripted failing (3 in a row since 2024-08-01T03:00:00Z)")
    assert "HTTP 503 from the scripted source" in fired.message
    assert resolved.message.startswith("recovered: source scripted failing — over after 5 cycles")
    assert pipe.store.pending_count() == 0


def test_meta_severity_threshold_and_off(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [0] * 6})
    cfg = pipe.config(meta={"severity": "high", "source_failures": 1})
    runner = pipe.runner([pipe.strategy(STRATEGY)], cfg)
    pipe.cycles(runner, range(3), lambda n: setattr(pipe, "down", n == 1))
    assert meta_of(pipe, "a") == [
        ("source_failing", "scripted", "fired", 1),
        ("source_failing", "scripted", "resolved", 2),
    ]
    assert {e.severity for n in pipe.groups["a"] for e in n.events} == {"high"}
    quiet = Pipeline(tmp_path / "q", {"BTC": [0] * 6}) if (tmp_path / "q").mkdir() is None else None
    runner = quiet.runner(
        [quiet.strategy(STRATEGY)], quiet.config(meta={"enabled": False, "source_failures": 1})
    )
    quiet.cycles(runner, range(3), lambda n: setattr(quiet, "down", n == 1))
    assert meta_of(quiet, "a") == []


def test_a_failing_notifier_is_reported_through_the_others(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [3, 0, 3, 0, 3, 0, 3, 0]})
    text = STRATEGY.replace("notify: [a]", "notify: [a, b]")
    runner = pipe.runner([pipe.strategy(text)], pipe.config(receivers=("a", "b")))

    def before(n: int) -> None:
        if n == 0:
            pipe.failing.add("b")
        if n == 6:
            pipe.failing.discard("b")
        pipe.clock.now += 3600  # every retry of b comes due

    pipe.cycles(runner, range(8), before)
    got_a = meta_of(pipe, "a")
    assert [(r, s, k) for r, s, k, _ in got_a] == [
        ("notifier_failing", "b", "fired"),
        ("notifier_failing", "b", "resolved"),
    ]
    assert not [m for m in meta_of(pipe, "b") if m[0] == "notifier_failing"]  # never through itself
    # b got its alerts late, each once
    assert [[e.rule for e in n.events] for n in pipe.groups["b"] if n.first.strategy == "heat"] == [
        ["hot"]
    ] * 4


def test_kill_switch_and_stale_data(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [0, 0, 0]})  # no bar after the third: stale from bar 3 on
    runner = pipe.runner([pipe.strategy(STRATEGY)], pipe.config())

    def before(n: int) -> None:
        if n == 1:
            halt(pipe.store, "test")
        if n == 2:
            resume(pipe.store)

    pipe.cycles(runner, range(5), before)
    assert meta_of(pipe, "a") == [
        ("kill_switch", "trading", "fired", 1),
        ("kill_switch", "trading", "resolved", 2),
        ("stale_data", "BTC", "fired", 3),
    ]
    stale = [e for n in pipe.groups["a"] for e in n.events if e.rule == "stale_data"][0]
    assert stale.message == "stale data for BTC: scripted 1h: no bar, deciding 2024-08-01T03:00:00Z"


def test_a_rolled_back_cycle_alerts(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [0, 0]})
    runner = pipe.runner([pipe.strategy(STRATEGY)], pipe.config())
    runner.meta_cycle_failed(T0 / 1000 + 60, "OperationalError: disk I/O error")
    pipe.cycles(runner, range(1))
    assert meta_of(pipe, "a") == [
        ("cycle_failed", "cycle", "fired", -1),
        ("cycle_failed", "cycle", "resolved", 0),
    ]


def test_the_daily_alive_notice(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [0] * 30})
    runner = pipe.runner([pipe.strategy(STRATEGY)], pipe.config(meta={"alive": True}))
    pipe.cycles(runner, range(27))
    alive = [e for n in pipe.groups["a"] for e in n.events if e.rule == "alive"]
    assert len(alive) == 1 and alive[0].severity == "info"
    assert alive[0].message.startswith(
        "perpwatch is running: 24 good cycles and 0 alerts since 2024-08-01T01:00:00Z"
    )


def test_the_heartbeat_pings_a_local_server(tmp_path):
    with FakeHooks() as hooks:
        url = hooks.url("/ping/0f9a-uuid")
        pipe = Pipeline(tmp_path, {"BTC": [0] * 6})
        cfg = pipe.config(heartbeat={"url": url, "fail": True})
        runner = pipe.runner([pipe.strategy(STRATEGY)], cfg)
        pipe.cycles(runner, range(4), lambda n: setattr(pipe, "down", n == 2))
        paths = [r.path for r in hooks.requests]
        assert paths == ["/ping/0f9a-uuid", "/ping/0f9a-uuid", "/ping/0f9a-uuid/fail", "/ping/0f9a-uuid"]
        assert {r.method for r in hooks.requests} == {"GET"}
        # without fail: a failed cycle pings nothing; POST when asked
        seen = len(hooks.requests)
        beat = Heartbeat(url, method="POST")

        async def two() -> None:
            beat.after_cycle(False)
            beat.after_cycle(True)
            await beat.aclose()

        asyncio.run(two())
        assert [(r.method, r.path) for r in hooks.requests[seen:]] == [("POST", "/ping/0f9a-uuid")]


def test_a_heartbeat_that_fails_is_logged_once_without_its_url(caplog):
    caplog.set_level(logging.INFO, logger="perpwatch.live.runner")
    with FakeHooks() as hooks:
        beat = Heartbeat(hooks.url("/secret-check-id"), redact=lambda s: s.replace("secret-check-id", "***"))
        hooks.down()
        assert asyncio.run(beat.ping(True)) is False
        assert asyncio.run(beat.ping(True)) is False
        hooks.up()
        assert asyncio.run(beat.ping(True)) is True
    lines = [r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage()]
    assert lines == [lines[0], "heartbeat to 127.0.0.1 answers again"] and "failed" in lines[0]
    assert all("secret-check-id" not in line for line in lines)
