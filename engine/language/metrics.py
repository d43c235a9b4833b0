"""The metric namespace (strategy language, section 5): names, units and kinds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    meaning: str
    kind: str = "num"  # "num" or "str"


def _m(name: str, unit: str, meaning: str, kind: str = "num") -> Metric:
    return Metric(name, unit, meaning, kind)


#: Exchanges CoinGlass reports funding for (its ``funding-rate/exchange-list``), each with its metric
#: name ``funding.ex.<slug>``; an exchange reported but not listed here still counts in funding.max/min.
FUNDING_EXCHANGES: dict[str, str] = {
    "binance": "Binance", "okx": "OKX", "bybit": "Bybit", "bitget": "Bitget", "gate": "Gate",
    "mexc": "MEXC", "bingx": "BingX", "whitebit": "WhiteBIT", "coinex": "CoinEx", "dydx": "dYdX",
    "hyperliquid": "Hyperliquid", "kraken": "Kraken", "coinbase": "Coinbase", "crypto_com": "Crypto.com",
    "kucoin": "KuCoin", "htx": "HTX", "bitfinex": "Bitfinex", "bitunix": "Bitunix", "bitmex": "BitMEX",
    "deribit": "Deribit",
}  # fmt: skip


def exchange_slug(exchange: str) -> str:
    """``Crypto.com`` -> ``crypto_com``: an exchange's name as the last part of a metric path."""
    return "".join(c if c.isalnum() else "_" for c in exchange.strip().lower())


def _depth(suffix: str, band: str) -> list[Metric]:
    return [
        _m(f"depth.bid_usd{suffix}", "USD", f"resting bids within {band} of the price (order-book snapshot)"),
        _m(f"depth.ask_usd{suffix}", "USD", f"resting asks within {band} of the price (order-book snapshot)"),
        _m(
            f"depth.imbalance{suffix}",
            "fraction -1..1",
            f"(bids - asks) / (bids + asks) within {band}; above 0: more bids",
        ),
    ]


DEPTH = [
    *_depth("_1pct", "+/-1 %"),
    *_depth("_2pct", "+/-2 %"),
    *_depth("", "+/- the source's depth_range percent"),
]
FUNDING_BY_EXCHANGE = [
    _m(
        f"funding.ex.{slug}",
        "percent per 8 h",
        f"{name}'s current funding rate, rescaled from its own interval to 8 h",
    )
    for slug, name in FUNDING_EXCHANGES.items()
]
ETF = [
    m
    for coin, name in (("btc", "bitcoin"), ("eth", "ether"))
    for m in (
        _m(
            f"etf.{coin}_flow_usd",
            "USD per day",
            f"US spot {name} ETFs: net flow of the latest trading day that has closed",
        ),
        _m(
            f"etf.{coin}_flow_cum_usd",
            "USD",
            f"US spot {name} ETFs: net flows summed since launch, to that day",
        ),
        _m(f"etf.{coin}_net_assets_usd", "USD", f"US spot {name} ETFs: net assets at that day's close"),
    )
]
OPTIONS = [
    _m("options.max_pain_near", "USD", "options max pain price of the nearest expiry (the coin's, snapshot)"),
    _m(
        "options.max_pain_chosen",
        "USD",
        "options max pain price of the expiry the source's options_expiry names",
    ),
    _m("options.oi_usd", "USD", "options open interest, all exchanges (snapshot)"),
    _m("options.volume_usd_24h", "USD", "options volume over the last 24 h, all exchanges (snapshot)"),
]
PREMIUM_BASIS = [
    _m(
        "premium.coinbase_btc_pct",
        "percent",
        "Coinbase BTC premium: (Coinbase - Binance) / price x 100 (BTC only)",
    ),
    _m("premium.coinbase_btc_usd", "USD", "Coinbase BTC price minus Binance's (BTC only)"),
    _m(
        "basis.rate_pct",
        "percent of index",
        "perpetual basis: (futures - index) / index x 100 (Binance basisRate x 100)",
    ),
    _m("basis.usd", "USD", "perpetual basis: futures price - index price"),
    _m(
        "basis.cg_close",
        "as CoinGlass sends (unit unconfirmed)",
        "CoinGlass futures basis history close_basis, raw",
    ),
    _m(
        "basis.cg_close_change",
        "as CoinGlass sends (unit unconfirmed)",
        "CoinGlass futures basis history close_change, raw",
    ),
]
LIQ_HEATMAP = [
    _m("liqmap.above_usd", "heatmap value (USD per the docs; unconfirmed)", "liquidation levels within the band above the price (Professional)"),
    _m("liqmap.below_usd", "heatmap value (USD per the docs; unconfirmed)", "liquidation levels within the band below the price (Professional)"),
    _m("liqmap.cluster_dist_pct", "percent", "signed distance from the price to the nearest large liquidation cluster (Professional)"),
]  # fmt: skip

CATALOGUE: dict[str, Metric] = {
    m.name: m
    for m in [
        *(_m(f"price.{f}", "USD", f"futures price bar, {f}") for f in ("open", "high", "low", "close")),
        _m("price.volume", "USD", "traded volume in the bar"),
        *(
            _m(f"oi.{f}", "USD", f"open interest, all exchanges together, {f}")
            for f in ("open", "high", "low", "close")
        ),
        *(
            _m(f"funding.{f}", "percent per funding interval", f"OI-weighted funding rate, {f}")
            for f in ("open", "high", "low", "close")
        ),
        _m("funding.avg", "percent", "funding across exchanges, latest settlement: mean"),
        _m("funding.max", "percent", "funding across exchanges, latest settlement: highest"),
        _m("funding.min", "percent", "funding across exchanges, latest settlement: lowest"),
        _m("funding.spread", "percent", "funding.max - funding.min"),
        _m("funding.max_exchange", "exchange", "where funding.max is", "str"),
        _m("funding.min_exchange", "exchange", "where funding.min is", "str"),
        _m("liq.long_usd", "USD", "long liquidations in the bar"),
        _m("liq.short_usd", "USD", "short liquidations in the bar"),
        _m("liq.total_usd", "USD", "all liquidations in the bar"),
        _m("ls.global_long_pct", "percent of accounts", "all accounts long"),
        _m("ls.global_short_pct", "percent of accounts", "all accounts short"),
        _m("ls.top_long_pct", "percent of accounts", "top-trader accounts long"),
        _m("ls.top_short_pct", "percent of accounts", "top-trader accounts short"),
        _m("taker.buy_usd", "USD", "taker buy volume in the bar"),
        _m("taker.sell_usd", "USD", "taker sell volume in the bar"),
        _m("taker.buy_pct", "percent", "buy / (buy + sell) x 100"),
        *DEPTH,
        *FUNDING_BY_EXCHANGE,
        _m("funding.count", "exchanges", "exchanges with a known 8 h rate in funding.max/min/avg"),
        *ETF,
        *OPTIONS,
        *PREMIUM_BASIS,
        *LIQ_HEATMAP,
    ]
}

#: Metric paths are "prefix.field"; these prefixes are the language's own.
CORE_PREFIXES = frozenset(name.split(".")[0] for name in CATALOGUE)


def metric_kind(name: str, extra: dict[str, Metric] | None = None) -> str | None:
    """ "num" or "str" for a known metric name, None for an unknown one."""
    m = CATALOGUE.get(name) or (extra or {}).get(name)
    return m.kind if m else None
