"""Routing in the config, inhibition for notifications and silences with matchers (issue 16 #2)."""

from __future__ import annotations

import pytest
from fakes.pipeline import Pipeline

from perpwatch.common.errors import ErrorList
from perpwatch.evaluation.events import Event
from perpwatch.live.alertstate import AlertState
from perpwatch.live.config import load_config
from perpwatch.live.routing import Matchers, NotifyPolicy

HEAT = """\
version: 1
name: heat
interval: 1h
rules:
  - name: hot
    when: funding.close > 2
    severity: high
  - name: warm
    when: funding.close > 1
    severity: low
"""

RISK_OFF = """\
version: 1
name: risk-off
interval: 1h
rules:
  - name: risk_off
    when: funding.close > 2.5
    severity: critical
"""


def ev(rule="hot", severity="high", strategy="heat", symbol="BTC") -> Event:
    return Event("fired", strategy, rule, symbol, 0, severity)


def test_the_route_tree_flattened():
    policy = NotifyPolicy.from_config(
        {},
        {
            "receivers": ["log"],
            "routes": [
                {"match": {"severity": ["high", "critical"]}, "receivers": ["pager"], "continue": True},
                {"match": {"strategy": "heat", "symbol": "BT*"}, "receivers": ["chat"]},
                {"match": {"rule": "hot"}, "receivers": ["never"]},
            ],
        },
        ["log", "pager", "chat", "never"],
    )
    assert policy.receivers(ev()) == ["pager", "chat"]  # continue, then the first match stops
    assert policy.receivers(ev(severity="low")) == ["chat"]
    assert policy.receivers(ev(severity="low", symbol="ETH")) == ["never"]
    assert policy.receivers(ev(rule="x", severity="low", symbol="ETH")) == ["log"]  # the default
    assert policy.receivers(ev(), explicit=["x", "x"]) == ["x"]  # a strategy's notify: wins
    assert policy.all_receivers() == ["log", "pager", "chat", "never"]
    # without route: every configured notifier, else the console
    assert NotifyPolicy.from_config({}, {}, ["a", "b"]).receivers(ev()) == ["a", "b"]
    assert NotifyPolicy.from_config({}, {}, []).receivers(ev()) == ["console"]


def test_matchers():
    m = Matchers.of({"strategy": "heat", "severity": ["low", "medium"]})
    assert m.matches({"strategy": "heat", "severity": "low"})
    assert not m.matches({"strategy": "heat", "severity": "high"})
    assert not m.matches({"strategy": "cold", "severity": "low"})
    assert Matchers.of({}).matches({"strategy": "x"}) and Matchers.of({}).text() == "*"
    assert m.text() == "strategy=heat severity=low|medium"


def test_a_strategy_without_notify_goes_through_the_routes(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [3, 0], "ETH": [1.5, 0]})
    cfg = pipe.config(
        receivers=("pager", "chat"),
        route={"receivers": ["chat"], "routes": [{"match": {"severity": "high"}, "receivers": ["pager"]}]},
    )
    runner = pipe.runner([pipe.strategy(HEAT)], cfg)
    assert set(runner.notifiers) == {"pager", "chat"}
    pipe.cycles(runner, range(1))
    assert pipe.texts("pager") == [[("hot", "fired", "BTC")]]
    assert pipe.texts("chat") == [[("warm", "fired", "BTC")], [("warm", "fired", "ETH")]]


def test_inhibition_mutes_lower_alerts_while_risk_off_fires(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [3, 2.2, 0], "ETH": [2.2, 0, 0]})
    cfg = pipe.config(
        notify={"inhibit": [{"source": "risk-off/risk_off", "target": {"severity": ["low", "medium"]}}]}
    )
    runner = pipe.runner([pipe.strategy(HEAT), pipe.strategy(RISK_OFF, "r.yaml")], cfg)
    pipe.cycles(runner, range(2))
    # BTC at bar 0: risk-off fires, so BTC's low "warm" is not notified (the high "hot" is);
    # ETH has no risk-off: its "warm" is
    assert pipe.texts("a") == [
        [("hot", "fired", "BTC")],
        [("hot", "fired", "ETH"), ("warm", "fired", "ETH")],
        [("risk_off", "fired", "BTC")],
    ]
    # still recorded
    assert any(e.rule == "warm" and e.symbol == "BTC" for e in pipe.store.events())


def test_silences_with_matchers(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [3, 0], "ETH": [3, 0]})
    runner = pipe.runner([pipe.strategy(HEAT)], pipe.config())
    state = AlertState(pipe.store)
    state.add_silence({"symbol": ["BTC"], "severity": ["low"]}, pipe.clock.now + 7200, "ana", "known noise")
    state.add_silence({"symbol": ["ETH"]}, pipe.clock.now - 1)  # expired
    pipe.cycles(runner, range(1))
    assert pipe.texts("a") == [[("hot", "fired", "BTC")], [("hot", "fired", "ETH"), ("warm", "fired", "ETH")]]
    [silence] = state.silences(pipe.clock.now)
    assert (silence.author, silence.comment, silence.text()) == (
        "ana",
        "known noise",
        "symbol=BTC severity=low",
    )


def write(tmp_path, text: str) -> str:
    path = tmp_path / "perpwatch.yaml"
    path.write_text(text)
    return str(path)


def test_config_blocks_are_checked_with_locations(tmp_path):
    from perpwatch.api.registry import load_registry

    ok = write(
        tmp_path,
        "notifiers:\n  chat: {plugin: console}\nroute:\n  receivers: [chat]\n"
        "notify:\n  repeat: {high: 30m, low: 6h}\n  group_by: [symbol, bar]\n"
        "meta: {severity: high, source_failures: 2}\nheartbeat: {url: 'https://hc.invalid/ping/abc-123', fail: true}\n",
    )
    cfg = load_config(ok, load_registry())
    assert cfg.notify["repeat"] == {"high": "30m", "low": "6h"} and cfg.route == {"receivers": ["chat"]}
    assert "abc-123" in " ".join(cfg.secrets)  # the heartbeat URL is a secret
    bad = write(tmp_path, "notifiers:\n  chat: {plugin: console}\nroute:\n  receivers: [chta]\n")
    with pytest.raises(ErrorList) as e:
        load_config(bad, load_registry())
    text = e.value.errors[0].format()
    assert ":4:" in text and "no notifier named 'chta'" in text and text.endswith("(did you mean: chat?)")
    bad = write(tmp_path, "notify:\n  repeat: {high: 400d}\n")
    with pytest.raises(ErrorList) as e:
        load_config(bad)
    assert "at most 365 days" in e.value.errors[0].format()
    bad = write(tmp_path, "notify:\n  repeat: {urgent: 1h}\n")
    with pytest.raises(ErrorList) as e:
        load_config(bad)
    assert "urgent" in e.value.errors[0].format()
