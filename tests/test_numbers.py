"""Numbers from outside are finite, of the declared type and within bounds, or a located error.

Where numbers come from: YAML (strategies, test files, the config: one loader checks them all),
``--param`` values, the command line's numeric options, and Python callers of the schemas, the
paper executor and the risk layer (belt and braces: a NaN limit never switches a check off).
"""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import H, invoke

from perpwatch.api.interfaces import PluginContext
from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.common.errors import ErrorList, LocatedError
from perpwatch.common.numbers import MAX_INT, parse_number
from perpwatch.evaluation.evaluate import evaluate
from perpwatch.evaluation.events import OrderIntent
from perpwatch.evaluation.frame import Frame
from perpwatch.evaluation.rules import build_event
from perpwatch.language.compiler import load_strategy
from perpwatch.language.schemas import validate
from perpwatch.language.yamlsrc import load_yaml
from perpwatch.live.config import check_instances, load_config
from perpwatch.live.risk import RiskGate
from perpwatch.live.state import StateStore
from perpwatch.live.trading import Trading
from perpwatch.plugins.paper import PaperExecutor
from perpwatch.testing.testfile import run_test_file

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
HUGE_INT = "9" * 5000
#: YAML literals that are not finite numbers of perpwatch's range, and what the error says.
BAD_LITERALS = [
    (".nan", "not a finite number"),
    (".NaN", "not a finite number"),
    (".inf", "not a finite number"),
    ("-.Inf", "not a finite number"),
    ("+.INF", "not a finite number"),
    ("1e309", "too large"),
    ("1.0e+309", "too large"),
    ("-2.5e400", "too large"),
    (HUGE_INT, "too large"),
    (str(MAX_INT + 1), "too large"),
    (f"-{MAX_INT + 1}", "too large"),
    ("0x20000000000001", "too large"),
]


def where(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of the end of ``needle`` in ``text`` (where the value starts)."""
    at = text.index(needle) + len(needle)
    return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1


def errors(excinfo: pytest.ExceptionInfo) -> list[LocatedError]:
    e = excinfo.value
    return list(e.errors) if isinstance(e, ErrorList) else [e]


def one_error(excinfo: pytest.ExceptionInfo) -> LocatedError:
    found = errors(excinfo)
    assert len(found) == 1, [e.format() for e in found]
    return found[0]


# --- the YAML loader ------------------------------------------------------------------------------


@pytest.mark.parametrize(("literal", "said"), BAD_LITERALS, ids=[b[0][:12] for b in BAD_LITERALS])
def test_yaml_refuses_non_finite_and_huge_numbers_with_their_location(literal: str, said: str) -> None:
    with pytest.raises(LocatedError) as info:
        load_yaml(f"a: 1\nb:\n  - x\n  - {literal}\n", "f.yaml")
    err = info.value
    assert (err.loc.file, err.loc.line, err.loc.col) == ("f.yaml", 4, 5)
    assert said in err.message
    assert literal[:20] in err.message  # the bad value, shown (a long one cut short)
    assert len(err.message) < 300


@pytest.mark.parametrize("literal", [".nan", ".inf", "1e309", HUGE_INT])
def test_yaml_refuses_bad_numbers_in_keys_flow_and_explicit_tags(literal: str) -> None:
    for text in (f"{{a: [1, {literal}]}}", f"a: !!float {literal}", f"a: {{b: {literal}}}"):
        with pytest.raises(LocatedError, match="finite|too large"):
            load_yaml(text, "f.yaml")


def test_yaml_numbers_follow_yaml_1_2() -> None:
    doc = load_yaml(
        "a: 1e3\nb: 1e-3\nc: -2\nd: +.5\ne: 0x10\nf: 0o17\ng: 017\nh: 1_000\ni: 1:30\nj: 2.\n"
        f"k: {MAX_INT}\nl: -{MAX_INT}\nm: 1.7976931348623157e308\nn: 5e-324\no: '.nan'\np: nan\n",
        "f.yaml",
    )
    assert doc == {
        "a": 1000.0,
        "b": 0.001,
        "c": -2,
        "d": 0.5,
        "e": 16,
        "f": 15,
        "g": 17,
        "h": "1_000",  # YAML 1.1's digit separators are text (and a number field says so)
        "i": "1:30",  # YAML 1.1's base 60 is text
        "j": 2.0,
        "k": MAX_INT,
        "l": -MAX_INT,
        "m": 1.7976931348623157e308,
        "n": 5e-324,
        "o": ".nan",  # quoted: text
        "p": "nan",
    }
    assert type(doc["c"]) is int and type(doc["a"]) is float


def test_yaml_explicit_int_tag_needs_an_integer() -> None:
    with pytest.raises(LocatedError, match="not an integer"):
        load_yaml("a: !!int 1_000\n", "f.yaml")
    assert load_yaml("a: !!int '12'\nb: !!str 12\n", "f.yaml") == {"a": 12, "b": "12"}


STRATEGY = """\
version: 1
name: n
params:
  thr: 1
  flag: true
let:
  level:
    cases:
      - when: price.close > thr
        then: HIGH
    else: LOW
  mult:
    lookup: level
    table: {HIGH: 2, LOW: 1}
rules:
  - name: r
    when: price.close > thr
    signal: {side: long, size_usd: 1000}
execute: paper
risk: {max_position_usd: 5000, max_daily_loss_pct: 3}
"""

STRATEGY_PLACES = ["thr: 1", "HIGH: 2", "size_usd: 1000", "max_position_usd: 5000", "max_daily_loss_pct: 3"]


@pytest.mark.parametrize("place", STRATEGY_PLACES)
@pytest.mark.parametrize("literal", [".nan", ".inf", "-.inf", "1e309", HUGE_INT], ids=lambda s: s[:8])
def test_strategy_numbers_are_finite(tmp_path: Path, place: str, literal: str) -> None:
    key = place.split(":")[0]
    text = STRATEGY.replace(place, f"{key}: {literal}")
    line, col = where(text, f"{key}: ")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises((LocatedError, ErrorList)) as info:
        load_strategy(str(path))
    err = one_error(info)
    assert (err.loc.line, err.loc.col) == (line, col), err.format()
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}:{line}:{col}: error: ")
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_the_strategy_template_itself_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(STRATEGY)
    assert load_strategy(str(path)).risk.max_position_usd == 5000


@pytest.mark.parametrize("literal", ["true", "false"])
def test_booleans_are_not_numbers_in_number_fields(tmp_path: Path, literal: str) -> None:
    for place in ("size_usd: 1000", "max_position_usd: 5000", "max_daily_loss_pct: 3"):
        key = place.split(":")[0]
        path = tmp_path / "s.yaml"
        path.write_text(STRATEGY.replace(place, f"{key}: {literal}"))
        with pytest.raises((LocatedError, ErrorList)) as info:
            load_strategy(str(path))
        assert "must be a number" in one_error(info).message


# --- --param --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.1", 0.1),
        ("-2", -2),
        ("1e-3", 0.001),
        ("+5", 5),
        (".5", 0.5),
        ("2.", 2.0),
        (" 7 ", 7),
        ("1E3", 1000.0),
    ],
)
def test_parse_number_accepts_what_a_trader_types(text: str, value: float) -> None:
    got = parse_number(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("nan", "NaN and infinities"),
        ("NaN", "NaN and infinities"),
        ("inf", "NaN and infinities"),
        ("-Infinity", "NaN and infinities"),
        ("1e309", "too large"),
        ("1_000", "without '_'"),
        ("１２", "ASCII digits"),
        ("٣", "ASCII digits"),
        ("0x10", "is not a number"),
        ("", "is not a number"),
        ("1e", "is not a number"),
        ("true", "is not a number"),
        (HUGE_INT, "too large"),
        (str(MAX_INT + 1), "too large"),
    ],
)
def test_parse_number_refuses_with_what_would_be_valid(text: str, said: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_number(text)
    message = str(info.value)
    assert said in message
    assert "write" in message or "at most" in message  # what would be valid
    assert len(message) < 300


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


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(PARAMS)
    return path


@pytest.mark.parametrize(
    ("param", "said"),
    [
        ("limit=nan", "NaN and infinities"),
        ("limit=inf", "NaN and infinities"),
        ("limit=-inf", "NaN and infinities"),
        ("limit=1e309", "too large"),
        ("window=1_000", "without '_'"),
        ("window=２４", "ASCII digits"),
        ("limit=true", "is not a number"),
        ("limit=False", "is not a number"),
        ("enabled=1", "is not true or false"),
        (f"window={HUGE_INT}", "too large"),
    ],
)
def test_param_values_are_finite_numbers_of_the_declared_type(
    params_file: Path, param: str, said: str
) -> None:
    result = invoke("validate", "--param", param, params_file)
    assert result.exit_code == 2, result.output
    assert said in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_param_values_a_trader_types_are_accepted(params_file: Path) -> None:
    for param in ("limit=0.1", "limit=-2", "limit=1e-3", "window=48", "enabled=FALSE", "venue=12"):
        result = invoke("validate", "--param", param, params_file)
        assert result.exit_code == 0, (param, result.output)
    s = load_strategy(str(params_file), overrides={"limit": "1e-3", "venue": "12", "window": "48"})
    assert s.params["limit"] == 0.001 and s.params["window"] == 48
    assert s.params["venue"] == "12"  # a text param stays text


def test_a_repeated_param_is_an_error(params_file: Path) -> None:
    result = invoke("validate", "--param", "limit=1", "--param", "limit=2", params_file)
    assert result.exit_code == 2
    assert "limit" in result.output and "more than once" in result.output
    result = invoke("validate", "--param", "limit=1", "--param", " limit = 1", params_file)
    assert result.exit_code == 2 and "more than once" in result.output


def test_overrides_from_python_are_checked_too(params_file: Path) -> None:
    for overrides, said in [
        ({"limit": math.nan}, "not a finite number"),
        ({"limit": math.inf}, "not a finite number"),
        ({"limit": True}, "is not a number"),
        ({"window": 10**30}, "too large"),
        ({"enabled": 1}, "is not true or false"),
        ({"venue": 1.5}, "is text"),
    ]:
        with pytest.raises(LocatedError, match=said):
            load_strategy(str(params_file), overrides=overrides)


# --- strategy test files --------------------------------------------------------------------------

TEST_FILE = """\
strategy: p.yaml
params: {limit: 0.5}
tests:
  - name: t
    params: {window: 3}
    series:
      funding.close: "1 2 3 4"
      funding.max_exchange: "binance binance binance binance"
    expect:
      - at: 3
        values: {limit: 0.5}
"""


def write_test(tmp_path: Path, text: str) -> Path:
    (tmp_path / "p.yaml").write_text(PARAMS)
    path = tmp_path / "p.test.yaml"
    path.write_text(text)
    return path


def test_the_test_file_template_passes(tmp_path: Path) -> None:
    result = run_test_file(str(write_test(tmp_path, TEST_FILE)))
    assert result.passed == 1 and not result.failures


@pytest.mark.parametrize(
    ("old", "new", "at", "said"),
    [
        ("{limit: 0.5}", "{limit: .nan}", "{limit: ", "not a finite number"),
        ("{window: 3}", "{window: 1e999}", "{window: ", "too large"),
        ("{limit: 0.5}", "{limit: true}", "{limit: ", "is not a number"),
        ("{window: 3}", "{window: false}", "{window: ", "is not a number"),
        ('"1 2 3 4"', "[1, 2, .inf, 4]", "[1, 2, ", "not a finite number"),
        ('"1 2 3 4"', '"1 2 1e309 4"', 'funding.close: "', "1.8e308"),
        ('"1 2 3 4"', '"1e308+1e308x3"', 'funding.close: "', "1.8e308"),
        ("values: {limit: 0.5}", "values: {limit: .nan}", "values: {limit: ", "not a finite number"),
        ("at: 3", "at: 1e400", "at: ", "too large"),
    ],
)
def test_test_file_numbers_are_finite(tmp_path: Path, old: str, new: str, at: str, said: str) -> None:
    text = TEST_FILE.replace(old, new)
    line, col = where(text, at)
    path = write_test(tmp_path, text)
    with pytest.raises((LocatedError, ErrorList)) as info:
        run_test_file(str(path))
    err = one_error(info)
    assert said in err.message, err.format()
    assert (err.loc.file, err.loc.line) == (str(path), line), err.format()
    assert col <= err.loc.col <= col + len(new), err.format()  # at the value, or at the token in a series
    result = invoke("test", path)
    assert result.exit_code == 2 and "internal error" not in result.output


def test_unknown_values_in_a_test_file_are_written_as_underscore_or_null(tmp_path: Path) -> None:
    text = (
        TEST_FILE.replace('"1 2 3 4"', "[1, 2, _, null]")
        .replace("at: 3", "at: 2")
        .replace("values: {limit: 0.5}", "values: {z: _}")
    )
    result = run_test_file(str(write_test(tmp_path, text)))
    assert result.passed == 1, [f.format() for f in result.failures]


# --- the config -----------------------------------------------------------------------------------

CONFIG = """\
sources:
  binance: {timeout: 10}
executors:
  paper: {balance_usd: 25000, fee_bps: 4}
runner:
  source_timeout: 60
"""


@pytest.mark.parametrize("old", ["timeout: 10", "balance_usd: 25000", "fee_bps: 4", "source_timeout: 60"])
@pytest.mark.parametrize("literal", [".nan", ".inf", "1e999", HUGE_INT, "true"], ids=lambda s: s[:8])
def test_config_numbers_are_finite(tmp_path: Path, old: str, literal: str) -> None:
    path = tmp_path / "perpwatch.yaml"
    key = old.split(":")[0]
    text = CONFIG.replace(old, f"{key}: {literal}")
    line, col = where(text, f"{key}: ")
    path.write_text(text)
    with pytest.raises((LocatedError, ErrorList)) as info:
        load_config(str(path), load_registry())
    err = one_error(info)
    assert (err.loc.line, err.loc.col) == (line, col), err.format()


def test_config_numbers_from_the_environment_are_text_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW_TIMEOUT", "nan")
    path = tmp_path / "perpwatch.yaml"
    path.write_text(CONFIG.replace("timeout: 10", 'timeout: "${PW_TIMEOUT}"'))
    with pytest.raises((LocatedError, ErrorList)) as info:
        load_config(str(path), load_registry())
    err = one_error(info)
    assert (err.loc.line, "must be a number") == (2, "must be a number") and "must be a number" in err.message


def test_python_built_options_with_nan_fail_the_schema_check(tmp_path: Path) -> None:
    """The schemas' own type check: a NaN, an infinity or a bool built in Python is no number."""
    path = tmp_path / "perpwatch.yaml"
    path.write_text(CONFIG)
    cfg = load_config(str(path), load_registry())
    for bad in (math.nan, math.inf, -math.inf, True):
        doc = load_yaml(CONFIG, str(path))
        doc["sources"]["binance"]["timeout"] = bad
        cfg.sources["binance"].options["timeout"] = bad
        with pytest.raises(ErrorList, match="must be a number"):
            check_instances(cfg, doc, load_registry())
        runner = load_yaml(CONFIG, str(path))
        runner["runner"]["source_timeout"] = bad
        assert any("must be a number" in e.message for e in validate(runner, "config", str(path)))


# --- the command line's numeric options -----------------------------------------------------------


@pytest.mark.parametrize("option", ["--balance", "--fee-bps", "--slippage-bps", "--funding-interval-hours"])
@pytest.mark.parametrize("value", ["nan", "inf", "1_000", "１２", "1e309", "true"])
def test_backtest_numeric_options_are_finite(params_file: Path, option: str, value: str) -> None:
    result = invoke("backtest", params_file, "--data", params_file.parent, option, value)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "internal error" not in result.output


# --- the paper executor and the risk layer: belt and braces --------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("balance_usd", math.nan),
        ("balance_usd", math.inf),
        ("balance_usd", True),
        ("balance_usd", 0),
        ("fee_bps", math.nan),
        ("slippage_bps", -math.inf),
        ("funding_interval_hours", math.nan),
        ("funding_interval_hours", 2.5),
    ],
)
def test_paper_refuses_bad_numeric_options(option: str, value: object) -> None:
    store = StateStore(":memory:")
    with pytest.raises(ValueError, match=re.escape(option)):
        PaperExecutor({option: value}, PluginContext(store=store))
    assert (
        store.conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'paper_accounts'").fetchone()[0]
        == 0
    )


def test_paper_backtest_balance_nan_is_a_usage_error_not_sql(params_file: Path) -> None:
    result = invoke("backtest", params_file, "--data", params_file.parent, "--balance", "nan")
    assert result.exit_code == 2 and "SQL" not in result.output and "NOT NULL" not in result.output


@pytest.fixture
def gate_and_strategy(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(STRATEGY)
    return RiskGate(StateStore(":memory:")), load_strategy(str(path))


def check(gate: RiskGate, strategy, size: float = 10_000.0, **kw):
    args = {"bar_time": 0, "open_elsewhere": 0, "pnl_now": 0.0, "equity_now": 10_000.0} | kw
    return gate.check_open(strategy, "BTC", size, **args)


def test_the_gate_clips_at_a_finite_limit(gate_and_strategy) -> None:
    gate, strategy = gate_and_strategy
    verdict = check(gate, strategy)
    assert verdict.ok and verdict.size_usd == 5000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_position_usd", math.nan),
        ("max_position_usd", math.inf),
        ("max_position_usd", True),
        ("max_daily_loss_pct", math.nan),
        ("max_daily_loss_pct", -math.inf),
        ("max_open_positions", math.nan),
        ("max_open_positions", True),
        ("max_open_positions", 2.5),
    ],
)
def test_the_gate_never_compares_against_a_bad_limit(gate_and_strategy, field: str, value: object) -> None:
    gate, strategy = gate_and_strategy
    setattr(strategy.risk, field, value)
    verdict = check(gate, strategy)
    assert not verdict.ok
    assert field in (verdict.reason or "") and "not opening" in (verdict.reason or "")


@pytest.mark.parametrize(
    ("size", "pnl", "equity"),
    [
        (math.nan, 0.0, 10_000.0),
        (math.inf, 0.0, 10_000.0),
        (1000.0, math.nan, 10_000.0),
        (1000.0, 0.0, math.nan),
    ],
)
def test_the_gate_refuses_non_finite_sizes_and_accounts(gate_and_strategy, size, pnl, equity) -> None:
    gate, strategy = gate_and_strategy
    verdict = check(gate, strategy, size, pnl_now=pnl, equity_now=equity)
    assert not verdict.ok and "not opening" in (verdict.reason or "")
    assert gate.store.conn.execute("SELECT COUNT(*) FROM risk_days").fetchone()[0] == 0


def test_a_nan_limit_never_trades_through_the_trading_layer(gate_and_strategy) -> None:
    """The reported case, end to end: 10,000 USD under a NaN cap is rejected, not traded uncapped."""
    _, strategy = gate_and_strategy
    strategy.risk.max_position_usd = math.nan
    store = StateStore(":memory:")
    paper = PaperExecutor({"fee_bps": 0, "slippage_bps": 0}, PluginContext(store=store))
    trading = Trading(store, {"paper": paper}, FakeClock(T0 / 1000))
    n = 5
    frame = Frame(T0 + H * np.arange(n, dtype=np.int64), {"price.close": np.full(n, 100.0)})
    ev = evaluate(strategy, frame, "BTC")
    (rule,) = strategy.rules
    fired = [build_event(strategy, rule, ev, n - 1, "fired")]
    fired[0].signal = OrderIntent("long", 10_000.0)
    out = asyncio.run(trading.on_bar(strategy, "BTC", T0 + (n - 1) * H, ev, n - 1, fired))
    assert [e.kind for e in out] == ["rejected"]
    assert "max_position_usd" in out[0].message
    assert asyncio.run(paper.positions()) == []
    assert paper.orders() == []


def test_explain_at_is_an_ascii_bar_index_or_a_time(tmp_path: Path) -> None:
    path = write_test(tmp_path, TEST_FILE)
    assert invoke("explain", path, "--at", "3").exit_code == 0
    result = invoke("explain", path, "--at", HUGE_INT)
    assert result.exit_code == 2 and "too large" in result.stderr and len(result.stderr) < 300
    result = invoke("explain", path, "--at", "３")  # a full-width digit is no bar index
    assert result.exit_code == 2 and "not a time" in result.stderr


@pytest.mark.parametrize(
    "option", ["settle_seconds: 1e300", "source_timeout: 1e300", "concurrency: 9007199254740992"]
)
def test_runner_options_have_sane_upper_bounds(tmp_path: Path, option: str) -> None:
    """A finite but absurd value is a located error too (settle_seconds: 1e300 overflowed a cycle)."""
    path = tmp_path / "perpwatch.yaml"
    path.write_text(f"runner:\n  {option}\n")
    with pytest.raises(ErrorList) as info:
        load_config(str(path))
    err = one_error(info)
    assert err.loc.line == 2 and "out of range" in err.message
