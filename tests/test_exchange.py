"""The ``exchange`` executor against a local stand-in of Binance USD-M (``fakes.binance_usdm``):
orders, rounding and minimums, idempotent client order ids, protective exits, reconciliation, halts,
dry runs, and the fault matrix of issue 15 (each case asserts what the exchange ends up holding)."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fakes.binance_usdm import FakeBinanceUSDM, FakeOrder

from perpwatch.api.interfaces import Accounting, ExecutorError, PluginContext, PluginError
from perpwatch.common.clock import FakeClock
from perpwatch.common.extras import MissingExtra
from perpwatch.evaluation.events import Event, ExitDistance, OrderIntent
from perpwatch.live.risk import halted
from perpwatch.live.state import StateStore
from perpwatch.live.trading import Trading
from perpwatch.plugins.exchange import ExchangeExecutor, ExchangeHalt
from perpwatch.plugins.exchange_orders import BINANCE_CLIENT_ID, LEGS, client_order_id, exit_id

KEY = "pwtestkey-4f9a8c1d2e6b"
SECRET = "pwtestsecret-77b1e0c9d3a5f6"
T = TypeVar("T")
EVENT = "trend/go_long/BTC/1700000000000/fired"


@pytest.fixture
def fake() -> Iterator[FakeBinanceUSDM]:
    with FakeBinanceUSDM(KEY, SECRET) as f:
        yield f


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_TEST_KEY", KEY)
    monkeypatch.setenv("PW_TEST_SECRET", SECRET)


def options(fake: FakeBinanceUSDM, **extra: Any) -> dict[str, Any]:
    return {
        "network": "testnet",
        "key_env": "PW_TEST_KEY",
        "secret_env": "PW_TEST_SECRET",
        "api_urls": fake.api_urls(),
        "leverage": 3,
        "request_timeout_seconds": 0.5,
        **extra,
    }


def run(
    fake: FakeBinanceUSDM, tmp: Path, body: Callable[[ExchangeExecutor], Awaitable[T]], **extra: Any
) -> T:
    """``body(executor)`` in one event loop (ccxt's session belongs to it); the executor closed after."""

    async def go() -> T:
        ex = ExchangeExecutor(
            options(fake, **extra), PluginContext(clock=FakeClock(), state_path=str(tmp / "s.db"))
        )
        try:
            return await body(ex)
        finally:
            await ex.aclose()

    return asyncio.run(go())


def long(size: float = 1000.0, stop: float | None = 2.0, take: float | None = None) -> OrderIntent:
    return OrderIntent(
        "long",
        size,
        stop_loss=ExitDistance("pct", stop) if stop is not None else None,
        take_profit=ExitDistance("pct", take) if take is not None else None,
    )


def entry_id(key: str = EVENT) -> str:
    return client_order_id("exchange", key, "entry")


def test_entry_sets_up_rounds_fills_and_places_reduce_only_exits(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    fake.set_mark("BTCUSDT", 50_000)

    async def body(ex: ExchangeExecutor) -> Any:
        return await ex.submit_once(EVENT, "trend", "BTC", long(1000, stop=2, take=4), 50_000.0, 1)

    fills = run(fake, tmp_path, body)
    assert fake.leverage["BTCUSDT"] == 3 and fake.margin_type["BTCUSDT"] == "ISOLATED"
    first_order = next(i for i, (m, p, _) in enumerate(fake.requests) if p == "/fapi/v1/order")
    setup = [
        i for i, (m, p, _) in enumerate(fake.requests) if p in ("/fapi/v1/leverage", "/fapi/v1/marginType")
    ]
    assert setup and max(setup) < first_order
    [fill] = fills
    assert fill.qty == 0.02 and fill.price == 50_000 and fill.info["status"] == "filled"  # 1000/50000 = 0.02
    assert fill.fee_usd == pytest.approx(0.02 * 50_000 * 0.0004)
    [order] = fake.orders_with(entry_id())
    assert order.qty == Decimal("0.02") and not order.reduce_only
    stops = fake.open_orders("BTCUSDT", algo=True)
    by_type = {o.type: o for o in stops}
    assert set(by_type) == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
    assert all(o.reduce_only and o.side == "SELL" and float(o.qty) == 0.02 for o in stops)
    assert (
        float(by_type["STOP_MARKET"].stop_price) == 49_000
        and float(by_type["TAKE_PROFIT_MARKET"].stop_price) == 52_000
    )
    assert by_type["STOP_MARKET"].client_id == exit_id(entry_id(), "stop_loss")
    assert fake.unknown == []


def test_under_minimum_is_refused_with_the_numbers_and_nothing_is_sent(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    async def body(ex: ExchangeExecutor) -> list[str]:
        out = []
        for size in (60.0, 20.0):  # 0.0012 -> 0.001 BTC = 50 USD < 100; 0.0004 -> 0 BTC
            with pytest.raises(ExecutorError) as e:
                await ex.submit_once(f"s/r/BTC/{size}/fired", "s", "BTC", long(size), 50_000.0, 1)
            out.append(str(e.value))
        return out

    notional, qty = run(fake, tmp_path, body)
    assert (
        "qty 0.001 (rounded down from 0.0012" in notional
        and "50.00 USD is under the minimum notional 100" in notional
    )
    assert "under the minimum quantity 0.001" in qty
    assert fake.count("POST /fapi/v1/order") == 0


def test_exchange_precision_and_notional_rejections_are_recorded_not_halting(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    """-1111 and -4164 from the exchange (its rules changed after the markets were loaded): the order
    is rejected with the exchange's reason, recorded, and trading goes on."""

    async def body(ex: ExchangeExecutor) -> tuple[str, str, str | None]:
        await ex._ready("BTC")
        fake.markets["BTCUSDT"] = ("0.10", "0.01", "0.01", "100")  # step 0.01 now: 0.025 is too precise
        with pytest.raises(ExecutorError) as precision:
            await ex.submit_once("s/a/BTC/1/fired", "s", "BTC", long(1250, stop=None), 50_000.0, 1)
        fake.markets["BTCUSDT"] = ("0.10", "0.001", "0.001", "5000")  # minimum notional 5000 now
        with pytest.raises(ExecutorError) as notional:
            await ex.submit_once("s/b/BTC/1/fired", "s", "BTC", long(1000, stop=None), 50_000.0, 1)
        return str(precision.value), str(notional.value), ex.journal.get("errors")

    precision, notional, errors = run(fake, tmp_path, body)
    assert "-1111" in precision and "rejected by the exchange" in precision
    assert "-4164" in notional and "qty 0.02" in notional
    assert errors is None  # a rejected order is not an exchange error
    assert fake.positions == {}
    assert [o.status for o in fake.orders] == []  # refused before anything was created


def test_insufficient_margin_halts(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    fake.balance = Decimal(100)

    async def body(ex: ExchangeExecutor) -> ExecutorError:
        with pytest.raises(ExchangeHalt) as e:
            await ex.submit_once(EVENT, "trend", "BTC", long(1000), 50_000.0, 1)
        assert ex.journal.order(entry_id()).status == "rejected"  # type: ignore[union-attr]
        return e.value

    err = run(fake, tmp_path, body, leverage=1)
    assert err.halt and "-2019" in str(err) and "margin" in str(err)
    assert fake.positions == {}


def test_timeout_after_the_exchange_accepted_never_sends_twice(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    fake.fail("POST /fapi/v1/order", "timeout_after_accept")

    async def body(ex: ExchangeExecutor) -> Any:
        fills = await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)
        fake.release()
        again = await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)  # the same event once more
        return fills, again

    fills, again = run(fake, tmp_path, body)
    assert len(fake.orders_with(entry_id())) == 1 and fake.count("POST /fapi/v1/order") == 1
    assert fills[0].qty == 0.02 and fills[0].info["status"] == "filled"
    assert again == []  # the position the event opened is held: nothing more to do
    assert fake.position("BTCUSDT") == Decimal("0.02")
    assert len(fake.open_orders("BTCUSDT", algo=True)) == 1  # its stop


def test_http_5xx_on_send_is_unknown_then_resolved_never_doubled(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    fake.fail("POST /fapi/v1/order", "503")

    async def body(ex: ExchangeExecutor) -> tuple[str, list[str], str]:
        with pytest.raises(ExecutorError) as e:
            await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)
        assert ex.journal.order(entry_id()).status == "sending"  # type: ignore[union-attr]
        notices = [n.message for n in await ex.reconcile()]
        status = ex.journal.order(entry_id()).status  # type: ignore[union-attr]
        await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)  # the event again (a restart)
        return str(e.value), notices, status

    error, notices, status = run(fake, tmp_path, body)
    assert "outcome unknown" in error and "not sent again" in error
    assert status == "lost" and any("never reached the exchange" in n for n in notices)
    assert len(fake.orders_with(entry_id())) == 1 and fake.position("BTCUSDT") == Decimal("0.02")


def test_429_retry_after_is_waited_then_sent_once(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    fake.fail("POST /fapi/v1/order", "429", retry_after=2)

    async def body(ex: ExchangeExecutor) -> float:
        t0 = ex.clock.time()
        await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)
        return ex.clock.time() - t0

    waited = run(fake, tmp_path, body)
    assert waited >= 2  # the fake clock moved by the Retry-After
    assert fake.count("POST /fapi/v1/order") == 2 and len(fake.orders_with(entry_id())) == 1


def test_418_with_a_long_retry_after_sends_nothing_until_it_passed(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    fake.fail("POST /fapi/v1/order", "418", retry_after=120)

    async def body(ex: ExchangeExecutor) -> tuple[str, str, int]:
        with pytest.raises(ExecutorError) as first:
            await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)
        seen = len(fake.requests)
        with pytest.raises(ExecutorError) as second:
            await ex.submit_once("trend/go_long/BTC/2/fired", "trend", "BTC", long(), 50_000.0, 2)
        quiet = len(fake.requests) - seen
        await ex.clock.sleep(121)
        await ex.submit_once("trend/go_long/BTC/3/fired", "trend", "BTC", long(), 50_000.0, 3)
        return str(first.value), str(second.value), quiet

    first, second, quiet = run(fake, tmp_path, body)
    assert "Retry-After 120" in first and "asked to wait until" in second
    assert quiet == 0
    assert fake.position("BTCUSDT") == Decimal("0.02")


def test_partial_fill_opens_and_protects_what_filled(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    fake.fill_ratio = Decimal("0.5")

    async def body(ex: ExchangeExecutor) -> Any:
        fills = await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)
        return fills, await ex.positions()

    fills, positions = run(fake, tmp_path, body)
    assert (
        fills[0].qty == 0.01
        and fills[0].info["status"] == "partial"
        and fills[0].info["requested_qty"] == 0.02
    )
    assert positions[0].qty == 0.01 and fake.position("BTCUSDT") == Decimal("0.01")
    [stop] = fake.open_orders("BTCUSDT", algo=True)
    assert stop.qty == Decimal("0.01") and stop.reduce_only


def test_close_is_reduce_only_and_cancels_the_exits(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    async def body(ex: ExchangeExecutor) -> Any:
        await ex.submit_once(EVENT, "trend", "BTC", long(take=5), 50_000.0, 1)
        fake.set_mark("BTCUSDT", 51_000)
        fills = await ex.submit_once(
            "trend/exit/BTC/2/fired", "trend", "BTC", OrderIntent("flat", None), 51_000.0, 2
        )
        return fills, await ex.positions(), await ex.pnl("trend")

    fills, positions, pnl = run(fake, tmp_path, body)
    close = fake.orders_with(client_order_id("exchange", "trend/exit/BTC/2/fired", "close"))[0]
    assert close.reduce_only and close.side == "SELL" and fills[0].info["pnl"] == pytest.approx(20.0)
    assert positions == [] and fake.positions == {}
    assert fake.open_orders("BTCUSDT") == [] and {o.status for o in fake.orders if o.algo} == {"CANCELED"}
    assert pnl == pytest.approx(20.0 - 0.4 - 0.408)  # 0.02 x 1000 less both fees


def test_restart_between_entry_and_stop_places_the_stop(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    fake.fail("POST /fapi/v1/algoOrder", "500")

    async def first(ex: ExchangeExecutor) -> Any:
        return await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)

    fills = run(fake, tmp_path, first)
    assert "stop_loss" in fills[0].info["exits_pending"] and fake.open_orders(algo=True) == []

    async def second(ex: ExchangeExecutor) -> Any:  # a new process on the same journal
        return await ex.reconcile()

    notices = run(fake, tmp_path, second)
    assert not any(n.halt for n in notices)
    [stop] = fake.open_orders("BTCUSDT", algo=True)
    assert stop.client_id == exit_id(entry_id(), "stop_loss") and stop.qty == Decimal("0.02")
    assert float(stop.stop_price) == 49_000 and len(fake.orders_with(entry_id())) == 1


def test_a_stop_that_fired_on_the_exchange_closes_the_position_without_a_halt(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    async def body(ex: ExchangeExecutor) -> Any:
        await ex.submit_once(EVENT, "trend", "BTC", long(take=5), 50_000.0, 1)
        fake.set_mark("BTCUSDT", 49_000)
        fake.trigger(exit_id(entry_id(), "stop_loss"))
        return await ex.reconcile(), await ex.positions()

    notices, positions = run(fake, tmp_path, body)
    assert positions == [] and not any(n.halt for n in notices)
    assert any(n.values.get("reason") == "stop_loss" for n in notices)
    assert fake.open_orders() == []  # the take-profit was cancelled


def test_dry_run_logs_what_it_would_send_and_sends_nothing(
    fake: FakeBinanceUSDM, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="perpwatch.plugins.exchange")

    async def body(ex: ExchangeExecutor) -> Any:
        return await ex.submit_once(EVENT, "trend", "BTC", long(1234.5), 50_000.0, 1)

    assert run(fake, tmp_path, body, dry_run=True) == []
    sent = [(m, p) for m, p, _ in fake.requests if m != "GET"]
    assert sent == []
    text = caplog.text
    assert "would set margin mode isolated and leverage 3 on BTC/USDT:USDT" in text
    assert f"would send binanceusdm BTC/USDT:USDT BUY MARKET qty 0.024 clientOrderId {entry_id()}" in text


def test_consecutive_exchange_errors_halt(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    fake.fail("GET /fapi/v3/positionRisk", "502", times=None)

    async def body(ex: ExchangeExecutor) -> Any:
        return [await ex.reconcile() for _ in range(2)]

    first, second = run(fake, tmp_path, body, max_consecutive_errors=2)
    assert not any(n.halt for n in first) and "reconciliation incomplete" in first[0].message
    assert any(n.halt and "2 exchange errors in a row" in n.message for n in second)


def test_a_position_opened_by_hand_halts_trading_and_is_recorded(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    store = StateStore(str(tmp_path / "s.db"))

    async def body(ex: ExchangeExecutor) -> Any:
        trading = Trading(store, {"exchange": ex}, FakeClock())
        clean = await trading.reconcile(1_000)
        assert halted(store) is None
        fake.open_by_hand("ETHUSDT", -1.5)
        return clean, await trading.reconcile(2_000)

    clean, events = run(fake, tmp_path, body)
    assert clean == []
    [event] = events
    assert event.kind == "halted" and event.severity == "critical" and event.rule == "reconcile:exchange"
    assert "ETH/USDT:USDT" in event.message and "-1.5" in event.message
    assert "position mismatch" in (halted(store) or "")


def test_margin_rejection_through_the_trading_layer_sets_the_kill_switch(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    fake.balance = Decimal(50)
    store = StateStore(str(tmp_path / "s.db"))
    event = Event("fired", "trend", "go_long", "BTC", 1_700_000_000_000, signal=long())

    async def body(ex: ExchangeExecutor) -> Any:
        trading = Trading(store, {"exchange": ex}, FakeClock())
        return await trading._submit(event, ex, long(), 50_000.0, 1, {})

    [out] = run(fake, tmp_path, body, leverage=1)
    assert out.kind == "rejected" and "-2019" in out.message
    assert "rejected for margin" in (halted(store) or "")


def test_equity_and_pnl_come_from_the_exchange_and_the_fills(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    async def body(ex: ExchangeExecutor) -> Any:
        before = await ex.equity()
        await ex.submit_once(EVENT, "trend", "BTC", long(stop=None), 50_000.0, 1)
        fake.set_mark("BTCUSDT", 50_500)
        await ex.update("trend", "BTC", 50_500.0, 0.01, 2)
        return before, await ex.equity(), await ex.pnl("trend"), isinstance(ex, Accounting)

    before, after, pnl, accounting = run(fake, tmp_path, body)
    assert accounting and before == 10_000
    assert after == pytest.approx(10_000 - 0.4 + 10)  # fee paid, 0.02 x 500 unrealised
    assert pnl == pytest.approx(10 - 0.4)


def test_equity_is_unknown_not_zero_when_the_exchange_fails(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    fake.fail("GET /fapi/v3/account", "500")

    async def body(ex: ExchangeExecutor) -> float:
        return await ex.equity()

    assert math.isnan(run(fake, tmp_path, body))


def test_keys_never_reach_logs_errors_events_or_databases(
    fake: FakeBinanceUSDM, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run with faults (a server echoing the key, timeouts, 5xx, a wrong secret) leaves no trace
    of the key or the secret anywhere perpwatch writes."""
    caplog.set_level(logging.DEBUG)
    store = StateStore(str(tmp_path / "s.db"))
    fake.fail("POST /fapi/v1/order", "reject", code=-1000, msg=f"unknown error for key {KEY} secret {SECRET}")
    fake.fail("POST /fapi/v1/order", "timeout_after_accept")
    fake.fail("GET /fapi/v3/positionRisk", "503")
    texts: list[str] = []

    async def body(ex: ExchangeExecutor) -> None:
        trading = Trading(store, {"exchange": ex}, FakeClock())
        for n in range(3):
            event = Event("fired", "trend", "go_long", "BTC", 1_700_000_000_000 + n, signal=long())
            for e in await trading._submit(event, ex, long(), 50_000.0, n, {}):
                store.record_event(e)
                texts.append(e.message)
            fake.release()
            for e in await trading.reconcile(n):
                store.record_event(e)
                texts.append(e.message)
        fake.secret = "another-secret"  # now every signed request fails with -1022
        for e in await trading.reconcile(9):
            store.record_event(e)
            texts.append(e.message)

    run(fake, tmp_path, body)
    assert any("-1000" in t for t in texts) and any(
        "halted" in (halted(store) or "") or "authentication" in t for t in texts
    )
    store.close()
    written = [caplog.text, *texts]
    written += [p.read_bytes().decode("latin-1") for p in tmp_path.iterdir() if p.is_file()]
    for blob in written:
        assert KEY not in blob and SECRET not in blob


def test_options_are_checked_and_keys_come_from_the_environment(
    fake: FakeBinanceUSDM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = PluginContext(clock=FakeClock(), state_path=str(tmp_path / "s.db"))
    for bad, said in (
        ({"exchange": "kraken"}, "exchange"),
        ({"network": "mainnet"}, "network"),
        ({"leverage": 0}, "leverage"),
        ({"api_key": KEY}, "api_key"),  # a key in the config is refused: environment only
        ({"exchange": "okx"}, "password_env"),
    ):
        with pytest.raises(PluginError) as e:
            ExchangeExecutor({**options(fake), **bad}, ctx)
        assert said in str(e.value)
    monkeypatch.delenv("PW_TEST_SECRET")
    with pytest.raises(PluginError) as e:
        ExchangeExecutor(options(fake), ctx)
    assert "PW_TEST_SECRET" in str(e.value) and SECRET not in str(e.value)
    monkeypatch.setenv("PW_TEST_SECRET", SECRET)
    monkeypatch.setenv("PW_OKX_PASS", "pass-phrase-123")
    for exchange, extra in (("bybit", {}), ("okx", {"password_env": "PW_OKX_PASS"})):
        ex = ExchangeExecutor({**options(fake), "exchange": exchange, **extra}, ctx)
        client = ex.client()
        assert client.id == exchange and ex.market_symbol("btc") == "BTC/USDT:USDT"
        asyncio.run(ex.aclose())
    okx_id = client_order_id("a", EVENT, "entry", compact=True)
    assert okx_id.isalnum() and len(okx_id) <= 32


def test_client_order_ids_are_deterministic_and_fit_binance() -> None:
    ids = {
        client_order_id(acct, key, leg) for acct in ("a", "b") for key in (EVENT, EVENT + "x") for leg in LEGS
    }
    assert len(ids) == 2 * 2 * len(LEGS)
    assert all(BINANCE_CLIENT_ID.match(i) for i in ids)
    assert client_order_id("a", EVENT, "entry") == client_order_id("a", EVENT, "entry")
    assert exit_id("pwe-1", "stop_loss") != exit_id("pwe-2", "stop_loss")


def test_missing_ccxt_names_the_extra(
    fake: FakeBinanceUSDM, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ccxt", None)
    monkeypatch.setitem(sys.modules, "ccxt.async_support", None)
    with pytest.raises(MissingExtra) as e:
        ExchangeExecutor(options(fake), PluginContext(clock=FakeClock(), state_path=str(tmp_path / "s.db")))
    assert "perpwatch[exchange]" in str(e.value)


def test_an_order_placed_by_hand_on_another_symbol_halts(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    async def body(ex: ExchangeExecutor) -> Any:
        await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)
        assert not any(n.halt for n in await ex.reconcile())
        fake.orders.append(
            FakeOrder(
                1, "web_manual_1", "ETHUSDT", "BUY", "LIMIT", Decimal(1), Decimal(2000), Decimal(0), False
            )
        )
        return await ex.reconcile()

    notices = run(fake, tmp_path, body)
    assert [n.halt for n in notices] == [True]
    assert "web_manual_1" in notices[0].message and "ETH/USDT:USDT" in notices[0].message


def test_a_halt_while_protecting_a_fill_reports_the_fill_and_keeps_the_stop_unknown(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    """The error that trips max_consecutive_errors comes while placing the stop: the entry's fill is
    still returned, the stop's outcome stays unknown (looked up, never blindly re-sent), the next
    entry is refused and the next reconciliation halts, then places the stop once."""
    fake.fail("POST /fapi/v1/algoOrder", "timeout_after_accept")

    async def body(ex: ExchangeExecutor) -> Any:
        fills = await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)
        fake.release()
        with pytest.raises(ExchangeHalt):
            await ex.submit_once("trend/go_long/ETH/2/fired", "trend", "ETH", long(), 3_000.0, 2)
        return fills, await ex.reconcile()

    fills, notices = run(fake, tmp_path, body, max_consecutive_errors=1)
    assert fills[0].qty == 0.02 and "exchange errors in a row" in fills[0].info["exits_pending"]
    assert notices[0].halt and "exchange errors in a row" in notices[0].message
    stop_id = exit_id(entry_id(), "stop_loss")
    assert len(fake.orders_with(stop_id)) == 1 and fake.orders_with(stop_id)[0].status == "NEW"
    assert fake.count("POST /fapi/v1/algoOrder") == 1


def test_limit_entries_wait_then_cancel_the_rest(fake: FakeBinanceUSDM, tmp_path: Path) -> None:
    """entry_order: limit — at the bar's price less the offset, GTC, for limit_timeout_seconds: a
    limit that fills half keeps that half (protected); one that never fills is cancelled, no position."""
    fake.fill_ratio = Decimal("0.5")
    fake.set_mark("BTCUSDT", 49_900)  # the limit 49950 is through the book: half fills at once

    async def body(ex: ExchangeExecutor) -> Any:
        t0 = ex.clock.time()
        half = await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)
        waited = ex.clock.time() - t0
        fake.set_mark("ETHUSDT", 3_200)  # the limit 3096.90 is below the book: nothing fills
        with pytest.raises(ExecutorError) as none:
            await ex.submit_once("trend/go_long/ETH/2/fired", "trend", "ETH", long(600), 3_100.0, 2)
        return half, waited, str(none.value), await ex.positions()

    half, waited, none, positions = run(
        fake, tmp_path, body, entry_order="limit", limit_offset_bps=10, limit_timeout_seconds=30
    )
    btc = fake.orders_with(entry_id())[0]
    assert (
        btc.type == "LIMIT" and btc.price == Decimal("49950") and btc.status == "CANCELED"
    )  # 50000 x (1 - 0.001)
    assert half[0].qty == 0.01 and half[0].info["status"] == "partial" and waited >= 30
    [stop] = fake.open_orders("BTCUSDT", algo=True)
    assert stop.qty == Decimal("0.01")
    eth = fake.orders_with(client_order_id("exchange", "trend/go_long/ETH/2/fired", "entry"))[0]
    assert eth.price == Decimal("3096.90") and eth.status == "CANCELED" and eth.executed == 0
    assert "canceled" in none and [p.symbol for p in positions] == ["BTC"]


def test_a_limit_entry_left_resting_by_a_crash_is_cancelled_and_its_fill_kept(
    fake: FakeBinanceUSDM, tmp_path: Path
) -> None:
    fake.fill_ratio = Decimal("0.5")
    fake.set_mark("BTCUSDT", 49_900)

    async def crash(ex: ExchangeExecutor) -> None:
        async def dies(cid: str, sym: str) -> Any:
            raise RuntimeError("the process died while the limit order rested")

        ex._await_limit = dies  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await ex.submit_once(EVENT, "trend", "BTC", long(), 50_000.0, 1)

    run(fake, tmp_path, crash, entry_order="limit", limit_offset_bps=10)
    assert fake.orders_with(entry_id())[0].status == "PARTIALLY_FILLED"

    async def restart(ex: ExchangeExecutor) -> Any:
        return await ex.reconcile(), await ex.positions()

    notices, positions = run(fake, tmp_path, restart, entry_order="limit", limit_offset_bps=10)
    assert not any(n.halt for n in notices)
    assert fake.orders_with(entry_id())[0].status == "CANCELED" and len(fake.orders_with(entry_id())) == 1
    assert [(p.symbol, p.qty) for p in positions] == [("BTC", 0.01)]
    [stop] = fake.open_orders("BTCUSDT", algo=True)
    assert stop.qty == Decimal("0.01")
