"""The strategy compiler: names, windows, let cycles, kinds, labels, warm-up, templates, --param."""

from __future__ import annotations

import textwrap

import pytest

from perpwatch.common.errors import ErrorList, LocatedError
from perpwatch.common.timeutil import HOUR
from perpwatch.language.compiler import load_strategy


def compile_text(text: str, **kwargs):
    return load_strategy("s.yaml", text=textwrap.dedent(text), **kwargs)


def one_rule(when: str, *, let: str = "", params: str = "", extra: str = "", interval: str = "1h") -> str:
    return (
        f"version: 1\nname: s\ninterval: {interval}\n"
        + (f"params:\n{textwrap.indent(textwrap.dedent(params), '  ')}" if params else "")
        + (f"let:\n{textwrap.indent(textwrap.dedent(let), '  ')}" if let else "")
        + f"rules:\n  - name: r\n    when: '{when}'\n"
        + (textwrap.indent(textwrap.dedent(extra), "    ") if extra else "")
    )


def errors_of(text: str, **kwargs) -> list[str]:
    """Every error line the compiler reports for ``text``."""
    with pytest.raises((ErrorList, LocatedError)) as info:
        compile_text(text, **kwargs)
    errs = info.value.errors if isinstance(info.value, ErrorList) else [info.value]
    return [e.format() for e in errs]


def error_of(text: str, **kwargs) -> str:
    errs = errors_of(text, **kwargs)
    assert len(errs) == 1, errs
    return errs[0]


# --- names ----------------------------------------------------------------------------------------


def test_unknown_let_name_suggests_the_closest():
    err = error_of(one_rule("fundng_z > 2", let="funding_z: zscore(funding.close, 24)\n"))
    assert err.startswith("s.yaml:8:12: error: unknown name 'fundng_z'")  # the text after the quote
    assert "did you mean: funding_z" in err


def test_unknown_param_name_suggests_the_param():
    err = error_of(one_rule("price.close > thresold", params="threshold: 2\n"))
    assert "unknown name 'thresold'" in err and "did you mean: threshold" in err


def test_unknown_metric_suggests_metrics():
    err = error_of(one_rule("oi.clos > 1"))
    assert "unknown metric 'oi.clos'" in err and "oi.close" in err


def test_unknown_metric_field_of_a_known_group():
    err = error_of(one_rule("liq.short > 1"))
    assert "unknown metric 'liq.short'" in err and "liq.short_usd" in err


def test_unknown_function_suggests_functions():
    err = error_of(one_rule("zscor(price.close, 5) > 1"))
    assert "unknown function 'zscor'" in err and "did you mean: zscore" in err


def test_error_points_at_the_name_inside_the_expression():
    # when: 'price.close > 1 and fundin.close > 0'  -> the column of "fundin"
    err = error_of(one_rule("price.close > 1 and fundin.close > 0"))
    assert err.startswith("s.yaml:6:32: error: 'fundin.close': attribute access is only allowed")
    assert "funding.close" in err


def test_several_errors_are_all_reported_in_file_order():
    text = one_rule("price.clse > 1", let="a: sma(price.close, 0)\nb: nope + 1\n")
    errs = errors_of(text)
    assert len(errs) == 3
    assert [int(e.split(":")[1]) for e in errs] == [5, 6, 9]
    assert "at least 1" in errs[0] and "unknown name 'nope'" in errs[1] and "price.clse" in errs[2]


def test_reserved_names():
    assert "reserved name" in error_of(one_rule("price.close > 1", let="price: price.close * 2\n"))
    assert "reserved name" in error_of(one_rule("price.close > 1", params="interval: 2\n"))
    assert (
        "both a param and a let name"
        in errors_of(one_rule("x > 1", params="x: 2\n", let="x: price.close\n"))[0]
    )


# --- windows --------------------------------------------------------------------------------------


def test_window_must_be_known_at_load_time():
    err = error_of(one_rule("sma(price.close, price.volume) > 1"))
    assert "the window of sma() must be a whole number or a param" in err
    err = error_of(one_rule("sma(price.close, 2 + 3) > 1"))
    assert "must be a whole number or a param" in err


def test_window_from_a_param_and_its_checks():
    s = compile_text(one_rule("sma(price.close, w) > 1", params="w: 5\n"))
    assert s.warmup == 4
    assert "whole number of bars, not 2.5" in error_of(one_rule("sma(price.close, w) > 1", params="w: 2.5\n"))
    assert "whole number of bars, not 'five'" in error_of(
        one_rule("sma(price.close, w) > 1", params="w: five\n")
    )
    assert "lookahead" in error_of(one_rule("lag(price.close, w) > 1", params="w: -2\n"))


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("lag(price.close, -1) > 1", "lag() with window -1 would look into the future (lookahead)"),
        ("change(price.close, -5) > 1", "lookahead"),
        ("sma(price.close, -3) > 1", "lookahead"),
        ("lag(price.close, 0) > 1", "must be at least 1, not 0"),
        ("sma(price.close, 0) > 1", "must be at least 1, not 0"),
        ("stdev(price.close, 1) > 1", "must be at least 2, not 1"),
        ("zscore(price.close, 1) > 1", "must be at least 2, not 1"),
        ("sma(price.close, 1.5) > 1", "whole number of bars, not 1.5"),
        ("sma(price.close, True) > 1", "must be a whole number or a param"),
        ("sma(price.close, 100001) > 1", "too large"),
        ('sma(price.close, "5") > 1', "whole number of bars"),
    ],
)
def test_bad_windows(expr, message):
    assert message in error_of(one_rule(expr))


def test_whole_float_windows_are_accepted():
    assert compile_text(one_rule("sma(price.close, 5.0) > 1")).warmup == 4


# --- let cycles -----------------------------------------------------------------------------------


def test_let_cycle_names_the_cycle_once():
    text = one_rule("a > 1", let="a: b + 1\nb: c * 2\nc: lag(a, 1)\nd: price.close\n")
    err = error_of(text)
    assert "let names depend on each other in a cycle: a -> b -> c -> a" in err
    assert err.startswith("s.yaml:5:3:")  # at the let that starts the cycle


def test_let_order_does_not_matter():
    s = compile_text(one_rule("c > 1", let="c: b + 1\nb: a * 2\na: price.close\n"))
    assert set(s.lets) == {"a", "b", "c"}


def test_lets_are_compiled_once_and_shared():
    s = compile_text(
        one_rule(
            "sma(price.close, 3) > 1 and sma(price.close, 3) < 9 and m > 0", let="m: sma(price.close, 3)\n"
        )
    )
    calls = [n for n in s.plan.nodes if n.op == "call" and n.data[0] == "sma"]
    assert len(calls) == 1


# --- kinds and labels -----------------------------------------------------------------------------

STATE = """\
state:
  cases:
    - when: liq.total_usd > 1000000
      then: RISK_OFF
    - when: funding.close < 0
      then: SHORT_SQUEEZE
  else: NEUTRAL
"""


def test_categorical_compared_with_a_number():
    err = error_of(one_rule("state > 1", let=STATE))
    assert "cannot compare text 'state' with a number" in err
    assert "cannot compare text 'funding.max_exchange'" in error_of(one_rule("funding.max_exchange == 1"))
    assert "can only be compared with == or !=" in error_of(one_rule('state < "NEUTRAL"', let=STATE))


def test_label_typo_against_known_labels():
    err = error_of(one_rule('state == "RISK_OF"', let=STATE))
    assert "'RISK_OF' is never a value here; possible values: NEUTRAL, RISK_OFF, SHORT_SQUEEZE" in err
    assert "did you mean: RISK_OFF" in err
    err = error_of(one_rule('state in ["NEUTRAL", "SHORT_SQEEZE"]', let=STATE))
    assert "'SHORT_SQEEZE' is never a value here" in err
    # labels are checked wherever the categorical flows: through if/else and lag
    assert "never a value" in error_of(one_rule('lag(state, 1) == "NEUTRL"', let=STATE))


def test_labels_of_series_with_unknown_values_are_not_checked():
    # symbol and text metrics can hold anything: labels no case names compile without an error
    s = compile_text(one_rule('symbol == "DOGE" and funding.max_exchange == "Binance"'))
    assert [r.name for r in s.rules] == ["r"] and s.metrics == {"funding.max_exchange"}


def test_condition_must_be_boolean():
    assert "a condition must be true or false" in error_of(one_rule("price.close * 2"))
    assert "not a text label" in error_of(one_rule("state", let=STATE))


def test_lookup_needs_a_categorical():
    err = error_of(one_rule("s > 1", let="s:\n  lookup: price.close\n  table: {A: 1}\n"))
    assert "lookup: needs a categorical" in err


# --- warm-up --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "warmup"),
    [
        ("price.close > 1", 0),
        ("lag(price.close) > 1", 1),
        ("lag(price.close, 3) > 1", 3),
        ("change(price.close, 4) > 1", 4),
        ("pct_change(price.close) > 1", 1),
        ("sma(price.close, 5) > 1", 4),
        ("sma(lag(price.close, 3), 5) > 1", 7),  # nested windows add up: 3 + 4
        ("zscore(price.close, 24) > 1", 23),
        ("ema(price.close, 3) > 1", 11),  # 4n - 1
        ("rsi(price.close, 14) > 1", 55),  # 4n - 1
        ("crosses_above(price.close, price.open)", 1),
        ("count_true(crosses_above(price.close, sma(price.open, 10)), 5) > 1", 14),  # 9 + 1 + 4
        ("bars_since(rising(price.close, 2), 24) < 5", 25),  # 2 + 23
        ("zscore(ema(price.close, 5), 20) > 2", 38),  # 19 + 19
        ("pct_change(sma(price.close, 3), 2) > 1", 4),
        ("abs(lag(price.close, 2)) > max(lag(price.open, 5), 1)", 5),
        ("sma(price.close, 5) > 1 and lag(price.open, 9) > 0", 9),  # the largest branch
        ("fill(lag(price.close, 2), 0) > clip(price.open, 0, 1)", 2),
    ],
)
def test_warmup(expr, warmup):
    assert compile_text(one_rule(expr)).warmup == warmup


def test_warmup_through_lets_and_params():
    s = compile_text(one_rule("sma(a, w) > 1", let="a: lag(price.close, 2)\n", params="w: 3\n"))
    assert s.warmup == 4
    assert (
        compile_text(
            one_rule("sma(a, w) > 1", let="a: lag(price.close, 2)\n", params="w: 3\n"), overrides={"w": "10"}
        ).warmup
        == 11
    )


# --- templates ------------------------------------------------------------------------------------


def message_error(message: str, let: str = "z: zscore(price.close, 5)\n") -> str:
    return error_of(one_rule("price.close > 1", let=let, extra=f"message: {message!r}\n"))


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("{price.close.real}", "{price.close.real} in the message is not a known name"),
        ("{symbol.upper}", "not a known name"),
        ("{z.__class__}", "names starting with '_' are not allowed"),
        ("{symbol.__class__.__mro__}", "names starting with '_' are not allowed"),
        ("{price[0]}", "indexing is not allowed"),
        ("{z[0]}", "indexing is not allowed"),
        ("{z!r}", "conversions are not allowed"),
        ("{z!s}", "conversions are not allowed"),
        ("{z!a}", "conversions are not allowed"),
        ("{zz}", "did you mean: z"),
        ("{fundng.close}", "did you mean: funding.close"),
        ("{symbol:.2f}", "format spec does not suit a str value"),
        ("{z:d}", "format spec does not suit a num value"),
        ("{z:.2q}", "format spec does not suit"),
        ("{z:>999999999}", "too wide"),
        ("{z:.500f}", "too wide"),
        ("{z:{symbol}}", "nested fields are not allowed"),
        ("{}", "fields need a name"),
        ("{0}", "fields need a name"),
        ("{z", "bad message template"),
        ("z}", "bad message template"),
    ],
)
def test_bad_templates(message, expected):
    err = message_error(message)
    assert expected in err, err
    assert err.startswith("s.yaml:9:15: error:")


def test_good_templates_compile_and_render():
    s = compile_text(
        one_rule(
            "price.close > 1",
            let="z: zscore(price.close, 5)\nstate:\n  cases:\n    - when: z > 1\n      then: HOT\n  else: COLD\n",
            params="limit: 2\n",
            extra="message: '{symbol} {rule} {severity} {time}: z {z:+.1f} > {limit} ({state:>5}) {{literal}} {price.close:,.2f}'\n",
        )
    )
    template = s.rules[0].message
    values = {
        "symbol": "BTC",
        "rule": "r",
        "severity": "info",
        "time": "2024-08-05T00:00:00Z",
        "z": 2.25,
        "limit": 2,
        "state": "HOT",
        "price.close": 65000.5,
    }
    assert (
        template.render(values.get)
        == "BTC r info 2024-08-05T00:00:00Z: z +2.2 > 2 (  HOT) {literal} 65,000.50"
    )
    values["z"] = None
    assert "z unknown >" in template.render(values.get)  # unknown renders as "unknown", spec not applied


# --- params and --param overrides -----------------------------------------------------------------

PARAMS = """\
version: 1
name: p
params:
  window: 24
  limit: 2.5
  enabled: true
  venue: binance
let:
  z: zscore(funding.close, window)
rules:
  - name: r
    when: z > limit and enabled and funding.max_exchange == venue
"""


def test_params_and_overrides():
    s = compile_text(PARAMS)
    assert s.params == {"window": 24, "limit": 2.5, "enabled": True, "venue": "binance"}
    assert s.warmup == 23
    s = compile_text(PARAMS, overrides={"window": "48", "limit": "3", "enabled": "false", "venue": "okx"})
    assert s.params == {"window": 48, "limit": 3, "enabled": False, "venue": "okx"}
    assert s.warmup == 47


def test_bad_overrides():
    with pytest.raises(LocatedError, match=r"unknown param 'windw'.*did you mean: window"):
        compile_text(PARAMS, overrides={"windw": "10"})
    with pytest.raises(LocatedError, match="'ten' is not a number"):
        compile_text(PARAMS, overrides={"window": "ten"})
    with pytest.raises(LocatedError, match="is not true or false"):
        compile_text(PARAMS, overrides={"enabled": "yes"})
    assert "lookahead" in error_of(PARAMS, overrides={"window": "-5"})
    assert "whole number of bars, not 2.5" in error_of(PARAMS, overrides={"window": "2.5"})


# --- other fields ---------------------------------------------------------------------------------


def test_defaults_and_fields():
    s = compile_text(one_rule("price.close > 1"))
    assert s.interval == "1h" and s.step_ms == HOUR
    assert s.symbols is None and s.notify is None and s.execute is None
    assert s.risk.max_data_age_ms == 2 * HOUR  # default: 2 bars
    rule = s.rules[0]
    assert (rule.for_bars, rule.severity, rule.cooldown_ms, rule.message) == (0, "info", 0, None)
    s = compile_text(one_rule("price.close > 1", interval="4h"))
    assert s.risk.max_data_age_ms == 8 * HOUR


def test_rule_names_lists_every_name_the_condition_used_in_order():
    s = compile_text(
        one_rule(
            "z > lim and pct_change(oi.close, 1) > 0 and z < 9",
            let="z: zscore(funding.close, 5)\n",
            params="lim: 1\n",
        )
    )
    assert s.rules[0].names == ["z", "lim", "oi.close"]


def test_condition_sets_collect_names_from_every_branch():
    s = compile_text(
        """\
        version: 1
        name: sets
        rules:
          - name: r
            when:
              any:
                - all: [price.close > 1, oi.close > 2]
                - not: funding.close > 0
        """
    )
    assert s.rules[0].names == ["price.close", "oi.close", "funding.close"]


def test_signal_side_and_size():
    s = compile_text(
        one_rule(
            "price.close > 1",
            let="side:\n  cases:\n    - when: price.close > 2\n      then: long\n  else: flat\n",
            extra="signal:\n  side: side\n  size_usd: 1000 * 2\n",
        )
    )
    assert s.rules[0].side is not None and s.rules[0].size is not None
    err = error_of(
        one_rule(
            "price.close > 1",
            let="side:\n  cases:\n    - when: price.close > 2\n      then: buy\n  else: flat\n",
            extra="signal:\n  side: side\n",
        )
    )
    assert "signal side can be buy, which is not long, short or flat" in err
    assert "did you mean: short" in error_of(one_rule("price.close > 1", extra="signal:\n  side: shrt\n"))
    assert "size_usd must be a number" in error_of(
        one_rule("price.close > 1", extra="signal:\n  side: long\n  size_usd: symbol\n")
    )


# --- YAML details that change meaning ---------------------------------------------------------


def test_yes_no_on_off_are_text_not_booleans():
    # YAML 1.1 reads OFF as false: a label OFF would silently turn the let into a condition
    s = compile_text(
        one_rule(
            'risk == "OFF" and mode == "on"',
            let="risk:\n  cases:\n    - when: liq.total_usd > 1000000\n      then: OFF\n  else: ON\n",
            params="mode: on\n",
        )
    )
    assert s.plan.nodes[s.lets["risk"]].labels == frozenset({"OFF", "ON"})
    assert s.params["mode"] == "on"
    assert compile_text(one_rule("price.close > 1", extra="notify_resolved: true\n")).rules[0].notify_resolved


@pytest.mark.parametrize("key", ["1", "true", "null", "~", "1.5"])
def test_mapping_keys_must_be_text(key):
    err = error_of(one_rule("price.close > 1", let=f"{key}: price.close * 2\n"))
    assert err.startswith(f"s.yaml:5:3: error: a mapping key must be text, not {key}")


def test_fill_of_a_condition_needs_a_condition():
    assert "fill() of a condition needs True or False" in error_of(one_rule("fill(price.close > 1, 5)"))
    assert "fill() of a condition needs True or False" in error_of(one_rule("fill(price.close > 1, 1)"))
    compile_text(one_rule("fill(price.close > 1, False) or fill(price.open > 1, price.low > 2)"))
    assert "same kind as the series" in error_of(one_rule('fill(price.close, "x") > 1'))
