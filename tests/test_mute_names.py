"""``mute`` and ``unmute`` name a strategy or rule of the state database; any other name is an error
listing the valid ones (exit 2), never a mute of nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import invoke

from perpwatch.evaluation.rules import RuleState
from perpwatch.live.state import StateStore


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "state.db")
    store = StateStore(path)
    with store.transaction():
        for strategy, rule in (
            ("funding-heat", "hot_funding"),
            ("funding-heat", "cold"),
            ("squeeze", "cold"),
        ):
            store.save_rule_state(strategy, rule, "BTC", RuleState())
    store.close()
    return path


def mutes(path: str) -> list[str]:
    store = StateStore(path)
    try:
        return [m.target for m in store.mutes(0)]
    finally:
        store.close()


def test_known_names_are_muted(db: str) -> None:
    for target, stored in (
        ("funding-heat", "funding-heat"),
        ("funding-heat/cold", "funding-heat/cold"),
        ("hot_funding", "funding-heat/hot_funding"),  # a rule of exactly one strategy
    ):
        result = invoke("mute", target, "--for", "1h", "--state", db)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"muted {stored} until ")
    assert sorted(mutes(db)) == ["funding-heat", "funding-heat/cold", "funding-heat/hot_funding"]


def test_an_unknown_strategy_lists_the_valid_names(db: str) -> None:
    result = invoke("mute", "funding-hot", "--for", "1h", "--state", db)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: no strategy or rule 'funding-hot' in {db} (did you mean: funding-heat?); "
        "valid: funding-heat (rules: cold, hot_funding); squeeze (rules: cold)\n"
    )
    assert mutes(db) == []  # nothing muted


def test_an_unknown_rule_of_a_known_strategy(db: str) -> None:
    result = invoke("mute", "squeeze/hot_funding", "--for", "1h", "--state", db)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: strategy 'squeeze' has no rule 'hot_funding'")
    assert "valid: funding-heat (rules: cold, hot_funding); squeeze (rules: cold)" in result.stderr
    assert invoke("mute", "nosuch/cold", "--for", "1h", "--state", db).exit_code == 2
    assert mutes(db) == []


def test_a_rule_of_several_strategies_must_name_one(db: str) -> None:
    result = invoke("mute", "cold", "--for", "1h", "--state", db)
    assert result.exit_code == 2
    assert "write one of funding-heat/cold, squeeze/cold" in result.stderr


def test_unmute_checks_names_too_but_lifts_any_stored_mute(db: str) -> None:
    result = invoke("unmute", "squeez", "--state", db)
    assert result.exit_code == 2
    assert "no strategy or rule 'squeez'" in result.stderr and "(did you mean: squeeze?)" in result.stderr
    store = StateStore(db)
    with store.transaction():
        store.mute("retired", None, 2e9)  # a mute of a strategy whose states are gone (an older perpwatch)
    store.close()
    lifted = invoke("unmute", "retired", "--state", db)
    assert lifted.exit_code == 0 and lifted.stdout == "unmuted retired\n"


def test_an_empty_state_database_says_nothing_has_run(tmp_path: Path) -> None:
    path = str(tmp_path / "empty.db")
    StateStore(path).close()
    result = invoke("mute", "anything", "--for", "1h", "--state", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: no strategy 'anything': the state database {path} has none yet")


def test_the_list_of_valid_names_is_bounded(tmp_path: Path) -> None:
    path = str(tmp_path / "many.db")
    store = StateStore(path)
    with store.transaction():
        for i in range(50):
            store.save_rule_state(f"s{i:02d}", "r", "BTC", RuleState())
    store.close()
    result = invoke("mute", "zzz", "--for", "1h", "--state", path)
    assert result.exit_code == 2
    assert "s19 (rules: r); and 30 more strategies\n" in result.stderr and "s20" not in result.stderr
