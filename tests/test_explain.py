"""``perpwatch explain STRATEGY --data PATH --at TIME``: every name's value and each condition's truth at
one bar of history files, through the command line only.

The history (1h bars from 2024-01-01T00:00Z, BTC), and what the strategy below makes of it:

    bar  price.close  funding.close  hot_rate  rising   hot                 held (for: 1)
     0      100          0.05         False    unknown  False               False
     1      101          0.12         True     True     True   fired        True  pending
     2       99          0.15         True     False    False  resolved     True  fired
     3      102          0.20         True     True     True   fired        True  firing
     4      103          0.01         False    True     False  resolved     False resolved
     5       _           0.30         True     unknown  unknown             True  pending
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from helpers import H, invoke, write_csv

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z

STRATEGY = """\
version: 1
name: heat
interval: 1h
params:
  limit: 0.1
let:
  hot_rate: funding.close > limit
rules:
  - name: hot
    when:
      all:
        - hot_rate
        - pct_change(price.close, 1) > 0
  - name: held
    when: funding.close > limit
    for: 1
"""

HISTORY = {
    "price.close": [100, 101, 99, 102, 103, None],
    "funding.close": [0.05, 0.12, 0.15, 0.2, 0.01, 0.3],
}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """The strategy file and a replay folder holding BTC's 1h history."""
    strategy = tmp_path / "heat.yaml"
    strategy.write_text(STRATEGY)
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "BTC_1h.csv", HISTORY, T0, H)
    return strategy, data


def explain(*args: object) -> Result:
    return invoke("explain", *args)


def test_values_and_truths_at_a_bar(files):
    strategy, data = files
    result = explain(strategy, "--data", data, "--at", "2024-01-01T03:00:00Z")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("heat — ") and lines[0].endswith(", bar 3 (2024-01-01T03:00:00Z), symbol BTC")
    assert lines[1:] == [
        "metrics:",
        "  funding.close = 0.2",
        "  price.close = 102",
        "params:",
        "  limit = 0.1",
        "let:",
        "  hot_rate = True",
        "rules:",
        "  hot: True (fired)",
        "       True  all:",
        "       True    hot_rate",
        "       True    pct_change(price.close, 1) > 0",
        "  held: True (firing)",
        "       True  funding.close > limit",
    ]


def test_the_rule_states_follow_the_history_up_to_the_bar(files):
    strategy, data = files
    states = {}
    for bar in range(6):
        result = explain(strategy, "--data", data, "--at", T0 + bar * H)  # epoch milliseconds
        assert result.exit_code == 0, result.output
        rules = result.stdout.split("rules:\n", 1)[1].splitlines()
        states[bar] = [line.strip() for line in rules if not line.startswith("    ")]
    assert states == {
        0: ["hot: False (not firing)", "held: False (not firing)"],  # False and unknown: False
        1: ["hot: True (fired)", "held: True (not firing)"],  # held waits one bar (for: 1)
        2: ["hot: False (resolved)", "held: True (fired)"],
        3: ["hot: True (fired)", "held: True (firing)"],
        4: ["hot: False (resolved)", "held: False (resolved)"],
        5: ["hot: unknown (not firing)", "held: True (not firing)"],
    }


def test_a_missing_value_is_unknown_and_so_is_what_needs_it(files):
    strategy, data = files
    result = explain(strategy, "--data", data, "--at", "2024-01-01T05:00:00Z")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "  price.close = unknown\n" in text and "  funding.close = 0.3\n" in text
    assert "  hot_rate = True\n" in text
    assert "  hot: unknown (not firing)\n" in text
    assert (
        "    unknown  all:\n       True    hot_rate\n    unknown    pct_change(price.close, 1) > 0\n" in text
    )


def test_a_file_a_symbol_and_a_param(files):
    strategy, data = files
    eth = dict(HISTORY, **{"funding.close": [0.01] * 6})
    write_csv(data / "ETH_1h.csv", eth, T0, H)
    one_file = explain(strategy, "--data", data / "BTC_1h.csv", "--at", "2024-01-01T03:00:00Z")
    assert one_file.exit_code == 0, one_file.output
    assert "  funding.close = 0.2\n" in one_file.stdout and "  hot: True (fired)\n" in one_file.stdout
    other = explain(strategy, "--data", data, "--symbol", "ETH", "--at", "2024-01-01T03:00:00Z")
    assert other.exit_code == 0, other.output
    assert other.stdout.splitlines()[0].endswith("symbol ETH")
    assert "  funding.close = 0.01\n" in other.stdout and "  hot: False (not firing)\n" in other.stdout
    higher = explain(strategy, "--data", data, "--param", "limit=0.25", "--at", "2024-01-01T03:00:00Z")
    assert higher.exit_code == 0, higher.output
    assert "  limit = 0.25\n" in higher.stdout and "  hot_rate = False\n" in higher.stdout
    assert "  hot: False (not firing)\n" in higher.stdout


@pytest.mark.parametrize("at", ["2024-01-01T03:30:00Z", "2023-12-31T23:00:00Z", "2024-01-01T06:00:00Z"])
def test_a_time_that_is_not_a_bar_exits_2(files, at):
    strategy, data = files
    result = explain(strategy, "--data", data, "--at", at)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"--at: error: {at} is not a bar of " in result.stderr
    assert "(2024-01-01T00:00:00Z .. 2024-01-01T05:00:00Z)" in result.stderr  # the bars there are


def test_a_time_that_is_not_a_time_exits_2(files):
    strategy, data = files
    result = explain(strategy, "--data", data, "--at", "soon")
    assert result.exit_code == 2
    assert "--at: error: 'soon' is not a time" in result.stderr


def test_missing_history_exits_2(files, tmp_path):
    strategy, data = files
    nowhere = tmp_path / "nope"
    missing = explain(strategy, "--data", nowhere, "--at", "2024-01-01T03:00:00Z")
    assert missing.exit_code == 2
    assert missing.stdout == ""
    assert f"error: --data {nowhere}: no such file or folder" in missing.stderr
    no_symbol = explain(strategy, "--data", data, "--symbol", "SOL", "--at", "2024-01-01T03:00:00Z")
    assert no_symbol.exit_code == 2
    assert "no 1h file for SOL (it has BTC)" in no_symbol.stderr


def test_a_strategy_without_data_is_a_usage_error(files):
    strategy, _ = files
    result = explain(strategy, "--at", "2024-01-01T03:00:00Z")
    assert result.exit_code == 2
    assert (
        "FILE is a strategy: give --data PATH (replay files), or pass a strategy test file" in result.stderr
    )
