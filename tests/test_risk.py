"""The trading layer and its risk checks: what opens, what is clipped, what is rejected and why.

A small strategy reads a control channel (``oi.close``: 1 long, 2 short, 3 flat) so each test
says exactly which signal fires at which bar; ``Trading.on_bar`` runs as the live runner calls
it (fill at the bar's close, at the clock's time). Fees and slippage are 0 here, so the numbers
are plain; the paper tests check those.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from helpers import H, invoke

from perpwatch.api.interfaces import PluginContext
from perpwatch.common.clock import FakeClock
from perpwatch.evaluation.evaluate import evaluate
from perpwatch.evaluation.events import Event, OrderIntent
from perpwatch.evaluation.frame import Frame
from perpwatch.evaluation.rules import FIRING, RuleState, build_event
from perpwatch.language.compiler import Strategy, load_strategy
from perpwatch.live.risk import HALT_FLAG, halt, halted, resume, rule_inputs
from perpwatch.live.state import StateStore
from perpwatch.live.trading import Trading
from perpwatch.plugins.paper import PaperExecutor

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z

STRATEGY = """
version: 1
name: trader
interval: 1h
params: {{size: 1000}}
rules:
  - name: go_long
    when: oi.close == 1 or funding.close > 5
    signal: {{side: long, size_usd: size}}
  - name: go_short
    when: oi.close == 2
    signal: {{side: short, size_usd: size}}
  - name: go_flat
    when: oi.close == 3
    signal: {{side: flat}}
execute: {execute}
risk: {risk}
"""


def make_strategy(tmp: Path, risk: str = "{}", execute: str = "paper") -> Strategy:
    path = tmp / "trader.yaml"
    path.write_text(STRATEGY.format(risk=risk, execute=execute))
    return load_strategy(str(path))


class Desk:
    """A strategy, a price history per symbol, a paper account and the trading layer."""

    def __init__(self, strategy: Strategy, n: int = 30):
        self.strategy = strategy
        self.n = n
        self.store = StateStore(":memory:")
        self.clock = FakeClock(T0 / 1000)
        self.paper = PaperExecutor({"fee_bps": 0, "slippage_bps": 0}, PluginContext(store=self.store))
        self.trading = Trading(self.store, {"paper": self.paper}, self.clock)
        self.frames: dict[str, Frame] = {}

    def series(self, symbol: str, control: list[float], close: list[float] | float = 100.0, **cols) -> None:
        n = self.n
        ctl = np.full(n, 0.0)
        ctl[: len(control)] = control
        px = np.full(n, float(close)) if isinstance(close, int | float) else np.asarray(close, float)
        columns = {"oi.close": ctl, "price.close": px, "price.open": px, "funding.close": np.full(n, 0.01)}
        columns.update({k: np.asarray(v, float) for k, v in cols.items()})
        self.frames[symbol] = Frame(T0 + H * np.arange(n, dtype=np.int64), columns)

    def bar(self, i: int, symbol: str = "BTC", events: list[Event] | None = None) -> list[Event]:
        """What the runner does at bar ``i``: fired events for the rules True there, then on_bar."""
        ev = evaluate(self.strategy, self.frames[symbol], symbol)
        if events is None:
            events = [
                build_event(self.strategy, rule, ev, i, "fired")
                for rule in self.strategy.rules
                if ev.series(rule.cond)[i] == 1
            ]
        self.clock.now = (T0 + (i + 1) * H) / 1000
        return asyncio.run(self.trading.on_bar(self.strategy, symbol, T0 + i * H, ev, i, events))

    def position(self, symbol: str = "BTC"):
        return self.paper.open_trade(self.strategy.name, symbol)


def kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.kind, e.rule) for e in events]


@pytest.fixture
def desk(tmp_path):
    def make(risk: str = "{}", execute: str = "paper", n: int = 30) -> Desk:
        return Desk(make_strategy(tmp_path, risk, execute), n)

    return make


def test_a_long_signal_fills_at_the_bars_close_at_the_clocks_time(desk):
    d = desk()
    d.series("BTC", [0, 1], close=[100.0, 125.0] + [125.0] * 28)
    assert d.bar(0) == []
    (order,) = d.bar(1)
    assert (order.kind, order.rule, order.time) == ("order", "go_long", T0 + H)
    assert order.values["price"] == 125.0 and order.values["fill_time"] == T0 + 2 * H
    assert order.message.startswith("open buy 8 BTC @ 125.00")
    (fill,) = order.values["fills"]
    assert (fill["action"], fill["side"], fill["qty"]) == ("open", "buy", 8.0)
    assert d.position().size_usd == 1000.0


def test_flat_closes_reverse_closes_then_opens_and_no_ops_are_recorded(desk):
    d = desk()
    d.series("BTC", [1, 1, 2, 3, 3], close=[100, 100, 110, 90, 90] + [90] * 25)
    d.bar(0)
    (same,) = d.bar(1)
    assert same.kind == "no_order" and "already long" in same.message
    (rev,) = d.bar(2)
    assert [f["action"] for f in rev.values["fills"]] == ["close", "open"]
    assert d.position().side == "short"
    (close,) = d.bar(3)
    assert close.kind == "order" and "pnl +181.82" in close.message  # 1000/110 units short, 110 -> 90
    assert d.position() is None
    (nothing,) = d.bar(4)
    assert nothing.kind == "no_order" and "no position to close" in nothing.message
    short = d.paper.trades()[-1]
    assert short.pnl == pytest.approx((110 - 90) * 1000 / 110)


def test_max_position_usd_clips_the_size(desk):
    d = desk("{max_position_usd: 400}")
    d.series("BTC", [1])
    (order,) = d.bar(0)
    assert order.kind == "order" and "clipped to max_position_usd 400.00" in order.message
    assert d.position().size_usd == 400.0 and d.position().qty == 4.0


def test_max_open_positions_counts_the_strategys_other_symbols(desk):
    d = desk("{max_open_positions: 1}")
    d.series("BTC", [1, 0, 2])
    d.series("ETH", [0, 1])
    assert kinds(d.bar(0, "BTC")) == [("order", "go_long")]
    (rej,) = d.bar(1, "ETH")
    assert rej.kind == "rejected" and rej.message == "max_open_positions: 1 of 1 already open for trader"
    (rev,) = d.bar(2, "BTC")  # reversing BTC is not a second position
    assert rev.kind == "order" and d.position("BTC").side == "short"


def test_max_open_positions_zero_never_opens(desk):
    d = desk("{max_open_positions: 0}")
    d.series("BTC", [1])
    assert kinds(d.bar(0)) == [("rejected", "go_long")]


@pytest.fixture
def lossy(desk):
    """Balance 1,000: a 12 USD loss is 1.2 % of the day's starting equity."""

    def make() -> Desk:
        d = desk("{max_daily_loss_pct: 1}")
        d.paper = PaperExecutor(
            {"fee_bps": 0, "slippage_bps": 0, "balance_usd": 1000, "account": "small"},
            PluginContext(store=d.store),
        )
        d.trading = Trading(d.store, {"paper": d.paper}, d.clock)
        return d

    return make


def test_daily_loss_blocks_new_positions_until_the_next_utc_day_closing_allowed(lossy):
    d = lossy()
    control = [0] * 30
    control[1], control[3], control[4], control[24] = 1, 3, 1, 1
    close = [100.0] * 3 + [98.8] * 27
    d.series("BTC", control, close=close)
    results = {i: d.bar(i) for i in range(30)}
    assert kinds(results[1]) == [("order", "go_long")]
    assert kinds(results[3]) == [("order", "go_flat")]
    (rej,) = results[4]
    assert rej.kind == "rejected"
    assert rej.message == (
        "max_daily_loss_pct: trader lost 12.00 USD (1.20% of the day's starting equity 1,000.00) on "
        "2024-01-01; no new positions until the next UTC day"
    )
    assert kinds(results[24]) == [("order", "go_long")]  # 2024-01-02: a new day


def test_kill_switch_blocks_opening_allows_closing_and_a_reversal_only_closes(desk):
    d = desk()
    d.series("BTC", [1, 1, 2, 3, 1])
    d.series("ETH", [1])
    d.bar(0)
    halt(d.store, "exchange incident", now=T0 / 1000)
    assert halted(d.store) == "since 2024-01-01T00:00:00Z: exchange incident"
    (rej,) = d.bar(0, "ETH")
    assert (
        rej.kind == "rejected"
        and "trading is halted (since 2024-01-01T00:00:00Z: exchange incident)" in rej.message
    )
    assert kinds(d.bar(2)) == [("rejected", "go_short"), ("order", "go_short")]
    assert d.position() is None  # the reversal closed the long and opened nothing
    assert kinds(d.bar(3)) == [("no_order", "go_flat")]
    assert resume(d.store) is True and resume(d.store) is False
    assert kinds(d.bar(4)) == [("order", "go_long")]


def test_kill_switch_reversal_message(desk):
    d = desk()
    d.series("BTC", [1, 2])
    d.bar(0)
    halt(d.store)
    rej, close = d.bar(1)
    assert rej.message.endswith("; closed the long position instead of reversing")
    assert [f["action"] for f in close.values["fills"]] == ["close"]


def test_inhibited_by_holds_back_new_positions_for_that_symbol_only(desk):
    d = desk("{inhibited_by: [risk-off/risk_off]}")
    d.series("BTC", [1, 0, 3])
    d.series("ETH", [1])
    d.store.save_rule_state("risk-off", "risk_off", "BTC", RuleState(status=FIRING))
    (rej,) = d.bar(0, "BTC")
    assert (rej.kind, rej.message) == ("rejected", "inhibited: risk-off/risk_off is firing for BTC")
    assert kinds(d.bar(0, "ETH")) == [("order", "go_long")]
    d.store.save_rule_state("risk-off", "risk_off", "BTC", RuleState(status="inactive"))
    assert kinds(d.bar(0, "BTC")) == [("order", "go_long")]


def test_never_acts_on_unknown_or_stale_data(desk):
    d = desk()
    n = 30
    funding = np.full(n, 0.01)
    funding[0] = np.nan  # go_long's condition is True through oi.close, but it also reads funding.close
    d.series("BTC", [1, 1, 1], **{"funding.close": funding})
    (rej,) = d.bar(0)
    assert rej.message == "data unknown or older than max_data_age at this bar: funding.close; not acting"
    d.frames["BTC"].columns["price.close"][1] = np.nan
    (rej,) = d.bar(1)
    assert rej.message == "price.close is unknown or older than max_data_age at this bar; not acting"
    # a price observed 3 h before bar 2 is stale (max_data_age defaults to 2 bars)
    frame = d.frames["BTC"]
    frame.observed["price.close"] = frame.times - 3 * H
    (rej,) = d.bar(2)
    assert rej.message.startswith("price.close is unknown or older than max_data_age")
    assert d.position() is None


def test_unknown_side_unknown_or_zero_size_are_rejected(desk):
    d = desk()
    d.series("BTC", [1])
    assert d.bar(0, events=[]) == []
    ev = evaluate(d.strategy, d.frames["BTC"], "BTC")
    template = build_event(d.strategy, d.strategy.rules[0], ev, 0, "fired")
    cases = [
        (OrderIntent(None, 1000.0), "the signal's side is unknown at this bar"),
        (OrderIntent("long", None), "size_usd is unknown at this bar"),
        (OrderIntent("short", 0.0), "size_usd is 0: nothing to open"),
    ]
    for intent, reason in cases:
        template.signal = intent
        (rej,) = d.bar(0, events=[template])
        assert (rej.kind, rej.message) == ("rejected", reason)


def test_suppressed_and_resolved_events_never_trade_and_no_execute_does_nothing(desk, tmp_path):
    d = desk()
    d.series("BTC", [1])
    ev = evaluate(d.strategy, d.frames["BTC"], "BTC")
    quiet = [build_event(d.strategy, d.strategy.rules[0], ev, 0, k) for k in ("suppressed", "resolved")]
    assert d.bar(0, events=quiet) == []
    d2 = desk(execute="other")
    d2.series("BTC", [1])
    (rej,) = d2.bar(0)
    assert rej.message == "no executor named 'other' is configured"
    d3 = Desk(make_strategy(tmp_path, "{}", "paper"))
    d3.strategy.execute = None
    d3.series("BTC", [1])
    assert d3.bar(0) == []


def test_funding_is_settled_on_the_bar_that_reaches_the_settlement(desk):
    d = desk()
    d.series("BTC", [1], **{"funding.close": np.full(30, 0.03)})
    for i in range(9):
        d.bar(i)
    pos = d.position()
    # opened at bar 0's close (01:00); the 08:00 settlement falls at the close of bar 7:
    # 10 BTC-units * 100 * 0.03 % = 0.30 paid by the long
    assert pos.funding == pytest.approx(-0.3)
    assert [p.time for p in d.paper.funding_payments()] == [T0 + 8 * H]


def test_rule_inputs_cover_condition_and_signal_metrics(desk):
    d = desk()
    names = [n for n, _ in rule_inputs(d.strategy, d.strategy.rules[0])]
    assert names == ["funding.close", "oi.close"]


def test_halt_resume_commands_and_events_shows_rejections(tmp_path, desk):
    db = str(tmp_path / "state.db")
    out = invoke("halt", "--state", db, "--reason", "manual")
    assert out.exit_code == 0 and "trading halted" in out.output
    store = StateStore(db)
    assert store.get_flag(HALT_FLAG).endswith(": manual")
    d = desk()
    d.store, d.paper = store, PaperExecutor({}, PluginContext(store=store))
    d.trading = Trading(store, {"paper": d.paper}, d.clock)
    d.series("BTC", [1])
    for e in d.bar(0):
        store.record_event(e)
    store.close()
    shown = invoke("events", "--state", db)
    assert "REJECTED" in shown.output and "trading is halted" in shown.output
    assert invoke("resume", "--state", db).exit_code == 0
    again = invoke("resume", "--state", db)
    assert again.exit_code == 2 and "not halted" in again.output
