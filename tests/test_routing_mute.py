"""``mute`` with matchers, an author and a comment, ``mute --list`` and ``unmute --id`` (issue 16 #2)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import invoke

from perpwatch.evaluation.rules import RuleState
from perpwatch.live.alertstate import AlertState
from perpwatch.live.state import StateStore


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "state.db")
    store = StateStore(path)
    with store.transaction():
        for strategy, rule in (("heat", "hot"), ("heat", "warm"), ("risk-off", "risk_off")):
            store.save_rule_state(strategy, rule, "BTC", RuleState())
    store.close()
    return path


def silences(path: str):
    store = StateStore(path)
    try:
        return AlertState(store).silences(time.time())
    finally:
        store.close()


def test_matchers_author_comment_and_listing(db):
    result = invoke(
        "mute",
        "severity=low,medium",
        "symbol=btc",
        "--for",
        "2h",
        "--author",
        "ana",
        "--comment",
        "CPI day",
        "--state",
        db,
    )
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.startswith("muted severity=low,medium symbol=BTC until ")
        and "(silence 1)" in result.stdout
    )
    [s] = silences(db)
    assert (s.matchers, s.author, s.comment) == (
        {"severity": ["low", "medium"], "symbol": ["BTC"]},
        "ana",
        "CPI day",
    )
    assert 7100 < s.until - time.time() <= 7200
    # a target with matchers: the target's strategy and rule become matchers
    result = invoke("mute", "heat/hot", "symbol=ETH", "--for", "1h", "--comment", "test", "--state", db)
    assert result.exit_code == 0, result.output
    assert silences(db)[1].matchers == {"strategy": ["heat"], "rule": ["hot"], "symbol": ["ETH"]}
    # the plain form stays a mute of its target
    assert invoke("mute", "risk-off", "--for", "1h", "--state", db).exit_code == 0
    listing = invoke("mute", "--list", "--state", db)
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("mute   strategy=risk-off until ")
    assert lines[1].startswith("#1     severity=low,medium symbol=BTC until ") and lines[1].endswith(
        " by ana: CPI day"
    )
    assert lines[2].startswith("#2     strategy=heat rule=hot symbol=ETH until ") and lines[2].endswith(
        ": test"
    )
    rows = json.loads(invoke("mute", "--list", "--json", "--state", db).stdout)
    assert [r["id"] for r in rows] == [None, 1, 2] and rows[1]["author"] == "ana"
    # lifted by number
    assert invoke("unmute", "--id", "1", "--state", db).stdout == "unmuted silence #1\n"
    assert invoke("unmute", "#2", "--state", db).exit_code == 0
    assert silences(db) == []
    again = invoke("unmute", "--id", "1", "--state", db)
    assert again.exit_code == 2 and "no silence #1" in again.stderr
    assert invoke("mute", "--list", "--state", db).stdout.splitlines()[1:] == []


@pytest.mark.parametrize(
    "matcher, fragment",
    [
        ("colour=red", "LABEL one of strategy, rule, symbol, severity"),
        ("severty=low", "did you mean: severity?"),
        ("severity=urgent", "severity=urgent: not a severity; one of info, low, medium, high, critical"),
        ("strategy=haet", "did you mean"),
        ("rule=hto", "rule=hto: no such rule"),
        ("symbol=", "write LABEL=VALUE"),
    ],
)
def test_bad_matchers_are_refused(db, matcher, fragment):
    result = invoke("mute", matcher, "--for", "1h", "--state", db)
    assert result.exit_code == 2
    assert fragment in result.stderr, result.stderr
    assert silences(db) == []


def test_meta_alerts_and_prefixes_can_be_silenced(db):
    result = invoke("mute", "strategy=perpwatch", "rule=stale_data", "--for", "1h", "--state", db)
    assert result.exit_code == 0, result.output
    assert invoke("mute", "rule=risk*", "--for", "1h", "--state", db).exit_code == 0
    assert [s.matchers for s in silences(db)] == [
        {"strategy": ["perpwatch"], "rule": ["stale_data"]},
        {"rule": ["risk*"]},
    ]


def test_mute_needs_a_duration_and_something_to_mute(db):
    assert invoke("mute", "heat", "--state", db).exit_code == 2
    assert invoke("mute", "--for", "1h", "--state", db).exit_code == 2
