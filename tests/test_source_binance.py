"""The Binance USD-M source against httpx.MockTransport, with payloads shaped like Binance's documented
responses: exact mapped values and units, closed bars, funding carried forward with its settlement
time, the 30-day statistics window, pagination, weights, 429/418 handling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import numpy as np
import pluggy
import pytest
from helpers import H

from perpwatch.api import hookspecs
from perpwatch.api.interfaces import FetchRequest, PluginContext, SourceError
from perpwatch.common.clock import FakeClock
from perpwatch.plugins import binance
from perpwatch.plugins._http import NO_OBSERVATION, RateLimiter
from perpwatch.plugins.binance import BinanceSource, data_period, klines_weight

T0 = 1763136000000  # 2025-11-14 16:00 UTC
NOW = (T0 + H // 2) / 1000  # half an hour into the T0 bar


def kline(t: int, o: str, h: str, lo: str, c: str, quote: str, buy_quote: str, step: int = H) -> list[Any]:
    return [t, o, h, lo, c, "12.5", t + step - 1, quote, 1234, "6.1", buy_quote, "0"]


KLINES = [
    kline(T0 - 3 * H, "96000.1", "96100", "95900", "96050.5", "1200000.5", "600000.25"),
    kline(T0 - 2 * H, "96050.5", "96300", "96000", "96200", "2000000", "500000"),
    kline(T0 - H, "96200", "96250", "96100", "96150", "0", "0"),
    kline(T0, "96150", "96160", "96140", "96155", "10", "5"),  # still open at NOW
]
SETTLEMENTS = [
    {"symbol": "BTCUSDT", "fundingTime": T0 - 16 * H + 5, "fundingRate": "0.00010000", "markPrice": "95000"},
    {"symbol": "BTCUSDT", "fundingTime": T0 - 8 * H + 3, "fundingRate": "-0.00003750", "markPrice": "95500"},
    {"symbol": "BTCUSDT", "fundingTime": T0 + 2, "fundingRate": "0.00020000", "markPrice": "96100"},
]
PREMIUM = {
    "symbol": "BTCUSDT",
    "markPrice": "96155.1",
    "indexPrice": "96150.0",
    "estimatedSettlePrice": "96149.2",
    "lastFundingRate": "0.00038246",
    "interestRate": "0.00010000",
    "nextFundingTime": T0 + 8 * H,
    "time": T0 + H // 2 - 1000,
}


def oi_row(t: int, value: str) -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "sumOpenInterest": "20403.637",
        "sumOpenInterestValue": value,
        "timestamp": t,
    }


def ls_row(t: int, long: str, short: str) -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "longShortRatio": "1.9559",
        "longAccount": long,
        "shortAccount": short,
        "timestamp": t,
    }


class FakeBinance:
    """A MockTransport handler serving the rows above within startTime/endTime/limit."""

    def __init__(self) -> None:
        self.klines = list(KLINES)
        self.settlements = list(SETTLEMENTS)
        self.premium: dict[str, Any] = dict(PREMIUM)
        self.data: dict[str, list[dict[str, Any]]] = {
            "/futures/data/openInterestHist": [
                oi_row(T0 - 3 * H, "150570784.07809979"),
                oi_row(str(T0 - 2 * H), "150000000"),  # type: ignore[arg-type]  # docs show string timestamps
                oi_row(T0 - H, "151000000.5"),
                oi_row(T0, "152000000"),
            ],
            "/futures/data/globalLongShortAccountRatio": [ls_row(T0 - 2 * H, "0.6617", "0.3382")],
            "/futures/data/topLongShortAccountRatio": [ls_row(T0 - H, "0.5500", "0.4500")],
        }
        self.requests: list[httpx.Request] = []
        self.override: dict[str, Callable[[httpx.Request], httpx.Response]] = {}
        self.on_request: Callable[[httpx.Request], None] | None = None
        self.headers: dict[str, str] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.on_request:
            self.on_request(request)
        path, p = request.url.path, request.url.params
        if path in self.override:
            return self.override[path](request)
        lo, hi = int(p.get("startTime", 0)), int(p.get("endTime", 2**62))
        limit = int(p.get("limit", 500))
        if path == "/fapi/v1/klines":
            rows = [k for k in self.klines if lo <= k[0] <= hi][:limit]
        elif path == "/fapi/v1/fundingRate":
            rows = [s for s in self.settlements if lo <= s["fundingTime"] <= hi][:limit]
        elif path == "/fapi/v1/premiumIndex":
            return httpx.Response(200, json=self.premium, headers=self.headers)
        elif path in self.data:
            rows = [r for r in self.data[path] if lo <= int(r["timestamp"]) <= hi][:limit]
        else:
            return httpx.Response(404, json={"code": -1000, "msg": "not found"})
        return httpx.Response(200, json=rows, headers=self.headers)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def make_source(handler, clock: FakeClock | None = None, **options: Any) -> BinanceSource:
    ctx = PluginContext(clock=clock or FakeClock(NOW), transport=httpx.MockTransport(handler))
    return BinanceSource({"backoff_base": 0.01, **options}, ctx)


def fetch(
    source: BinanceSource,
    metrics,
    start: int = T0 - 3 * H,
    end: int = T0,
    interval: str = "1h",
    symbol: str = "BTC",
):
    async def go():
        try:
            return await source.fetch(FetchRequest(symbol, interval, frozenset(metrics), start, end))
        finally:
            await source.aclose()

    return asyncio.run(go())


def test_provides_only_what_binance_honestly_has():
    provided = make_source(FakeBinance()).provides()
    assert not {m for m in provided if m.startswith("liq.")}
    assert {"oi.open", "oi.high", "oi.low", "funding.open", "funding.avg", "funding.max_exchange"}.isdisjoint(
        provided
    )
    assert {
        "price.close",
        "price.volume",
        "taker.buy_pct",
        "funding.close",
        "oi.close",
        "ls.top_short_pct",
    } <= provided


def test_klines_map_price_volume_and_taker_flow():
    fake = FakeBinance()
    metrics = {"price.open", "price.high", "price.low", "price.close", "price.volume"}
    metrics |= {"taker.buy_usd", "taker.sell_usd", "taker.buy_pct"}
    frame = fetch(make_source(fake), metrics)
    assert frame.times.tolist() == [T0 - 3 * H, T0 - 2 * H, T0 - H]  # T0 is open
    c = frame.columns
    assert c["price.open"].tolist() == [96000.1, 96050.5, 96200.0]
    assert c["price.close"].tolist() == [96050.5, 96200.0, 96150.0]
    assert c["price.volume"].tolist() == [1200000.5, 2000000.0, 0.0]  # quoteVolume, not base volume
    assert c["taker.buy_usd"].tolist() == [600000.25, 500000.0, 0.0]
    assert c["taker.sell_usd"].tolist() == [600000.25, 1500000.0, 0.0]
    assert c["taker.buy_pct"][:2].tolist() == [50.0, 25.0] and np.isnan(c["taker.buy_pct"][2])
    (request,) = fake.requests
    assert request.url.path == "/fapi/v1/klines"
    assert dict(request.url.params) == {
        "symbol": "BTCUSDT", "interval": "1h", "startTime": str(T0 - 3 * H), "endTime": str(T0 - 1), "limit": "3",
    }  # fmt: skip
    assert frame.problems == []


def test_klines_pagination_and_weights():
    start = T0 - 2500 * H
    fake = FakeBinance()
    fake.klines = [kline(start + i * H, "1", "1", "1", str(i + 1), "10", "4") for i in range(2500)]
    source = make_source(fake)
    frame = fetch(source, {"price.close"}, start=start, end=T0 - H)
    windows = sorted(
        (int(r.url.params["startTime"]), int(r.url.params["endTime"]), int(r.url.params["limit"]))
        for r in fake.requests
    )
    assert windows == [
        (start, start + 1000 * H - 1, 1000),
        (start + 1000 * H, start + 2000 * H - 1, 1000),
        (start + 2000 * H, start + 2500 * H - 1, 500),
    ]
    assert frame.columns["price.close"].tolist() == [float(i + 1) for i in range(2500)]
    assert source.weight._used == 3 * 5  # klines weight 5 for a limit of 500..1000
    assert [klines_weight(n) for n in (99, 100, 499, 500, 1000, 1001)] == [1, 2, 2, 5, 5, 10]


def test_funding_settlements_carry_forward_with_their_time():
    fake = FakeBinance()
    frame = fetch(make_source(fake, funding_estimate_newest=False), {"funding.close"}, start=T0 - 10 * H)
    funding = frame.columns["funding.close"]
    # bars T0-10h .. T0-1h: settled T0-16h (0.01 %) until the bar that holds T0-8h (-0.00375 %)
    assert funding.tolist() == [
        0.01,
        0.01,
        -0.00375,
        -0.00375,
        -0.00375,
        -0.00375,
        -0.00375,
        -0.00375,
        -0.00375,
        -0.00375,
    ]
    # each rate is in force until the next settlement is due (8 h later), so every bar holds a current value
    assert frame.observed["funding.close"].tolist() == [T0 - 10 * H + i * H for i in range(10)]
    (request,) = fake.requests
    assert request.url.path == "/fapi/v1/fundingRate"
    assert int(request.url.params["startTime"]) <= T0 - 16 * H  # looks back far enough for the first bar
    assert int(request.url.params["endTime"]) == T0 - 1  # nothing settled after the last bar closed


def test_premium_index_is_off_by_default_so_live_equals_a_later_backtest():
    fake = FakeBinance()
    frame = fetch(make_source(fake), {"funding.close"})
    assert fake.paths() == ["/fapi/v1/fundingRate"]
    assert frame.columns["funding.close"][-1] == -0.00375


def test_an_overdue_settlement_ages_from_its_settlement_time():
    fake = FakeBinance()
    # T0-8h settlement never came: T0-16h's rate is overdue from T0-8h
    fake.settlements = fake.settlements[:1]
    frame = fetch(make_source(fake), {"funding.close"}, start=T0 - 10 * H)
    observed = frame.observed["funding.close"].tolist()
    assert observed[:2] == [T0 - 10 * H, T0 - 9 * H]  # closes by T0-8h: still in force
    assert observed[2:] == [T0 - 16 * H + 5] * 8  # after that: stale, aging from the settlement


def test_funding_before_the_first_settlement_is_unknown():
    fake = FakeBinance()
    fake.settlements = fake.settlements[1:]
    frame = fetch(make_source(fake, funding_estimate_newest=False), {"funding.close"}, start=T0 - 10 * H)
    assert (
        np.isnan(frame.columns["funding.close"][0]) and frame.observed["funding.close"][0] == NO_OBSERVATION
    )
    assert frame.columns["funding.close"][2] == -0.00375


def test_premium_index_gives_the_newest_bar_the_current_rate():
    fake = FakeBinance()
    frame = fetch(make_source(fake, funding_estimate_newest=True), {"funding.close"})
    assert frame.columns["funding.close"].tolist() == [-0.00375, -0.00375, 0.038246]
    assert frame.observed["funding.close"][-1] == PREMIUM["time"]
    assert sorted(fake.paths()) == ["/fapi/v1/fundingRate", "/fapi/v1/premiumIndex"]
    assert fake.requests[fake.paths().index("/fapi/v1/premiumIndex")].url.params["symbol"] == "BTCUSDT"


def test_premium_index_is_skipped_for_history_and_its_failure_is_only_a_note():
    fake = FakeBinance()
    fetch(make_source(fake, funding_estimate_newest=True), {"funding.close"}, end=T0 - 2 * H)
    assert fake.paths() == ["/fapi/v1/fundingRate"]
    fake = FakeBinance()
    fake.override["/fapi/v1/premiumIndex"] = lambda r: httpx.Response(503, text="busy")
    frame = fetch(make_source(fake, retries=1, funding_estimate_newest=True), {"funding.close"})
    assert frame.columns["funding.close"][-1] == -0.00375
    assert (
        len(frame.problems) == 1 and "premiumIndex" in frame.problems[0] and "HTTP 503" in frame.problems[0]
    )


def test_funding_pagination_follows_the_last_settlement():
    fake = FakeBinance()
    first = T0 - 1600 * H
    fake.settlements = [
        {"symbol": "BTCUSDT", "fundingTime": first + i * H, "fundingRate": str(i / 1e6)} for i in range(1600)
    ]
    frame = fetch(
        make_source(fake, funding_estimate_newest=False), {"funding.close"}, start=first + 10 * H, end=T0 - H
    )
    starts = [int(r.url.params["startTime"]) for r in fake.requests]
    assert len(starts) == 2 and starts[1] == starts[0] + 999 * H + 1
    assert frame.columns["funding.close"][-1] == pytest.approx(1599 / 1e4)


def test_open_interest_and_ratios_from_futures_data():
    fake = FakeBinance()
    frame = fetch(
        make_source(fake), {"oi.close", "ls.global_long_pct", "ls.global_short_pct", "ls.top_long_pct"}
    )
    c = frame.columns
    assert c["oi.close"].tolist() == [150570784.07809979, 150000000.0, 151000000.5]  # T0's snapshot: open bar
    assert np.isnan(c["ls.global_long_pct"][0]) and c["ls.global_long_pct"][1] == pytest.approx(66.17)
    assert c["ls.global_short_pct"][1] == pytest.approx(33.82)
    assert c["ls.top_long_pct"][2] == pytest.approx(55.0)
    for request in fake.requests:
        assert request.url.params["period"] == "1h" and request.url.params["symbol"] == "BTCUSDT"


def test_statistics_older_than_30_days_are_not_requested():
    fake = FakeBinance()
    start = T0 - 40 * 24 * H
    frame = fetch(make_source(fake), {"oi.close"}, start=start, end=T0 - H)
    oldest = min(int(r.url.params["startTime"]) for r in fake.requests)
    assert oldest >= NOW * 1000 - 30 * 24 * H
    assert np.isnan(frame.columns["oi.close"][: 10 * 24]).all()
    assert frame.columns["oi.close"][-1] == 151000000.5
    assert len(frame.problems) == 1 and "30 days" in frame.problems[0]
    fake = FakeBinance()
    frame = fetch(make_source(fake), {"oi.close", "price.close"}, start=start, end=start + 5 * 24 * H)
    assert "/futures/data/openInterestHist" not in fake.paths() and np.isnan(frame.columns["oi.close"]).all()


def test_statistics_periods_for_each_interval():
    assert [data_period(binance.DATA_PERIODS[p]) for p in binance.DATA_PERIODS] == list(binance.DATA_PERIODS)
    assert data_period(8 * H) == "4h" and data_period(60_000) is None and data_period(180_000) is None
    fake = FakeBinance()
    fake.klines = [kline(T0 - 3 * 60_000, "1", "1", "1", "1", "1", "1", step=180_000)]
    frame = fetch(
        make_source(fake), {"oi.close", "price.close"}, start=T0 - 9 * 60_000, end=T0, interval="3m"
    )
    assert "oi.close" not in frame.columns and "price.close" in frame.columns
    assert "no such statistics for 3m bars" in frame.problems[0]
    fake = FakeBinance()
    fake.data["/futures/data/openInterestHist"] = [oi_row(T0 - 16 * H + i * 4 * H, str(i)) for i in range(5)]
    frame = fetch(make_source(fake), {"oi.close"}, start=T0 - 16 * H, end=T0, interval="8h")
    assert fake.requests[0].url.params["period"] == "4h"
    assert frame.columns["oi.close"].tolist() == [0.0, 2.0]  # the 4h snapshots at the 8h bar opens


def test_retry_after_on_429_is_honoured():
    clock = FakeClock(NOW)
    fake = FakeBinance()
    stamps: list[float] = []
    fake.on_request = lambda r: stamps.append(clock.monotonic())
    fake.override["/fapi/v1/klines"] = lambda r: (
        fake.override.pop("/fapi/v1/klines")
        and httpx.Response(
            429, headers={"Retry-After": "7"}, json={"code": -1003, "msg": "Too many requests"}
        )
    )
    frame = fetch(make_source(fake, clock), {"price.close"})
    assert frame.columns["price.close"].tolist() == [96050.5, 96200.0, 96150.0]
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 7


def test_a_long_retry_after_gives_up_for_this_cycle():
    fake = FakeBinance()
    fake.override["/fapi/v1/klines"] = lambda r: httpx.Response(
        429, headers={"Retry-After": "600"}, json={"code": -1003, "msg": "x"}
    )
    source = make_source(fake, max_retry_after=60)

    async def go():
        first = await source.fetch(
            FetchRequest("BTC", "1h", frozenset({"price.close", "oi.close"}), T0 - 3 * H, T0)
        )
        fake.override.clear()
        second = await source.fetch(
            FetchRequest("BTC", "1h", frozenset({"price.close", "oi.close"}), T0 - 3 * H, T0)
        )
        await source.aclose()
        return first, second

    first, second = asyncio.run(go())
    assert fake.paths().count("/fapi/v1/klines") == 1  # no request while the weight limit is blocked
    assert "price.close" not in first.columns and "asked to wait 600 s" in first.problems[0]
    assert first.columns["oi.close"][-1] == 151000000.5  # a separate limit: not blocked
    assert "price.close" not in second.columns and "paused for another 600 s" in second.problems[0]


def test_418_ban_stops_all_requests_until_it_ends():
    clock = FakeClock(NOW)
    fake = FakeBinance()
    fake.override["/fapi/v1/klines"] = lambda r: httpx.Response(
        418, headers={"Retry-After": "300"}, json={"code": -1003, "msg": "banned"}
    )
    source = make_source(fake, clock)

    async def go():
        with pytest.raises(SourceError, match="HTTP 418") as first:
            await source.fetch(FetchRequest("BTC", "1h", frozenset({"price.close"}), T0 - 3 * H, T0))
        fake.override.clear()
        with pytest.raises(SourceError, match="paused for another 300 s") as second:
            await source.fetch(
                FetchRequest("BTC", "1h", frozenset({"price.close", "oi.close"}), T0 - 3 * H, T0)
            )
        await clock.sleep(301)
        clock.now = NOW  # the bars stay the same; only the monotonic ban clock moved on
        third = await source.fetch(FetchRequest("BTC", "1h", frozenset({"price.close"}), T0 - 3 * H, T0))
        await source.aclose()
        return first.value, second.value, third

    first, second, third = asyncio.run(go())
    assert not first.retryable and not second.retryable
    assert fake.paths() == ["/fapi/v1/klines", "/fapi/v1/klines"]  # nothing sent during the ban
    assert third.columns["price.close"].tolist() == [96050.5, 96200.0, 96150.0]


def test_used_weight_header_pauses_until_the_next_minute():
    clock = FakeClock(NOW)
    fake = FakeBinance()
    fake.headers = {"X-MBX-USED-WEIGHT-1M": "2300"}
    stamps: list[float] = []
    fake.on_request = lambda r: stamps.append(clock.time())
    source = make_source(fake, clock)

    async def go():
        await source.fetch(FetchRequest("BTC", "1h", frozenset({"price.close"}), T0 - 3 * H, T0))
        await source.fetch(FetchRequest("BTC", "1h", frozenset({"price.close"}), T0 - 3 * H, T0))
        await source.aclose()

    asyncio.run(go())
    assert stamps[1] >= (int(stamps[0]) // 60 + 1) * 60


def test_binance_error_bodies_are_not_retried():
    fake = FakeBinance()
    fake.override["/fapi/v1/klines"] = lambda r: httpx.Response(
        400, json={"code": -1121, "msg": "Invalid symbol."}
    )
    fake.override["/futures/data/openInterestHist"] = lambda r: httpx.Response(403, text="<html>WAF</html>")
    with pytest.raises(SourceError) as info:
        fetch(make_source(fake), {"price.close", "oi.close"}, symbol="NOPE")
    assert len(fake.requests) == 2 and not info.value.retryable
    assert (
        "Invalid symbol." in str(info.value) and "-1121" in str(info.value) and "firewall" in str(info.value)
    )


def test_unprovided_metrics_are_reported_not_fetched():
    fake = FakeBinance()
    frame = fetch(make_source(fake), {"liq.total_usd", "oi.open"})
    assert fake.requests == [] and list(frame.columns) == []
    assert frame.problems == ["binance does not provide liq.total_usd, oi.open"]


def test_options_schema_and_hook_registration():
    jsonschema.Draft202012Validator.check_schema(BinanceSource.options_schema)
    validator = jsonschema.Draft202012Validator(BinanceSource.options_schema)
    validator.validate({"base_url": "http://127.0.0.1:1", "retries": 0, "funding_estimate_newest": False})
    assert list(validator.iter_errors({"api_key": "x"}))
    pm = pluggy.PluginManager("perpwatch")
    pm.add_hookspecs(hookspecs)
    pm.register(binance)
    found: list[type] = []
    pm.hook.register_sources(register=found.append)
    assert found == [BinanceSource] and BinanceSource.name == "binance"


def test_weighted_limiter_waits_for_weight_to_expire_and_honours_pauses():
    clock = FakeClock(NOW)
    limiter = RateLimiter(10, 60.0, clock)

    async def go():
        stamps = []
        for cost in (5, 5, 5, 1):
            await limiter.acquire(cost)
            stamps.append(clock.monotonic())
        limiter.pause(30)
        await limiter.acquire(1)
        stamps.append(clock.monotonic())
        return stamps

    assert asyncio.run(go()) == [0.0, 0.0, 60.0, 60.0, 90.0]
