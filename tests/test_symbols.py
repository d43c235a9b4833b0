"""Symbols have one spelling: upper case wherever one enters (a strategy's or the config's
``symbols:``, a test file's ``symbol:``, ``--symbols`` / ``--symbol``), and a coin named twice
however it is spelt is an error at the second spelling naming the first. Positions, rule states
and mutes are keyed by the normalised symbol."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest
from helpers import H, invoke, run_perpwatch, write_csv

from perpwatch.api.registry import load_registry
from perpwatch.common.errors import ErrorList, Loc, LocatedError, PerpwatchError
from perpwatch.common.symbols import normalise_symbol, normalise_symbols
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, load_config

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z

TRADER = """\
version: 1
name: dup
interval: 1h
symbols: [BTC, btc]
execute: paper
rules:
  - name: enter
    when: price.close > 0
    signal: {side: long, size_usd: 1000}
"""


def errors(excinfo: pytest.ExceptionInfo) -> list[str]:
    e = excinfo.value
    return [err.format() for err in e.errors] if isinstance(e, ErrorList) else [e.format()]


# --- the helper --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "normal"), [("btc", "BTC"), ("Eth", "ETH"), ("1000PEPE", "1000PEPE")])
def test_normalise_symbol(text: str, normal: str) -> None:
    assert normalise_symbol(text) == normal


@pytest.mark.parametrize("text", ["", "BTC\n", " BTC", "BTC-USD", "ＢＴＣ", "BTÇ", "A" * 21, 3, None])
def test_not_a_symbol(text: object) -> None:
    with pytest.raises(ValueError, match="1 to 20 ASCII letters and digits"):
        normalise_symbol(text)


def test_a_duplicate_is_reported_at_the_second_naming_the_first() -> None:
    locs = [Loc("f.yaml", 3, 11), Loc("f.yaml", 3, 16), Loc("f.yaml", 3, 21)]
    with pytest.raises(ErrorList) as info:
        normalise_symbols(["BTC", "eth", "btc"], locs.__getitem__)
    (err,) = errors(info)
    assert err == (
        "f.yaml:3:21: error: duplicate symbol 'btc': the same coin as 'BTC' (at line 3, column 11); "
        "symbols are not case-sensitive (both are BTC): name each coin once"
    )
    assert normalise_symbols(["btc", "Eth"], locs.__getitem__) == ["BTC", "ETH"]


# --- strategies --------------------------------------------------------------------------------


def strategy_text(symbols: str) -> str:
    return f"version: 1\nname: s\nsymbols: {symbols}\nrules:\n  - name: r\n    when: price.close > 1\n"


def test_strategy_symbols_are_upper_case() -> None:
    s = load_strategy("s.yaml", text=strategy_text("[btc, Eth, SOL]"))
    assert s.symbols == ["BTC", "ETH", "SOL"]


@pytest.mark.parametrize(
    ("symbols", "expected"),
    [
        (
            "[BTC, btc]",
            "s.yaml:3:16: error: duplicate symbol 'btc': the same coin as 'BTC' (at line 3, column 11)",
        ),
        (
            "[eth, BTC, Eth]",
            "s.yaml:3:21: error: duplicate symbol 'Eth': the same coin as 'eth' (at line 3, column 11)",
        ),
        (
            "[BTC, ETH, BTC]",
            "s.yaml:3:21: error: symbols[2]: duplicate entry 'BTC' (first at line 3, column 11)",
        ),
        (
            "\n  - BTC\n  - Btc",
            "s.yaml:5:5: error: duplicate symbol 'Btc': the same coin as 'BTC' (at line 4, column 5)",
        ),
    ],
)
def test_strategy_duplicate_symbols_are_located_errors(symbols: str, expected: str) -> None:
    with pytest.raises((ErrorList, LocatedError)) as info:
        load_strategy("s.yaml", text=strategy_text(symbols))
    (err,) = errors(info)
    assert err.startswith(expected), err


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ('symbol == "btc"', "'btc' is never a symbol: symbols are upper case; write 'BTC'"),
        ('"eth" != symbol', "'eth' is never a symbol: symbols are upper case; write 'ETH'"),
        ('symbol in ["BTC", "sol"]', "'sol' is never a symbol: symbols are upper case; write 'SOL'"),
        ('symbol == "BTC-USD"', "'BTC-USD' is never a symbol; a symbol is 1 to 20 ASCII letters"),
    ],
)
def test_symbol_compared_with_a_literal_that_can_never_match(when: str, expected: str) -> None:
    text = f"version: 1\nname: s\nrules:\n  - name: r\n    when: '{when}'\n"
    with pytest.raises((ErrorList, LocatedError)) as info:
        load_strategy("s.yaml", text=text)
    (err,) = errors(info)
    assert err.startswith("s.yaml:5:") and expected in err, err
    fixed = when.replace('"btc"', '"BTC"').replace('"eth"', '"ETH"').replace('"sol"', '"SOL"')
    if "BTC-USD" not in when:
        load_strategy("s.yaml", text=f"version: 1\nname: s\nrules:\n  - name: r\n    when: '{fixed}'\n")


def test_a_lookup_by_symbol_needs_upper_case_keys() -> None:
    text = textwrap.dedent(
        """\
        version: 1
        name: s
        let:
          size:
            lookup: symbol
            table: {BTC: 2, eth: 1}
        rules:
          - name: r
            when: size > 1
        """
    )
    with pytest.raises((ErrorList, LocatedError)) as info:
        load_strategy("s.yaml", text=text)
    (err,) = errors(info)
    assert err.startswith("s.yaml:6:21: error: 'eth' is never a symbol: symbols are upper case"), err


# --- the config --------------------------------------------------------------------------------


def test_config_symbols_are_upper_case_and_unique(tmp_path: Path) -> None:
    path = tmp_path / "perpwatch.yaml"
    path.write_text("symbols: [btc, Sol]\n")
    assert load_config(str(path)).symbols == ["BTC", "SOL"]
    path.write_text("symbols:\n  - ETH\n  - eth\n")
    with pytest.raises(ErrorList) as info:
        load_config(str(path))
    (err,) = errors(info)
    assert err.startswith(
        f"{path}:3:5: error: duplicate symbol 'eth': the same coin as 'ETH' (at line 2, column 5)"
    )
    path.write_text('symbols: ["BTC\\n"]\n')
    with pytest.raises(ErrorList) as info:
        load_config(str(path))
    assert "symbols[0]: 'BTC\\n' is not valid" in errors(info)[0]


def test_the_runner_keys_jobs_by_the_normalised_symbol(tmp_path: Path) -> None:
    """Even a Config built in code (not loaded from a file) reaches the jobs normalised and unique."""
    from perpwatch.live.runner import Runner
    from perpwatch.live.state import StateStore

    strat = load_strategy(
        "s.yaml", text="version: 1\nname: s\nrules:\n  - name: r\n    when: price.close > 1\n"
    )
    store = StateStore(":memory:")
    registry = load_registry()
    try:
        runner = Runner.build([strat], Config(symbols=["btc", "Eth"]), registry, store)
        assert runner.jobs[0].symbols == ["BTC", "ETH"]
        with pytest.raises(PerpwatchError, match="duplicate symbol 'btc'"):
            Runner.build([strat], Config(symbols=["BTC", "btc"]), registry, store)
    finally:
        store.close()


# --- live and backtest: one position per coin ------------------------------------------------


@pytest.fixture
def market(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    n = 30
    rows = {"price.open": [100.0] * n, "price.close": [100.0] * n, "funding.close": [0.01] * n}
    write_csv(data / "BTC_1h.csv", rows, T0, H)
    return data


def open_positions(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT strategy, symbol FROM paper_trades WHERE status = 'open'").fetchall()


def simulate(tmp_path: Path, data: Path, strategy: str, symbols: str = "") -> tuple[object, Path]:
    (tmp_path / "dup.yaml").write_text(strategy)
    db = tmp_path / "state.db"
    (tmp_path / "perpwatch.yaml").write_text(
        f"{symbols}state: {db}\nsources:\n  replay: {{path: '{data}'}}\nnotifiers:\n  quiet: {{plugin: jsonl, path: events.jsonl}}\n"
    )
    result = run_perpwatch(
        "run",
        "dup.yaml",
        "--simulate-from",
        "2024-01-01T05:00:00Z",
        "--simulate-to",
        "2024-01-01T08:00:00Z",
        cwd=tmp_path,
    )
    return result, db


def test_run_refuses_one_coin_spelt_twice(tmp_path: Path, market: Path) -> None:
    """The case that opened two positions on one coin: now a located error, exit 2, nothing run."""
    result, db = simulate(tmp_path, market, TRADER.replace("rules:", "notify: [quiet]\nrules:"))
    assert result.returncode == 2, result.stderr
    assert "dup.yaml:4:16: error: duplicate symbol 'btc': the same coin as 'BTC'" in result.stderr
    assert not db.exists() or not open_positions(db)


def test_run_with_lower_case_symbols_keys_positions_by_the_upper_case_symbol(
    tmp_path: Path, market: Path
) -> None:
    text = TRADER.replace("symbols: [BTC, btc]\n", "").replace("rules:", "notify: [quiet]\nrules:")
    result, db = simulate(tmp_path, market, text, symbols="symbols: [btc]\n")
    assert result.returncode == 0, result.stderr
    assert open_positions(db) == [("dup", "BTC")]
    with sqlite3.connect(db) as conn:
        assert {r[0] for r in conn.execute("SELECT DISTINCT symbol FROM events")} == {"BTC"}


def test_replay_source_finds_a_lower_case_file_name(tmp_path: Path, market: Path) -> None:
    (market / "BTC_1h.csv").rename(market / "btc_1h.csv")
    text = TRADER.replace("symbols: [BTC, btc]", "symbols: [BTC]").replace(
        "rules:", "notify: [quiet]\nrules:"
    )
    result, db = simulate(tmp_path, market, text)
    assert result.returncode == 0, result.stderr
    assert open_positions(db) == [("dup", "BTC")]


def test_backtest_symbols_option(tmp_path: Path, market: Path) -> None:
    strat = tmp_path / "bt.yaml"
    strat.write_text(TRADER.replace("symbols: [BTC, btc]\n", ""))
    upper = invoke("backtest", strat, "--data", market, "--symbols", "BTC")
    lower = invoke("backtest", strat, "--data", market, "--symbols", "btc")
    assert upper.exit_code == 0 and lower.exit_code == 0, lower.output
    assert lower.output == upper.output
    twice = invoke("backtest", strat, "--data", market, "--symbols", "BTC,btc")
    assert twice.exit_code == 2
    assert "--symbols: error: duplicate symbol 'btc': the same coin as 'BTC'" in twice.output
    split = invoke("backtest", strat, "--data", market, "--symbols", "BTC", "--symbols", "Btc")
    assert split.exit_code == 2 and "duplicate symbol 'Btc'" in split.output
    bad = invoke("backtest", strat, "--data", market, "--symbols", "BTC-USD")
    assert bad.exit_code == 2 and "--symbols: error: 'BTC-USD' is not a symbol" in bad.output
    dup = tmp_path / "dup.yaml"
    dup.write_text(TRADER)
    refused = invoke("backtest", dup, "--data", market)
    assert refused.exit_code == 2 and "duplicate symbol 'btc'" in refused.output


def test_explain_symbol_option(tmp_path: Path, market: Path) -> None:
    strat = tmp_path / "bt.yaml"
    strat.write_text(TRADER.replace("symbols: [BTC, btc]\n", ""))
    at = "2024-01-01T03:00:00Z"
    upper = invoke("explain", strat, "--data", market, "--at", at, "--symbol", "BTC")
    lower = invoke("explain", strat, "--data", market, "--at", at, "--symbol", "btc")
    assert upper.exit_code == 0 and lower.output == upper.output, lower.output
    bad = invoke("explain", strat, "--data", market, "--at", at, "--symbol", "BTC\n")
    assert bad.exit_code == 2 and "--symbol: error: 'BTC\\n' is not a symbol" in bad.output


# --- mutes -------------------------------------------------------------------------------------


def test_mute_and_unmute_normalise_the_symbol(tmp_path: Path) -> None:
    from perpwatch.evaluation.rules import RuleState
    from perpwatch.live.state import StateStore

    db = tmp_path / "s.db"
    store = StateStore(str(db))
    store.save_rule_state("heat", "hot", "BTC", RuleState())
    store.close()
    muted = invoke("mute", "hot", "--symbol", "btc", "--for", "2h", "--state", db)
    assert muted.exit_code == 0 and "muted heat/hot BTC until" in muted.output
    store = StateStore(str(db))
    assert [(m.target, m.symbol) for m in store.mutes(0)] == [("heat/hot", "BTC")]
    store.close()
    assert invoke("unmute", "heat/hot", "--symbol", "Btc", "--state", db).exit_code == 0
    bad = invoke("mute", "hot", "--symbol", "BTC USD", "--for", "2h", "--state", db)
    assert bad.exit_code == 2 and "'BTC USD' is not a symbol" in bad.output


# --- test files --------------------------------------------------------------------------------


def test_a_test_file_symbol_is_normalised_and_checked(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "version: 1\nname: s\nrules:\n  - name: btc_up\n    when: 'symbol == \"BTC\" and price.close > 1'\n"
    )
    case = textwrap.dedent(
        """\
        strategy: s.yaml
        tests:
          - name: lower case
            symbol: {symbol}
            series: {{price.close: "2x2"}}
            expect:
              - {{at: 0, fired: [btc_up]}}
        """
    )
    good = tmp_path / "good.test.yaml"
    good.write_text(case.format(symbol="btc"))
    result = invoke("test", good)
    assert result.exit_code == 0, result.output
    bad = tmp_path / "bad.test.yaml"
    bad.write_text(case.format(symbol='"btc\\n"'))
    result = invoke("test", bad)
    assert result.exit_code == 2
    assert f"{bad}:4:17: error: tests[0].symbol: 'btc\\n' is not valid" in result.output


# --- the plugins' commands ---------------------------------------------------------------------


def test_fetch_symbols_option(tmp_path: Path, market: Path) -> None:
    config = tmp_path / "perpwatch.yaml"
    config.write_text(f"sources:\n  replay: {{path: '{market}'}}\n")
    args = ["fetch", "--source", "replay", "--config", config, "--interval", "1h"]
    args += ["--from", "2024-01-01", "--to", "2024-01-01T03:00:00Z", "--out", tmp_path / "out"]
    twice = invoke(*args, "--symbols", "BTC,btc")
    assert twice.exit_code == 2 and "--symbols: error: duplicate symbol 'btc'" in twice.output
    bad = invoke(*args, "--symbols", "BTC,../etc")
    assert bad.exit_code == 2 and "'../etc' is not a symbol" in bad.output
    assert not (tmp_path / "out").exists()
    lower = invoke(*args, "--symbols", "btc")
    assert lower.exit_code == 0, lower.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["BTC_1h.csv"]


def test_convert_coinglass_symbol_options(tmp_path: Path) -> None:
    args = ["convert-coinglass", tmp_path, "--out", tmp_path / "out"]
    twice = invoke(*args, "--symbol", "BTC,Btc")
    assert twice.exit_code == 2 and "--symbol: error: duplicate symbol 'Btc'" in twice.output
    bad = invoke(*args, "--symbol", "../BTC")
    assert bad.exit_code == 2 and "'../BTC' is not a symbol" in bad.output
    bare = invoke(*args, "--symbol", "BTC", "--bare-symbol", "BTC\n")
    assert bare.exit_code == 2 and "--bare-symbol: error: 'BTC\\n' is not a symbol" in bare.output
    assert not (tmp_path / "out").exists()
