"""The CoinGlass V4 source against httpx.MockTransport, with payloads shaped like the documented and
saved responses (shared/spec/coinglass-v4.md): exact mapped values, units, closed bars, pagination,
headers, error envelopes, secrets, and the plan rate limiter under concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import numpy as np
import pluggy
import pytest

from perpwatch.api import hookspecs
from perpwatch.api.interfaces import FetchRequest, PluginContext, SourceError
from perpwatch.common.clock import FakeClock
from perpwatch.evaluation.frame import Cat
from perpwatch.plugins import coinglass
from perpwatch.plugins._http import NO_OBSERVATION
from perpwatch.plugins.coinglass import CoinGlassSource

H4 = 4 * 3_600_000
T0 = 1763136000000  # 2025-11-14 16:00 UTC, a 4h bar open
NOW = (T0 + 3_600_000) / 1000  # one hour into the T0 bar: T0 is still open
KEY = "cg-SECRET-key-0123456789"

PRICE = [
    {"time": T0 - 2 * H4, "open": "96000.1", "high": "96500", "low": "95800.5", "close": "96752.7", "volume_usd": "1000.5"},
    {"time": T0 - H4, "open": "96752.7", "high": "96777.8", "low": "96220.6", "close": "96513.7", "volume_usd": "248437124.3356"},
    {"time": T0, "open": "96513.7", "high": "96600", "low": "96400", "close": "96450", "volume_usd": "1.0"},
]  # fmt: skip
OI = [
    {"time": T0 - 2 * H4, "open": 67000000000, "high": 67511888514, "low": 66900000000, "close": 67511888514},
    {
        "time": T0 - H4,
        "open": 67511888514,
        "high": 67511888514,
        "low": 67019541606,
        "close": 67130599066.2341,
    },
    {"time": T0, "open": 67130599066.2341, "high": 67200000000, "low": 67100000000, "close": 67150000000},
]
FUNDING = [
    {"time": T0 - 2 * H4, "open": 0.0071, "high": 0.0078, "low": 0.0070, "close": 0.007767},
    {"time": T0 - H4, "open": 0.007767, "high": 0.007795, "low": 0.003106, "close": 0.004327},
]
LIQ = [
    {
        "time": T0 - 2 * H4,
        "aggregated_long_liquidation_usd": None,
        "aggregated_short_liquidation_usd": 5000.5,
    },
    {"time": T0 - H4, "aggregated_long_liquidation_usd": 178901.74, "aggregated_short_liquidation_usd": 0.0},
]
LS_GLOBAL = [
    {
        "time": T0 - H4,
        "global_account_long_percent": 76.06,
        "global_account_short_percent": 23.94,
        "global_account_long_short_ratio": 3.18,
    }
]
LS_TOP = [
    {
        "time": T0 - H4,
        "top_account_long_percent": 61.5,
        "top_account_short_percent": 38.5,
        "top_account_long_short_ratio": 1.6,
    }
]
TAKER = [
    {
        "time": T0 - H4,
        "aggregated_buy_volume_usd": 149089099.2277,
        "aggregated_sell_volume_usd": 219162303.9929,
    },
    {"time": T0 - 2 * H4, "aggregated_buy_volume_usd": "0", "aggregated_sell_volume_usd": "0"},
]
FUNDING_LIST = [
    {
        "symbol": "BTC",
        "stablecoin_margin_list": [
            {
                "exchange": "Binance",
                "funding_rate": 0.008631,
                "funding_rate_interval": 8,
                "next_funding_time": 1763164800000,
            },
            {
                "exchange": "dYdX",
                "funding_rate": 0.0019890625,
                "funding_rate_interval": 1,
                "next_funding_time": None,
            },
            {
                "exchange": "OKX",
                "funding_rate": "0.0102",
                "funding_rate_interval": 8,
                "next_funding_time": 1763164800000,
            },
            {
                "exchange": "Bybit",
                "funding_rate": None,
                "funding_rate_interval": None,
                "next_funding_time": None,
            },
            {
                "exchange": "Bitget",
                "funding_rate": -0.002,
                "funding_rate_interval": 8,
                "next_funding_time": None,
            },
        ],
        "token_margin_list": [
            {
                "exchange": "Binance",
                "funding_rate": -0.001829,
                "funding_rate_interval": 8,
                "next_funding_time": 1745222400000,
            }
        ],
    },
    {"symbol": "ETH", "stablecoin_margin_list": [], "token_margin_list": []},
]

ROWS = {
    "/api/futures/price/history": PRICE,
    "/api/futures/open-interest/aggregated-history": OI,
    "/api/futures/funding-rate/oi-weight-history": FUNDING,
    "/api/futures/liquidation/aggregated-history": LIQ,
    "/api/futures/global-long-short-account-ratio/history": LS_GLOBAL,
    "/api/futures/top-long-short-account-ratio/history": LS_TOP,
    "/api/futures/aggregated-taker-buy-sell-volume/history": TAKER,
}


class FakeCoinGlass:
    """A MockTransport handler: serves ROWS in the requested time window, records requests,
    and lets a test override any path with its own responder."""

    def __init__(self, rows: dict[str, list[dict[str, Any]]] | None = None, msg: bool = True) -> None:
        self.rows = dict(ROWS if rows is None else rows)
        self.msg = msg
        self.requests: list[httpx.Request] = []
        self.override: dict[str, Callable[[httpx.Request], httpx.Response]] = {}
        self.on_request: Callable[[httpx.Request], None] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.on_request:
            self.on_request(request)
        path = request.url.path
        if path in self.override:
            return self.override[path](request)
        if path == coinglass.FUNDING_LIST_PATH:
            return self.envelope(FUNDING_LIST)
        if path not in self.rows:
            return httpx.Response(404, json={"code": "404", "msg": "Endpoint not found"})
        p = request.url.params
        lo, hi = int(p.get("start_time", 0)), int(p.get("end_time", 2**62))
        return self.envelope(
            [r for r in self.rows[path] if not isinstance(r["time"], int) or lo <= r["time"] <= hi]
        )

    def envelope(self, data: Any) -> httpx.Response:
        body = {"code": "0", "msg": "success", "data": data} if self.msg else {"code": "0", "data": data}
        return httpx.Response(200, json=body)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def make_source(handler, clock: FakeClock | None = None, **options: Any) -> CoinGlassSource:
    ctx = PluginContext(clock=clock or FakeClock(NOW), transport=httpx.MockTransport(handler))
    return CoinGlassSource({"api_key": KEY, "backoff_base": 0.01, **options}, ctx)


def fetch(
    source: CoinGlassSource,
    metrics,
    start: int = T0 - 2 * H4,
    end: int = T0,
    symbol: str = "BTC",
    interval: str = "4h",
):
    async def go():
        try:
            return await source.fetch(FetchRequest(symbol, interval, frozenset(metrics), start, end))
        finally:
            await source.aclose()

    return asyncio.run(go())


def test_price_oi_funding_map_exactly_and_drop_the_open_bar():
    fake = FakeCoinGlass(msg=False)  # price/history examples come without "msg"
    metrics = {f"{p}.{f}" for p in ("price", "oi", "funding") for f in ("open", "high", "low", "close")}
    frame = fetch(make_source(fake), metrics | {"price.volume"})
    assert frame.times.tolist() == [T0 - 2 * H4, T0 - H4]  # T0 is still open at NOW
    assert frame.problems == []
    assert frame.columns["price.close"].tolist() == [96752.7, 96513.7]
    assert frame.columns["price.volume"].tolist() == [1000.5, 248437124.3356]
    assert frame.columns["oi.close"].tolist() == [67511888514.0, 67130599066.2341]
    assert frame.columns["oi.low"].tolist() == [66900000000.0, 67019541606.0]
    assert frame.columns["funding.close"].tolist() == [0.007767, 0.004327]  # percent, as sent
    assert frame.columns["funding.low"].tolist() == [0.0070, 0.003106]
    assert set(frame.columns) == metrics | {"price.volume"}


def test_headers_paths_and_params():
    fake = FakeCoinGlass()
    base = ("price", "oi", "funding", "liq", "ls_global", "ls_top", "taker")  # issue 17's families: elsewhere
    metrics = (
        frozenset().union(*(coinglass.HISTORY[k].metrics for k in base)) | coinglass.CROSS_FUNDING_METRICS
    )
    fetch(make_source(fake), metrics)
    assert sorted(set(fake.paths())) == sorted([*ROWS, coinglass.FUNDING_LIST_PATH])
    for request in fake.requests:
        assert request.headers["CG-API-KEY"] == KEY
        assert request.headers["accept"] == "application/json"
        assert "openInterest" not in request.url.path and "fundingRate" not in request.url.path
    by_path = {r.url.path: dict(r.url.params) for r in fake.requests}
    assert by_path["/api/futures/price/history"] == {
        "interval": "4h", "exchange": "Binance", "symbol": "BTCUSDT",
        "start_time": str(T0 - 2 * H4), "end_time": str(T0 - 1), "limit": "2",
    }  # fmt: skip
    assert by_path["/api/futures/open-interest/aggregated-history"]["unit"] == "usd"
    assert by_path["/api/futures/open-interest/aggregated-history"]["symbol"] == "BTC"
    assert by_path["/api/futures/liquidation/aggregated-history"]["exchange_list"] == "Binance,OKX,Bybit"
    assert (
        by_path["/api/futures/aggregated-taker-buy-sell-volume/history"]["exchange_list"]
        == "Binance,OKX,Bybit"
    )
    assert by_path["/api/futures/top-long-short-account-ratio/history"]["exchange"] == "Binance"
    assert by_path[coinglass.FUNDING_LIST_PATH] == {"symbol": "BTC"}


def test_pair_exchange_and_exchanges_options():
    fake = FakeCoinGlass()
    source = make_source(fake, pair_exchange="Bybit", exchanges=["Binance", "OKX"])
    fetch(source, {"ls.global_long_pct", "liq.long_usd"}, symbol="BTCUSDT")
    by_path = {r.url.path: dict(r.url.params) for r in fake.requests}
    assert by_path["/api/futures/global-long-short-account-ratio/history"]["exchange"] == "Bybit"
    assert by_path["/api/futures/global-long-short-account-ratio/history"]["symbol"] == "BTCUSDT"
    assert by_path["/api/futures/liquidation/aggregated-history"]["exchange_list"] == "Binance,OKX"
    assert by_path["/api/futures/liquidation/aggregated-history"]["symbol"] == "BTC"


def test_only_the_needed_endpoint_is_fetched():
    fake = FakeCoinGlass()
    frame = fetch(make_source(fake), {"liq.total_usd"})
    assert fake.paths() == ["/api/futures/liquidation/aggregated-history"]
    assert list(frame.columns) == ["liq.total_usd"]


def test_liquidations_taker_and_ratios():
    frame = fetch(
        make_source(FakeCoinGlass()),
        {"liq.long_usd", "liq.short_usd", "liq.total_usd", "taker.buy_usd", "taker.sell_usd", "taker.buy_pct"}
        | {"ls.global_long_pct", "ls.global_short_pct", "ls.top_long_pct", "ls.top_short_pct"},
    )
    c = frame.columns
    assert np.isnan(c["liq.long_usd"][0]) and c["liq.short_usd"][0] == 5000.5  # null stays unknown
    assert np.isnan(c["liq.total_usd"][0])  # unknown + known is unknown, never 5000.5
    assert c["liq.long_usd"][1] == 178901.74 and c["liq.short_usd"][1] == 0.0  # a real zero stays 0
    assert c["liq.total_usd"][1] == 178901.74
    assert c["taker.buy_usd"].tolist() == [0.0, 149089099.2277]  # rows arrived out of order
    assert c["taker.sell_usd"][1] == 219162303.9929
    assert np.isnan(c["taker.buy_pct"][0])  # 0 / 0 is unknown
    assert c["taker.buy_pct"][1] == pytest.approx(149089099.2277 / (149089099.2277 + 219162303.9929) * 100)
    assert np.isnan(c["ls.global_long_pct"][0])  # no row for that bar
    assert c["ls.global_long_pct"][1] == 76.06 and c["ls.global_short_pct"][1] == 23.94
    assert c["ls.top_long_pct"][1] == 61.5 and c["ls.top_short_pct"][1] == 38.5


def test_out_of_order_and_duplicate_rows_last_wins():
    rows = [
        {"time": T0 - H4, "open": 1, "high": 1, "low": 1, "close": "1.5"},
        {"time": T0 - 2 * H4, "open": 2, "high": 2, "low": 2, "close": 2},
        {"time": T0 - H4, "open": 3, "high": 3, "low": 3, "close": "3.25"},
        {"time": "bad", "open": 9, "high": 9, "low": 9, "close": 9},
    ]
    fake = FakeCoinGlass({"/api/futures/open-interest/aggregated-history": rows})
    frame = fetch(make_source(fake), {"oi.close", "oi.open"})
    assert frame.columns["oi.close"].tolist() == [2.0, 3.25]
    assert frame.columns["oi.open"].tolist() == [2.0, 3.0]


def test_pagination_splits_ranges_over_1000_bars():
    step = 3_600_000
    start = T0 - 2500 * step
    rows = [{"time": start + i * step, "open": i, "high": i, "low": i, "close": str(i)} for i in range(2500)]
    fake = FakeCoinGlass({"/api/futures/funding-rate/oi-weight-history": rows})
    frame = fetch(make_source(fake), {"funding.close"}, start=start, end=T0 - step, interval="1h")
    windows = sorted(
        (int(r.url.params["start_time"]), int(r.url.params["end_time"]), int(r.url.params["limit"]))
        for r in fake.requests
    )
    assert windows == [
        (start, start + 1000 * step - 1, 1000),
        (start + 1000 * step, start + 2000 * step - 1, 1000),
        (start + 2000 * step, start + 2500 * step - 1, 500),
    ]
    assert len(frame) == 2500
    assert frame.columns["funding.close"].tolist() == [float(i) for i in range(2500)]


def test_pagination_window_boundaries_are_exact():
    step = 3_600_000
    start = T0 - 1000 * step
    fake = FakeCoinGlass({"/api/futures/price/history": []})
    with pytest.raises(SourceError):
        fetch(make_source(fake), {"price.close"}, start=start, end=T0 - step, interval="1h")
    assert [int(r.url.params["limit"]) for r in fake.requests] == [1000]


def test_funding_exchange_list_fills_only_the_newest_bar():
    clock = FakeClock(NOW)
    source = make_source(FakeCoinGlass(), clock, funding_exchanges=["Binance", "OKX", "Bybit"])
    frame = fetch(source, coinglass.FUNDING_LIST_METRICS)
    now_ms = int(NOW * 1000)
    # Binance 0.008631 and OKX "0.0102" (8h); Bybit's null is skipped; dYdX and Bitget are not configured.
    assert frame.columns["funding.max"].tolist()[0] != frame.columns["funding.max"].tolist()[0]  # NaN
    assert frame.columns["funding.max"][-1] == 0.0102
    assert frame.columns["funding.min"][-1] == 0.008631
    assert frame.columns["funding.avg"][-1] == pytest.approx((0.0102 + 0.008631) / 2)
    assert frame.columns["funding.spread"][-1] == pytest.approx(0.0102 - 0.008631)
    hi, lo = frame.columns["funding.max_exchange"], frame.columns["funding.min_exchange"]
    assert isinstance(hi, Cat) and hi.to_list() == [None, "OKX"] and lo.to_list() == [None, "Binance"]
    for name in coinglass.FUNDING_LIST_METRICS:
        assert frame.observed[name].tolist() == [NO_OBSERVATION, now_ms]


def test_funding_list_rescales_to_the_basis_interval():
    source = make_source(FakeCoinGlass(), funding_exchanges=["Binance", "dYdX", "Bitget"])
    frame = fetch(source, {"funding.max", "funding.max_exchange", "funding.min"})
    assert frame.columns["funding.max"][-1] == pytest.approx(0.0019890625 * 8)  # 1h rate as 8h
    assert frame.columns["funding.max_exchange"].value(1) == "dYdX"
    assert frame.columns["funding.min"][-1] == -0.002
    raw = fetch(
        make_source(FakeCoinGlass(), funding_exchanges=["Binance", "dYdX"], funding_basis_hours=None),
        {"funding.max"},
    )
    assert raw.columns["funding.max"][-1] == 0.008631


def test_funding_list_outside_the_newest_bar_is_unknown_with_a_note():
    fake = FakeCoinGlass()
    frame = fetch(make_source(fake), {"funding.avg"}, end=T0 - 2 * H4)
    assert fake.requests == []
    assert np.isnan(frame.columns["funding.avg"]).all()
    assert "snapshot" in frame.problems[0]


def test_funding_list_without_rates_for_the_coin_is_missing():
    frame = fetch(make_source(FakeCoinGlass()), {"funding.avg", "price.close"}, symbol="ETH")
    assert "funding.avg" not in frame.columns
    assert any("no funding rates for ETH" in p for p in frame.problems)


def upgrade_plan(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"code": "401", "msg": "Upgrade plan"})


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (200, {"code": "401", "msg": "Upgrade plan"}, ["plan does not allow", "interval 4h"]),
        (401, {"code": "401", "msg": "Upgrade plan"}, ["plan does not allow"]),
        (400, {"code": "400", "msg": "Invalid API key provided"}, ["invalid parameters or API key"]),
        (200, {"code": "400", "msg": "symbol is required"}, ["bad request", "symbol is required"]),
        (404, {"code": "404", "msg": "Endpoint not found"}, ["unknown endpoint path"]),
        (404, None, ["unknown endpoint path"]),
        (200, {"code": "401", "msg": "Unauthorized"}, ["API key invalid or missing"]),
    ],
)
def test_non_retryable_errors_are_not_retried_and_say_why(status, body, words):
    fake = FakeCoinGlass()
    path = "/api/futures/liquidation/aggregated-history"
    fake.override[path] = lambda r: (
        httpx.Response(status, json=body) if body else httpx.Response(status, text="<html>nope</html>")
    )
    frame = fetch(make_source(fake), {"liq.long_usd", "price.close"})
    assert fake.paths().count(path) == 1
    assert "liq.long_usd" not in frame.columns and frame.columns["price.close"].tolist() == [96752.7, 96513.7]
    assert len(frame.problems) == 1
    problem = frame.problems[0]
    assert path in problem and "liq.long_usd missing" in problem
    for word in words:
        assert word in problem


@pytest.mark.parametrize(
    "failure",
    [
        lambda r: httpx.Response(200, json={"code": "429", "msg": "Too Many Requests"}),
        lambda r: httpx.Response(429, json={"code": "429", "msg": "Too Many Requests"}),
        lambda r: httpx.Response(500, text="Internal Server Error"),
        lambda r: httpx.Response(200, json={"code": "500", "msg": "server error"}),
        lambda r: httpx.Response(200, text="<!DOCTYPE html><html>cloudflare</html>"),
        lambda r: httpx.Response(200, text='{"code": "0", "msg": "success", "data": [{"time": 1'),
        lambda r: httpx.Response(200, json={"code": "0", "msg": "success", "data": None}),
    ],
)
def test_retryable_errors_are_retried(failure):
    fake = FakeCoinGlass()
    path = "/api/futures/open-interest/aggregated-history"
    served = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        served["n"] += 1
        if served["n"] <= 2:
            return failure(request)
        fake.override.pop(path)
        return fake(request)

    fake.override[path] = flaky
    frame = fetch(make_source(fake), {"oi.close"})
    assert frame.columns["oi.close"].tolist() == [67511888514.0, 67130599066.2341]
    assert frame.problems == []


def test_retry_after_is_honoured():
    clock = FakeClock(NOW)
    fake = FakeCoinGlass()
    path = "/api/futures/price/history"
    stamps: list[float] = []
    fake.on_request = lambda r: stamps.append(clock.monotonic())
    fake.override[path] = lambda r: (
        fake.override.pop(path)
        and httpx.Response(429, headers={"Retry-After": "12"}, json={"code": "429", "msg": "slow"})
    )
    frame = fetch(make_source(fake, clock), {"price.close"})
    assert frame.columns["price.close"].tolist() == [96752.7, 96513.7]
    assert stamps[1] - stamps[0] >= 12


def test_everything_failing_raises_source_error():
    fake = FakeCoinGlass({})
    fake.override[coinglass.FUNDING_LIST_PATH] = upgrade_plan
    with pytest.raises(SourceError) as info:
        fetch(make_source(fake, retries=1), {"price.close", "oi.close", "funding.avg"})
    assert not info.value.retryable
    assert "unknown endpoint path" in str(info.value) and "plan does not allow" in str(info.value)


def test_the_api_key_never_leaks(caplog):
    caplog.set_level(logging.DEBUG)
    fake = FakeCoinGlass()
    fake.override["/api/futures/price/history"] = lambda r: httpx.Response(
        400, json={"code": "400", "msg": f"Invalid API key {r.headers['CG-API-KEY']}"}
    )
    fake.override["/api/futures/open-interest/aggregated-history"] = lambda r: httpx.Response(
        503, json={"code": "503", "msg": f"overloaded for key={r.headers['CG-API-KEY']}"}
    )
    source = make_source(fake, retries=2)
    frame = fetch(source, {"price.close", "oi.close", "funding.close"})
    assert len(frame.problems) == 2 and "***" in " ".join(frame.problems)
    fake.override["/api/futures/funding-rate/oi-weight-history"] = fake.override["/api/futures/price/history"]
    with pytest.raises(SourceError) as info:
        fetch(make_source(fake, retries=0), {"price.close", "funding.close"})
    shown = [
        *frame.problems,
        str(info.value),
        repr(info.value),
        repr(source),
        repr(source.options),
        repr(source.http),
    ]
    shown += [str(source.options), caplog.text, json.dumps(source.options)]
    assert all(KEY not in text for text in shown)
    assert source.options["api_key"] == "***"


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("COINGLASS_API_KEY", "env-key-987654321")
    fake = FakeCoinGlass()
    ctx = PluginContext(clock=FakeClock(NOW), transport=httpx.MockTransport(fake))
    fetch(CoinGlassSource({}, ctx), {"price.close"})
    assert fake.requests[0].headers["CG-API-KEY"] == "env-key-987654321"


def test_a_missing_api_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("COINGLASS_API_KEY", raising=False)
    fake = FakeCoinGlass()
    ctx = PluginContext(clock=FakeClock(NOW), transport=httpx.MockTransport(fake))
    with pytest.raises(SourceError, match="COINGLASS_API_KEY"):
        fetch(CoinGlassSource({}, ctx), {"price.close"})
    assert fake.requests == []


def test_no_closed_bars_means_no_requests():
    fake = FakeCoinGlass()
    frame = fetch(make_source(fake), {"price.close"}, start=T0, end=T0 + H4)
    assert len(frame) == 0 and fake.requests == []


def test_unknown_interval_and_unprovided_metrics():
    with pytest.raises(SourceError, match="unsupported interval"):
        fetch(make_source(FakeCoinGlass()), {"price.close"}, interval="2h")
    frame = fetch(make_source(FakeCoinGlass()), {"price.close", "myplugin.thing"})
    assert frame.problems == ["coinglass does not provide myplugin.thing"]


@pytest.mark.parametrize(
    ("plan", "per_min"), [("hobbyist", 30), ("startup", 80), ("standard", 300), ("professional", 1200)]
)
def test_plans_set_the_rate_limit(plan, per_min):
    assert make_source(FakeCoinGlass(), plan=plan).limiter.capacity == per_min
    assert make_source(FakeCoinGlass(), plan=plan, rate_limit_per_min=7).limiter.capacity == 7


def test_rate_limit_holds_30_per_minute_under_8_concurrent_symbol_fetches():
    clock = FakeClock(NOW)
    stamps: list[float] = []
    fake = FakeCoinGlass()
    fake.on_request = lambda r: stamps.append(clock.monotonic())
    source = make_source(fake, clock, plan="hobbyist")
    base = ("price", "oi", "funding", "liq", "ls_global", "ls_top", "taker")  # issue 17's families: elsewhere
    metrics = (
        frozenset().union(*(coinglass.HISTORY[k].metrics for k in base)) | coinglass.FUNDING_LIST_METRICS
    )

    async def go():
        req = [
            FetchRequest(s, "4h", metrics, T0 - 2 * H4, T0)
            for s in ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "BNB", "LTC")
        ]
        frames = await asyncio.gather(*(source.fetch(r) for r in req))
        await source.aclose()
        return frames

    frames = asyncio.run(go())
    assert len(stamps) == 8 * 8  # 7 history endpoints + the funding list, per symbol
    assert all(b - a >= 60.0 for a, b in zip(stamps, stamps[30:], strict=False))
    assert stamps[-1] - stamps[0] >= 120.0  # 64 requests need three minutes' windows
    assert frames[0].columns["price.close"].tolist() == [96752.7, 96513.7]


def test_server_quota_headers_pause_the_limiter():
    clock = FakeClock(NOW)
    stamps: list[float] = []
    fake = FakeCoinGlass()

    def exhausted(request: httpx.Request) -> httpx.Response:
        stamps.append(clock.time())
        fake.override.pop("/api/futures/price/history")
        response = fake(request)
        response.headers.update({"API-KEY-MAX-LIMIT": "30", "API-KEY-USE-LIMIT": "30"})
        return response

    fake.override["/api/futures/price/history"] = exhausted
    fake.on_request = lambda r: stamps.append(clock.time())
    source = make_source(fake, clock)

    async def go():
        await source.fetch(FetchRequest("BTC", "4h", frozenset({"price.close"}), T0 - 2 * H4, T0))
        await source.fetch(FetchRequest("BTC", "4h", frozenset({"oi.close"}), T0 - 2 * H4, T0))
        await source.aclose()

    asyncio.run(go())
    assert stamps[-1] >= (int(NOW) // 60 + 1) * 60  # waited for the next minute


def test_options_schema_and_hook_registration():
    jsonschema.Draft202012Validator.check_schema(CoinGlassSource.options_schema)
    validator = jsonschema.Draft202012Validator(CoinGlassSource.options_schema)
    validator.validate(
        {
            "api_key": "x",
            "plan": "startup",
            "exchanges": ["Binance"],
            "timeout": 5,
            "funding_basis_hours": None,
        }
    )
    assert list(validator.iter_errors({"plan": "gold"})) and list(validator.iter_errors({"bogus": 1}))
    pm = pluggy.PluginManager("perpwatch")
    pm.add_hookspecs(hookspecs)
    pm.register(coinglass)
    found: list[type] = []
    pm.hook.register_sources(register=found.append)
    assert found == [CoinGlassSource] and CoinGlassSource.name == "coinglass"
