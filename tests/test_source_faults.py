"""The fault matrix: both sources against a real local HTTP server (FakeMarket) that injects
faults per path. Every case ends in exactly the right data, or in the faulty endpoint's metrics
missing with one reason, never a crash and never a 0 in place of a missing value."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest
from fakes.market import FakeMarket
from helpers import H

from perpwatch.api.interfaces import FetchRequest, PluginContext, SourceError
from perpwatch.common.clock import FakeClock
from perpwatch.plugins.binance import BinanceSource
from perpwatch.plugins.coinglass import CoinGlassSource

OPEN_BAR = 1763136000000  # the bar that is still open at NOW
NOW = (OPEN_BAR + H // 2) / 1000
START = OPEN_BAR - 47 * H  # 48 bars served, 47 of them closed
KEY = "cg-fault-SECRET-4242424242"
CG_OI = "/api/futures/open-interest/aggregated-history"
BN_KLINES = "/fapi/v1/klines"
METRICS = frozenset({"price.close", "oi.close"})
FAST = {"timeout": 0.3, "retries": 2, "backoff_base": 0.05, "backoff_max": 0.2}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def market(clock):
    with FakeMarket(clock=clock, api_key=KEY) as m:
        m.generate("BTC", "1h", START, 48, seed=7)
        yield m


@pytest.fixture(autouse=True)
def logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert KEY not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("perpwatch")]


def source(kind: str, market: FakeMarket, clock: FakeClock, **options: Any):
    ctx = PluginContext(clock=clock)
    if kind == "coinglass":
        return CoinGlassSource({"base_url": market.base_url, "api_key": KEY, **FAST, **options}, ctx)
    return BinanceSource({"base_url": market.base_url, **FAST, **options}, ctx)


def fetch(src, metrics=METRICS, symbol: str = "BTC"):
    async def go():
        try:
            return await src.fetch(FetchRequest(symbol, "1h", frozenset(metrics), START, OPEN_BAR))
        finally:
            await src.aclose()

    return asyncio.run(go())


def expected(market: FakeMarket, metric: str) -> np.ndarray:
    return market._lookup("BTC", "1h").columns[metric][:47]


def assert_exact(frame, market: FakeMarket, metrics=METRICS) -> None:
    assert frame.times.tolist() == [START + i * H for i in range(47)]  # the open bar is dropped
    for metric in metrics:
        assert frame.columns[metric].tolist() == expected(market, metric).tolist(), metric


RECOVERABLE = [
    ("delay", {"seconds": 1.0}),
    ("reset", {}),
    ("cut", {}),
    ("429", {}),
    ("429", {"retry_after": 2}),
    ("500", {}),
    ("502", {}),
    ("html", {}),
    ("html", {"status": 502}),
    ("truncated", {}),
]


@pytest.mark.parametrize(("plugin", "path"), [("coinglass", CG_OI), ("binance", BN_KLINES)])
@pytest.mark.parametrize(("kind", "options"), RECOVERABLE)
def test_transient_faults_are_retried_to_exact_data(plugin, path, kind, options, market, clock):
    market.fail(path, kind, times=2, **options)
    before = clock.monotonic()
    frame = fetch(source(plugin, market, clock))
    assert_exact(frame, market)
    assert frame.problems == []
    assert market.count(path) == 3
    if "retry_after" in options:
        assert clock.monotonic() - before >= 2 * options["retry_after"]


def test_coinglass_envelope_error_inside_http_200_is_retried(market, clock):
    market.fail(CG_OI, "envelope", code="500", msg="Server error")
    assert_exact(fetch(source("coinglass", market, clock)), market)
    assert market.count(CG_OI) == 2


UNRECOVERABLE = [
    # (plugin, path, kind, fault options, requests expected, words in the reason)
    ("coinglass", CG_OI, "delay", {"seconds": 1.0, "times": None}, 3, ["timed out", "after 3 attempts"]),
    ("coinglass", CG_OI, "reset", {"times": None}, 3, ["connection failed"]),
    ("coinglass", CG_OI, "500", {"times": None}, 3, ["500"]),
    ("coinglass", CG_OI, "html", {"times": None}, 3, ["not JSON"]),
    ("coinglass", CG_OI, "truncated", {"times": None}, 3, ["not JSON"]),
    ("coinglass", CG_OI, "upgrade_plan", {}, 1, ["plan does not allow", "interval 1h"]),
    ("coinglass", CG_OI, "upgrade_plan", {"status": 401}, 1, ["plan does not allow"]),
    ("coinglass", CG_OI, "bad_key", {}, 1, ["invalid parameters or API key"]),
    ("coinglass", CG_OI, "envelope", {"code": "400", "msg": f"bad key {KEY}"}, 1, ["bad key ***"]),
    ("coinglass", CG_OI, "empty", {}, 1, ["no data"]),
    ("binance", BN_KLINES, "delay", {"seconds": 1.0, "times": None}, 3, ["timed out"]),
    ("binance", BN_KLINES, "502", {"times": None}, 3, ["HTTP 502"]),
    ("binance", BN_KLINES, "truncated", {"times": None}, 3, ["not JSON"]),
    ("binance", BN_KLINES, "418", {}, 1, ["HTTP 418", "banned"]),
    ("binance", BN_KLINES, "429", {"retry_after": 3600}, 1, ["asked to wait 3600 s"]),
    ("binance", BN_KLINES, "empty", {}, 1, ["no klines"]),
    ("binance", "/futures/data/openInterestHist", "reset", {"times": None}, 3, ["connection failed"]),
]


@pytest.mark.parametrize(("plugin", "path", "kind", "options", "requests", "words"), UNRECOVERABLE)
def test_persistent_faults_leave_only_that_endpoints_metrics_missing(
    plugin, path, kind, options, requests, words, market, clock
):
    market.fail(path, kind, **options)
    frame = fetch(source(plugin, market, clock))
    failed = "price.close" if path == BN_KLINES else "oi.close"
    healthy = ({"price.close", "oi.close"} - {failed}).pop()
    assert failed not in frame.columns
    assert_exact(frame, market, {healthy})
    assert len(frame.problems) == 1
    reason = frame.problems[0]
    assert reason.startswith(f"{plugin} {path}: ") and reason.endswith(f"({failed} missing)")
    for word in words:
        assert word in reason
    assert KEY not in reason
    assert market.count(path) == requests


def test_a_ban_sends_nothing_more_until_it_ends(market, clock):
    market.fail(BN_KLINES, "418", retry_after=600)
    src = source("binance", market, clock)

    async def go():
        with pytest.raises(SourceError, match="HTTP 418"):
            await src.fetch(FetchRequest("BTC", "1h", frozenset({"price.close"}), START, OPEN_BAR))
        with pytest.raises(SourceError, match="paused for another 600 s"):
            await src.fetch(FetchRequest("BTC", "1h", METRICS, START, OPEN_BAR))
        await src.aclose()

    asyncio.run(go())
    assert market.count() == 1


@pytest.mark.parametrize(("plugin", "path"), [("coinglass", CG_OI), ("binance", BN_KLINES)])
def test_out_of_order_and_duplicate_rows_give_exact_data(plugin, path, market, clock):
    market.fail(path, "shuffle")
    frame = fetch(source(plugin, market, clock))
    assert_exact(frame, market)
    assert frame.problems == []


@pytest.mark.parametrize(
    ("plugin", "path", "metric"), [("coinglass", CG_OI, "oi.close"), ("binance", BN_KLINES, "price.close")]
)
def test_a_stale_feed_leaves_the_newest_bar_unknown_not_zero(plugin, path, metric, market, clock):
    market.fail(path, "lag", bars=2)  # the open bar and the newest closed bar are not served
    frame = fetch(source(plugin, market, clock))
    column = frame.columns[metric]
    assert np.isnan(column[-1])
    assert column[:-1].tolist() == expected(market, metric)[:-1].tolist()
    assert frame.problems == []


@pytest.mark.parametrize("plugin", ["coinglass", "binance"])
def test_missing_values_in_rows_stay_unknown(plugin, market, clock):
    series = market._lookup("BTC", "1h").columns
    oi = series["oi.close"].copy()
    oi[10] = np.nan
    market.set_series("BTC", "1h", {**series, "oi.close": oi}, START)
    frame = fetch(source(plugin, market, clock), {"oi.close"})
    assert np.isnan(frame.columns["oi.close"][10]) and np.isfinite(frame.columns["oi.close"][11])


def test_everything_failing_raises_a_source_error_without_the_key(market, clock):
    market.fail("/api/", "envelope", times=None, code="500", msg=f"down for {KEY}")
    with pytest.raises(SourceError) as info:
        fetch(source("coinglass", market, clock, retries=1), METRICS | {"funding.avg"})
    assert info.value.retryable and KEY not in str(info.value) and "***" in str(info.value)
    assert market.count("/api/") == 6


def test_wrong_key_is_refused_by_the_server(market, clock):
    with pytest.raises(SourceError, match="invalid parameters or API key"):
        fetch(source("coinglass", market, clock, api_key="wrong-key-00000"))


def _before_issue_17(metrics: frozenset[str]) -> frozenset[str]:
    """The families the fake market serves in full (issue 17's are covered by test_market_more)."""
    new = ("depth.", "etf.", "options.", "premium.", "basis.", "liqmap.", "funding.ex.", "funding.count")
    return frozenset(m for m in metrics if not m.startswith(new))


def test_all_metrics_end_to_end_for_eight_symbols_with_latency(market, clock):
    coins = ["BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "BNB", "LTC"]
    for seed, coin in enumerate(coins):
        market.generate(coin, "1h", START, 48, seed=seed)
    market.latency = 0.01
    cg = source("coinglass", market, clock, plan="professional", timeout=5)  # a loaded machine is no fault
    bn = source("binance", market, clock, timeout=5)

    async def go():
        frames = await asyncio.gather(
            *(
                src.fetch(FetchRequest(c, "1h", _before_issue_17(src.provides()), START, OPEN_BAR))
                for src in (cg, bn)
                for c in coins
            )
        )
        await cg.aclose()
        await bn.aclose()
        return frames

    frames = asyncio.run(go())
    for frame in frames:
        assert frame.problems == [] and len(frame) == 47
    eth_cg, eth_bn = frames[1], frames[len(coins) + 1]
    eth = market._lookup("ETH", "1h").columns
    assert (
        eth_cg.columns["liq.total_usd"].tolist() == (eth["liq.long_usd"] + eth["liq.short_usd"])[:47].tolist()
    )
    assert eth_bn.columns["price.volume"].tolist() == eth["price.volume"][:47].tolist()
    assert eth_bn.columns["oi.close"].tolist() == eth["oi.close"][:47].tolist()
    assert eth_cg.columns["funding.max_exchange"].value(46) == "OKX"
