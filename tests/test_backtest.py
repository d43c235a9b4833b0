"""``perpwatch backtest``: hand-checked arithmetic on tiny histories, the CLI, JSON, and the real
BTC 4h year (CoinGlass snapshots) through ``strategies/derivatives-state.yaml``.

The tiny history (4h bars from 2024-01-01T00:00Z; fee 5 bps, slippage 2 bps, funding every 8 h):

    bar  open   close  oi.close  funding.close
     0    100    100      0        0.01
     1    100    100      1        0.01   enter fires -> long 1000 USD fills at bar 2's open
     2    100    105      0        0.01   fill 100 * 1.0002 = 100.02, qty 10, fee 10 * 100.02 * 0.0005
     3    105    110      0        0.02   bar closes 16:00, a settlement: pays 10 * 110 * 0.02 % = 0.22
     4    110    104      3        0.01   leave fires -> fills at bar 5's open
     5    102    102      0        0.01   fill 102 * 0.9998 = 101.9796; pnl (101.9796 - 100.02) * 10
     6    102    102      1        0.01   enter fires -> long fills at bar 7's open
     7     90     80      0        0.01   fill 90.018, qty 1000/90; settlement 08:00 at 80; marked at 80
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import COINGLASS_REPORT, ROOT, H, invoke
from helpers import write_csv as write_rows

from perpwatch.api.registry import Registry
from perpwatch.backtest.history import History, load_history, symbols_for
from perpwatch.backtest.report import format_text, to_json
from perpwatch.backtest.result import BacktestOptions
from perpwatch.backtest.walk import run_backtest
from perpwatch.common.errors import PerpwatchError
from perpwatch.evaluation.frame import Frame
from perpwatch.language.compiler import load_strategy

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
SNAPSHOTS = COINGLASS_REPORT

TINY = """
version: 1
name: tiny
interval: 4h
rules:
  - name: enter
    when: oi.close == 1
    message: "{symbol} enter at {price.close}"
    signal: {side: long, size_usd: 1000}
  - name: leave
    when: oi.close == 3
    signal: {side: flat}
"""

OPEN = [100, 100, 100, 105, 110, 102, 102, 90]
CLOSE = [100, 100, 105, 110, 104, 102, 102, 80]
OI = [0, 1, 0, 0, 3, 0, 1, 0]
FUNDING = [0.01, 0.01, 0.01, 0.02, 0.01, 0.01, 0.01, 0.01]


def write_csv(path: Path, rows: dict[str, list], start: int = T0, step: int = 4 * H) -> Path:
    """A replay CSV, 4h bars from T0 unless said."""
    return write_rows(path, rows, start, step)


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    strat = tmp_path / "tiny.yaml"
    strat.write_text(TINY)
    data = tmp_path / "data"
    data.mkdir()
    write_csv(
        data / "BTC_4h.csv",
        {"price.open": OPEN, "price.close": CLOSE, "oi.close": OI, "funding.close": FUNDING},
    )
    return strat, data


def backtest(strat: Path, data: Path, **options):
    s = load_strategy(str(strat))
    history = load_history([str(data)], s.interval, None)
    return run_backtest([s], history, symbols_for([s], history, None), BacktestOptions(**options))


def expected_equity() -> list[float]:
    qty1, entry1 = 10.0, 100 * 1.0002
    fee1 = qty1 * entry1 * 0.0005
    exit1 = 102 * 0.9998
    fee2 = qty1 * exit1 * 0.0005
    pnl1 = (exit1 - entry1) * qty1
    fund1 = -qty1 * 110 * 0.02 / 100
    qty2, entry2 = 1000 / 90, 90 * 1.0002
    fee3 = qty2 * entry2 * 0.0005
    fund2 = -qty2 * 80 * 0.01 / 100
    b1 = 10_000 - fee1
    b2 = b1 + fund1 + pnl1 - fee2
    return [
        10_000,  # the start
        10_000,  # after bar 0
        b1 + (100 - entry1) * qty1,  # bar 1: filled at bar 2's open, marked at that open
        b1 + (105 - entry1) * qty1,
        b1 + fund1 + (110 - entry1) * qty1,
        b2,  # bar 4: closed at bar 5's open
        b2,
        b2 - fee3 + (90 - entry2) * qty2,
        b2 - fee3 + fund2 + (80 - entry2) * qty2,
    ]


def test_tiny_history_pnl_fees_funding_and_drawdown_by_hand(tiny):
    r = backtest(*tiny)
    eq = expected_equity()
    assert r.equity_curve.tolist() == pytest.approx(eq, abs=1e-9)
    s = r.stats
    assert s["net_pnl_usd"] == pytest.approx(eq[-1] - 10_000)
    assert s["total_return_pct"] == pytest.approx((eq[-1] - 10_000) / 100)
    fees = 10 * 100.02 * 0.0005 + 10 * 101.9796 * 0.0005 + (1000 / 90) * 90.018 * 0.0005
    assert s["fees_usd"] == pytest.approx(fees)
    assert s["funding_usd"] == pytest.approx(-0.22 - (1000 / 90) * 80 * 0.0001)
    assert s["gross_pnl_usd"] == pytest.approx((101.9796 - 100.02) * 10 + (80 - 90.018) * 1000 / 90)
    assert s["net_pnl_usd"] == pytest.approx(s["gross_pnl_usd"] - s["fees_usd"] + s["funding_usd"])
    # the peak is after bar 3 (its close, 16:00), the trough after bar 7 (day 2, 08:00)
    assert s["max_drawdown_pct"] == pytest.approx((1 - eq[-1] / eq[4]) * 100)
    assert s["max_drawdown_usd"] == pytest.approx(eq[4] - eq[-1])
    assert (s["max_drawdown_start"], s["max_drawdown_end"]) == (
        "2024-01-01T16:00:00Z",
        "2024-01-02T08:00:00Z",
    )
    rets = np.diff(eq) / np.asarray(eq[:-1])
    per_year = 365 * 6  # 4h bars
    assert s["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(per_year))
    downside = math.sqrt(np.mean(np.minimum(rets, 0) ** 2))
    assert s["sortino"] == pytest.approx(rets.mean() / downside * math.sqrt(per_year))
    assert (s["trades"], s["closed_trades"], s["open_trades"]) == (2, 1, 1)
    assert s["win_rate_pct"] == 100.0 and s["avg_loss_usd"] is None
    assert s["avg_win_usd"] == pytest.approx((101.9796 - 100.02) * 10 - fees * 0 - 0.5001 - 0.509898 - 0.22)
    assert s["exposure_pct"] == pytest.approx(5 / 8 * 100)  # open after bars 1, 2, 3, 6, 7
    assert (s["funding_settlements"], s["funding_settlements_skipped"]) == (2, 0)


def test_tiny_history_trades_and_events(tiny):
    r = backtest(*tiny)
    first, second = r.trades
    assert (first.side, first.status, first.entry_rule, first.exit_rule) == (
        "long",
        "closed",
        "enter",
        "leave",
    )
    assert (first.entry_bar, first.entry_time) == (T0 + 4 * H, T0 + 8 * H)  # signal on bar 1, fill at bar 2
    assert (first.exit_bar, first.exit_time) == (T0 + 16 * H, T0 + 20 * H)
    assert first.entry_price == pytest.approx(100.02) and first.exit_price == pytest.approx(101.9796)
    assert second.status == "open" and second.exit_time is None
    assert second.net_pnl == pytest.approx((80 - 90.018) * 1000 / 90 - 0.50010 - (1000 / 90) * 0.008)
    fired = [(e.rule, e.time) for e in r.events if e.kind == "fired"]
    assert fired == [("enter", T0 + 4 * H), ("leave", T0 + 16 * H), ("enter", T0 + 24 * H)]
    assert [e.kind for e in r.trading] == ["order", "order", "order"]
    assert r.events[0].message == "BTC enter at 100.0"


def test_a_signal_on_the_last_bar_does_not_fill(tiny, tmp_path):
    strat, data = tiny
    write_csv(data / "BTC_4h.csv", {"price.open": [100] * 3, "price.close": [100] * 3, "oi.close": [0, 0, 1]})
    r = backtest(strat, data)
    (rej,) = r.trading
    assert (rej.kind, rej.message) == ("rejected", "no price to fill at (the next bar's open is unknown)")
    assert r.trades == [] and r.stats["net_pnl_usd"] == 0.0


def test_from_to_limit_the_bars_traded_but_not_the_warm_up(tiny):
    strat, data = tiny
    r = backtest(strat, data, start=T0 + 8 * H, end=T0 + 20 * H)
    assert r.times.tolist() == [T0 + 8 * H, T0 + 12 * H, T0 + 16 * H, T0 + 20 * H]
    assert [e.rule for e in r.events if e.kind == "fired"] == ["leave"]  # enter at bar 1 is before --from
    assert r.trades == []
    with pytest.raises(PerpwatchError, match="select no bars"):
        backtest(strat, data, start=T0 + 400 * H)


def test_gaps_are_unknown_bars_and_nothing_fills_on_them(tiny):
    strat, data = tiny
    rows = {
        "price.open": [100, 100, None, 100],
        "price.close": [100, 100, None, 100],
        "oi.close": [0, 1, 0, 0],
    }
    write_csv(data / "BTC_4h.csv", rows)
    r = backtest(strat, data)
    (rej,) = r.trading
    assert rej.message == "no price to fill at (the next bar's open is unknown)"


def test_deterministic(tiny):
    a, b = backtest(*tiny), backtest(*tiny)
    assert to_json(a) == to_json(b)


def test_inhibition_needs_the_other_strategy_and_holds_back_entries(tiny, tmp_path):
    strat, data = tiny
    guard = tmp_path / "guard.yaml"
    guard.write_text(
        "version: 1\nname: guard\ninterval: 4h\nrules:\n  - name: risk_off\n    when: funding.close > 0.015\n"
    )
    inhibited = tmp_path / "inhibited.yaml"
    inhibited.write_text(
        TINY.replace("name: tiny", "name: inhibited") + "risk: {inhibited_by: [guard/risk_off]}\n"
    )
    s = load_strategy(str(inhibited))
    history = load_history([str(data)], "4h", None)
    with pytest.raises(PerpwatchError, match="backtest strategy 'guard' alongside it"):
        run_backtest([s], history)
    # guard fires on bar 3 (funding 0.02); move the first entry there
    oi = [0, 0, 0, 1, 0, 0, 1, 0]
    write_csv(
        data / "BTC_4h.csv",
        {"price.open": OPEN, "price.close": CLOSE, "oi.close": oi, "funding.close": FUNDING},
    )
    history = load_history([str(data)], "4h", None)
    g = load_strategy(str(guard))
    r = run_backtest([g, s], history)
    rejected = [e for e in r.trading if e.kind == "rejected"]
    assert [(e.rule, e.time, e.message) for e in rejected] == [
        ("enter", T0 + 12 * H, "inhibited: guard/risk_off is firing for BTC")
    ]
    assert [t.entry_bar for t in r.trades] == [T0 + 24 * H]


def test_data_problems_are_clear(tiny, tmp_path):
    strat, data = tiny
    s = load_strategy(str(strat))
    with pytest.raises(
        PerpwatchError, match=r"holds 4h bars but the strategy runs on 1h \(use --interval 4h\)"
    ):
        load_history([str(data / "BTC_4h.csv")], "1h", None)
    with pytest.raises(PerpwatchError, match=r"no 1h files .* it has 4h bars \(use --interval\)"):
        load_history([str(data)], "1h", None)
    with pytest.raises(PerpwatchError, match="no 4h file for ETH"):
        load_history([str(data)], "4h", ["ETH"])
    write_csv(data / "SOL_4h.csv", {"price.close": [1, 2]})
    with pytest.raises(PerpwatchError, match="SOL: the data has no price.open column"):
        load_history([str(data)], "4h", ["SOL"])
    with pytest.raises(PerpwatchError, match="no such file"):
        load_history([str(tmp_path / "nope")], "4h", None)
    good = load_history([str(data)], s.interval, ["BTC"])  # the folder's good file still loads
    assert list(good.frames) == ["BTC"] and good.frames["BTC"].columns["price.close"].tolist() == CLOSE


def test_statistics_with_no_trades_are_well_defined():
    s = load_strategy("x.yaml", text=TINY)
    frame = Frame(
        T0 + 4 * H * np.arange(5), {"price.open": np.full(5, 10.0), "price.close": np.full(5, 10.0)}
    )
    r = run_backtest([s], History({"BTC": frame}, "4h", "test"))
    st = r.stats
    assert (st["net_pnl_usd"], st["max_drawdown_pct"], st["sharpe"], st["sortino"]) == (0.0, 0.0, None, None)
    assert st["max_drawdown_start"] is None and st["win_rate_pct"] is None
    assert "(no trades)" in format_text(r)


# --- the command line ---------------------------------------------------------------------------------


def test_cli_prints_the_report_and_writes_json(tiny, tmp_path):
    strat, data = tiny
    out = tmp_path / "bt.json"
    result = invoke("backtest", strat, "--data", data, "--json", out, "--fee-bps", "5", "--slippage-bps", "2")
    assert result.exit_code == 0, result.output
    text = result.output
    for needle in (
        "Events per rule",
        "net PnL (after fees and funding)",
        "max drawdown",
        "Sharpe (annualised)",
        "Sortino (annualised)",
        "win rate",
        "average win / average loss",
        "exposure",
        "Assumptions",
        "fill at the NEXT bar's open",
        "Fees: 5 bps",
        "Slippage: 2 bps",
        "Funding: settled every 8 h",
    ):
        assert needle in text, needle
    doc = json.loads(out.read_text())
    assert doc["stats"]["trades"] == 2 and len(doc["trades"]) == 2
    assert [e["kind"] for e in doc["events"]].count("fired") == 3
    assert [e["kind"] for e in doc["orders"]] == ["order", "order", "order"]
    assert doc["trades"][0]["entry_time_iso"] == "2024-01-01T08:00:00Z"
    assert len(doc["equity"]) == 9 and doc["equity"][0]["equity_usd"] == 10_000
    assert doc["events_per_rule"][0] == {
        "strategy": "tiny",
        "rule": "enter",
        "fired": 2,
        "suppressed": 0,
        "resolved": 2,
        "order": 2,
        "no_order": 0,
        "rejected": 0,
    }
    assert doc["stats"]["net_pnl_usd"] == pytest.approx(expected_equity()[-1] - 10_000)


def test_cli_params_symbols_balance_and_interval(tiny, tmp_path):
    strat, data = tiny
    strat.write_text(
        TINY.replace("size_usd: 1000", "size_usd: size").replace("rules:", "params: {size: 1000}\nrules:")
    )
    out = tmp_path / "bt.json"
    result = invoke(
        "backtest",
        strat,
        "--data",
        data,
        "--param",
        "size=500",
        "--symbols",
        "BTC",
        "--balance",
        "2000",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["trades"][0]["size_usd"] == 500 and doc["stats"]["starting_balance_usd"] == 2000
    one_h = strat.read_text().replace("interval: 4h", "interval: 1h")
    strat.write_text(one_h)
    bad = invoke("backtest", strat, "--data", data)
    assert bad.exit_code == 2 and "use --interval" in bad.output
    good = invoke("backtest", strat, "--data", data, "--interval", "4h")
    assert good.exit_code == 0 and "interval set to 4h by --interval" in good.output
    wrong = invoke("backtest", strat, "--data", data, "--param", "nope=1")
    assert wrong.exit_code == 2 and "nope" in wrong.output


def test_cli_executor_instance_from_a_config_and_flags_over_it(tiny, tmp_path):
    strat, data = tiny
    config = tmp_path / "perpwatch.yaml"
    config.write_text(
        "executors:\n  cheap: {plugin: paper, balance_usd: 5000, fee_bps: 0, slippage_bps: 0}\n"
    )
    out = tmp_path / "bt.json"
    result = invoke(
        "backtest", strat, "--data", data, "--executor", "cheap", "--config", config, "--json", out
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["stats"]["starting_balance_usd"] == 5000 and doc["stats"]["fees_usd"] == 0
    assert doc["options"]["executor"] == "paper"
    assert "Fees: 0 bps" in result.output and "One paper account of 5,000.00 USD" in result.output
    flagged = invoke(
        "backtest", strat, "--data", data, "--executor", "cheap", "--config", config, "--fee-bps", "5"
    )
    assert flagged.exit_code == 0 and "Fees: 5 bps" in flagged.output and "Slippage: 0 bps" in flagged.output
    plain = invoke("backtest", strat, "--data", data, "--executor", "cheap")  # no --config: the plugin
    assert plain.exit_code == 2 and "no executor plugin named 'cheap'" in plain.output


def test_an_executor_without_books_cannot_be_backtested(tiny, tmp_path):
    strat, data = tiny
    plugin = tmp_path / "bare.py"
    plugin.write_text(
        "from perpwatch.api.hookspecs import hookimpl\n"
        "from perpwatch.api.interfaces import Executor\n\n"
        "class Bare(Executor):\n"
        "    name = 'bare'\n"
        "    async def submit(self, strategy, symbol, intent, price, time):\n        return []\n"
        "    async def positions(self):\n        return []\n\n"
        "@hookimpl\ndef register_executors(register):\n    register(Bare)\n"
    )
    result = invoke("--plugin", plugin, "backtest", strat, "--data", data, "--executor", "bare")
    assert result.exit_code == 2
    assert (
        "executor 'bare' cannot be backtested: it does not implement Accounting and Ledger" in result.output
    )
    fee = invoke(
        "--plugin", plugin, "backtest", strat, "--data", data, "--executor", "bare", "--fee-bps", "1"
    )
    assert fee.exit_code == 2 and "the bare executor has no fee_bps option" in fee.output


def test_data_no_reader_accepts(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        PerpwatchError,
        match=r"--data .*empty: neither replay files \(<SYMBOL>_<interval>.csv\) nor a CoinGlass snapshot folder",
    ):
        load_history([str(empty)], "4h", None)
    with pytest.raises(PerpwatchError, match=r"a replay file is named <SYMBOL>_<interval>.csv or .parquet"):
        load_history([str(write_csv(tmp_path / "btc.csv", {"price.close": [1]}))], "4h", None)
    with pytest.raises(PerpwatchError, match="no history reader is installed"):
        load_history([str(empty)], "4h", None, Registry())


def test_explain_reads_history_as_backtest_does(tiny):
    strat, data = tiny
    result = invoke("explain", strat, "--data", data, "--at", "2024-01-01T04:00:00Z")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        f"tiny — data replay folder {data}, bar 1 (2024-01-01T04:00:00Z), symbol BTC"
    )
    assert "  enter: True (fired)" in result.output
    one = invoke("explain", strat, "--data", data / "BTC_4h.csv", "--at", "2024-01-01T16:00:00Z")
    assert one.exit_code == 0 and "  leave: True (fired)" in one.output
    off = invoke("explain", strat, "--data", data, "--at", "2024-01-01T05:00:00Z")
    assert off.exit_code == 2 and "is not a bar of replay folder" in off.output
    eth = invoke("explain", strat, "--data", data, "--symbol", "eth", "--at", "2024-01-01T04:00:00Z")
    assert eth.exit_code == 2 and "no 4h file for ETH (it has BTC)" in eth.output


def test_html_without_plotly_names_the_extra(tiny, tmp_path, monkeypatch):
    strat, data = tiny
    monkeypatch.setitem(sys.modules, "plotly", None)
    result = invoke("backtest", strat, "--data", data, "--html", tmp_path / "r.html")
    assert result.exit_code == 2
    assert "--html needs plotly: pip install 'perpwatch[report]'" in result.output
    assert not (tmp_path / "r.html").exists()


def test_html_is_self_contained(tiny, tmp_path):
    pytest.importorskip("plotly")
    strat, data = tiny
    page = tmp_path / "r.html"
    assert invoke("backtest", strat, "--data", data, "--html", page).exit_code == 0
    text = page.read_text()
    assert "<script src=" not in text.replace('<script src="data:', "")  # nothing fetched from a CDN
    assert "Plotly.newPlot" in text and "Equity (USD)" in text and "Drawdown (%)" in text
    # events per rule: fired, suppressed, resolved, orders, no order, rejected
    row = "<tr><td>tiny</td><td>enter</td>" + "".join(f"<td class=n>{v}</td>" for v in (2, 0, 2, 2, 0, 0))
    assert row + "</tr>" in text


# --- the real BTC year ----------------------------------------------------------------------------------


@pytest.mark.skipif(
    not (SNAPSHOTS / "20250529").is_dir(), reason=f"CoinGlass snapshots not found at {SNAPSHOTS}"
)
def test_derivatives_state_on_the_real_btc_4h_year(tmp_path):
    """Nov 2024 -> Nov 2025, snapshots 20250529 + 20251114 joined, at 4h (the data's interval)."""
    out_json, out_html = tmp_path / "ds.json", tmp_path / "ds.html"
    args = [
        "backtest",
        ROOT / "strategies" / "derivatives-state.yaml",
        "--data",
        SNAPSHOTS / "20250529",
        "--data",
        SNAPSHOTS / "20251114",
        "--interval",
        "4h",
        "--json",
        out_json,
    ]
    if _has_plotly():
        args += ["--html", out_html]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out_json.read_text())
    st = doc["stats"]
    assert st["start"].startswith("2024-11-") and st["end"].startswith("2025-11-14")
    assert st["bars"] > 2000 and st["trades"] > 50
    assert st["net_pnl_usd"] == pytest.approx(st["final_equity_usd"] - st["starting_balance_usd"])
    assert st["net_pnl_usd"] == pytest.approx(sum(t["net_pnl"] for t in doc["trades"]))
    assert st["net_pnl_usd"] == pytest.approx(st["gross_pnl_usd"] - st["fees_usd"] + st["funding_usd"])
    assert st["fees_usd"] > 0 and st["funding_settlements"] > 0 and st["max_drawdown_pct"] > 0
    assert {e["rule"] for e in doc["events"] if e["kind"] == "fired"} == {"buy", "sell", "hold"}
    assert all(t["entry_time"] - t["entry_bar"] == 4 * H for t in doc["trades"])  # next bar's open
    if _has_plotly():
        assert out_html.stat().st_size > 1_000_000  # plotly.js inlined


def _has_plotly() -> bool:
    try:
        import plotly  # noqa: F401
    except ImportError:
        return False
    return True
