"""CoinGlass V4 payloads beyond the bar histories -> metric values (``shared/spec/coinglass-v4-more.md``).

Pure functions, shared by the live source (``coinglass.py``) and the saved-response reader
(``coinglass_files.py``); nothing here sends a request.

* ETF daily flows and net assets (:func:`etf_days`, :func:`daily_on_bars`): one value per US
  trading day, stamped 00:00 UTC of that day, known only once the day has closed
  (``known_after_ms`` after the stamp, 24 h by default). A bar gets the latest day known by its
  close; a day whose row is the feed's filler (the newest row: ``flow_usd`` 0 and every
  per-ETF flow null) is not data, so a bar whose latest known day is a filler is unknown.
  The value stays in force over days without rows (weekends, holidays) for at most
  :data:`DAILY_CARRY_MS`; after that it is unknown (a feed that stopped is not a quiet market).
* Options max pain (:func:`max_pain`) and options OI / volume (:func:`options_totals`): snapshots.
* Per-exchange funding (:func:`funding_by_exchange`): every exchange's stablecoin-margined rate,
  rescaled from its own ``funding_rate_interval`` to 8 h (an exchange without an interval is
  skipped and named), with the cross-exchange max/min/avg/spread.
* The liquidation heatmap (:func:`heatmap_levels`): liquidation value above and below the price
  within a band, and the nearest large cluster.

Every value that cannot be right (text that is no number, a time in seconds where milliseconds
belong, a filler row) is unknown, and each kind of problem is named once in the notes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from perpwatch.common.jsonsafe import finite_or_none
from perpwatch.common.timeutil import format_time
from perpwatch.language.metrics import FUNDING_EXCHANGES, exchange_slug

from ._rows import MS_FLOOR, check_times

DAY_MS = 86_400_000
#: A daily value stays in force over days without rows (a weekend plus a holiday) this long.
DAILY_CARRY_MS = 4 * DAY_MS
#: When a US trading day's ETF figures are known, after its 00:00 UTC stamp: once the day is over.
ETF_KNOWN_AFTER_MS = DAY_MS
#: Funding rates are compared per this many hours.
FUNDING_BASIS_HOURS = 8.0
#: Options expire at 08:00 UTC on their date (Deribit, OKX and Binance alike).
EXPIRY_HOUR_MS = 8 * 3_600_000

#: ETF coin -> (flow-history path, net-assets path).
ETF_PATHS = {
    "btc": ("/api/etf/bitcoin/flow-history", "/api/etf/bitcoin/net-assets/history"),
    "eth": ("/api/etf/ethereum/flow-history", "/api/etf/ethereum/net-assets/history"),
}
ETF_METRICS = {
    coin: frozenset({f"etf.{coin}_flow_usd", f"etf.{coin}_flow_cum_usd", f"etf.{coin}_net_assets_usd"})
    for coin in ETF_PATHS
}


def number(value: object) -> float | None:
    """A finite number (or a numeric string) as float; None for null, "" and anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return finite_or_none(value)


def is_bad_number(value: object) -> bool:
    """Present and meant as a value (not null or "") but not a finite number."""
    return value is not None and value != "" and number(value) is None


# --------------------------------------------------------------------------------------------
# ETF: daily rows onto intraday bars


@dataclass
class Days:
    """Daily values: day stamps (ms, ascending), values (NaN: unknown), which days are fillers."""

    days: np.ndarray
    values: dict[str, np.ndarray]
    filler: np.ndarray
    notes: list[str] = field(default_factory=list)


def _is_flow_filler(row: Mapping[str, Any]) -> bool:
    """The feed's newest row before the day's data arrives: net flow 0 (or null) and no per-ETF flow."""
    total = number(row.get("flow_usd"))
    if total not in (None, 0.0):
        return False
    per_etf = row.get("etf_flows")
    if per_etf is None:
        return True
    items = per_etf.tolist() if hasattr(per_etf, "tolist") else per_etf
    if not isinstance(items, list | tuple):
        return True
    return all(not isinstance(i, Mapping) or number(i.get("flow_usd")) is None for i in items)


def etf_days(
    flow_rows: Sequence[Mapping[str, Any]] | None,
    asset_rows: Sequence[Mapping[str, Any]] | None,
    coin: str,
    now_ms: int | None,
) -> Days:
    """``flow-history`` and ``net-assets/history`` rows -> daily ``etf.<coin>_*`` values.

    The cumulative flow sums every day's net flow from the first row; after a day whose flow is
    unknown (not a filler) it is unknown. Either list may be None (not fetched)."""
    notes: list[str] = []
    by_day: dict[int, dict[str, float]] = {}
    fillers: set[int] = set()
    flow_m, cum_m, assets_m = (f"etf.{coin}_{k}" for k in ("flow_usd", "flow_cum_usd", "net_assets_usd"))

    def usable(rows: Sequence[Mapping[str, Any]], what: str) -> list[tuple[int, Mapping[str, Any]]]:
        times, ok, said = check_times(rows, "timestamp", now_ms)
        notes.extend(f"{what}: {s}" for s in said)
        return [(int(t), row) for t, row, good in zip(times.tolist(), rows, ok.tolist(), strict=True) if good]

    bad: dict[str, list[object]] = {}
    for day, row in usable(flow_rows or [], f"{coin} ETF flows"):
        if _is_flow_filler(row):
            fillers.add(day)
            continue
        value = number(row.get("flow_usd"))
        if is_bad_number(row.get("flow_usd")):
            bad.setdefault(flow_m, []).append(row.get("flow_usd"))
        by_day.setdefault(day, {})[flow_m] = math.nan if value is None else value
    for day, row in usable(asset_rows or [], f"{coin} ETF net assets"):
        value = number(row.get("net_assets_usd"))
        if is_bad_number(row.get("net_assets_usd")):
            bad.setdefault(assets_m, []).append(row.get("net_assets_usd"))
        if value is None or value <= 0:  # a filler (0 or null): not data
            continue
        by_day.setdefault(day, {})[assets_m] = value
    for metric, examples in bad.items():
        notes.append(f"values that are not numbers, unknown: {metric} {len(examples)} (e.g. {examples[0]!r})")
    fillers -= {d for d, v in by_day.items() if flow_m in v}
    days = np.asarray(sorted(set(by_day) | fillers), dtype=np.int64)
    values: dict[str, np.ndarray] = {}
    if flow_rows is not None:
        flows = np.asarray([by_day.get(int(d), {}).get(flow_m, math.nan) for d in days])
        real = ~np.isin(days, list(fillers))
        steps = np.where(real, flows, 0.0)
        cum = np.cumsum(steps)
        unknown_from = np.flatnonzero(real & np.isnan(flows))
        if len(unknown_from):
            cum[int(unknown_from[0]) :] = math.nan
        values[flow_m] = flows
        values[cum_m] = np.where(real, cum, math.nan)
    if asset_rows is not None:
        values[assets_m] = np.asarray([by_day.get(int(d), {}).get(assets_m, math.nan) for d in days])
    filler = np.isin(days, list(fillers))
    if filler.any():
        notes.append(
            f"{coin} ETF flows: {int(filler.sum())} filler day(s) without data "
            f"(e.g. {format_time(int(days[filler][0]))}): unknown, not 0"
        )
    return Days(days, values, filler, notes)


def daily_on_bars(
    days: Days, grid: np.ndarray, step: int, known_after_ms: int = ETF_KNOWN_AFTER_MS
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Daily values onto bars, causally: (columns, observed times). See the module docstring."""
    n = len(grid)
    no_obs = np.iinfo(np.int64).min
    if not len(days.days):
        return (
            {name: np.full(n, math.nan) for name in days.values},
            {name: np.full(n, no_obs, dtype=np.int64) for name in days.values},
        )
    closes = np.asarray(grid, dtype=np.int64) + step
    known_at = days.days + known_after_ms
    idx = np.searchsorted(known_at, closes, side="right") - 1
    safe = np.maximum(idx, 0)
    in_force = (idx >= 0) & (closes - known_at[safe] <= DAILY_CARRY_MS)
    observed = np.where(in_force, grid, no_obs).astype(np.int64)
    cols = {name: np.where(in_force, values[safe], math.nan) for name, values in days.values.items()}
    return cols, {name: observed.copy() for name in cols}


# --------------------------------------------------------------------------------------------
# Options


def expiry_ms(date: object) -> int | None:
    """``"250422"`` (YYMMDD) -> 2025-04-22 08:00 UTC in ms; None for anything else."""
    text = str(date).strip() if isinstance(date, str | int) and not isinstance(date, bool) else ""
    if len(text) != 6 or not text.isdigit():
        return None
    try:
        day = datetime.strptime(text, "%y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(day.timestamp() * 1000) + EXPIRY_HOUR_MS


def max_pain(data: object, now_ms: int, chosen: str | None) -> tuple[dict[str, float], list[str]]:
    """``option/max-pain`` rows -> options.max_pain_near (the first expiry after now) and
    options.max_pain_chosen (the expiry ``chosen``, YYMMDD), with notes for what is unknown."""
    if not isinstance(data, list):
        raise ValueError(f"malformed max-pain data: expected a list, got {type(data).__name__}")
    notes: list[str] = []
    expiries: list[tuple[int, str, float | None]] = []
    bad_dates: list[object] = []
    bad_prices: list[object] = []
    for row in data:
        if not isinstance(row, Mapping):
            continue
        when = expiry_ms(row.get("date"))
        if when is None:
            bad_dates.append(row.get("date"))
            continue
        price = number(row.get("max_pain_price"))
        if price is None or price <= 0:
            bad_prices.append(row.get("max_pain_price"))
            price = None
        expiries.append((when, str(row["date"]).strip(), price))
    if bad_dates:
        notes.append(f"{len(bad_dates)} expiries without a YYMMDD date (e.g. {bad_dates[0]!r}) (ignored)")
    if bad_prices:
        notes.append(
            f"max_pain_price that is not a price, unknown: {len(bad_prices)} (e.g. {bad_prices[0]!r})"
        )
    out: dict[str, float] = {}
    ahead = sorted(e for e in expiries if e[0] > now_ms)
    if ahead:
        out["options.max_pain_near"] = math.nan if ahead[0][2] is None else ahead[0][2]
    else:
        notes.append("no expiry after now: options.max_pain_near unknown")
        out["options.max_pain_near"] = math.nan
    if chosen:
        hit = [e for e in expiries if e[1] == chosen]
        if hit and hit[0][2] is not None:
            out["options.max_pain_chosen"] = hit[0][2]
        else:
            listed = ", ".join(e[1] for e in sorted(expiries)) or "none"
            notes.append(f"expiry {chosen} is not listed (listed: {listed}): options.max_pain_chosen unknown")
            out["options.max_pain_chosen"] = math.nan
    else:
        out["options.max_pain_chosen"] = math.nan
        notes.append("options_expiry is not set: options.max_pain_chosen unknown")
    return out, notes


def options_totals(data: object) -> tuple[dict[str, float], list[str]]:
    """``option/info`` rows -> options.oi_usd and options.volume_usd_24h of the ``All`` row."""
    if not isinstance(data, list):
        raise ValueError(f"malformed option info: expected a list, got {type(data).__name__}")
    row = next(
        (r for r in data if isinstance(r, Mapping) and str(r.get("exchange_name", "")).lower() == "all"), None
    )
    if row is None:
        return {"options.oi_usd": math.nan, "options.volume_usd_24h": math.nan}, [
            "no 'All' row in option info: options totals unknown"
        ]
    notes = []
    out = {}
    for key, metric in (
        ("open_interest_usd", "options.oi_usd"),
        ("volume_usd_24h", "options.volume_usd_24h"),
    ):
        value = number(row.get(key))
        if value is None or value < 0:
            if row.get(key) not in (None, ""):
                notes.append(f"{metric}: {row.get(key)!r} is not an amount, unknown")
            value = math.nan
        out[metric] = value
    return out, notes


# --------------------------------------------------------------------------------------------
# Funding per exchange


@dataclass
class FundingByExchange:
    """Each exchange's rate per 8 h, and what was skipped (no interval, not a number, unlisted)."""

    rates: dict[str, float]
    notes: list[str]


def funding_by_exchange(entry: Mapping[str, Any], only: Iterable[str] | None) -> FundingByExchange:
    """The stablecoin-margined rates of one coin's exchange-list entry, each rescaled from its own
    ``funding_rate_interval`` (hours) to 8 h; ``only`` limits the exchanges (case-insensitive)."""
    allowed = None if only is None else {e.lower() for e in only}
    rates: dict[str, float] = {}
    no_interval: list[str] = []
    not_numbers: list[str] = []
    for item in entry.get("stablecoin_margin_list") or []:
        if not isinstance(item, Mapping):
            continue
        name = str(item.get("exchange", "")).strip()
        if not name or (allowed is not None and name.lower() not in allowed):
            continue
        raw = item.get("funding_rate")
        rate = number(raw)
        if rate is None:
            if is_bad_number(raw):
                not_numbers.append(f"{name} {raw!r}")
            continue
        hours = number(item.get("funding_rate_interval"))
        if hours is None or hours <= 0:
            no_interval.append(name)
            continue
        rates[name] = rate * FUNDING_BASIS_HOURS / hours
    notes = []
    if no_interval:
        notes.append(
            f"no funding interval for {', '.join(no_interval)}: their rates cannot be put on 8 h (left out)"
        )
    if not_numbers:
        notes.append(f"funding rates that are not numbers, unknown: {', '.join(not_numbers)}")
    return FundingByExchange(rates, notes)


def exchange_columns(rates: Mapping[str, float]) -> dict[str, float]:
    """``funding.ex.<slug>`` of every catalogued exchange: its rate, NaN when it has none."""
    by_slug = {exchange_slug(name): rate for name, rate in rates.items()}
    return {f"funding.ex.{slug}": by_slug.get(slug, math.nan) for slug in FUNDING_EXCHANGES}


def cross_exchange(rates: Mapping[str, float]) -> dict[str, float | str]:
    """funding.avg/max/min/spread/count and max/min_exchange over ``rates`` (at least one)."""
    hi = max(rates.items(), key=lambda r: r[1])
    lo = min(rates.items(), key=lambda r: r[1])
    return {
        "funding.avg": float(np.mean(list(rates.values()))),
        "funding.max": hi[1],
        "funding.min": lo[1],
        "funding.spread": hi[1] - lo[1],
        "funding.max_exchange": hi[0],
        "funding.min_exchange": lo[0],
        "funding.count": float(len(rates)),
    }


# --------------------------------------------------------------------------------------------
# Liquidation heatmap


def heatmap_levels(data: object, band_pct: float, cluster_share: float) -> tuple[dict[str, float], list[str]]:
    """A heatmap payload -> liqmap.above_usd / below_usd (levels within ``band_pct`` percent above
    and below the last close) and liqmap.cluster_dist_pct (signed percent from the price to the
    nearest level holding at least ``cluster_share`` of the map's total; unknown when none does).

    Values are summed over time per price level (``[x, y, value]`` triples; y indexes ``y_axis``).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"malformed heatmap: expected an object, got {type(data).__name__}")
    axis = data.get("y_axis")
    cells = data.get("liquidation_leverage_data")
    candles = data.get("price_candlesticks")
    if (
        not isinstance(axis, list)
        or not isinstance(cells, list)
        or not isinstance(candles, list)
        or not candles
    ):
        raise ValueError("malformed heatmap: y_axis, liquidation_leverage_data or price_candlesticks missing")
    prices = np.asarray([number(p) if number(p) is not None else math.nan for p in axis], dtype=float)
    last = candles[-1]
    price = number(last[4]) if isinstance(last, list) and len(last) > 4 else None
    if price is None or price <= 0:
        raise ValueError(f"malformed heatmap: the last candle has no close price ({last!r})")
    totals = np.zeros(len(prices))
    skipped = 0
    for cell in cells:
        if not isinstance(cell, list) or len(cell) < 3:
            skipped += 1
            continue
        y, value = cell[1], number(cell[2])
        if (
            isinstance(y, bool)
            or not isinstance(y, int)
            or not 0 <= y < len(prices)
            or value is None
            or value < 0
        ):
            skipped += 1
            continue
        totals[y] += value
    notes = [f"{skipped} heatmap cells that cannot be read (ignored)"] if skipped else []
    known = ~np.isnan(prices)
    rel = (prices - price) / price * 100.0
    above = known & (rel > 0) & (rel <= band_pct)
    below = known & (rel < 0) & (rel >= -band_pct)
    out = {"liqmap.above_usd": float(totals[above].sum()), "liqmap.below_usd": float(totals[below].sum())}
    total = float(totals[known].sum())
    large = known & (totals >= cluster_share * total) & (totals > 0)
    if large.any():
        nearest = int(np.argmin(np.where(large, np.abs(rel), np.inf)))
        out["liqmap.cluster_dist_pct"] = float(rel[nearest])
    else:
        out["liqmap.cluster_dist_pct"] = math.nan
        notes.append("no liquidation cluster in the heatmap: liqmap.cluster_dist_pct unknown")
    return out, notes


# --------------------------------------------------------------------------------------------
# Times in seconds where milliseconds belong (the premium index)


def seconds_to_ms(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Rows whose ``key`` is an epoch in seconds (below 1973 as ms) get it in ms; ms rows stay."""
    out = []
    for row in rows:
        t = number(row.get(key))
        if t is not None and t == int(t) and 0 < t < MS_FLOOR:
            row = {**row, key: int(t) * 1000}
        out.append(row)
    return out
