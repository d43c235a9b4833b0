"""The ``paper`` executor: fills, fees, slippage, funding, ignored intents, persistence.

Every expected number is worked out by hand in the test (fee 5 bps, slippage 2 bps unless said).
"""

from __future__ import annotations

import asyncio
import math

import jsonschema
import pytest
from helpers import H

from perpwatch.api.interfaces import PluginContext
from perpwatch.api.registry import load_registry
from perpwatch.evaluation.events import OrderIntent
from perpwatch.live.state import StateStore
from perpwatch.plugins.paper import PaperExecutor

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z


def run(coro):
    return asyncio.run(coro)


def paper(store: StateStore | None = None, **options) -> PaperExecutor:
    return PaperExecutor(options, PluginContext(store=store or StateStore(":memory:")))


def long(size: float = 1000.0) -> OrderIntent:
    return OrderIntent("long", size)


def short(size: float = 1000.0) -> OrderIntent:
    return OrderIntent("short", size)


FLAT = OrderIntent("flat", None)


def test_registered_through_the_entry_point_with_a_checked_options_schema():
    assert load_registry().executors["paper"] is PaperExecutor
    schema = PaperExecutor.options_schema
    jsonschema.validate(
        {"balance_usd": 5000, "fee_bps": 4, "slippage_bps": 1, "funding_interval_hours": 8}, schema
    )
    for bad in (
        {"fee_bps": -1},
        {"balance_usd": 0},
        {"funding_interval_hours": 0},
        {"leverage": 0.5},
        {"lever": 3},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    p = paper()
    assert (p.balance_usd, p.fee, p.slippage, p.funding_ms) == (10000.0, 0.0005, 0.0002, 8 * H)


def test_open_and_close_long_with_fees_and_slippage():
    p = paper()
    (fill,) = run(p.submit("s", "BTC", long(1000), 100.0, T0))
    # qty = 1000 / 100 = 10; a buy fills 2 bps higher: 100.02; fee = 10 * 100.02 * 0.0005
    assert (fill.side, fill.qty, fill.info["action"]) == ("buy", 10.0, "open")
    assert fill.price == pytest.approx(100.02)
    assert fill.fee_usd == pytest.approx(0.5001)
    assert p.balance() == pytest.approx(10000 - 0.5001)
    (close,) = run(p.submit("s", "BTC", FLAT, 110.0, T0 + H))
    # a sell fills 2 bps lower: 109.978; pnl = (109.978 - 100.02) * 10 = 99.58; fee = 10 * 109.978 * 0.0005
    assert (close.side, close.info["action"]) == ("sell", "close")
    assert close.price == pytest.approx(109.978)
    assert close.info["pnl"] == pytest.approx(99.58)
    assert close.fee_usd == pytest.approx(0.54989)
    assert p.balance() == pytest.approx(10000 - 0.5001 + 99.58 - 0.54989)
    (trade,) = p.trades()
    assert trade.status == "closed" and trade.net_pnl == pytest.approx(99.58 - 0.5001 - 0.54989)
    assert run(p.positions()) == []


def test_short_profits_when_price_falls_and_reversal_closes_then_opens():
    p = paper(fee_bps=10, slippage_bps=0)
    run(p.submit("s", "ETH", short(2000), 2000.0, T0))  # qty 1, fee 2.0
    fills = run(p.submit("s", "ETH", long(3000), 1500.0, T0 + H))
    assert [(f.info["action"], f.side) for f in fills] == [("close", "buy"), ("open", "buy")]
    assert fills[0].info["pnl"] == pytest.approx(500.0)  # (2000 - 1500) * 1
    assert fills[0].fee_usd == pytest.approx(1.5)  # 1 * 1500 * 0.001
    assert fills[1].qty == pytest.approx(2.0) and fills[1].fee_usd == pytest.approx(3.0)
    assert p.balance() == pytest.approx(10000 - 2.0 + 500 - 1.5 - 3.0)
    (pos,) = run(p.positions())
    assert (pos.side, pos.qty, pos.entry_price, pos.opened) == ("long", 2.0, 1500.0, T0 + H)


def test_marks_equity_and_strategy_pnl():
    p = paper(fee_bps=0, slippage_bps=0)
    run(p.submit("a", "BTC", long(1000), 100.0, T0))
    run(p.submit("b", "ETH", short(500), 50.0, T0))
    run(p.update("a", "BTC", 120.0, None, T0 + H))  # +20 * 10 = +200 unrealised
    run(p.update("b", "ETH", 55.0, None, T0 + H))  # -5 * 10 = -50 unrealised
    assert p.account_equity() == pytest.approx(10150.0)
    assert p.snapshot() == (pytest.approx(10150.0), 2)
    assert run(p.pnl("a")) == pytest.approx(200.0) and run(p.pnl("b")) == pytest.approx(-50.0)


def test_funding_longs_pay_positive_shorts_receive_on_utc_boundaries():
    p = paper(fee_bps=0, slippage_bps=0)
    run(p.submit("s", "BTC", long(1000), 100.0, T0 + H))  # opened 01:00
    run(p.submit("s", "ETH", short(1000), 100.0, T0 + H))
    assert run(p.update("s", "BTC", 100.0, 0.01, T0 + 7 * H)) == []  # no settlement before 08:00
    (pay,) = run(p.update("s", "BTC", 100.0, 0.01, T0 + 8 * H))
    # 0.01 % of 10 * 100 = 0.10, paid by the long
    assert (pay.time, pay.rate, pay.notional) == (T0 + 8 * H, 0.01, 1000.0)
    assert pay.amount == pytest.approx(-0.1)
    assert run(p.update("s", "BTC", 100.0, 0.01, T0 + 8 * H)) == []  # settled once only
    (got,) = run(p.update("s", "ETH", 100.0, 0.01, T0 + 8 * H))
    assert got.amount == pytest.approx(0.1)  # the short receives
    (neg,) = run(p.update("s", "BTC", 200.0, -0.02, T0 + 16 * H))
    assert neg.amount == pytest.approx(0.4)  # negative funding: the long receives 0.02 % of 10 * 200
    assert p.balance() == pytest.approx(10000 - 0.1 + 0.1 + 0.4)
    btc = p.open_trade("s", "BTC")
    assert btc is not None and btc.funding == pytest.approx(0.3) and btc.funded_to == T0 + 16 * H


def test_funding_several_settlements_in_one_update_and_skipped_when_unknown():
    p = paper(fee_bps=0, slippage_bps=0, funding_interval_hours=4)
    run(p.submit("s", "BTC", long(1000), 100.0, T0))
    pays = run(p.update("s", "BTC", 100.0, 0.05, T0 + 12 * H))  # 04:00, 08:00, 12:00
    assert [x.time for x in pays] == [T0 + 4 * H, T0 + 8 * H, T0 + 12 * H]
    assert sum(x.amount for x in pays) == pytest.approx(-1.5)
    (skipped,) = run(p.update("s", "BTC", 100.0, None, T0 + 16 * H))
    assert skipped.rate is None and skipped.amount == 0.0
    assert [x.rate for x in p.funding_payments()] == [0.05, 0.05, 0.05, None]


def test_position_opened_at_a_settlement_does_not_pay_it():
    p = paper(fee_bps=0, slippage_bps=0)
    run(p.submit("s", "BTC", long(1000), 100.0, T0 + 8 * H))
    assert run(p.update("s", "BTC", 100.0, 0.01, T0 + 8 * H)) == []
    assert len(run(p.update("s", "BTC", 100.0, 0.01, T0 + 16 * H))) == 1


@pytest.mark.parametrize(
    ("intent", "note"),
    [
        (OrderIntent(None, 1000), "side None"),
        (OrderIntent("buy", 1000), "side 'buy'"),
        (OrderIntent("long", None), "size_usd None"),
        (OrderIntent("short", 0), "size_usd 0"),
        (OrderIntent("long", -5), "size_usd -5"),
        (OrderIntent("long", math.nan), "size_usd nan"),
        (OrderIntent("flat", None), "no position to close"),
    ],
)
def test_intents_that_do_nothing_are_recorded_as_ignored(intent, note):
    p = paper()
    assert run(p.submit("s", "BTC", intent, 100.0, T0)) == []
    (order,) = p.orders()
    assert order["status"] == "ignored" and note in order["note"]
    assert p.balance() == 10000.0 and p.fills() == []


def test_same_side_signal_does_not_add_and_no_price_does_nothing():
    p = paper()
    run(p.submit("s", "BTC", long(1000), 100.0, T0))
    assert run(p.submit("s", "BTC", long(5000), 101.0, T0 + H)) == []
    assert run(p.submit("s", "BTC", FLAT, math.nan, T0 + H)) == []
    statuses = [(o["status"], o["note"].split(":")[0]) for o in p.orders()]
    assert statuses == [
        ("filled", "open buy 10 @ 100.02"),
        ("ignored", "long"),
        ("ignored", "no usable price (nan)"),
    ]
    (pos,) = run(p.positions())
    assert pos.qty == 10.0


def test_one_position_per_strategy_and_symbol():
    p = paper()
    run(p.submit("a", "BTC", long(), 100.0, T0))
    run(p.submit("b", "BTC", short(), 100.0, T0))
    run(p.submit("a", "ETH", long(), 10.0, T0))
    got = sorted((x.strategy, x.symbol, x.side) for x in run(p.positions()))
    assert got == [("a", "BTC", "long"), ("a", "ETH", "long"), ("b", "BTC", "short")]


def test_state_survives_a_restart(tmp_path):
    path = str(tmp_path / "state.db")
    store = StateStore(path)
    p = paper(store, balance_usd=5000)
    run(p.submit("s", "BTC", long(1000), 100.0, T0))
    run(p.update("s", "BTC", 100.0, 0.01, T0 + 8 * H))
    balance = p.balance()
    store.close()

    store2 = StateStore(path)
    p2 = paper(store2, balance_usd=99999)  # an existing account keeps its balance
    assert p2.balance() == pytest.approx(balance) and p2.start_balance() == 5000
    (pos,) = run(p2.positions())
    assert (pos.strategy, pos.symbol, pos.side, pos.qty) == ("s", "BTC", "long", 10.0)
    assert run(p2.update("s", "BTC", 100.0, 0.01, T0 + 8 * H)) == []  # not settled twice
    (close,) = run(p2.submit("s", "BTC", FLAT, 100.0, T0 + 9 * H))
    assert close.info["action"] == "close"
    assert len(p2.orders()) == 2 and len(p2.fills()) == 2
    store2.close()


def test_writes_join_the_callers_transaction():
    store = StateStore(":memory:")
    p = paper(store)
    with pytest.raises(RuntimeError), store.transaction():
        run(p.submit("s", "BTC", long(), 100.0, T0))
        raise RuntimeError("the cycle failed")
    assert run(p.positions()) == [] and p.orders() == [] and p.balance() == 10000.0


def test_separate_accounts_in_one_database():
    store = StateStore(":memory:")
    a, b = paper(store, account="a", balance_usd=100), paper(store, account="b", balance_usd=200)
    run(a.submit("s", "BTC", long(50), 10.0, T0))
    assert run(b.positions()) == [] and b.balance() == 200.0 and a.balance() < 100.0
