"""The core commands: ``perpwatch validate``, ``test``, ``explain`` and ``schema``; and a plugin name
conflict, which fails every command that loads the plugin registry."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import STRATEGIES, invoke

from perpwatch.cli.main import cli

# The strategy described in spec section 7, and the test file of section 7 verbatim.
FUNDING_HEAT = """\
version: 1
name: funding-heat
interval: 1h
rules:
  - name: hot_funding
    when: funding.close > 0.1 and pct_change(oi.close, 1) > 0
    for: 1
"""

SPEC_TEST = """\
strategy: funding-heat.yaml          # relative to this test file
params: {}                           # optional overrides
tests:
  - name: fires on the second hot bar, once
    symbol: BTC
    start: 2024-08-05T00:00:00Z      # time of bar 0
    series:                          # expanding notation: "a+bxn" = a, a+b, …, a+n·b (n+1 values); "_" = missing
      funding.close: "0.05x3 0.12x3" # bars 0-3: 0.05, bars 4-7: 0.12
      oi.close: "100+1x7"            # 100, 101, …, 107
    expect:
      - at: 4                        # bar index, or a time
        fired: []                    # True for the first time: pending
        firing: []
      - at: 5
        fired: [hot_funding]         # exactly these rules emit a fired event at this bar
        values: {funding.close: 0.12}
      - at: 6
        fired: []                    # still firing: no new event
        firing: [hot_funding]
"""

# The strategy of spec section 1, verbatim.
SPEC_STRATEGY = """\
# yaml-language-server: $schema=../schemas/strategy.schema.json
version: 1
name: short-squeeze                  # ^[a-z][a-z0-9_-]*$
description: Shorts are being forced out while funding is negative.
symbols: [BTC, ETH]                  # coins; default: the config's symbols
interval: 1h                         # 1m 3m 5m 15m 30m 1h 4h 6h 8h 12h 1d
source: coinglass                    # optional: a source plugin; default: chosen by config
params:                              # named constants; override with --param NAME=VALUE
  liq_z: 2
  window: 24
let:                                 # named series, any order; evaluated in dependency order
  funding_z: zscore(funding.close, window)
  short_liq_z: zscore(liq.short_usd, window)
  oi_rising: pct_change(oi.close, 1) > 0
  breakout: price.close > rolling_max(lag(price.high, 1), window)
  state:                             # a categorical series: first matching case wins
    cases:
      - when: zscore(liq.total_usd, window) > 3
        then: RISK_OFF               # `then:` a literal: a label or a number
      - when: short_liq_z > liq_z and funding.close < 0
        then: SHORT_SQUEEZE
    else: NEUTRAL                    # a literal; without `else`, no match gives unknown
  bias:
    cases:
      - when: state == "RISK_OFF"
        then: FLAT
      - when: True
        value: state                 # `value:` an expression, here another categorical series
  size_mult:                         # a lookup from a categorical series
    lookup: state
    table: {NEUTRAL: 1.0, SHORT_SQUEEZE: 1.0, RISK_OFF: 0.0}
    default: 0.5
rules:
  - name: squeeze_long
    when:                            # an expression, or a condition set (section 4)
      all:
        - funding.close < 0
        - oi_rising
        - breakout
        - short_liq_z > liq_z
    for: 1                           # bars it must already have held (or a duration: 1h)
    severity: high                   # info | low | medium | high | critical  (default info)
    cooldown: 4h                     # least time between two events of this rule and symbol
    message: "{symbol}: short squeeze, funding {funding.close:.4f}%, short-liq z {short_liq_z:.1f}"
    signal:                          # optional: an order intent for the executor
      side: long                     # long | short | flat, or an expression giving one of them
      size_usd: 1000 * size_mult
notify: [console]                    # notifier names (configured in the config file); default [console]
execute: paper                       # optional executor name; none: signals are only reported
risk:                                # optional; checked before any order reaches the executor
  max_position_usd: 5000
  max_open_positions: 3
  max_daily_loss_pct: 3
  max_data_age: 2h                   # older data counts as missing (default: 2 bars)
"""


@pytest.fixture
def heat(tmp_path: Path) -> Path:
    (tmp_path / "funding-heat.yaml").write_text(FUNDING_HEAT)
    (tmp_path / "funding-heat.test.yaml").write_text(SPEC_TEST)
    return tmp_path


# --- validate -------------------------------------------------------------------------------------


def test_validate_ok(heat):
    result = invoke("validate", heat / "funding-heat.yaml")
    assert result.exit_code == 0
    assert result.stdout == f"{heat / 'funding-heat.yaml'}: ok (1 rules, 0 lets)\n"


def test_validate_verbose_prints_metrics_and_warmup(heat):
    result = invoke("validate", "--verbose", heat / "funding-heat.yaml")
    assert result.exit_code == 0
    out = result.stdout
    assert "name:     funding-heat  interval: 1h" in out
    assert "metrics:  funding.close, oi.close" in out
    assert "warm-up:  1 bars before the newest (fetches 2 bars per cycle)" in out
    assert "rule hot_funding: severity info, for 1 bars; uses funding.close, oi.close" in out


def test_validate_the_spec_example_strategy(tmp_path):
    path = tmp_path / "short-squeeze.yaml"
    path.write_text(SPEC_STRATEGY)
    result = invoke("validate", "-v", path)
    assert result.exit_code == 0, result.stderr
    assert "ok (1 rules, 7 lets)" in result.stdout
    assert (
        "metrics:  funding.close, liq.short_usd, liq.total_usd, oi.close, price.close, price.high"
        in result.stdout
    )
    # breakout: rolling_max(lag(price.high, 1), 24) looks 1 + 23 bars back
    assert "warm-up:  24 bars before the newest (fetches 25 bars per cycle)" in result.stdout
    assert "cooldown 240m" in result.stdout


def test_validate_reports_errors_with_locations_and_exit_2(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(FUNDING_HEAT)
    bad = tmp_path / "bad.yaml"
    bad.write_text(FUNDING_HEAT.replace("funding.close > 0.1", "fundng.close > 0.1"))
    result = invoke("validate", good, bad)
    assert result.exit_code == 2
    assert f"{good}: ok" in result.stdout  # the good file is still checked
    assert result.stderr.startswith(f"{bad}:6:11: error: 'fundng.close'")
    assert "did you mean: funding.close" in result.stderr
    assert "Traceback" not in result.output


PARAM_STRATEGY = """\
version: 1
name: params
params:
  window: 24
  limit: 2
rules:
  - name: z
    when: zscore(funding.close, window) > limit
"""


def test_validate_param_override(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PARAM_STRATEGY)
    assert "warm-up:  23 bars" in invoke("validate", "-v", path).stdout
    result = invoke("validate", "-v", "--param", "window=48", "--param", "limit=3", path)
    assert result.exit_code == 0
    assert "warm-up:  47 bars" in result.stdout
    result = invoke("validate", "--param", "windw=48", path)
    assert result.exit_code == 2
    assert "unknown param 'windw'" in result.stderr and "did you mean: window" in result.stderr
    result = invoke("validate", "--param", "window=-3", path)
    assert result.exit_code == 2 and "lookahead" in result.stderr
    result = invoke("validate", "--param", "window", path)
    assert result.exit_code == 2 and "NAME=VALUE" in result.output


# --- test -----------------------------------------------------------------------------------------


def test_the_spec_section_7_example_passes(heat):
    result = invoke("test", heat / "funding-heat.test.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2:] == [
        f"{heat / 'funding-heat.test.yaml'}: 1 passed, 0 failed  ok",
        "1 passed, 0 failed",
    ]


def test_a_failing_expectation_exits_1_with_a_readable_diff(heat):
    wrong = SPEC_TEST.replace("fired: [hot_funding]         #", "fired: []                    #").replace(
        "      - at: 4                        # bar index, or a time\n        fired: []",
        "      - at: 4                        # bar index, or a time\n        fired: [hot_funding]",
    )
    (heat / "wrong.test.yaml").write_text(wrong)
    result = invoke("test", heat / "wrong.test.yaml")
    assert result.exit_code == 1
    out = result.stdout
    # bar 4: expected a fire that did not happen; the inputs of the rule at that bar are shown
    assert "FAIL 'fires on the second hot bar, once' at bar 4 (2024-08-05T04:00:00Z): fired" in out
    assert "    expected: [hot_funding]\n    actual:   []\n" in out
    assert "    inputs at this bar: funding.close=0.12, oi.close=104" in out
    # bar 5: it fired where the test said it would not
    assert "at bar 5 (2024-08-05T05:00:00Z): fired\n    expected: []\n    actual:   [hot_funding]" in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_a_failing_value_shows_expected_and_actual(heat):
    wrong = SPEC_TEST.replace("values: {funding.close: 0.12}", "values: {funding.close: 0.13, oi.close: _}")
    (heat / "values.test.yaml").write_text(wrong)
    result = invoke("test", heat / "values.test.yaml")
    assert result.exit_code == 1
    assert (
        "at bar 5 (2024-08-05T05:00:00Z): value of funding.close\n    expected: 0.13\n    actual:   0.12"
        in result.stdout
    )
    assert "value of oi.close\n    expected: _\n    actual:   105" in result.stdout
    assert "    inputs at this bar: funding.close=0.12, oi.close=105" in result.stdout


def test_tolerance(heat):
    text = SPEC_TEST.replace("values: {funding.close: 0.12}", "values: {funding.close: 0.1200001}")
    (heat / "tol.test.yaml").write_text(text)
    assert invoke("test", heat / "tol.test.yaml").exit_code == 1
    (heat / "tol.test.yaml").write_text(
        text.replace("    symbol: BTC\n", "    symbol: BTC\n    tolerance: 0.001\n")
    )
    assert invoke("test", heat / "tol.test.yaml").exit_code == 0


def test_times_as_at(heat):
    text = SPEC_TEST.replace("- at: 5 ", "- at: 2024-08-05T05:00:00Z")
    (heat / "times.test.yaml").write_text(text)
    assert invoke("test", heat / "times.test.yaml").exit_code == 0


def test_bad_test_files_exit_2(heat):
    (heat / "bad.test.yaml").write_text(SPEC_TEST.replace("fired: [hot_funding]", "fired: [hot_fundng]"))
    result = invoke("test", heat / "bad.test.yaml")
    assert result.exit_code == 2
    assert "no rule named 'hot_fundng' (did you mean: hot_funding?)" in result.stderr
    (heat / "bad2.test.yaml").write_text(SPEC_TEST.replace('"100+1x7"', '"100+1x"'))
    result = invoke("test", heat / "bad2.test.yaml")
    assert result.exit_code == 2
    assert "bad2.test.yaml:9:" in result.stderr and "'100+1x' is not expanding notation" in result.stderr


def test_test_with_params_unknown_values_and_labels(tmp_path):
    (tmp_path / "p.yaml").write_text(
        PARAM_STRATEGY.replace("rules:", "let:\n  zs: zscore(funding.close, window)\nrules:").replace(
            "when: zscore(funding.close, window) > limit",
            'when: zs > limit and funding.max_exchange == "okx"',
        )
    )
    (tmp_path / "p.test.yaml").write_text(
        textwrap.dedent(
            """\
            strategy: p.yaml
            params: {window: 3, limit: 0.5}
            tests:
              - name: z over 3 bars
                series:
                  funding.close: "1 2 3 3 3 1"
                  funding.max_exchange: "okx okx okx _ okx okx"
                expect:
                  - at: 2
                    fired: [z]
                    values: {zs: 1.0, funding.max_exchange: okx}
                  - at: 3
                    resolved: [z]
                    values: {funding.max_exchange: _}
                  - at: 4
                    firing: []
                    values: {zs: _}
            """
        )
    )
    # bar 2: zscore of 1,2,3 = (3-2)/1 = 1 > 0.5 -> fired; bar 3: exchange unknown -> resolved;
    # bar 4: 3,3,3 is flat -> zscore unknown
    result = invoke("test", tmp_path / "p.test.yaml")
    assert result.exit_code == 0, result.output


# --- explain --------------------------------------------------------------------------------------


def test_explain_shows_values_and_rule_states(heat):
    result = invoke("explain", heat / "funding-heat.test.yaml", "--at", "5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "funding-heat — test 'fires on the second hot bar, once', bar 5 (2024-08-05T05:00:00Z), symbol BTC"
    )
    assert "  funding.close = 0.12" in lines
    assert "  oi.close = 105" in lines
    assert "  hot_funding: True (fired)" in lines
    assert "       True  funding.close > 0.1 and pct_change(oi.close, 1) > 0" in lines
    result = invoke("explain", heat / "funding-heat.test.yaml", "--at", "2024-08-05T02:00:00Z")
    assert "  hot_funding: False (not firing)" in result.stdout.splitlines()
    # bar 0 has no pct_change yet (unknown), but 0.05 > 0.1 is False, and False and unknown is False
    result = invoke("explain", heat / "funding-heat.test.yaml", "--at", "0")
    assert "  hot_funding: False (not firing)" in result.stdout.splitlines()


def test_explain_bad_bar_exits_2(heat):
    result = invoke("explain", heat / "funding-heat.test.yaml", "--at", "99")
    assert result.exit_code == 2
    assert "outside the series (bars 0..7)" in result.stderr


# --- schema ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["strategy", "strategy-test", "config"])
def test_schema_is_valid_json(name):
    result = invoke("schema", name)
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["type"] == "object"


def test_schema_default_is_the_strategy_schema():
    schema = json.loads(invoke("schema").stdout)
    assert {"version", "name", "rules"} <= set(schema["required"])
    assert schema["additionalProperties"] is False


# --- a plugin name conflict -----------------------------------------------------------------------

CLASHING_SOURCE = """
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Source


class Shared(Source):
    name = "shared"

    @classmethod
    def provides(cls, options):
        return frozenset({"price.close"})

    async def fetch(self, request):
        raise NotImplementedError
"""

CLASH = "error: source 'shared' is registered by both plugin 'first' and plugin 'second'"


@pytest.fixture
def clashing(tmp_path: Path) -> Iterator[list[str]]:
    """``--plugin`` options for two local plugins registering the source ``shared``, and a third
    adding the command ``hello``."""
    register = "\n\n@hookimpl\ndef register_sources(register):\n    register(Shared)\n"
    (tmp_path / "first.py").write_text(CLASHING_SOURCE + register)
    (tmp_path / "second.py").write_text(CLASHING_SOURCE + register)
    (tmp_path / "greeter.py").write_text(
        textwrap.dedent(
            """
            import click
            from perpwatch.api.hookspecs import hookimpl

            @click.command("hello")
            def hello():
                click.echo("hello")

            @hookimpl
            def register_commands(cli):
                cli.add_command(hello)
            """
        )
    )
    yield [
        arg for name in ("first", "second", "greeter") for arg in ("--plugin", str(tmp_path / name) + ".py")
    ]
    cli.commands.pop("hello", None)  # plugin commands join the group object, which tests share


STRATEGY_FILE = STRATEGIES / "derivatives-monitor.yaml"
TEST_FILE = STRATEGIES / "tests" / "derivatives-monitor.test.yaml"


@pytest.mark.parametrize(
    "args",
    [
        ["validate", STRATEGY_FILE],
        ["test", TEST_FILE],
        ["explain", TEST_FILE, "--at", "0"],
        ["metrics"],
        ["run", STRATEGY_FILE, "--once", "--config", "missing.yaml"],
        ["backtest", STRATEGY_FILE, "--data", "."],
        ["hello"],  # a plugin's command
    ],
    ids=lambda args: args[0],
)
def test_a_plugin_name_conflict_fails_every_command_that_loads_plugins(clashing, args):
    result = invoke(*clashing, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr == CLASH + "\n"
    assert result.stdout == ""


def test_plugins_lists_then_fails_on_a_conflict(clashing):
    for args in (["plugins"], ["plugins", "--json"]):
        result = invoke(*clashing, *args)
        assert result.exit_code == 2, result.output
        assert result.stderr == CLASH + "\n"
        assert "second" in result.stdout and "coinglass" in result.stdout


def test_a_command_that_needs_no_plugin_ignores_a_conflict(clashing):
    result = invoke(*clashing, "schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["type"] == "object"


def test_a_plugin_cannot_replace_a_builtin_command(tmp_path):
    (tmp_path / "usurper.py").write_text(
        textwrap.dedent(
            """
            import click
            from perpwatch.api.hookspecs import hookimpl

            @click.command("schema")
            def schema():
                click.echo("not the schema")

            @hookimpl
            def register_commands(cli):
                cli.add_command(schema)
            """
        )
    )
    plugin = ["--plugin", tmp_path / "usurper.py"]
    listed = invoke(*plugin, "plugins")
    assert "  error: register_commands failed: ValueError: 'schema' is a built-in command" in listed.stdout
    assert json.loads(invoke(*plugin, "schema").stdout)["type"] == "object"
    assert "Print a JSON Schema" in invoke(*plugin, "--help").stdout
