"""Protective exits (issue 15 #1): the bar rule, the language, backtests and live paper trading.

Every scenario is a short 4h history whose bars are written out by hand; the entry signal fires on
bar 1 (``oi.close == 1``), so the position fills at bar 2's open and bar 2's high and low count.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import H, write_csv

from perpwatch.api.exits import Hit, Levels, check_bar, exit_levels
from perpwatch.api.registry import load_registry
from perpwatch.backtest.history import load_history, symbols_for
from perpwatch.backtest.report import format_text, to_json
from perpwatch.backtest.result import BacktestOptions
from perpwatch.backtest.walk import run_backtest
from perpwatch.common.clock import FakeClock
from perpwatch.common.errors import ErrorList, PerpwatchError
from perpwatch.evaluation.events import Event, ExitDistance, OrderIntent
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, Instance
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
STEP = 4 * H
QUIET = (100.0, 100.5, 99.5, 100.0)  # a bar that touches no exit of a 2% / 5% position from 100


def strategy_text(side: str = "long", **exits: str) -> str:
    lines = "".join(f"      {k}: {v}\n" for k, v in exits.items())
    return (
        "version: 1\nname: prot\ninterval: 4h\nexecute: paper\nnotify: []\nrules:\n"
        "  - name: enter\n    when: oi.close == 1\n    signal:\n"
        f"      side: {side}\n      size_usd: 1000\n{lines}"
    )


def run(tmp: Path, text: str, bars: list[tuple[float, float, float, float]], **options):
    """Backtest ``text`` over ``bars`` (open, high, low, close), the signal on bar 1."""
    strat = tmp / "prot.yaml"
    strat.write_text(text)
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    oi = [1.0 if i == 1 else 0.0 for i in range(len(bars))]
    cols = {
        "price.open": [b[0] for b in bars],
        "price.high": [b[1] for b in bars],
        "price.low": [b[2] for b in bars],
        "price.close": [b[3] for b in bars],
        "oi.close": oi,
        "funding.close": [0.0] * len(bars),
    }
    write_csv(data / "BTC_4h.csv", cols, T0, STEP)
    s = load_strategy(str(strat))
    history = load_history([str(data)], s.interval, None)
    opts = {"fee_bps": 0.0, "slippage_bps": 0.0, **options}
    return run_backtest([s], history, symbols_for([s], history, None), BacktestOptions(**opts))


def only_trade(r):
    assert len(r.trades) == 1, r.trades
    return r.trades[0]


# -- the bar rule -------------------------------------------------------------------------------


def long_levels(**kw) -> Levels:
    return Levels(side="long", best=100.0, **kw)


def test_a_long_stop_fills_at_the_stop_and_a_gap_through_it_at_the_open():
    assert check_bar(long_levels(stop=98.0), 100, 101, 97, 99)[0] == Hit("stop_loss", 98.0, 98.0)
    assert check_bar(long_levels(stop=98.0), 95, 96, 94, 95)[0] == Hit("stop_loss", 95.0, 98.0)
    assert check_bar(long_levels(stop=98.0), 100, 101, 98.01, 99)[0] is None
    assert check_bar(long_levels(stop=98.0), 100, 101, 98.0, 99)[0] == Hit("stop_loss", 98.0, 98.0)


def test_a_long_take_profit_and_a_gap_above_it():
    assert check_bar(long_levels(take=105.0), 100, 106, 99, 104)[0] == Hit("take_profit", 105.0, 105.0)
    assert check_bar(long_levels(take=105.0), 107, 108, 106, 107)[0] == Hit("take_profit", 107.0, 105.0)
    assert check_bar(long_levels(take=105.0), 100, 104.9, 99, 104)[0] is None


def test_stop_and_take_profit_in_one_bar_take_the_stop():
    hit, _ = check_bar(long_levels(stop=98.0, take=105.0), 100, 106, 97, 104)
    assert hit == Hit("stop_loss", 98.0, 98.0)
    short = Levels(side="short", stop=102.0, take=95.0, best=100.0)
    assert check_bar(short, 100, 103, 94, 96)[0] == Hit("stop_loss", 102.0, 102.0)


def test_shorts_are_the_mirror_image():
    short = Levels(side="short", stop=102.0, take=95.0, best=100.0)
    assert check_bar(short, 100, 102.5, 99, 101)[0] == Hit("stop_loss", 102.0, 102.0)
    assert check_bar(short, 104, 105, 103, 104)[0] == Hit("stop_loss", 104.0, 102.0)  # gapped up
    assert check_bar(short, 99, 99.5, 94.5, 96)[0] == Hit("take_profit", 95.0, 95.0)
    assert check_bar(short, 93, 94, 92, 93)[0] == Hit("take_profit", 93.0, 95.0)  # gapped down
    assert check_bar(short, 100, 101.9, 95.1, 100)[0] is None


def test_the_trailing_stop_follows_the_best_price_and_a_bar_never_counts_both_ways():
    lv = Levels(side="long", trail=3.0, best=100.0)
    hit, lv = check_bar(lv, 100, 110, 98, 109)  # the low 98 is judged against 97 (best 100), not 107
    assert hit is None and lv.best == 110.0
    hit, lv = check_bar(lv, 109, 109.5, 106.5, 107)
    assert hit == Hit("trailing_stop", 107.0, 107.0)
    # the open raises the best before the bar is judged
    hit, _ = check_bar(Levels(side="long", trail=3.0, best=100.0), 110, 111, 106.9, 108)
    assert hit == Hit("trailing_stop", 107.0, 107.0)
    # a short's trail lies above the lowest price since entry
    hit, lv = check_bar(Levels(side="short", trail=3.0, best=100.0), 100, 101, 90, 91)
    assert hit is None and lv.best == 90.0
    assert check_bar(lv, 91, 93.5, 90.5, 93)[0] == Hit("trailing_stop", 93.0, 93.0)


def test_the_closer_stop_wins_and_a_tie_is_the_stop_loss():
    lv = Levels(side="long", stop=98.0, trail=1.0, best=100.0)
    assert check_bar(lv, 100, 100.5, 98.5, 99)[0] == Hit("trailing_stop", 99.0, 99.0)
    lv = Levels(side="long", stop=99.0, trail=1.0, best=100.0)
    assert check_bar(lv, 100, 100.5, 98.5, 99)[0] == Hit("stop_loss", 99.0, 99.0)
    lv = Levels(side="long", stop=99.0, best=100.0, liquidation=99.0)
    assert check_bar(lv, 100, 100.5, 98.5, 99)[0] == Hit("stop_loss", 99.0, 99.0)


def test_unknown_high_and_low_judge_by_the_known_prices():
    assert check_bar(long_levels(stop=98.0), None, None, None, 97.0)[0] == Hit("stop_loss", 98.0, 98.0)
    assert check_bar(long_levels(stop=98.0), float("nan"), None, None, None) == (None, long_levels(stop=98.0))


def test_levels_from_the_fill_percent_and_price_distance():
    intent = OrderIntent(
        "long", 1000, ExitDistance("pct", 2), ExitDistance("price", 7.5), ExitDistance("pct", 1)
    )
    assert exit_levels("long", 200.0, intent) == Levels("long", 196.0, 207.5, 2.0, 200.0)
    assert exit_levels("short", 200.0, intent) == Levels("short", 204.0, 192.5, 2.0, 200.0)


def test_an_intent_survives_json_with_its_exits():
    intent = OrderIntent("short", 500.0, ExitDistance("pct", 2.0), None, ExitDistance("price", None))
    e = Event("fired", "s", "r", "BTC", T0, signal=intent)
    back = Event.from_dict(json.loads(json.dumps(e.to_dict())))
    assert back.signal == intent


# -- the language -------------------------------------------------------------------------------


def errors_of(text: str) -> str:
    with pytest.raises(ErrorList) as e:
        load_strategy("s.yaml", text=text)
    return str(e.value)


def test_signal_exits_and_risk_defaults_compile():
    text = strategy_text(take_profit="2 * (price.high - price.low)", trailing_stop="1.5%")
    text = text.replace("rules:\n", "risk:\n  stop_loss: 2%\nrules:\n")
    s = load_strategy("s.yaml", text=text)
    rule = s.rules[0]
    assert rule.stop_loss is not None and rule.stop_loss.pct == 2.0  # the risk: default
    assert rule.take_profit is not None and rule.take_profit.node is not None
    assert rule.trailing_stop is not None and rule.trailing_stop.pct == 1.5
    assert s.has_exits and s.risk.stop_loss is rule.stop_loss


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0%", "s.yaml:12:18: error: signal stop_loss: '0%' must be more than 0% and at most 99%"),
        ("100%", "'100%' must be more than 0% and at most 99%"),
        ("2%%", "'2%%' is not a percent like 2%; write a percent of the entry fill (2%)"),
        ("-1", "signal stop_loss: -1 is not a positive price distance"),
        ("price.close > 1", "'price.close > 1' gives true/false, not a price distance"),
        ("'\"x\"'", "'\"x\"' gives text, not a price distance"),
        ("pricee.close", "did you mean: price.close"),
    ],
)
def test_bad_exits_are_located_errors_naming_what_is_valid(value, message):
    assert message in errors_of(strategy_text(stop_loss=value))


def test_an_exit_on_a_flat_signal_is_an_error():
    text = strategy_text("flat", stop_loss="2%")
    assert "s.yaml:12:18: error: signal stop_loss: a flat signal opens nothing to protect" in errors_of(text)
    load_strategy(
        "s.yaml", text=strategy_text("flat").replace("rules:\n", "risk:\n  stop_loss: 2%\nrules:\n")
    )


def test_a_bad_risk_default_is_located_at_the_risk_key():
    text = strategy_text().replace("rules:\n", "risk:\n  take_profit: 0%\nrules:\n")
    assert "s.yaml:7:16: error: risk take_profit: '0%' must be more than 0%" in errors_of(text)
    assert "unknown key" in errors_of(strategy_text(stop_los="2%"))


# -- backtests ----------------------------------------------------------------------------------


def test_stop_in_the_entry_bar(tmp_path):
    r = run(
        tmp_path, strategy_text(stop_loss="2%", take_profit="5%"), [QUIET, QUIET, (100, 101, 97.5, 99), QUIET]
    )
    t = only_trade(r)
    assert (t.entry_price, t.exit_price, t.exit_reason) == (100.0, 98.0, "stop_loss")
    assert (t.entry_time, t.exit_time) == (T0 + 2 * STEP, T0 + 2 * STEP)
    assert t.exit_rule == "exit:stop_loss" and t.entry_rule == "enter"
    (order,) = [e for e in r.trading if e.rule == "exit:stop_loss"]
    assert order.kind == "order" and order.values["reason"] == "stop_loss"
    assert order.time == T0 + 2 * STEP


def test_gap_through_the_stop_fills_at_the_open(tmp_path):
    bars = [QUIET, QUIET, QUIET, (95, 96, 94, 95), QUIET]
    t = only_trade(run(tmp_path, strategy_text(stop_loss="2%"), bars))
    assert (t.exit_price, t.exit_reason, t.exit_time) == (95.0, "stop_loss", T0 + 3 * STEP)


def test_take_profit(tmp_path):
    bars = [QUIET, QUIET, QUIET, (101, 106, 100, 104), QUIET]
    t = only_trade(run(tmp_path, strategy_text(stop_loss="2%", take_profit="5%"), bars))
    assert (t.exit_price, t.exit_reason) == (105.0, "take_profit")


def test_backtest_stop_and_take_profit_in_one_bar_take_the_stop(tmp_path):
    bars = [QUIET, QUIET, QUIET, (100, 106, 97, 100), QUIET]
    t = only_trade(run(tmp_path, strategy_text(stop_loss="2%", take_profit="5%"), bars))
    assert (t.exit_price, t.exit_reason) == (98.0, "stop_loss")


def test_trailing_stop(tmp_path):
    bars = [QUIET, QUIET, (100, 110, 99, 109), (109, 109.5, 106, 107), QUIET]
    t = only_trade(run(tmp_path, strategy_text(trailing_stop="3%"), bars))
    assert t.exit_reason == "trailing_stop"
    assert t.exit_price == pytest.approx(110 - 3.0)  # 3% of the 100 fill below the best, 110


def test_short_stop_and_take_profit(tmp_path):
    bars = [QUIET, QUIET, QUIET, (104, 105, 103, 104), QUIET]  # gapped up through 102
    t = only_trade(run(tmp_path / "a", strategy_text("short", stop_loss="2%", take_profit="5%"), bars))
    assert (t.side, t.exit_price, t.exit_reason) == ("short", 104.0, "stop_loss")
    bars = [QUIET, QUIET, QUIET, (99, 99.5, 94, 96), QUIET]
    t = only_trade(run(tmp_path / "b", strategy_text("short", stop_loss="2%", take_profit="5%"), bars))
    assert (t.exit_price, t.exit_reason) == (95.0, "take_profit")


@pytest.fixture(autouse=True)
def _folders(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()


def test_slippage_and_fees_apply_to_the_exit(tmp_path):
    bars = [QUIET, QUIET, (100, 101, 97, 99), QUIET]
    r = run(tmp_path, strategy_text(stop_loss="2%"), bars, fee_bps=5.0, slippage_bps=10.0)
    t = only_trade(r)
    entry = 100 * 1.001
    stop = entry * 0.98
    exit_ = stop * 0.999
    qty = 1000 / 100
    assert t.entry_price == pytest.approx(entry)
    assert t.exit_price == pytest.approx(exit_)
    assert t.fees == pytest.approx(qty * entry * 0.0005 + qty * exit_ * 0.0005)
    assert t.pnl == pytest.approx((exit_ - entry) * qty)


def test_a_price_distance_is_the_decision_bars_value(tmp_path):
    bars = [QUIET, (100, 102, 98, 100), QUIET, (100, 100.5, 95.9, 99), QUIET]
    # at bar 1 the range is 4: the stop lies 4 below the fill, at 96
    r = run(tmp_path, strategy_text(stop_loss="price.high - price.low"), bars)
    t = only_trade(r)
    assert (t.exit_price, t.exit_reason) == (96.0, "stop_loss")


def test_an_exit_unknown_at_the_decision_bar_opens_nothing(tmp_path):
    bars = [QUIET, (100, None, 98, 100), QUIET, QUIET]
    r = run(tmp_path, strategy_text(stop_loss="price.high - price.low"), bars)
    assert r.trades == []
    (rej,) = [e for e in r.trading if e.kind == "rejected"]
    assert rej.message == "stop_loss is unknown at this bar; not opening a position without it"


def test_an_exit_not_positive_at_the_decision_bar_opens_nothing(tmp_path):
    r = run(tmp_path, strategy_text(stop_loss="price.close - 150"), [QUIET, QUIET, QUIET, QUIET])
    assert r.trades == []
    (rej,) = [e for e in r.trading if e.kind == "rejected"]
    assert rej.message == "stop_loss is -50 at this bar: it must be positive; not opening"


def test_the_json_report_has_each_trades_reason_and_counts_them(tmp_path):
    bars = [QUIET, QUIET, (100, 101, 97.5, 99), QUIET]
    r = run(tmp_path, strategy_text(stop_loss="2%"), bars)
    doc = to_json(r)
    assert doc["trades"][0]["exit_reason"] == "stop_loss"
    assert doc["trades"][0]["exit_rule"] == "exit:stop_loss"
    assert doc["stats"]["exits_stop_loss"] == 1
    assert doc["stats"]["exits_take_profit"] == doc["stats"]["exits_signal"] == 0
    assert "closed by" in format_text(r) and "stop loss 1" in format_text(r)
    assert any(
        a.startswith("Protective exits: judged on each bar's open, high and low") for a in r.assumptions
    )


def test_data_without_high_and_low_cannot_backtest_exits(tmp_path):
    strat = tmp_path / "prot.yaml"
    strat.write_text(strategy_text(stop_loss="2%"))
    data = tmp_path / "data"
    data.mkdir()
    write_csv(
        data / "BTC_4h.csv",
        {"price.open": [1.0] * 3, "price.close": [1.0] * 3, "oi.close": [1.0] * 3},
        T0,
        STEP,
    )
    s = load_strategy(str(strat))
    history = load_history([str(data)], s.interval, None)
    with pytest.raises(PerpwatchError, match="BTC: the data has no price.high, price.low column"):
        run_backtest([s], history, symbols_for([s], history, None), BacktestOptions())


# -- live paper equals the backtest ---------------------------------------------------------------


LIVE = [
    QUIET,
    QUIET,  # signal (oi) -> live fills at this bar's close, the backtest at the next open (equal here)
    (100, 101, 99, 100.5),
    (100.5, 106, 100, 104),  # take-profit at 105
    (104, 104, 103, 103.5),
    (103.5, 104, 103, 103.5),
]


async def live_run(tmp: Path, folder: Path, text: str):
    store = StateStore(str(tmp / "live.db"))
    clock = FakeClock((T0 + 2 * STEP) / 1000)
    cfg = Config(
        symbols=["BTC"],
        sources={"replay": Instance("replay", "replay", {"path": str(folder)})},
        executors={"paper": Instance("paper", "paper", {"fee_bps": 5, "slippage_bps": 2})},
    )
    (tmp / "prot.yaml").write_text(text)
    strategy = load_strategy(str(tmp / "prot.yaml"))
    runner = Runner.build(
        [strategy], cfg, load_registry(), store, clock, options=RunnerOptions(settle_seconds=0)
    )
    try:
        for i in range(1, len(LIVE) - 1):
            clock.now = (T0 + (i + 1) * STEP) / 1000  # bar i has just closed
            report = await runner.run_cycle(clock.now)
            assert not report.failures, report.failures
        return store.events(), runner.executors["paper"].trades()
    finally:
        await runner.aclose()


@pytest.mark.parametrize("exits", [{"stop_loss": "2%", "take_profit": "5%"}, {"trailing_stop": "0.8%"}])
def test_live_paper_exits_as_the_backtest_does(tmp_path, exits):
    text = strategy_text(**exits)
    r = run(tmp_path, text, LIVE, fee_bps=5.0, slippage_bps=2.0, end=T0 + (len(LIVE) - 2) * STEP)
    live_events, live_trades = asyncio.run(live_run(tmp_path, tmp_path / "data", text))
    bt = [e for e in r.trading if e.rule.startswith("exit:")]
    lv = [e for e in live_events if e.rule.startswith("exit:")]
    assert len(bt) == 1
    assert [e.to_dict() for e in lv] == [e.to_dict() for e in bt]
    (t,) = live_trades
    b = only_trade(r)
    assert (t.exit_reason, t.exit_price, t.exit_time, t.pnl) == (
        b.exit_reason,
        b.exit_price,
        b.exit_time,
        b.pnl,
    )


def test_a_test_file_checks_the_exits_of_a_signal(tmp_path):
    from perpwatch.testing.testfile import run_test_file

    (tmp_path / "prot.yaml").write_text(
        strategy_text(stop_loss="2%", take_profit="2 * (price.high - price.low)")
    )
    test = tmp_path / "prot_test.yaml"
    body = (
        "strategy: prot.yaml\ntests:\n  - name: exits\n    series:\n"
        "      oi.close: '1 1'\n      price.high: '102 103'\n      price.low: '100 100'\n"
        "    expect:\n      - at: 1\n        signals:\n          enter: {side: long, stop_loss: 2, take_profit: %s}\n"
    )
    test.write_text(body % 6)
    result = run_test_file(str(test))
    assert (result.passed, result.failures) == (1, [])
    test.write_text(body % 5)
    result = run_test_file(str(test))
    assert result.passed == 0 and "signal take_profit of enter" in str(result.failures)


def test_run_warns_when_the_source_lacks_what_exits_are_judged_on(tmp_path):
    from perpwatch.cli.run import banner

    (tmp_path / "prot.yaml").write_text(strategy_text(stop_loss="2%"))
    cfg = Config(symbols=["BTC"], sources={"replay": Instance("replay", "replay", {"path": str(tmp_path)})})
    runner = Runner.build(
        [load_strategy(str(tmp_path / "prot.yaml"))],
        cfg,
        load_registry(),
        StateStore(":memory:"),
        FakeClock(0),
    )
    (job,) = runner.jobs
    assert {"price.open", "price.high", "price.low"} <= job.metrics
    runner.provides[job.source] = frozenset({"price.close", "funding.close", "oi.close", "price.open"})
    text = banner(runner, cfg, ":memory:", None)
    assert (
        "warning: source replay does not provide price.high, price.low, which its protective exits are "
        "judged on; each bar is judged by the prices it has (the close)"
    ) in text
    runner.provides[job.source] = runner.provides[job.source] | {"price.high", "price.low"}
    assert "protective exits" not in banner(runner, cfg, ":memory:", None)


def test_live_catching_up_judges_every_missed_bar(tmp_path):
    """The runner was down for bars 2 and 3; the cycle after bar 4 judges bars 2, 3 and 4 in order and
    finds the stop that bar 2 reached (the bar the position opened in is not judged: it closed first)."""
    text = strategy_text(stop_loss="2%")
    bars = [QUIET, QUIET, (100, 101, 97, 99), (99, 100, 99, 100), (100, 100, 90, 95), QUIET]
    data = tmp_path / "data"
    data.mkdir()
    cols = {
        "price.open": [b[0] for b in bars],
        "price.high": [b[1] for b in bars],
        "price.low": [b[2] for b in bars],
        "price.close": [b[3] for b in bars],
        "oi.close": [1.0 if i == 1 else 0.0 for i in range(len(bars))],
        "funding.close": [0.0] * len(bars),
    }
    write_csv(data / "BTC_4h.csv", cols, T0, STEP)

    async def go():
        store = StateStore(str(tmp_path / "live.db"))
        clock = FakeClock((T0 + 2 * STEP) / 1000)
        cfg = Config(
            symbols=["BTC"],
            sources={"replay": Instance("replay", "replay", {"path": str(data)})},
            executors={"paper": Instance("paper", "paper", dict(NO_COSTS_LIVE))},
        )
        (tmp_path / "prot.yaml").write_text(text)
        runner = Runner.build(
            [load_strategy(str(tmp_path / "prot.yaml"))],
            cfg,
            load_registry(),
            store,
            clock,
            options=RunnerOptions(settle_seconds=0),
        )
        try:
            for i in (1, 4):  # bar 1 closes (the entry), then nothing runs until bar 4 has closed
                clock.now = (T0 + (i + 1) * STEP) / 1000
                report = await runner.run_cycle(clock.now)
                assert not report.failures, report.failures
            return store.events(), runner.executors["paper"].trades()
        finally:
            await runner.aclose()

    events, trades = asyncio.run(go())
    (t,) = trades
    assert (t.entry_price, t.exit_reason, t.exit_price, t.exit_time) == (
        100.0,
        "stop_loss",
        98.0,
        T0 + 2 * STEP,
    )
    (e,) = [e for e in events if e.rule == "exit:stop_loss"]
    assert e.time == T0 + 2 * STEP


NO_COSTS_LIVE = {"fee_bps": 0, "slippage_bps": 0}
