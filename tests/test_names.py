"""Names and patterns: JSON Schema patterns read as ECMA-262 (a trailing newline is not the end of
a name), non-ASCII identifiers refused where Python would NFKC-normalise them, params and lets that
would shadow a function or a keyword, and the upper bounds of ``for:``, ``cooldown:``,
``max_data_age:`` and windows."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from helpers import ROOT, invoke

from perpwatch.common.errors import ErrorList, LocatedError
from perpwatch.common.timeutil import DAY, HOUR
from perpwatch.language.compiler import load_strategy
from perpwatch.language.ecma_regex import ecma_regex, translate
from perpwatch.language.schemas import schema_validator

# --- the pattern engine ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("^[a-z]+$", "name", True),
        ("^[a-z]+$", "name\n", False),  # Python's $ matches before a final newline; ECMA's does not
        ("^[a-z]+$", "name\n\n", False),
        ("^a$|^b$", "b\n", False),
        ("^[$]+$", "$$", True),  # a $ in a class is a dollar sign
        ("^\\$$", "$", True),
        ("^\\d+$", "123", True),
        ("^\\d+$", "١٢٣", False),  # Arabic-Indic digits: \d is ASCII in ECMA-262
        ("^\\d+$", "１２", False),  # full-width digits
        ("^\\w+$", "héllo", False),
        ("^a.b$", "a\nb", False),
        ("^a.b$", "a\rb", False),  # . does not match any line terminator
        ("^a.b$", "a\u2028b", False),
        ("^a.b$", "a-b", True),
        ("^\\s*x\\s*$", "\u00a0x\u3000", True),  # \s is ECMA's white space, Unicode spaces included
        ("^\\S+$", "a\u00a0b", False),
        ("^[\\s]+$", " \ufeff", True),
        ("^[]$", "", False),  # the empty class never matches
        ("^[^]$", "\n", True),  # [^] is any character
        ("^(?<word>[a-z]+)-\\k<word>$", "ab-ab", True),
        ("^(?<word>[a-z]+)-\\k<word>$", "ab-ba", False),
        ("(?<=a)b", "ab", True),  # look-behind is not a named group
        ("^https?://", "https://x\n", True),  # unanchored end: a prefix check stays a prefix check
    ],
)
def test_ecma_pattern_semantics(pattern: str, text: str, matches: bool) -> None:
    assert bool(ecma_regex(pattern).search(text)) is matches, translate(pattern)


def shipped_patterns() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(node: object, file: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    found.append((file, value))
                else:
                    walk(value, file)
        elif isinstance(node, list):
            for item in node:
                walk(item, file)

    for path in sorted((ROOT / "schemas").glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    return found


SAMPLES = {
    "^[A-Za-z0-9]{1,20}$": "BTC",
    "^[a-z][a-z0-9_-]*$": "funding-heat",
    "^[A-Za-z][A-Za-z0-9_]*$": "window",
    "^[A-Za-z_][A-Za-z0-9_-]*$": "hot_funding",
    "^\\s*\\d+\\s*[smhdw]\\s*$": "4h",
    "^[a-z][a-z0-9_-]*/[A-Za-z_][A-Za-z0-9_-]*$": "risk-off/risk_off",
    "^[a-z][a-z0-9_-]*(/[A-Za-z_][A-Za-z0-9_-]*)?$": "risk-off/risk_off",
}


@pytest.mark.parametrize(("file", "pattern"), shipped_patterns())
def test_every_shipped_pattern_is_anchored_for_real(file: str, pattern: str) -> None:
    """Each pattern of schemas/*.json accepts its sample and refuses it with a newline or a
    non-ASCII character after it (durations allow trailing white space, newlines included)."""
    sample = SAMPLES[pattern]
    regex = ecma_regex(pattern)
    assert regex.search(sample)
    assert not regex.search(sample + "\u0131")
    if "\\s*$" not in pattern:
        assert not regex.search(sample + "\n")
        assert re.search(pattern, sample + "\n")  # what Python's reading let through


def test_validator_class_covers_pattern_properties_and_additional_properties() -> None:
    schema = {
        "type": "object",
        "patternProperties": {"^x[0-9]$": {"type": "integer"}},
        "additionalProperties": False,
        "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}},
    }
    v = schema_validator(schema)
    assert v.is_valid({"x1": 1, "name": "ok"})
    assert not v.is_valid({"x1\n": 1})  # not a pattern property: an additional one
    assert not v.is_valid({"x1": "text"})  # a pattern property: checked against its schema
    assert not v.is_valid({"name": "ok\n"})


# --- names in strategies -----------------------------------------------------------------------


def compile_text(text: str):
    return load_strategy("s.yaml", text=textwrap.dedent(text))


def errors_of(text: str) -> list[str]:
    with pytest.raises((ErrorList, LocatedError)) as info:
        compile_text(text)
    errs = info.value.errors if isinstance(info.value, ErrorList) else [info.value]
    return [e.format() for e in errs]


def error_of(text: str) -> str:
    errs = errors_of(text)
    assert len(errs) == 1, errs
    return errs[0]


RULE = "rules:\n  - name: r\n    when: price.close > 1\n"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('version: 1\nname: "fine\\n"\n' + RULE, "s.yaml:2:12: error: name: 'fine\\n' is not valid"),
        ('version: 1\nname: "fine\\n\\n"\n' + RULE, "s.yaml:2:12: error: name:"),
        (
            'version: 1\nname: s\nrules:\n  - name: "r\\n"\n    when: price.close > 1\n',
            "s.yaml:4:13: error: rules[0].name: 'r\\n' is not valid",
        ),
        (
            'version: 1\nname: s\nparams:\n  "w\\n": 3\n' + RULE,
            "s.yaml:4:5: error: params: name 'w\\n' is not valid",
        ),
        (
            'version: 1\nname: s\nlet:\n  "x\\n": price.close\n' + RULE,
            "s.yaml:4:5: error: let: name 'x\\n' is not valid",
        ),
        ('version: 1\nname: s\nsymbols: ["BTC\\n"]\n' + RULE, "s.yaml:3:15: error: symbols[0]: 'BTC\\n'"),
        (
            'version: 1\nname: s\nexecute: paper\nrisk:\n  inhibited_by: ["a/b\\n"]\n' + RULE,
            "s.yaml:5:22: error: risk.inhibited_by[0]: 'a/b\\n' is not valid",
        ),
    ],
)
def test_a_trailing_newline_is_not_part_of_a_valid_name(text: str, where: str) -> None:
    err = error_of(text)
    assert err.startswith(where), err
    assert "control character '\\n'" in err


@pytest.mark.parametrize(
    ("when", "col", "char", "reads_as"),
    [
        ("ｈot", 11, "ｈ", "hot"),  # full-width h: NFKC makes it the let 'hot'
        ("hot and ｈot", 19, "ｈ", "hot"),
        ("price.ｃlose > 1", 17, "ｃ", "close"),
        ("sma(price.close, ｗindow=3) > 1", 28, "ｗ", "window"),
        ("ﬁ > 1", 11, "ﬁ", "fi"),  # a ligature
        ("hoｔ", 13, "ｔ", "hot"),
    ],
)
def test_non_ascii_names_in_expressions_are_refused_at_the_character(
    when: str, col: int, char: str, reads_as: str
) -> None:
    text = f"version: 1\nname: s\nlet:\n  hot: price.close > 1\n  fi: price.close\nrules:\n  - name: r\n    when: {when}\n"
    err = error_of(text)
    assert err.startswith(f"s.yaml:8:{col}: error: non-ASCII character {char!r} (U+{ord(char):04X})"), err
    assert reads_as in err


def test_non_ascii_text_in_a_string_literal_is_fine_and_columns_after_it_are_exact() -> None:
    text = """\
        version: 1
        name: s
        let:
          state:
            cases:
              - when: price.close > 1
                then: ÉLEVÉ
            else: BAS
        rules:
          - name: r
            when: 'state == "ÉLEVÉ" and nope > 1'
        """
    err = error_of(text)
    # columns count characters, not the UTF-8 bytes of the two É before the name
    assert err.startswith("s.yaml:11:33: error: unknown name 'nope'"), err
    ok = text.replace(" and nope > 1", "")
    assert compile_text(ok).rules[0].name == "r"


@pytest.mark.parametrize(
    ("section", "key", "line", "col"),
    [("params", "ｈot: 2", 4, 3), ("let", "ｈot: price.close", 4, 3), ("params", "wiｎdow: 3", 4, 5)],
)
def test_non_ascii_param_and_let_names_are_refused_at_the_character(section, key, line, col) -> None:
    err = error_of(f"version: 1\nname: s\n{section}:\n  {key}\n" + RULE)
    assert err.startswith(f"s.yaml:{line}:{col}: error: {section}: name "), err
    assert "non-ASCII character" in err and "ASCII letters, digits and _" in err


def test_non_ascii_rule_name_is_refused_at_the_character() -> None:
    err = error_of("version: 1\nname: s\nrules:\n  - name: ruｌe\n    when: price.close > 1\n")
    assert err.startswith("s.yaml:4:13: error: rules[0].name: 'ruｌe' is not valid"), err
    assert "non-ASCII character 'ｌ' (U+FF4C)" in err


@pytest.mark.parametrize("name", ["sma", "zscore", "abs", "max", "fill"])
@pytest.mark.parametrize("section", ["params", "let"])
def test_a_param_or_let_may_not_shadow_a_function(section: str, name: str) -> None:
    value = "3" if section == "params" else "price.close"
    err = error_of(f"version: 1\nname: s\n{section}:\n  {name}: {value}\n" + RULE)
    assert err.startswith(f"s.yaml:4:3: error: {name!r} is a function name"), err


@pytest.mark.parametrize("name", ["None", "and", "if", "lambda", "not", "in"])
@pytest.mark.parametrize("section", ["params", "let"])
def test_a_param_or_let_may_not_be_a_keyword(section: str, name: str) -> None:
    value = "3" if section == "params" else "price.close"
    err = error_of(f"version: 1\nname: s\n{section}:\n  {name}: {value}\n" + RULE)
    assert err.startswith(f"s.yaml:4:3: error: {name!r} is a keyword"), err


def test_a_plugin_function_is_shadowed_too() -> None:
    from perpwatch.language.functions import BUILTINS

    extra = {"myfn": BUILTINS["abs"]}
    text = "version: 1\nname: s\nparams:\n  myfn: 3\n" + RULE
    with pytest.raises((ErrorList, LocatedError)) as info:
        load_strategy("s.yaml", text=text, functions=extra)
    assert "'myfn' is a function name" in str(info.value)


# --- bounds ------------------------------------------------------------------------------------


def with_rule(extra: str, interval: str = "1h", risk: str = "") -> str:
    return (
        f"version: 1\nname: s\ninterval: {interval}\n{risk}rules:\n  - name: r\n    when: price.close > 1\n"
        + textwrap.indent(extra, "    ")
    )


@pytest.mark.parametrize(
    ("extra", "interval", "expected"),
    [
        ("for: 100001\n", "1h", "for: 100001 bars is too long; at most 100000 bars"),
        ("for: 1000000000000\n", "1h", "for: 1000000000000 bars is too long; at most 100000 bars"),
        ("for: 4200w\n", "1h", "for: '4200w' is too long; at most 365 days"),
        ("for: 100d\n", "1m", "for: '100d' is 144000 bars of 1m; at most 100000 bars"),
        ("for: 99999999999999999999999999999999w\n", "1h", "is too long; at most 365 days"),
        ("cooldown: 366d\n", "1h", "cooldown: '366d' is too long; at most 365 days"),
        ("cooldown: 9999999999999999999999w\n", "1h", "at most 365 days"),
        (f"cooldown: {'9' * 5000}s\n", "1h", "at most 365 days"),
    ],
)
def test_for_and_cooldown_have_upper_bounds(extra: str, interval: str, expected: str) -> None:
    err = error_of(with_rule(extra, interval))
    assert err.startswith("s.yaml:7:"), err
    assert expected in err, err


def test_bounds_are_inclusive() -> None:
    s = compile_text(with_rule("for: 100000\ncooldown: 365d\n"))
    assert (s.rules[0].for_bars, s.rules[0].cooldown_ms) == (100_000, 365 * DAY)
    s = compile_text(with_rule("for: 52w\n"))
    assert s.rules[0].for_bars == 52 * 7 * 24
    s = compile_text(with_rule("", risk="risk:\n  max_data_age: 365d\n"))
    assert s.risk.max_data_age_ms == 365 * DAY
    assert compile_text(with_rule("cooldown: 2h\n")).rules[0].cooldown_ms == 2 * HOUR


def test_max_data_age_has_an_upper_bound() -> None:
    err = error_of(with_rule("", risk="risk:\n  max_data_age: 53w\n"))
    assert err.startswith("s.yaml:5:17: error: max_data_age: '53w' is too long; at most 365 days"), err


@pytest.mark.parametrize("text", ["１h", "٣h", "1ｈ"])
def test_durations_are_ascii(text: str) -> None:
    err = error_of(with_rule(f"cooldown: {text}\n"))
    assert "is not valid" in err


def test_windows_have_an_upper_bound() -> None:
    err = error_of(with_rule("").replace("price.close > 1", "sma(price.close, 100001) > 1"))
    assert "at most 100000" in err
    compile_text(with_rule("").replace("price.close > 1", "sma(price.close, 100000) > 1"))


# --- plugin options ----------------------------------------------------------------------------


def test_plugin_option_patterns_are_ecma_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A telegram token from the environment with a trailing newline is refused by the config check."""
    from perpwatch.api.registry import load_registry
    from perpwatch.live.config import load_config

    monkeypatch.setenv("TG_TOKEN", "123456:token\n")
    path = tmp_path / "perpwatch.yaml"
    path.write_text('notifiers:\n  ops: {plugin: telegram, token: "${TG_TOKEN}", chat_id: "42"}\n')
    with pytest.raises((ErrorList, LocatedError)) as info:
        load_config(str(path), load_registry())
    assert "notifiers.ops.token" in str(info.value)
    assert "123456:token" not in str(info.value)  # a secret stays out of the error


def test_validate_cli_reports_a_trailing_newline_name(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text('version: 1\nname: "fine\\n"\n' + RULE)
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert f"{path}:2:12: error: name: 'fine\\n' is not valid" in result.output


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        ("366d", "'366d' is too long; at most 365 days"),
        ("99999999999999w", "at most 365 days"),
        ("１h", "write a duration such as 30m, 2h, 1d"),
    ],
)
def test_mute_duration_is_ascii_and_bounded(tmp_path: Path, duration: str, expected: str) -> None:
    from perpwatch.evaluation.rules import RuleState
    from perpwatch.live.state import StateStore

    db = tmp_path / "s.db"
    store = StateStore(str(db))
    store.save_rule_state("heat", "hot", "BTC", RuleState())  # mute names a strategy that has run
    store.close()
    result = invoke("mute", "heat", "--for", duration, "--state", db)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert invoke("mute", "heat", "--for", "365d", "--state", db).exit_code == 0


@pytest.mark.parametrize("text", ["１h", "٢h", "1h\n\n\u00a0x"])
def test_parse_duration_takes_ascii_digits_only(text: str) -> None:
    from perpwatch.common.timeutil import parse_duration

    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_parse_time_takes_ascii_digits_only() -> None:
    from perpwatch.common.timeutil import parse_time

    assert parse_time("1704067200000") == 1_704_067_200_000
    with pytest.raises(ValueError, match="is not a time"):
        parse_time("１７０４０６７２００００００")


def test_a_notifier_built_in_code_reads_its_patterns_as_ecma_too() -> None:
    from perpwatch.plugins.telegram import TelegramNotifier

    with pytest.raises(ValueError, match="token"):
        TelegramNotifier({"token": "123456:token\n", "chat_id": "42"})
    assert TelegramNotifier({"token": "123456:token", "chat_id": "42"}).name == "telegram"
