"""Grouping, repeats and resolution in a simulated run (issue 16 #1, #2): one notification per
strategy, symbol and bar; a persisting alert re-sent after its repeat interval (fake clock, no
sleeps); resolved notifications join the group; the outbox keeps its guarantees with groups."""

from __future__ import annotations

from fakes.pipeline import T0, H, Pipeline

from perpwatch.api.interfaces import Event
from perpwatch.live.grouping import dedupe_key, sort_events

STRATEGY = """\
version: 1
name: heat
interval: 1h
snapshot:
  - label: Funding
    value: "{funding.close:.2f}%"
  - "bar {time}"
rules:
  - name: warm
    when: funding.close > 1
    severity: medium
    message: "{symbol} warm"
  - name: hot
    when: funding.close > 2
    severity: high
    notify_resolved: true
    message: "{symbol} hot {funding.close:.1f}"
  - name: info_only
    when: funding.close > 2
    severity: info
"""


def test_one_message_per_symbol_and_bar_with_the_snapshot(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [0, 3, 3, 0], "ETH": [0, 3, 0, 0]})
    runner = pipe.runner([pipe.strategy(STRATEGY)], pipe.config())
    pipe.cycles(runner, range(4))
    groups = pipe.groups["a"]
    # bar 1: BTC (3 alerts) and ETH (3 alerts) as two messages; bar 2: ETH's resolution;
    # bar 3: BTC's resolution. Each group sorted by severity, resolved last.
    assert pipe.texts("a") == [
        [("hot", "fired", "BTC"), ("warm", "fired", "BTC"), ("info_only", "fired", "BTC")],
        [("hot", "fired", "ETH"), ("warm", "fired", "ETH"), ("info_only", "fired", "ETH")],
        [("hot", "resolved", "ETH")],
        [("hot", "resolved", "BTC")],
    ]
    first = groups[0]
    assert first.group == {"strategy": "heat", "symbol": "BTC", "bar": "2024-08-01T01:00:00Z"}
    assert first.snapshot == [("Funding", "3.00%"), ("", "bar 2024-08-01T01:00:00Z")]
    assert first.key == dedupe_key([e.key for e in first.events]) and first.key.startswith("group:")
    assert groups[2].key == "heat/hot/ETH/1722477600000/resolved"  # alone: the event's own key
    assert pipe.store.pending_count() == 0


def test_a_persisting_high_is_repeated_after_its_interval(tmp_path):
    text = STRATEGY.replace("    notify_resolved: true\n", "    notify_resolved: true\n    repeat: 3h\n")
    pipe = Pipeline(tmp_path, {"BTC": [3, 3, 3, 3, 3, 3, 3, 0]})
    cfg = pipe.config(notify={"repeat": {"medium": "2h"}})
    runner = pipe.runner([pipe.strategy(text)], cfg)
    pipe.cycles(runner, range(8))
    kinds = [[(rule, kind) for rule, kind, _ in group] for group in pipe.texts("a")]
    assert kinds == [
        [("hot", "fired"), ("warm", "fired"), ("info_only", "fired")],  # bar 0
        [("warm", "repeat")],  # bar 2: medium repeats every 2 h (the config)
        [("hot", "repeat")],  # bar 3: the rule's own repeat: 3h
        [("warm", "repeat")],  # bar 4
        [("hot", "repeat"), ("warm", "repeat")],  # bar 6
        [("hot", "resolved")],  # bar 7
    ]
    times = [(n.first.time - T0) // H for n in pipe.groups["a"]]
    assert times == [0, 2, 3, 4, 6, 7]
    repeat = pipe.groups["a"][2].first
    assert repeat.key == f"heat/hot/BTC/{T0 + 3 * H}/repeat" and repeat.severity == "high"
    # repeats are recorded events, never traded; info has no repeat
    assert {e.kind for e in pipe.store.events()} == {"fired", "repeat", "resolved"}


def test_repeat_off_wins_over_the_config(tmp_path):
    text = STRATEGY.replace("    notify_resolved: true\n", '    notify_resolved: true\n    repeat: "off"\n')
    pipe = Pipeline(tmp_path, {"BTC": [3, 3, 3, 3]})
    runner = pipe.runner([pipe.strategy(text)], pipe.config(notify={"repeat": {"high": "1h"}}))
    pipe.cycles(runner, range(4))
    assert all(kind != "repeat" for group in pipe.texts("a") for _, kind, _ in group)


def test_group_by_symbol_only_joins_strategies(tmp_path):
    other = STRATEGY.replace("name: heat", "name: cold")
    pipe = Pipeline(tmp_path, {"BTC": [0, 3, 0]})
    cfg = pipe.config(notify={"group_by": ["symbol"]})
    runner = pipe.runner([pipe.strategy(STRATEGY), pipe.strategy(other, "o.yaml")], cfg)
    pipe.cycles(runner, range(2))
    [group] = pipe.groups["a"]
    assert {e.strategy for e in group.events} == {"heat", "cold"} and len(group.events) == 6
    assert group.group == {"symbol": "BTC"}
    # each strategy's snapshot lines once (the same values here)
    assert group.snapshot == [("Funding", "3.00%"), ("", "bar 2024-08-01T01:00:00Z")]


def test_a_group_fails_and_is_retried_as_a_whole_and_sent_once(tmp_path):
    pipe = Pipeline(tmp_path, {"BTC": [0, 3, 3, 3]})
    runner = pipe.runner([pipe.strategy(STRATEGY)], pipe.config(receivers=("a", "b")))

    def before(n: int) -> None:
        if n == 1:
            pipe.failing.add("b")
        if n == 3:
            pipe.failing.discard("b")
            pipe.clock.now += 3600  # past the backoff

    pipe.cycles(runner, range(4), before)
    assert pipe.texts("a")[0] == pipe.texts("b")[0]  # the same group, delivered late, whole
    assert len(pipe.groups["b"]) == len({n.key for n in pipe.groups["b"]})
    assert pipe.store.pending_count() == 0


def test_sort_and_dedupe_key():
    def ev(rule, severity, kind="fired"):
        return Event(kind, "s", rule, "BTC", 0, severity)

    events = [ev("a", "low"), ev("b", "critical", "resolved"), ev("c", "high", "repeat"), ev("d", "critical")]
    assert [e.rule for e in sort_events(events)] == ["d", "c", "a", "b"]
    keys = ["x/1", "y/2"]
    assert dedupe_key(keys) == dedupe_key(list(reversed(keys))) != dedupe_key(["x/1"])


def test_a_group_larger_than_a_delivery_batch_is_sent_whole(tmp_path, monkeypatch):
    from perpwatch.live import delivery

    monkeypatch.setattr(delivery, "DELIVERY_BATCH", 2)
    pipe = Pipeline(tmp_path, {"BTC": [3, 0], "ETH": [3, 0]})
    runner = pipe.runner([pipe.strategy(STRATEGY)], pipe.config())
    pipe.cycles(runner, range(1))
    assert [len(group) for group in pipe.texts("a")] == [3, 3]  # not 2 + 1 + 2 + 1
