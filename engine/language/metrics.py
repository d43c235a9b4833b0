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
    ]
}

#: Metric paths are "prefix.field"; these prefixes are the language's own.
CORE_PREFIXES = frozenset(name.split(".")[0] for name in CATALOGUE)


def metric_kind(name: str, extra: dict[str, Metric] | None = None) -> str | None:
    """ "num" or "str" for a known metric name, None for an unknown one."""
    m = CATALOGUE.get(name) or (extra or {}).get(name)
    return m.kind if m else None
