"""Live equals backtest: one history through the live runner (FakeClock, replay source, paper
executor in a state file) and through ``backtest``; the events and the paper trades agree.

How the equivalence is made precise:

* Rule events (fired / suppressed / resolved) must be identical: same keys, messages, values and
  signals. Live evaluates only the warm-up window of each newest bar, the backtest the whole
  history once; the engine's functions make those values bit for bit the same.
* Trading events (order / rejected / no_order) and trades depend on the fill price, and the two
  modes fill differently by design: live at the decision bar's close (the latest price the cycle
  has, at the clock's time, which is the bar's close here: settle delay 0), the backtest at the
  next bar's open. So:
  - on a *continuous* history (each bar opens at the previous close) the two fill prices are
    equal, and everything must be identical: every trading event (messages, fills, order ids),
    every trade's side, size, qty, times, prices, fees, funding and PnL;
  - on a history with *gaps* between close and next open, the same decisions must be taken
    (kind, rule, symbol, bar, side and size of every trading event; the rejection reasons), and
    each fill's price must be the documented reference moved by the slippage: live
    ``close[i] * (1 +/- slip)``, backtest ``open[i + 1] * (1 +/- slip)``.

Live runs bars ``FIRST .. N-2``: the backtest cannot fill a signal on the last bar (no next open).
The strategies exercise windows, ``for``, cooldown, a categorical side, sizes that get clipped,
``max_open_positions`` across two symbols, and inhibition by another strategy's rule.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from helpers import H

from perpwatch.api.registry import load_registry
from perpwatch.backtest.history import load_history
from perpwatch.backtest.result import BacktestOptions
from perpwatch.backtest.walk import run_backtest
from perpwatch.common.clock import FakeClock
from perpwatch.evaluation.events import Event
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, Instance
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
N = 400
FIRST = 60  # the first bar live processes (past every warm-up)
SYMBOLS = ["BTC", "ETH"]
PAPER = {"balance_usd": 10_000, "fee_bps": 5, "slippage_bps": 2, "funding_interval_hours": 8}

SWING = """
version: 1
name: swing
interval: 1h
params: {fast: 5, slow: 20, base: 3000}
let:
  trend:
    cases:
      - when: sma(price.close, fast) > sma(price.close, slow)
        then: UP
      - when: sma(price.close, fast) < sma(price.close, slow)
        then: DOWN
    else: FLAT
  side:
    lookup: trend
    table: {UP: long, DOWN: short, FLAT: flat}
  size: base * (1 + abs(zscore(funding.close, 24)))
rules:
  - name: up
    when: trend == "UP"
    for: 1
    message: "{symbol} up, funding {funding.close:.4f}"
    signal: {side: side, size_usd: size}
  - name: down
    when: trend == "DOWN"
    cooldown: 3h
    signal: {side: side, size_usd: size}
  - name: exit_hot
    when: funding.close > 0.03
    signal: {side: flat}
notify: []
execute: paper
risk:
  max_position_usd: 4000
  max_open_positions: 1
  inhibited_by: [guard/stress]
"""

GUARD = """
version: 1
name: guard
interval: 1h
rules:
  - name: stress
    when: abs(pct_change(price.close, 1)) > 1.2
notify: []
"""


def history(seed: int, gaps: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.006, N)))
    prev = np.concatenate([[close[0]], close[:-1]])
    open_ = prev * (1 + rng.normal(0, 0.002, N)) if gaps else prev
    funding = np.round(0.01 + np.cumsum(rng.normal(0, 0.002, N)) * 0.3, 5)
    return {"price.open": open_, "price.close": close, "funding.close": funding}


def write_folder(folder: Path, gaps: bool) -> dict[str, dict[str, np.ndarray]]:
    folder.mkdir()
    data = {}
    for k, sym in enumerate(SYMBOLS):
        cols = history(k + 7, gaps)
        data[sym] = cols
        lines = ["time," + ",".join(cols)]
        lines += [f"{T0 + i * H}," + ",".join(repr(float(c[i])) for c in cols.values()) for i in range(N)]
        (folder / f"{sym}_1h.csv").write_text("\n".join(lines) + "\n")
    return data


def strategies(tmp: Path):
    (tmp / "swing.yaml").write_text(SWING)
    (tmp / "guard.yaml").write_text(GUARD)
    return [load_strategy(str(tmp / "guard.yaml")), load_strategy(str(tmp / "swing.yaml"))]


async def live(tmp: Path, folder: Path):
    store = StateStore(str(tmp / "live.db"))
    clock = FakeClock((T0 + FIRST * H + H) / 1000)
    cfg = Config(
        symbols=SYMBOLS,
        sources={"replay": Instance("replay", "replay", {"path": str(folder)})},
        executors={"paper": Instance("paper", "paper", dict(PAPER))},
    )
    runner = Runner.build(
        strategies(tmp), cfg, load_registry(), store, clock, options=RunnerOptions(settle_seconds=0)
    )
    try:
        for i in range(FIRST, N - 1):
            clock.now = (T0 + (i + 1) * H) / 1000  # bar i has just closed
            report = await runner.run_cycle(clock.now)
            assert not report.failures, report.failures
        paper = runner.executors["paper"]
        return store.events(), paper.trades()
    finally:
        await runner.aclose()


def backtest(tmp: Path, folder: Path):
    ss = strategies(tmp)
    options = BacktestOptions(
        balance_usd=PAPER["balance_usd"],
        fee_bps=PAPER["fee_bps"],
        slippage_bps=PAPER["slippage_bps"],
        funding_interval_hours=PAPER["funding_interval_hours"],
        start=T0 + FIRST * H,
        end=T0 + (N - 2) * H,
    )
    r = run_backtest(ss, load_history([str(folder)], "1h", None), {s.name: SYMBOLS for s in ss}, options)
    return r


RULE_KINDS = {"fired", "suppressed", "resolved"}


def by_key(events: list[Event]) -> dict[str, dict]:
    return {e.key: e.to_dict() for e in events}


@pytest.mark.parametrize("gaps", [False, True], ids=["continuous", "gaps"])
def test_live_runner_and_backtest_agree(tmp_path, gaps):
    folder = tmp_path / "data"
    data = write_folder(folder, gaps)
    live_events, live_trades = asyncio.run(live(tmp_path, folder))
    r = backtest(tmp_path, folder)

    live_rule = by_key([e for e in live_events if e.kind in RULE_KINDS])
    assert live_rule == by_key(r.events)
    assert len(live_rule) > 30  # the history exercises the rules

    live_trading = [e for e in live_events if e.kind not in RULE_KINDS]
    kinds = {e.kind for e in live_trading}
    assert {"order", "rejected"} <= kinds  # clipping, max_open_positions, inhibition all happen
    assert any("clipped" in e.message for e in live_trading)
    assert any(e.message.startswith("inhibited: guard/stress") for e in live_trading)
    assert any(e.message.startswith("max_open_positions") for e in live_trading)

    def decision(e: Event) -> tuple:
        return (e.kind, e.strategy, e.rule, e.symbol, e.time, e.values.get("side"), e.values.get("size_usd"))

    assert sorted(map(decision, live_trading)) == sorted(map(decision, r.trading))
    rejections = sorted((e.key, e.message) for e in live_trading if e.kind == "rejected")
    assert rejections == sorted((e.key, e.message) for e in r.trading if e.kind == "rejected")

    def shape(t) -> tuple:
        return (t.strategy, t.symbol, t.side, t.size_usd, t.entry_time, t.exit_time, t.status)

    assert [shape(t) for t in live_trades] == [shape(t) for t in r.trades]
    assert len(live_trades) >= 5

    if not gaps:
        assert by_key(live_trading) == by_key(r.trading)
        for a, b in zip(live_trades, r.trades, strict=True):
            assert (a.qty, a.entry_price, a.exit_price, a.funding, a.net_pnl) == (
                b.qty,
                b.entry_price,
                b.exit_price,
                b.funding,
                b.net_pnl,
            )
            assert (a.entry_fee + a.exit_fee, a.pnl + a.unrealized) == (b.fees, b.pnl)
        return

    slip = PAPER["slippage_bps"] / 10_000
    back = {e.key: e for e in r.trading}
    checked = 0
    for e in live_trading:
        if e.kind != "order":
            continue
        i = (e.time - T0) // H
        sym = data[e.symbol]
        for fl, fb in zip(e.values["fills"], back[e.key].values["fills"], strict=True):
            sign = 1 if fl["side"] == "buy" else -1
            assert fl["side"] == fb["side"] and fl["action"] == fb["action"]
            assert fl["price"] == pytest.approx(sym["price.close"][i] * (1 + sign * slip), rel=1e-12)
            assert fb["price"] == pytest.approx(sym["price.open"][i + 1] * (1 + sign * slip), rel=1e-12)
            checked += 1
    assert checked >= 5
