"""Issue 17: order-book depth, ETF flows, options, premium and basis, funding on every exchange and the
liquidation heatmap, from CoinGlass V4 and keyless Binance, against httpx.MockTransport.

Payloads are shaped exactly as the examples of ``shared/spec/coinglass-v4-more.md`` (and its real rows
quoted there); each family's faults (plan gates, filler rows, seconds for milliseconds, numbers
as text) become unknown with one reason, never 0."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import invoke

from perpwatch.api.interfaces import FetchRequest, PluginContext
from perpwatch.common.clock import FakeClock
from perpwatch.common.timeutil import DAY, HOUR, parse_time
from perpwatch.language.metrics import CATALOGUE, FUNDING_EXCHANGES
from perpwatch.plugins import coinglass_market as cm
from perpwatch.plugins._http import NO_OBSERVATION
from perpwatch.plugins.binance import BinanceSource, depth_bands
from perpwatch.plugins.coinglass import CoinGlassSource
from perpwatch.plugins.replay import load_replay_file

H4 = 4 * HOUR
T0 = 1763136000000  # 2025-11-14 16:00 UTC: the real FOD order-book row's time, a 4h bar open
NOW = (T0 + H4 + HOUR) / 1000  # one hour into the bar after T0: T0 is the newest closed bar
KEY = "cg-SECRET-key-0123456789"

# A1.1 / A1.2: the real FOD rows of the spec, and one row earlier
DEPTH_PAIR = [
    {"bids_usd": 81639959.9338, "bids_quantity": 1276.645, "asks_usd": 78533053.6862, "asks_quantity": 1217.125, "time": T0 - H4},
    {"bids_usd": 159108168.2894, "bids_quantity": 1655.092, "asks_usd": 151305544.1556, "asks_quantity": 1561.23, "time": T0},
]  # fmt: skip
DEPTH_AGG = [
    {"aggregated_bids_usd": 159248603.6112, "aggregated_bids_quantity": 1655.639, "aggregated_asks_usd": 152039440.1742,
     "aggregated_asks_quantity": 1567.695, "time": T0},
]  # fmt: skip
# A6.1: times in SECONDS, premium_rate in percent (real rows)
PREMIUM = [
    {"time": (T0 - H4) // 1000, "premium": 41.76, "premium_rate": 0.0402},
    {"time": T0 // 1000, "premium": -12.5, "premium_rate": -0.0121},
]
BASIS = [
    {"time": T0, "open_basis": 0.0504, "close_basis": 0.0445, "open_change": 39.5, "close_change": 34.56}
]
# A3.1: the docs' first day (2024-01-11), two more days, and the feed's trailing filler
D0 = 1704931200000  # 2024-01-11 (a Thursday)
ETF_FLOWS = [
    {"timestamp": D0, "flow_usd": 655300000, "price_usd": 46663,
     "etf_flows": [{"etf_ticker": "GBTC", "flow_usd": -95100000}, {"etf_ticker": "IBIT", "flow_usd": 111700000}]},
    {"timestamp": D0 + DAY, "flow_usd": -100000000, "price_usd": None,
     "etf_flows": [{"etf_ticker": "GBTC", "flow_usd": -484100000}, {"etf_ticker": "IBIT", "flow_usd": None}]},
    {"timestamp": D0 + 4 * DAY, "flow_usd": 50000000, "price_usd": 42000,
     "etf_flows": [{"etf_ticker": "IBIT", "flow_usd": 50000000}]},  # Monday 2024-01-15
    {"timestamp": D0 + 5 * DAY, "flow_usd": 0.0, "price_usd": None,
     "etf_flows": [{"etf_ticker": "GBTC", "flow_usd": None}, {"etf_ticker": "IBIT", "flow_usd": None}]},
]  # fmt: skip
ETF_ASSETS = [
    {"net_assets_usd": 51671409241.39, "change_usd": 655300000, "timestamp": D0, "price_usd": 46337.8},
    {"net_assets_usd": 51500000000.0, "change_usd": -100000000, "timestamp": D0 + DAY},
]
# A4.1 / A4.2
MAX_PAIN = [
    {"date": "251114", "max_pain_price": "99000", "call_open_interest": 10.0},  # expired 2025-11-14 08:00
    {"date": "251121", "max_pain_price": "101000", "call_open_interest": 953.7},
    {"date": "251226", "max_pain_price": "100000", "call_open_interest": 5000.0},
]
OPTION_INFO = [
    {"exchange_name": "All", "open_interest": 500000.5, "oi_market_share": 100, "open_interest_usd": 45000000000.5,
     "volume_usd_24h": 3200000000.25, "volume_change_percent_24h": 12.3},
    {"exchange_name": "Deribit", "open_interest": 400000, "open_interest_usd": 36000000000, "volume_usd_24h": 2e9},
]  # fmt: skip
# A5.1: intervals per exchange (Hyperliquid and dYdX hourly, KuCoin without an interval)
FUNDING_LIST = [
    {
        "symbol": "BTC",
        "stablecoin_margin_list": [
            {"exchange": "Binance", "funding_rate": 0.008631, "funding_rate_interval": 8, "next_funding_time": 1763164800000},
            {"exchange": "OKX", "funding_rate": "0.0102", "funding_rate_interval": 8},
            {"exchange": "Hyperliquid", "funding_rate": 0.00125, "funding_rate_interval": 1},
            {"exchange": "dYdX", "funding_rate": -0.0005, "funding_rate_interval": 1},
            {"exchange": "Crypto.com", "funding_rate": 0.004, "funding_rate_interval": 4},
            {"exchange": "KuCoin", "funding_rate": 0.01, "funding_rate_interval": None},
            {"exchange": "MEXC", "funding_rate": "n/a", "funding_rate_interval": 8},
        ],
        "token_margin_list": [],
    }
]  # fmt: skip
# A2.1: the docs' shape; the price is the last candle's close (a string), values summed per level
HEATMAP = {
    "y_axis": [97000, 98000, 99000, 100000, 101000, 102000, 103000, 110000],
    "liquidation_leverage_data": [
        [0, 1, 2000000.0], [1, 1, 1000000.0],  # 98000: 3 M (-2.0 %)
        [0, 2, 500000.0],  # 99000: 0.5 M (-1.0 %)
        [1, 4, 800000.0],  # 101000: 0.8 M (+1.0 %)
        [0, 5, 400000.0],  # 102000: 0.4 M (+2.0 %)
        [1, 7, 30000000.0],  # 110000: 30 M (+10 %): the large cluster
        [1, 99, 5.0],  # no such level
    ],
    "price_candlesticks": [[1722676500, "61486", "61596.4", "61434.4", "99000", "1"],
                           [1722680100, "99000", "100100", "99900", "100000", "63753192.1129"]],
}  # fmt: skip


def envelope(data: Any) -> httpx.Response:
    return httpx.Response(200, json={"code": "0", "msg": "success", "data": data})


class FakeCG:
    """MockTransport handler: history rows filtered by start/end, snapshots as they are."""

    def __init__(self, **override: Any) -> None:
        self.data: dict[str, Any] = {
            "/api/futures/orderbook/ask-bids-history": DEPTH_PAIR,
            "/api/futures/orderbook/aggregated-ask-bids-history": DEPTH_AGG,
            "/api/coinbase-premium-index": PREMIUM,
            "/api/futures/basis/history": BASIS,
            "/api/etf/bitcoin/flow-history": ETF_FLOWS,
            "/api/etf/bitcoin/net-assets/history": ETF_ASSETS,
            "/api/option/max-pain": MAX_PAIN,
            "/api/option/info": OPTION_INFO,
            "/api/futures/funding-rate/exchange-list": FUNDING_LIST,
            "/api/futures/liquidation/aggregated-heatmap/model1": HEATMAP,
        }
        self.data.update(override)
        self.requests: list[httpx.Request] = []
        self.responders: dict[str, Callable[[httpx.Request], httpx.Response]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path in self.responders:
            return self.responders[path](request)
        if path not in self.data:
            return httpx.Response(404, json={"code": "404", "msg": "Endpoint not found"})
        data = self.data[path]
        p = request.url.params
        if isinstance(data, list) and "start_time" in p:
            lo, hi = int(p["start_time"]), int(p["end_time"])
            data = [r for r in data if not isinstance(r.get("time"), int) or lo <= _ms(r["time"]) <= hi]
        return envelope(data)

    def params(self, path: str) -> list[dict[str, str]]:
        return [dict(r.url.params) for r in self.requests if r.url.path == path]


def _ms(t: int) -> int:
    return t * 1000 if t < 10**11 else t


def coinglass(handler: Callable[[httpx.Request], httpx.Response], now: float = NOW, **options: Any):
    ctx = PluginContext(clock=FakeClock(now), transport=httpx.MockTransport(handler))
    return CoinGlassSource({"api_key": KEY, "backoff_base": 0.01, "retries": 0, **options}, ctx)


def fetch(source, metrics, start: int = T0 - H4, end: int = T0, symbol: str = "BTC", interval: str = "4h"):
    async def go():
        try:
            return await source.fetch(FetchRequest(symbol, interval, frozenset(metrics), start, end))
        finally:
            await source.aclose()

    return asyncio.run(go())


# ------------------------------------------------------------------------------------- namespace


def test_perpwatch_metrics_lists_every_new_family_with_unit_and_source() -> None:
    result = invoke("metrics", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    expect = {
        "depth.bid_usd_1pct": ("USD", ["binance", "coinglass"]),
        "depth.imbalance_2pct": ("fraction -1..1", ["binance", "coinglass"]),
        "depth.ask_usd": ("USD", ["binance", "coinglass"]),
        "etf.btc_flow_usd": ("USD per day", ["coinglass"]),
        "etf.eth_flow_cum_usd": ("USD", ["coinglass"]),
        "etf.eth_net_assets_usd": ("USD", ["coinglass"]),
        "options.max_pain_near": ("USD", ["coinglass"]),
        "options.max_pain_chosen": ("USD", ["coinglass"]),
        "options.oi_usd": ("USD", ["coinglass"]),
        "premium.coinbase_btc_pct": ("percent", ["coinglass"]),
        "basis.rate_pct": ("percent of index", ["binance"]),
        "basis.usd": ("USD", ["binance"]),
        "basis.cg_close": ("as CoinGlass sends (unit unconfirmed)", ["coinglass"]),
        "funding.ex.hyperliquid": ("percent per 8 h", ["coinglass"]),
        "funding.ex.crypto_com": ("percent per 8 h", ["coinglass"]),
        "funding.count": ("exchanges", ["coinglass"]),
        "liqmap.above_usd": ("heatmap value (USD per the docs; unconfirmed)", ["coinglass"]),
        "liqmap.cluster_dist_pct": ("percent", ["coinglass"]),
    }
    for name, (unit, sources) in expect.items():
        assert rows[name]["unit"] == unit, name
        live = [s for s in rows[name]["sources"] if s in ("binance", "coinglass")]  # replay serves any
        assert live == sources, name
    assert {f"funding.ex.{s}" for s in FUNDING_EXCHANGES} <= set(rows)
    text = invoke("metrics").stdout
    assert any(line.startswith("etf.btc_flow_usd") and "coinglass" in line for line in text.splitlines())


def test_new_names_compile_in_a_strategy(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "version: 1\nname: s\ninterval: 4h\nrules:\n  - name: r\n    when: >-\n"
        "      depth.bid_usd_1pct > 1e6 and funding.ex.crypto_com > 0 and etf.btc_flow_usd > 0\n"
        "      and options.max_pain_near > 0 and liqmap.cluster_dist_pct < 5 and basis.rate_pct > 0\n"
        "    message: x\n"
    )
    assert invoke("validate", path).exit_code == 0
    path.write_text(path.read_text().replace("funding.ex.crypto_com", "funding.ex.cryptocom"))
    bad = invoke("validate", path)
    assert bad.exit_code == 2 and "unknown metric 'funding.ex.cryptocom'" in bad.stderr


# ------------------------------------------------------------------------------------- depth


def test_coinglass_depth_pair_per_range_with_imbalance() -> None:
    fake = FakeCG()
    names = {f"depth.{k}{s}" for k in ("bid_usd", "ask_usd", "imbalance") for s in ("_1pct", "_2pct", "")}
    frame = fetch(coinglass(fake, depth_range="0.5"), names)
    assert frame.problems == []
    assert frame.times.tolist() == [T0 - H4, T0]
    assert frame.columns["depth.bid_usd_1pct"].tolist() == [81639959.9338, 159108168.2894]
    assert frame.columns["depth.ask_usd_2pct"].tolist() == [78533053.6862, 151305544.1556]
    bid, ask = 159108168.2894, 151305544.1556
    assert frame.columns["depth.imbalance_1pct"][-1] == pytest.approx((bid - ask) / (bid + ask))
    ranges = sorted(p["range"] for p in fake.params("/api/futures/orderbook/ask-bids-history"))
    assert ranges == ["0.5", "1", "2"]  # always sent: the server's default is unconfirmed
    p = fake.params("/api/futures/orderbook/ask-bids-history")[0]
    assert (p["exchange"], p["symbol"], p["interval"]) == ("Binance", "BTCUSDT", "4h")


def test_coinglass_depth_range_1_is_one_request_for_both_names() -> None:
    fake = FakeCG()
    frame = fetch(
        coinglass(fake), {"depth.bid_usd", "depth.bid_usd_1pct", "depth.imbalance"}
    )  # depth_range 1
    assert [p["range"] for p in fake.params("/api/futures/orderbook/ask-bids-history")] == ["1"]
    assert frame.columns["depth.bid_usd"].tolist() == frame.columns["depth.bid_usd_1pct"].tolist()
    assert frame.columns["depth.imbalance"][-1] == pytest.approx(0.0251, abs=1e-4)


def test_coinglass_depth_aggregated_over_the_exchanges() -> None:
    fake = FakeCG()
    frame = fetch(
        coinglass(fake, depth_scope="aggregated", exchanges=["Binance", "OKX"]), {"depth.bid_usd_1pct"}
    )
    assert frame.columns["depth.bid_usd_1pct"].tolist()[-1] == 159248603.6112
    (p,) = fake.params("/api/futures/orderbook/aggregated-ask-bids-history")
    assert (p["exchange_list"], p["symbol"], p["range"]) == ("Binance,OKX", "BTC", "1")


def test_coinglass_depth_faults_are_unknown_with_one_reason() -> None:
    rows = [
        {"bids_usd": "lots", "asks_usd": 1.0, "time": T0 - H4},  # text that is no number
        {"bids_usd": -5.0, "asks_usd": 2.0, "time": T0},  # impossible
        {"bids_usd": 1.0, "asks_usd": 1.0, "time": (T0 - H4) // 1000},  # seconds
    ]
    frame = fetch(
        coinglass(FakeCG(**{"/api/futures/orderbook/ask-bids-history": rows})), {"depth.bid_usd_1pct"}
    )
    assert np.isnan(frame.columns["depth.bid_usd_1pct"]).all()  # never 0
    said = " ".join(frame.problems)
    assert "not numbers" in said and "'lots'" in said
    assert "depth.bid_usd_1pct 1 (e.g. -5" in said
    assert "seconds instead of milliseconds" in said


def test_coinglass_depth_plan_gate_names_the_plan() -> None:
    fake = FakeCG()
    fake.responders["/api/futures/orderbook/ask-bids-history"] = lambda r: httpx.Response(
        200, json={"code": "401", "msg": "Upgrade plan"}
    )
    frame = fetch(coinglass(fake), {"depth.bid_usd_1pct", "basis.cg_close"})
    assert (
        "depth.bid_usd_1pct" not in frame.columns and frame.columns["basis.cg_close"].tolist()[-1] == 0.0445
    )
    assert any("plan does not allow this endpoint at interval 4h" in p for p in frame.problems)


BOOK = {
    "lastUpdateId": 1027024,
    "E": T0 + H4 + 1000,
    "T": T0 + H4 + 990,
    # mid 100: bids 99.5 .. 97 (within 1 %: 99.5 and 99; within 2 %: and 98.5 and 98), asks mirror
    "bids": [["99.5", "10"], ["99.0", "10"], ["98.5", "10"], ["98.0", "10"], ["97.0", "10"]],
    "asks": [["100.5", "20"], ["101.0", "20"], ["101.5", "20"], ["102.0", "20"], ["103.0", "20"]],
}


def binance(
    handler: Callable[[httpx.Request], httpx.Response], now: float = NOW, **options: Any
) -> BinanceSource:
    ctx = PluginContext(clock=FakeClock(now), transport=httpx.MockTransport(handler))
    return BinanceSource({"backoff_base": 0.01, "retries": 0, **options}, ctx)


def test_binance_depth_fills_the_newest_bar_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=BOOK)

    names = {
        "depth.bid_usd_1pct",
        "depth.ask_usd_1pct",
        "depth.imbalance_1pct",
        "depth.bid_usd_2pct",
        "depth.bid_usd",
    }
    frame = fetch(binance(handler, depth_range=0.5), names)
    assert frame.times.tolist() == [T0 - H4, T0]
    bid1, ask1 = 99.5 * 10 + 99 * 10, 100.5 * 20 + 101 * 20
    assert frame.columns["depth.bid_usd_1pct"][-1] == pytest.approx(bid1)
    assert frame.columns["depth.ask_usd_1pct"][-1] == pytest.approx(ask1)
    assert frame.columns["depth.imbalance_1pct"][-1] == pytest.approx((bid1 - ask1) / (bid1 + ask1))
    assert frame.columns["depth.bid_usd_2pct"][-1] == pytest.approx(bid1 + 985 + 980)
    assert frame.columns["depth.bid_usd"][-1] == pytest.approx(995)  # +/-0.5 %
    assert np.isnan(frame.columns["depth.bid_usd_1pct"][0])  # no history: unknown, never 0
    assert frame.observed["depth.bid_usd_1pct"].tolist() == [NO_OBSERVATION, BOOK["E"]]
    assert [dict(r.url.params) for r in seen] == [{"symbol": "BTCUSDT", "limit": "1000"}]
    older = fetch(binance(handler), {"depth.bid_usd_1pct"}, end=T0 - H4)
    assert np.isnan(older.columns["depth.bid_usd_1pct"]).all() and "no history" in older.problems[0]


def test_binance_depth_that_does_not_reach_the_band_is_unknown() -> None:
    values, when, notes = depth_bands(BOOK, {"_1pct": 1.0, "_2pct": 2.0}, limit=5)  # a full page of 5
    assert values["depth.bid_usd_1pct"] == pytest.approx(1985)  # 97 < 99: the 1 % band is covered
    assert np.isnan(values["depth.bid_usd_2pct"]) or values["depth.bid_usd_2pct"] > 0
    short = {**BOOK, "bids": BOOK["bids"][:3], "asks": BOOK["asks"][:3]}
    values, _, notes = depth_bands(short, {"_2pct": 2.0}, limit=3)
    assert np.isnan(values["depth.bid_usd_2pct"]) and np.isnan(values["depth.imbalance_2pct"])
    assert "do not reach +/-2 %" in notes[0]
    values, _, notes = depth_bands({**BOOK, "bids": [["x", "1"]]}, {"_1pct": 1.0}, limit=1000)
    assert np.isnan(values["depth.bid_usd_1pct"]) and "not [price, quantity] numbers" in notes[0]
    values, when, notes = depth_bands({**BOOK, "E": (T0 + H4) // 1000}, {"_1pct": 1.0}, limit=1000)
    assert np.isnan(values["depth.ask_usd_1pct"]) and "seconds" in notes[0]


def test_binance_basis_rate_fraction_becomes_percent() -> None:
    rows = [
        {"indexPrice": "34400.15945055", "contractType": "PERPETUAL", "basisRate": "0.0004",
         "futuresPrice": "34414.10", "annualizedBasisRate": "", "basis": "13.94054945", "pair": "BTCUSDT",
         "timestamp": T0},
    ]  # fmt: skip
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=rows)

    frame = fetch(binance(handler), {"basis.rate_pct", "basis.usd"})
    assert frame.columns["basis.rate_pct"].tolist()[-1] == pytest.approx(0.04)  # percent of the index
    assert frame.columns["basis.usd"].tolist()[-1] == pytest.approx(13.94054945)
    p = dict(seen[0].url.params)
    assert (seen[0].url.path, p["pair"], p["contractType"], p["period"]) == (
        "/futures/data/basis", "BTCUSDT", "PERPETUAL", "4h",
    )  # fmt: skip
    assert "symbol" not in p and "limit" in p


# ------------------------------------------------------------------------------------- premium, basis


def test_premium_index_times_in_seconds_and_percent() -> None:
    fake = FakeCG()
    frame = fetch(coinglass(fake), {"premium.coinbase_btc_pct", "premium.coinbase_btc_usd"}, symbol="ETH")
    assert frame.problems == []
    assert frame.columns["premium.coinbase_btc_pct"].tolist() == [0.0402, -0.0121]  # percent, as sent
    assert frame.columns["premium.coinbase_btc_usd"].tolist() == [41.76, -12.5]
    (p,) = fake.params("/api/coinbase-premium-index")
    assert "symbol" not in p and p["interval"] == "4h"


def test_premium_rate_read_as_fraction_is_checked_against_coinbase_price() -> None:
    rows = [  # the docs' reading: 0.000402 = 0.0402 %; coinbase_price lets both readings be tested
        {"time": T0 // 1000, "premium": 41.76, "premium_rate": 0.000402, "coinbase_price": 103875.76},
    ]
    frame = fetch(coinglass(FakeCG(**{"/api/coinbase-premium-index": rows})), {"premium.coinbase_btc_pct"})
    assert frame.columns["premium.coinbase_btc_pct"][-1] == pytest.approx(0.0402)
    assert any("reads as a fraction" in p for p in frame.problems)
    wrong = [{"time": T0 // 1000, "premium": 41.76, "premium_rate": 7.0, "coinbase_price": 103875.76}]
    frame = fetch(coinglass(FakeCG(**{"/api/coinbase-premium-index": wrong})), {"premium.coinbase_btc_pct"})
    assert np.isnan(frame.columns["premium.coinbase_btc_pct"]).all()
    assert any("fits neither percent nor fraction" in p for p in frame.problems)


def test_coinglass_basis_is_raw() -> None:
    fake = FakeCG()
    frame = fetch(coinglass(fake), {"basis.cg_close", "basis.cg_close_change"})
    assert frame.columns["basis.cg_close"].tolist()[-1] == 0.0445
    assert frame.columns["basis.cg_close_change"].tolist()[-1] == 34.56
    (p,) = fake.params("/api/futures/basis/history")
    assert (p["exchange"], p["symbol"]) == ("Binance", "BTCUSDT")


# ------------------------------------------------------------------------------------- ETF


def test_etf_days_skip_the_filler_and_sum_the_flows() -> None:
    days = cm.etf_days(ETF_FLOWS, ETF_ASSETS, "btc", None)
    assert days.days.tolist() == [D0, D0 + DAY, D0 + 4 * DAY, D0 + 5 * DAY]
    assert days.filler.tolist() == [False, False, False, True]
    flows = days.values["etf.btc_flow_usd"]
    assert flows[:3].tolist() == [655300000, -100000000, 50000000] and np.isnan(flows[3])  # not 0
    cum = days.values["etf.btc_flow_cum_usd"]
    assert cum[:3].tolist() == [655300000, 555300000, 605300000] and np.isnan(cum[3])
    assets = days.values["etf.btc_net_assets_usd"]
    assert assets[:2].tolist() == [51671409241.39, 51500000000.0] and np.isnan(assets[2:]).all()
    assert any("filler" in n and "not 0" in n for n in days.notes)


def test_etf_on_intraday_bars_is_causal() -> None:
    days = cm.etf_days(ETF_FLOWS, ETF_ASSETS, "btc", None)
    grid = np.arange(D0, D0 + 8 * DAY, H4, dtype=np.int64)
    cols, observed = cm.daily_on_bars(days, grid, H4)
    flow = cols["etf.btc_flow_usd"]

    def at(when: str) -> float:
        return float(flow[int(np.searchsorted(grid, parse_time(when)))])

    assert np.isnan(at("2024-01-11T00:00:00Z")) and np.isnan(at("2024-01-11T16:00:00Z"))  # not known yet
    assert at("2024-01-11T20:00:00Z") == 655300000  # the bar that closes at the day's end
    assert at("2024-01-12T20:00:00Z") == -100000000
    assert at("2024-01-14T12:00:00Z") == -100000000  # Friday's flow over the weekend
    assert at("2024-01-15T20:00:00Z") == 50000000  # Monday
    assert np.isnan(at("2024-01-16T20:00:00Z"))  # the filler day: unknown, not 0
    known = ~np.isnan(flow)
    assert (observed["etf.btc_flow_usd"][known] == grid[known]).all()
    # carried at most DAILY_CARRY_MS: a feed that stopped is not a quiet market
    stale = cm.etf_days(ETF_FLOWS[:1], None, "btc", None)
    cols, _ = cm.daily_on_bars(stale, grid, H4)
    assert np.isnan(cols["etf.btc_flow_usd"][-1]) and cols["etf.btc_flow_usd"][5] == 655300000


def test_etf_faults() -> None:
    rows = [
        {"timestamp": D0 // 1000, "flow_usd": 1.0, "etf_flows": []},  # seconds: ignored, said
        {"timestamp": D0 + DAY, "flow_usd": "lots", "etf_flows": [{"etf_ticker": "IBIT", "flow_usd": 5}]},
        {"timestamp": D0 + 2 * DAY, "flow_usd": "7", "etf_flows": [{"etf_ticker": "IBIT", "flow_usd": 7}]},
    ]
    days = cm.etf_days(rows, None, "btc", None)
    assert days.days.tolist() == [D0 + DAY, D0 + 2 * DAY]
    assert np.isnan(days.values["etf.btc_flow_usd"][0]) and days.values["etf.btc_flow_usd"][1] == 7.0
    assert np.isnan(days.values["etf.btc_flow_cum_usd"]).all()  # a day unknown: the sum is too
    said = " ".join(days.notes)
    assert "seconds instead of milliseconds" in said and "'lots'" in said


def test_coinglass_etf_job_fetches_full_history_once() -> None:
    fake = FakeCG()
    start = parse_time("2024-01-11T00:00:00Z")
    now = (parse_time("2024-01-17T00:00:00Z") + HOUR) / 1000
    frame = fetch(
        coinglass(fake, now=now), cm.ETF_METRICS["btc"], start=start, end=parse_time("2024-01-16T20:00:00Z")
    )
    assert [r.url.path for r in fake.requests] == [
        "/api/etf/bitcoin/flow-history",
        "/api/etf/bitcoin/net-assets/history",
    ]
    assert all(dict(r.url.params) == {} for r in fake.requests)
    flow = frame.columns["etf.btc_flow_usd"]
    assert flow[int(np.searchsorted(frame.times, parse_time("2024-01-11T20:00:00Z")))] == 655300000
    assert np.isnan(flow[-1])  # the filler day
    later = coinglass(FakeCG(**{"/api/etf/bitcoin/net-assets/history": []}), etf_known_after_hours=30)
    later_frame = fetch(later, {"etf.btc_flow_usd"}, start=start, end=parse_time("2024-01-16T20:00:00Z"))
    late = later_frame.columns["etf.btc_flow_usd"]  # known 30 h after the stamp: 2024-01-12 06:00
    assert np.isnan(late[6]) and late[7] == 655300000  # the bars closing at 04:00 and 08:00


# ------------------------------------------------------------------------------------- options


def test_options_max_pain_nearest_and_chosen_on_the_newest_bar() -> None:
    fake = FakeCG()
    names = {"options.max_pain_near", "options.max_pain_chosen", "options.oi_usd", "options.volume_usd_24h"}
    frame = fetch(coinglass(fake, options_expiry="251226"), names)
    assert np.isnan(frame.columns["options.max_pain_near"][0])  # a snapshot: no history
    assert frame.columns["options.max_pain_near"][-1] == 101000.0  # 251114 expired at 08:00
    assert frame.columns["options.max_pain_chosen"][-1] == 100000.0
    assert frame.columns["options.oi_usd"][-1] == 45000000000.5
    assert frame.columns["options.volume_usd_24h"][-1] == 3200000000.25
    assert frame.observed["options.oi_usd"].tolist() == [NO_OBSERVATION, int(NOW * 1000)]
    assert fake.params("/api/option/max-pain") == [{"symbol": "BTC", "exchange": "Deribit"}]
    as_int = fetch(coinglass(FakeCG(), options_expiry=251121), {"options.max_pain_chosen"})  # YAML 251121
    assert as_int.columns["options.max_pain_chosen"][-1] == 101000.0


def test_options_faults() -> None:
    values, notes = cm.max_pain(
        [{"date": "2512", "max_pain_price": "1"}, {"date": "251121", "max_pain_price": "about 100k"}],
        T0,
        "260101",
    )
    assert np.isnan(values["options.max_pain_near"]) and np.isnan(values["options.max_pain_chosen"])
    said = " ".join(notes)
    assert "without a YYMMDD date" in said and "'about 100k'" in said and "260101 is not listed" in said
    values, notes = cm.options_totals([{"exchange_name": "Deribit", "open_interest_usd": 1}])
    assert np.isnan(values["options.oi_usd"]) and "no 'All' row" in notes[0]


# ------------------------------------------------------------------------------------- funding


def test_funding_on_every_exchange_normalised_to_8h() -> None:
    frame = fetch(coinglass(FakeCG()), {"funding.ex.binance", "funding.ex.hyperliquid", "funding.ex.crypto_com",
                                       "funding.ex.kucoin", "funding.ex.mexc", "funding.max", "funding.min",
                                       "funding.spread", "funding.max_exchange", "funding.min_exchange",
                                       "funding.count"})  # fmt: skip
    c = frame.columns
    assert c["funding.ex.binance"][-1] == 0.008631
    assert c["funding.ex.hyperliquid"][-1] == pytest.approx(0.01)  # 0.00125 per 1 h
    assert c["funding.ex.crypto_com"][-1] == pytest.approx(0.008)  # 0.004 per 4 h
    assert np.isnan(c["funding.ex.kucoin"][-1]) and np.isnan(c["funding.ex.mexc"][-1])  # no interval; text
    assert c["funding.max"][-1] == pytest.approx(0.0102) and c["funding.max_exchange"].value(1) == "OKX"
    assert c["funding.min"][-1] == pytest.approx(-0.004) and c["funding.min_exchange"].value(1) == "dYdX"
    assert c["funding.spread"][-1] == pytest.approx(0.0142)
    assert c["funding.count"][-1] == 5  # all exchanges by default
    said = " ".join(frame.problems)
    assert "no funding interval for KuCoin" in said and "MEXC 'n/a'" in said
    chosen = fetch(coinglass(FakeCG(), funding_exchanges=["binance", "HYPERLIQUID"]), {"funding.max_exchange",
                                                                                      "funding.count", "funding.ex.okx"})  # fmt: skip
    assert chosen.columns["funding.max_exchange"].value(1) == "Hyperliquid"
    assert chosen.columns["funding.count"][-1] == 2
    assert chosen.columns["funding.ex.okx"][-1] == pytest.approx(0.0102)  # per exchange: always all


# ------------------------------------------------------------------------------------- heatmap


def test_heatmap_needs_the_professional_plan() -> None:
    fake = FakeCG()
    frame = fetch(coinglass(fake, plan="startup"), {"liqmap.above_usd", "basis.cg_close"})
    assert "liqmap.above_usd" not in frame.columns and "basis.cg_close" in frame.columns
    assert any("needs the Professional plan" in p and "plan: startup" in p for p in frame.problems)
    assert [r.url.path for r in fake.requests] == ["/api/futures/basis/history"]  # refused before asking


def test_heatmap_refusal_by_the_server_says_which_plan() -> None:
    fake = FakeCG()
    fake.responders["/api/futures/liquidation/aggregated-heatmap/model1"] = lambda r: httpx.Response(
        200, json={"code": "401", "msg": "Upgrade plan"}
    )
    source = coinglass(fake, plan="professional")
    with pytest.raises(Exception, match="needs the Professional plan"):
        fetch(source, {"liqmap.above_usd"})


def test_heatmap_levels_above_below_and_nearest_cluster() -> None:
    fake = FakeCG()
    names = {"liqmap.above_usd", "liqmap.below_usd", "liqmap.cluster_dist_pct"}
    options = {
        "plan": "professional",
        "heatmap_band_pct": 2,
        "heatmap_range": "7d",
        "heatmap_cluster_share": 0.5,
    }
    frame = fetch(coinglass(fake, **options), names)
    c = frame.columns
    assert c["liqmap.above_usd"][-1] == pytest.approx(800000 + 400000)  # 101000 and 102000
    assert c["liqmap.below_usd"][-1] == pytest.approx(3000000 + 500000)  # 98000 and 99000
    assert c["liqmap.cluster_dist_pct"][-1] == pytest.approx(10.0)  # only 110000 holds half of 35.7 M
    assert np.isnan(c["liqmap.above_usd"][0])
    assert fake.params("/api/futures/liquidation/aggregated-heatmap/model1") == [
        {"symbol": "BTC", "range": "7d"}
    ]
    assert any("1 heatmap cells that cannot be read" in p for p in frame.problems)
    values, _ = cm.heatmap_levels(HEATMAP, 1.0, 0.05)
    assert values["liqmap.below_usd"] == pytest.approx(500000)
    assert values["liqmap.above_usd"] == pytest.approx(800000)
    assert values["liqmap.cluster_dist_pct"] == pytest.approx(-2.0)  # 98000's 3 M is 8 % of the map
    values, notes = cm.heatmap_levels({**HEATMAP, "liquidation_leverage_data": []}, 1.0, 0.05)
    assert values["liqmap.above_usd"] == 0 and np.isnan(values["liqmap.cluster_dist_pct"]) and notes
    with pytest.raises(ValueError, match="no close price"):
        cm.heatmap_levels({**HEATMAP, "price_candlesticks": [[1, "1", "1", "1", "n/a", "1"]]}, 1.0, 0.05)


# ------------------------------------------------------------------------------------- saved responses


def _parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_convert_coinglass_reads_etf_depth_and_premium_responses(tmp_path: Path) -> None:
    snap = tmp_path / "20240120"
    start = parse_time("2024-01-10T00:00:00Z")
    price = [
        {"time": start + i * H4, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "volume_usd": 1.0}
        for i in range(61)
    ]
    _parquet(snap / "futures/market/api_price_ohlc_history.parquet", price)
    _parquet(snap / "etf/api_etf_bitcoin_flow_history.parquet", ETF_FLOWS)
    _parquet(snap / "etf/api_etf_bitcoin_net_assets_history.parquet", ETF_ASSETS)
    book = [
        {"time": r["time"], "bids_usd": 2e8, "bids_quantity": 1.0, "asks_usd": 1e8, "asks_quantity": 1.0}
        for r in price
    ]
    _parquet(snap / "futures/order_book/api_futures_orderbook_ask_bids_history.parquet", book)
    premium = [{"time": r["time"] // 1000, "premium": 10.0, "premium_rate": 0.01} for r in price]
    _parquet(snap / "indic/api_coinbase_premium_index.parquet", premium)
    out = tmp_path / "out"
    plain = invoke("convert-coinglass", snap, "--symbol", "BTC", "--out", out)
    assert plain.exit_code == 0, plain.output
    assert "pass --depth-range" in plain.stderr  # the saved order book does not say its range
    frame = load_replay_file(out / "BTC_4h.csv")
    assert "depth.bid_usd_1pct" not in frame.columns
    flow = frame.columns["etf.btc_flow_usd"]
    i = int(np.searchsorted(frame.times, parse_time("2024-01-11T20:00:00Z")))
    assert np.isnan(flow[:i]).all() and flow[i] == 655300000
    assert np.isnan(flow[int(np.searchsorted(frame.times, parse_time("2024-01-16T20:00:00Z")))])
    assert frame.columns["premium.coinbase_btc_pct"][0] == 0.01  # seconds read as such
    ranged = invoke("convert-coinglass", snap, "--symbol", "BTC", "--out", out, "--depth-range", "1")
    assert ranged.exit_code == 0, ranged.output
    frame = load_replay_file(out / "BTC_4h.csv")
    assert frame.columns["depth.bid_usd_1pct"][0] == 2e8
    assert frame.columns["depth.imbalance_1pct"][0] == pytest.approx(1 / 3)


def test_fetch_downloads_the_new_history_families(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``perpwatch fetch`` asks the source for the new families' history (snapshots only by name)."""
    from perpwatch.plugins import replay_fetch

    seen: list[frozenset[str]] = []

    class Recorder:
        name = "coinglass"
        options: dict[str, Any] = {}
        snapshot_metrics = CoinGlassSource.snapshot_metrics

        def provides(self, options: Any = None) -> frozenset[str]:
            return CoinGlassSource.provides({})

        async def fetch(self, request: FetchRequest):
            from perpwatch.evaluation.frame import Frame

            seen.append(request.metrics)
            return Frame(
                np.asarray([request.start], dtype=np.int64), {"depth.bid_usd_1pct": np.asarray([1.0])}
            )

        async def aclose(self) -> None:
            return None

    class Cfg:
        symbols = ["BTC"]
        runner: dict[str, Any] = {}

        def redact(self, text: str) -> str:
            return text

    monkeypatch.setattr(replay_fetch, "build_source", lambda name, path: (Recorder(), Cfg()))
    result = invoke("fetch", "--source", "coinglass", "--interval", "4h", "--from", "2025-01-01",
                    "--to", "2025-01-02", "--out", tmp_path)  # fmt: skip
    assert seen, result.output  # (the recorder fills one metric only: the rest is said missing)
    asked = seen[0]
    assert {"depth.bid_usd_1pct", "etf.btc_flow_usd", "premium.coinbase_btc_pct", "basis.cg_close"} <= asked
    assert not asked & CoinGlassSource.snapshot_metrics  # no history to download
    assert set(CATALOGUE) >= asked


def test_convert_coinglass_per_exchange_funding_from_the_real_files(tmp_path: Path) -> None:
    """The shared 8 h per-exchange funding files (real responses, closes as strings) onto 4 h bars:
    each close on the two bars that end once it is known, rescaled to 8 h; intervals from the user."""
    from helpers import COINGLASS_REPORT

    nov = COINGLASS_REPORT / "20251114"
    if not nov.is_dir():
        pytest.skip(f"no {nov}")
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    plain = invoke("convert-coinglass", nov, "--symbol", "BTC", "--out", tmp_path / "a")
    assert plain.exit_code == 0, plain.output
    assert "per-exchange funding of binance, bitget" in plain.stderr and "--funding-interval" in plain.stderr
    assert "funding.ex.binance" not in load_replay_file(tmp_path / "a" / "BTC_4h.csv").columns
    args = ["--funding-interval", "binance=8", "--funding-interval", "Hyperliquid=1"]
    done = invoke("convert-coinglass", nov, "--symbol", "BTC", "--out", tmp_path / "b", *args)
    assert done.exit_code == 0, done.output
    frame = load_replay_file(tmp_path / "b" / "BTC_4h.csv")
    rows = pq.read_table(
        nov / "futures/funding_rate/api_futures_fundingRate_ohlc_history_BTC_BINANCE.parquet"
    )
    rows = rows.to_pylist()
    t, close = int(rows[-3]["time"]), float(rows[-3]["close"])  # known at t + 8 h
    col = frame.columns["funding.ex.binance"]
    i = int(np.searchsorted(frame.times, t))
    assert col[i] == pytest.approx(float(rows[-4]["close"]))  # the bar at t closes before t + 8 h
    assert col[i + 1] == pytest.approx(close) and col[i + 2] == pytest.approx(close)  # bars t+4h, t+8h
    hyper = frame.columns["funding.ex.hyperliquid"]
    assert np.nanmax(np.abs(hyper)) < 0.2 and hyper[i + 1] == pytest.approx(0.01)  # 0.00125 per 1 h, x8
    both = ~np.isnan(col) & ~np.isnan(hyper)
    top = np.maximum(col, hyper)
    assert np.array_equal(frame.columns["funding.max"][both], top[both])
    assert set(frame.columns["funding.count"][both].tolist()) == {2.0}
    bad = invoke(
        "convert-coinglass", nov, "--symbol", "BTC", "--out", tmp_path / "c", "--funding-interval", "binance"
    )
    assert bad.exit_code == 2 and "expected EXCHANGE=HOURS" in bad.stderr


def test_etf_live_equals_the_converted_snapshot(tmp_path: Path) -> None:
    """The same ETF rows through the live source and through a saved snapshot: the same bars."""
    pytest.importorskip("pyarrow")
    from perpwatch.plugins import coinglass_files as cf

    snap = tmp_path / "snap"
    start = parse_time("2024-01-10T00:00:00Z")
    price = [{"time": start + i * H4, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0} for i in range(50)]
    _parquet(snap / "api_price_ohlc_history.parquet", price)
    _parquet(snap / "api_etf_bitcoin_flow_history.parquet", ETF_FLOWS)
    _parquet(snap / "api_etf_bitcoin_net_assets_history.parquet", ETF_ASSETS)
    saved = cf.load_snapshot(snap, "BTC", "4h")
    last = int(saved.times[-1])
    live = fetch(
        coinglass(FakeCG(), now=(last + H4 + HOUR) / 1000), cm.ETF_METRICS["btc"], start=start, end=last
    )
    assert np.array_equal(live.times, saved.times)
    for name in cm.ETF_METRICS["btc"]:
        assert np.array_equal(live.columns[name], saved.columns[name], equal_nan=True), name
    assert (~np.isnan(saved.columns["etf.btc_flow_usd"])).sum() > 10


def test_lasting_snapshot_notes_are_said_once_and_only_for_wanted_names() -> None:
    source = coinglass(FakeCG())
    names = {"funding.max", "options.max_pain_near"}

    async def twice():
        try:
            request = FetchRequest("BTC", "4h", frozenset(names), T0 - H4, T0)
            return [await source.fetch(request), await source.fetch(request)]
        finally:
            await source.aclose()

    first, second = asyncio.run(twice())
    assert any("no funding interval for KuCoin" in p for p in first.problems)
    assert not any("options_expiry" in p for p in first.problems)  # max_pain_chosen is not wanted
    assert second.problems == []  # the same lasting condition is not said every cycle
    assert second.columns["funding.max"][-1] == first.columns["funding.max"][-1] == pytest.approx(0.0102)
