"""Errors that teach: the line that is wrong, and what was expected there.

YAML indentation mistakes point at the badly indented line (PyYAML often reports the line after
it), with the indentation it has and the one its siblings have; a text param used as a number
points at its definition too; a window that is not a param gets "did you mean"; ``=>``, ``=<``
and a lone ``=`` in an expression get the operator that was meant. The corpus files of
``tests/malformed/`` that carry a ``# wrong line: N`` line (their second) must report line N.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from perpwatch.common.errors import ErrorList, LocatedError
from perpwatch.language.compiler import load_strategy
from perpwatch.language.yamlhints import diagnose
from perpwatch.language.yamlsrc import load_yaml

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "tests" / "malformed").glob("*.yaml"))
WRONG_LINE = re.compile(r"^# wrong line: (\d+)$", re.M)
LOCATED = [p for p in CORPUS if WRONG_LINE.search(p.read_bytes().decode("utf-8", "replace"))]


def only_error(path: str | Path, text: str | None = None) -> LocatedError:
    with pytest.raises((ErrorList, LocatedError)) as info:
        load_strategy(str(path), text=text)
    errors = info.value.errors if isinstance(info.value, ErrorList) else [info.value]
    assert len(errors) == 1, [e.format() for e in errors]
    return errors[0]


def test_the_corpus_has_located_indentation_mistakes():
    names = {p.stem for p in LOCATED}
    assert len([n for n in names if n.startswith("yaml_indent_")]) >= 10
    for wanted in [
        "text_param_compared_with_number",
        "window_name_typo",
        "operator_arrow",
        "operator_single_equals",
    ]:
        assert wanted in names


@pytest.mark.parametrize("path", LOCATED, ids=[p.stem for p in LOCATED])
def test_error_points_at_the_line_that_is_wrong(path):
    m = WRONG_LINE.search(path.read_text())
    assert m, path.name
    err = only_error(path)
    assert err.loc is not None and err.loc.line == int(m.group(1)), err.format()


def test_pyyaml_alone_points_a_line_late_where_the_hint_does_not():
    """The corpus is not trivially right: for these mistakes PyYAML's own mark is elsewhere."""
    late = 0
    for path in LOCATED:
        if not path.stem.startswith("yaml_indent_"):
            continue
        try:
            yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            if mark.line + 1 != int(WRONG_LINE.search(path.read_text()).group(1)):
                late += 1
    assert late >= 2


def test_over_indented_key_says_where_its_siblings_are():
    text = "version: 1\nname: m\nrules:\n  - name: r\n     when: price.close > 1\n"
    with pytest.raises(LocatedError) as info:
        load_yaml(text, "s.yaml")
    assert info.value.format() == (
        "s.yaml:5:6: error: invalid YAML: this line is indented 5 spaces, too deep; "
        "the keys of this `rules:` item are at 4"
    )


def test_a_misaligned_list_item_is_named_not_the_line_after_it():
    text = "rules:\n  - name: a\n    when: x\n - name: b\n    when: y\n"
    with pytest.raises(LocatedError) as info:
        load_yaml(text, "s.yaml")
    assert info.value.loc.line == 4
    assert "the '-' items of `rules:` are at 2" in info.value.message


def test_block_scalars_and_continued_values_are_not_mistakes():
    text = (
        "a:\n  b: |\n      free text: with a colon\n\n      - more text\n"
        "  c: one plain value\n    going on below\n  d:\n  - x\n  - y\n"
        "  f:\n    a value on the lines\n    below its key\n  g: 1\n"
        "  h:\n  - - a list in a list\n    - {at: 4, fired: []}\n      # a comment anywhere\n  - 'it''s: text'\n"
        "e: [1,\n"  # a flow list over two lines: the hint gives up, the parser's message stands
    )
    valid = text.rsplit("e:", 1)[0]
    assert yaml.safe_load(valid)["a"]["f"] == "a value on the lines below its key"
    assert diagnose(valid, 99) is None
    assert diagnose(text, 99) is None


def test_no_hint_for_any_valid_yaml_of_the_project():
    """The hint only runs on files that failed, but must not invent a problem in a valid one."""
    texts = [p.read_text() for p in [*ROOT.glob("strategies/**/*.yaml"), *ROOT.glob("examples/**/*.yaml")]]
    for doc in [ROOT / "README.md", *ROOT.glob("docs/*.md")]:
        texts += re.findall(r"```ya?ml\n(.*?)```", doc.read_text(), re.S)
    checked = 0
    for text in texts:
        try:
            yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        assert diagnose(text, text.count("\n") + 1) is None, text[:200]
        checked += 1
    assert checked >= 15


# -- expressions ------------------------------------------------------------------------------

RULE = 'version: 1\nname: m\nparams:\n  window: 24\n  hot: "0.1"\n  mode: high\nlet:\n  z: price.close * 2\nrules:\n  - name: r\n    when: {when}\n'


def expr_error(when: str) -> str:
    return only_error("s.yaml", RULE.format(when=when)).format()


@pytest.mark.parametrize(
    ("when", "col", "meant"),
    [
        ("price.close => 1", 23, "'=>' is not an operator; did you mean >=?"),
        ("price.close =< 1", 23, "'=<' is not an operator; did you mean <=?"),
        ("price.close > 1 and oi.close = 2", 40, "'=' assigns, it does not compare; did you mean ==?"),
        (
            "price.close = 1",
            23,
            "assign statements are not allowed; '=' assigns, it does not compare; did you mean ==?",
        ),
    ],
)
def test_equals_signs_get_the_operator_that_was_meant(when, col, meant):
    err = expr_error(when)
    assert err.startswith(f"s.yaml:11:{col}: error: ")
    assert err.endswith(meant)


def test_an_equals_sign_inside_a_string_is_not_the_mistake():
    err = expr_error('symbol == "A=B" and price.close => 1')
    assert "'=>' is not an operator" in err and ":11:43:" in err


def test_text_param_compared_with_a_number_points_at_its_definition():
    err = expr_error("funding.close > hot")
    assert err == (
        "s.yaml:11:11: error: cannot compare text param 'hot' with a number: '0.1' (defined at s.yaml:5:3) "
        "is text because it is quoted; write hot: 0.1 without quotes"
    )


def test_text_param_in_arithmetic_and_as_an_argument_points_at_its_definition():
    assert "(defined at s.yaml:6:3) is a text label" in expr_error("price.close * mode > 1")
    assert "sma() needs a number here, not text param 'hot': '0.1' (defined at s.yaml:5:3)" in expr_error(
        "sma(hot, 3) > 1"
    )
    assert "not '0.1' (text param 'hot': '0.1' (defined at s.yaml:5:3)" in expr_error(
        "sma(price.close, hot) > 1"
    )


def test_unknown_window_name_gets_did_you_mean():
    err = expr_error("sma(price.close, windw) > 1")
    assert err.startswith("s.yaml:11:28: error: the window of sma() must be a whole number or a param")
    assert err.endswith("'windw' is not a param (did you mean: window?)")


def test_a_window_that_names_a_let_says_it_is_a_series():
    assert expr_error("sma(price.close, z) > 1").endswith("'z' is a let, a series computed bar by bar")


def test_a_window_name_with_nothing_close_lists_the_number_params():
    assert expr_error("sma(price.close, qqq) > 1").endswith(
        "'qqq' is not a param (its number params: window)"
    )
