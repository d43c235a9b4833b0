"""Saved CoinGlass V4 responses (one Parquet file per response) -> a :class:`Frame` of metrics.

A snapshot folder (such as ``coinglass-v4-liquidity-report/20251114/``) holds one file per
history endpoint, named after the request, anywhere below it::

    api_price_ohlc_history.parquet                                    price.*      (Binance BTCUSDT)
    api_futures_openInterest_ohlc_aggregated_history_<SYM>.parquet    oi.*
    api_futures_fundingRate_oi_weight_ohlc_history_<SYM>.parquet      funding.open/high/low/close
    api_futures_liquidation_aggregated_coin_history_<SYM>.parquet     liq.*
    api_futures_global_long_short_account_ratio_history.parquet       ls.global_*  (Binance BTCUSDT)
    api_futures_top_long_short_account_ratio_history.parquet          ls.top_*     (Binance BTCUSDT)
    api_futures_aggregated_taker_buy_sell_volume_history.parquet      taker.*      (BTC)
    api_futures_basis_history.parquet                                 basis.cg_*   (Binance BTCUSDT)
    api_coinbase_premium_index.parquet                                premium.*    (BTC's, any symbol;
                                                                                    times in seconds)
    api_futures_orderbook_ask_bids_history.parquet                    depth.*      (Binance BTCUSDT; only
    api_futures_orderbook_aggregated_ask_bids_history_<SYM>.parquet                with depth_range)
    api_etf_{bitcoin,ethereum}_flow_history.parquet                   etf.*_flow_usd, etf.*_flow_cum_usd
    api_etf_{bitcoin,ethereum}_net_assets_history.parquet             etf.*_net_assets_usd

    api_futures_fundingRate_ohlc_history_<SYM>_<EXCHANGE>.parquet     funding.ex.*, funding.max/min/avg/
                                                                      spread/count/*_exchange (with intervals)

The saved order-book responses do not record the ``range`` they were asked for, so they are read
only when ``depth_range`` (``convert-coinglass --depth-range``) says it; otherwise they are skipped
with a note. ETF files hold one row per US trading day, for every symbol: they are put on the
other responses' bars causally (``coinglass_market.daily_on_bars``), their filler rows unknown.
Per-exchange funding histories (8 h bars, percent per the exchange's own interval) need that
interval, which the saved responses do not record: ``funding_intervals`` (``convert-coinglass
--funding-interval binance=8``) gives it per exchange; the close of the 8 h bar opening at T is known
at T + 8 h, so it goes on the bars that close from then until the next one is due (never a
look-ahead), rescaled to 8 h, and the cross-exchange figures are taken over the exchanges known on
each bar, as the live source takes them over its current rates.

Each file's rows are the ``data`` items of the endpoint in ``perpwatch.plugins.coinglass.HISTORY``,
and they are mapped with exactly that table (fields -> metrics, derived metrics such as
``liq.total_usd`` and ``taker.buy_pct``) and the source's own ``align`` helper, so a converted
file holds what the live source would have fetched. Names without ``_<SYM>`` were saved for one
coin only (``bare_symbol``, BTC for that collection); ``_<SYM>_<SYM>`` (older snapshots) is
accepted too. The last row of every file is dropped (the bar was still open when it was saved);
leading rows whose every value is 0 (before the provider had data) are unknown, never 0; files
whose bars are not of the requested interval are skipped with a note in ``frame.problems``.

Snapshots are joined with :func:`join_frames`: the union of their bars, the newer snapshot's
value winning wherever both have one. :class:`SnapshotReader` is the history reader the CoinGlass
plugin registers for ``perpwatch backtest --data SNAPSHOT``; ``perpwatch convert-coinglass``
(``coinglass_convert.py``) writes the same frames as replay files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from perpwatch.api.history import PRICE_COLUMNS, History, HistoryReader
from perpwatch.common.errors import Loc, LocatedError, PerpwatchError
from perpwatch.common.timeutil import format_time, interval_ms
from perpwatch.evaluation.frame import Cat, Frame, join_frames
from perpwatch.language.metrics import FUNDING_EXCHANGES, exchange_slug

from ._http import align
from ._parquet import read_table, times_of
from ._rows import MS_FLOOR
from .coinglass import DEPTH_RANGES, HISTORY, HistoryEndpoint, depth_endpoint
from .coinglass_market import ETF_KNOWN_AFTER_MS, cross_exchange, daily_on_bars, etf_days, number

#: HISTORY key of ``perpwatch.plugins.coinglass`` -> the saved file's name stem.
FILE_STEMS: dict[str, str] = {
    "price": "api_price_ohlc_history",
    "oi": "api_futures_openInterest_ohlc_aggregated_history",
    "funding": "api_futures_fundingRate_oi_weight_ohlc_history",
    "liq": "api_futures_liquidation_aggregated_coin_history",
    "ls_global": "api_futures_global_long_short_account_ratio_history",
    "ls_top": "api_futures_top_long_short_account_ratio_history",
    "taker": "api_futures_aggregated_taker_buy_sell_volume_history",
    "basis": "api_futures_basis_history",
    "premium": "api_coinbase_premium_index",
}
#: Responses that are the same for every symbol (the BTC premium index).
GLOBAL_KEYS = frozenset({"premium"})
#: Order-book responses: key -> (stem, aggregated); read only with a known ``range``.
DEPTH_STEMS = {
    "depth": ("api_futures_orderbook_ask_bids_history", False),
    "depth_aggregated": ("api_futures_orderbook_aggregated_ask_bids_history", True),
}
#: ETF responses (one row per US trading day, for every symbol): coin -> (flows stem, net assets stem).
ETF_STEMS = {
    "btc": ("api_etf_bitcoin_flow_history", "api_etf_bitcoin_net_assets_history"),
    "eth": ("api_etf_ethereum_flow_history", "api_etf_ethereum_net_assets_history"),
}


class SnapshotError(PerpwatchError):
    """A snapshot folder that cannot be read or holds nothing usable."""


@dataclass(frozen=True)
class SnapshotFile:
    """One saved response: which endpoint it answers and where it is."""

    key: str
    path: Path


def find_files(folder: str | os.PathLike[str], symbol: str, bare_symbol: str = "BTC") -> list[SnapshotFile]:
    """The saved responses for ``symbol`` under ``folder``, one per endpoint (first match wins)."""
    root = Path(folder)
    if not root.is_dir():
        raise SnapshotError(f"{folder}: not a folder")
    by_name: dict[str, Path] = {}
    for p in sorted(root.rglob("*.parquet")):
        by_name.setdefault(p.stem, p)
    sym = symbol.upper()
    out = []
    stems = {**FILE_STEMS, **{key: stem for key, (stem, _) in DEPTH_STEMS.items()}}
    for key, stem in stems.items():
        names = [f"{stem}_{sym}", f"{stem}_{sym}_{sym}"]
        if sym == bare_symbol.upper() or key in GLOBAL_KEYS:
            names.append(stem)
        path = next((by_name[n] for n in names if n in by_name), None)
        if path is not None:
            out.append(SnapshotFile(key, path))
    return out


def read_response(file: SnapshotFile, step: int, endpoint: HistoryEndpoint | None = None) -> Frame:
    """One saved response -> metric columns on its own bars (last row dropped).

    Uses the CoinGlass source's endpoint table and ``align`` helper. Raises SnapshotError when
    the bars are not ``step`` ms apart, and a located error for a file that is not a readable
    Parquet file or whose ``time`` column is not epoch milliseconds (checked as replay files'
    are: a unit by magnitude, 1973..9999); its other values are read as the live source reads
    the API's (what is not a number is unknown).
    """
    path = str(file.path)
    table = read_table(path)
    if "time" not in table.column_names:
        raise LocatedError(Loc(path), f"no 'time' column (it has {', '.join(map(str, table.column_names))})")
    column = table.column("time")
    if endpoint is None and HISTORY[file.key].seconds:  # stamped in seconds (the premium index)
        column = seconds_column(column)
    times_all = times_of(column, path)
    rows = table.drop_columns(["time"]).to_pylist() if table.num_columns > 1 else [{} for _ in times_all]
    for row, t in zip(rows, times_all.tolist(), strict=True):
        row["time"] = t
    endpoint = endpoint or HISTORY[file.key]
    rows.sort(key=lambda r: int(r["time"]))
    rows = rows[:-1]  # the newest bar was still open when the response was saved
    times = np.unique(np.asarray([int(r["time"]) for r in rows], dtype=np.int64))
    if len(times) > 1:
        diffs, counts = np.unique(np.diff(times), return_counts=True)
        usual = int(diffs[np.argmax(counts)])
        if usual != step:
            raise SnapshotError(f"{file.path.name}: its bars are {_span(usual)} apart, not {_span(step)}")
    frame = align(rows, "time", endpoint.fields, times)
    _blank_leading_zeros(frame)
    for name, derive in endpoint.derived.items():
        frame.columns[name] = derive(frame.columns)
    return frame


def seconds_column(column: Any) -> Any:
    """An integer time column in epoch seconds as milliseconds (values that are ms already stay)."""
    import pyarrow as pa

    if not pa.types.is_integer(column.type) and not pa.types.is_floating(column.type):
        return column
    values = column.to_numpy()
    return pa.array(np.where(np.abs(values) < MS_FLOOR, values * 1000, values))


def _blank_leading_zeros(frame: Frame) -> None:
    """Rows before the first with any non-zero value carry no data: make them unknown."""
    cols = [c for c in frame.columns.values() if isinstance(c, np.ndarray)]
    if not cols or not len(frame):
        return
    nonzero = np.any([np.nan_to_num(c, nan=0.0) != 0 for c in cols], axis=0)
    first = int(np.argmax(nonzero)) if nonzero.any() else len(frame)
    for c in cols:
        c[:first] = np.nan


def _span(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


def _depth_endpoint(key: str, depth_range: str | None) -> HistoryEndpoint | str:
    """The endpoint a saved order-book response answers, or why it cannot be read."""
    stem, aggregated = DEPTH_STEMS[key]
    if depth_range is None:
        return (
            f"skipped {stem}: the saved order-book responses do not record the range (percent) they "
            f"were asked for; pass --depth-range (e.g. 1) if you know it"
        )
    suffix = next((s for s, r in DEPTH_RANGES.items() if float(r) == float(depth_range)), "")
    return depth_endpoint(suffix, depth_range, aggregated)


def load_snapshot(
    folder: str | os.PathLike[str],
    symbol: str,
    interval: str,
    bare_symbol: str = "BTC",
    depth_range: str | None = None,
    funding_intervals: Mapping[str, float] | None = None,
) -> Frame:
    """Every usable response of one snapshot folder as one Frame; notes in ``frame.problems``.

    ``depth_range``: the range (percent) the saved order-book responses were asked with; without it
    they are skipped with a note. The pair order book wins over the aggregated one."""
    step = interval_ms(interval)
    frame = Frame(np.zeros(0, dtype=np.int64))
    notes: list[str] = []
    files = find_files(folder, symbol, bare_symbol)
    found = {f.key for f in files}
    if "depth" in found:
        files = [f for f in files if f.key != "depth_aggregated"]
    for file in files:
        endpoint = _depth_endpoint(file.key, depth_range) if file.key in DEPTH_STEMS else None
        if isinstance(endpoint, str):
            notes.append(endpoint)
            continue
        try:
            part = read_response(file, step, endpoint)
        except SnapshotError as e:
            notes.append(f"skipped {e}")
            continue
        frame = frame.merge(part)
    absent = [FILE_STEMS[k] for k in FILE_STEMS if k not in found and k not in ("basis", "premium")]
    if absent:
        notes.append(f"{folder}: no {symbol} response for {', '.join(absent)}")
    if len(frame):
        add_etf(frame, folder, step, notes)
        add_exchange_funding(frame, folder, symbol, step, funding_intervals or {}, notes)
    frame.problems = notes
    return frame


FUNDING_BY_EXCHANGE_PREFIX = "api_futures_fundingRate_ohlc_history_"


def add_exchange_funding(
    frame: Frame,
    folder: str | os.PathLike[str],
    symbol: str,
    step: int,
    intervals: Mapping[str, float],
    notes: list[str],
) -> None:
    """Per-exchange funding histories of ``symbol`` onto ``frame``'s bars (in place); see the
    module docstring. ``intervals``: exchange slug (``binance``, ``crypto_com``) -> hours."""
    prefix = f"{FUNDING_BY_EXCHANGE_PREFIX}{symbol.upper()}_"
    paths: dict[str, Path] = {}
    for p in sorted(Path(folder).rglob(f"{prefix}*.parquet")):
        paths.setdefault(p.stem[len(prefix) :], p)
    if not paths:
        return
    closes = frame.times + step
    rates: dict[str, np.ndarray] = {}
    no_interval: list[str] = []
    for raw, path in paths.items():
        slug = exchange_slug(raw)
        name = FUNDING_EXCHANGES.get(slug, raw.title())
        hours = intervals.get(slug)
        if hours is None:
            no_interval.append(slug)
            continue
        table = read_table(str(path))
        if "time" not in table.column_names or "close" not in table.column_names:
            raise LocatedError(
                Loc(str(path)), f"no 'time' and 'close' columns (it has {', '.join(table.column_names)})"
            )
        stamps = times_of(table.column("time"), str(path))
        order = np.argsort(stamps, kind="stable")[:-1]  # the last bar was still open when saved
        times = stamps[order]
        closes_raw = table.column("close").to_pylist()
        rows = [{"close": closes_raw[int(k)]} for k in order]
        if len(times) < 2:
            continue
        own = int(np.median(np.diff(times)))
        values = np.asarray(
            [number(r.get("close")) if number(r.get("close")) is not None else np.nan for r in rows]
        )
        bad = sum(1 for r in rows if r.get("close") not in (None, "") and number(r.get("close")) is None)
        if bad:
            notes.append(f"{path.name}: {bad} funding closes that are not numbers, unknown")
        known_at = times + own
        idx = np.searchsorted(known_at, closes, side="right") - 1
        safe = np.maximum(idx, 0)
        fresh = (idx >= 0) & (closes - known_at[safe] < own)
        rates[name] = np.where(fresh, values[safe] * 8.0 / hours, np.nan)
        frame.columns[f"funding.ex.{slug}"] = rates[name]
    if no_interval:
        notes.append(
            f"per-exchange funding of {', '.join(no_interval)} skipped: the saved responses do not record "
            f"each exchange's funding interval; pass --funding-interval {no_interval[0]}=HOURS (8 for most)"
        )
    if rates:
        _cross_exchange_columns(frame, rates)


def _cross_exchange_columns(frame: Frame, rates: Mapping[str, np.ndarray]) -> None:
    n = len(frame)
    cols: dict[str, list[object]] = {}
    for i in range(n):
        known = {name: float(col[i]) for name, col in rates.items() if not np.isnan(col[i])}
        stats: Mapping[str, object] = cross_exchange(known) if known else {}
        for key in ("funding.avg", "funding.max", "funding.min", "funding.spread", "funding.count",
                    "funding.max_exchange", "funding.min_exchange"):  # fmt: skip
            cols.setdefault(key, []).append(stats.get(key))
    for key, values in cols.items():
        if key.endswith("_exchange"):
            frame.columns[key] = Cat.from_values(values)
        else:
            frame.columns[key] = np.asarray([np.nan if v is None else v for v in values], dtype=float)


def read_rows(path: Path, time_key: str) -> list[dict[str, object]]:
    """The rows of a saved list response, ``time_key`` checked and in ms (located errors)."""
    table = read_table(str(path))
    if time_key not in table.column_names:
        raise LocatedError(Loc(str(path)), f"no {time_key!r} column (it has {', '.join(table.column_names)})")
    times = times_of(table.column(time_key), str(path), time_key)
    rows = table.to_pylist()
    for row, t in zip(rows, times.tolist(), strict=True):
        row[time_key] = t
    return rows


def add_etf(frame: Frame, folder: str | os.PathLike[str], step: int, notes: list[str]) -> None:
    """The ETF responses under ``folder`` onto ``frame``'s bars, causally (in place)."""
    by_name: dict[str, Path] = {}
    for p in sorted(Path(folder).rglob("api_etf_*.parquet")):
        by_name.setdefault(p.stem, p)
    for coin, (flow_stem, assets_stem) in ETF_STEMS.items():
        flows_path, assets_path = by_name.get(flow_stem), by_name.get(assets_stem)
        if flows_path is None and assets_path is None:
            continue
        flows = read_rows(flows_path, "timestamp") if flows_path else None
        assets = read_rows(assets_path, "timestamp") if assets_path else None
        days = etf_days(flows, assets, coin, None)
        notes.extend(days.notes)
        cols, _ = daily_on_bars(days, frame.times, step, ETF_KNOWN_AFTER_MS)
        frame.columns.update(cols)


def load_snapshots(
    folders: Iterable[str | os.PathLike[str]],
    symbol: str,
    interval: str,
    bare_symbol: str = "BTC",
    depth_range: str | None = None,
    funding_intervals: Mapping[str, float] | None = None,
) -> Frame:
    """Several snapshot folders joined: the one with the newest bar wins on overlapping bars."""
    frames = [
        load_snapshot(f, symbol, interval, bare_symbol, depth_range, funding_intervals) for f in folders
    ]
    frames.sort(key=lambda f: int(f.times[-1]) if len(f) else -1)  # stable: ties keep the given order
    return trim(join_frames(frames))


def trim(frame: Frame) -> Frame:
    """The frame without its leading and trailing bars on which every column is unknown."""
    if not len(frame) or not frame.columns:
        return Frame(frame.times[:0], {k: v[:0] for k, v in frame.columns.items()}, problems=frame.problems)
    known = np.zeros(len(frame), dtype=bool)
    for col in frame.columns.values():
        known |= (col.codes >= 0) if isinstance(col, Cat) else ~np.isnan(col)
    if not known.any():
        lo = hi = 0
    else:
        lo, hi = int(np.argmax(known)), len(known) - int(np.argmax(known[::-1]))
    out = frame.slice(lo, hi)
    out.problems = frame.problems
    return out


def gaps(times: np.ndarray, step: int) -> list[tuple[int, int]]:
    """(first missing, last missing) open times of every hole in a bar timeline."""
    out = []
    for i in np.flatnonzero(np.diff(times) > step).tolist():
        out.append((int(times[i]) + step, int(times[i + 1]) - step))
    return out


def describe_gaps(times: np.ndarray, step: int, limit: int = 5) -> list[str]:
    """Readable lines for the holes in a timeline (at most ``limit``, then a count)."""
    holes = gaps(times, step)
    lines = [
        f"missing {(b - a) // step + 1} bar(s) {format_time(a)} .. {format_time(b)}" for a, b in holes[:limit]
    ]
    if len(holes) > limit:
        lines.append(f"... and {len(holes) - limit} more gaps")
    return lines


def _other_interval(notes: Iterable[str]) -> str:
    """What to pass when a note says the price response was skipped for another interval
    (" (its price bars are 4h apart: pass --interval 4h)"), else ""."""
    for note in notes:
        m = re.search(r"api_price_ohlc_history\.parquet: its bars are (\w+) apart", note)
        if m:
            return f" (its price bars are {m[1]} apart: pass --interval {m[1]})"
    return ""


def _has_numbers(col: np.ndarray | Cat | None) -> bool:
    return isinstance(col, np.ndarray) and not np.isnan(col).all()


class SnapshotReader(HistoryReader):
    """``--data`` as one or more snapshot folders, joined (the newer wins where they overlap).

    Symbols default to BTC and ETH, each kept when the snapshots hold its price bars; the notes
    list the problems of every response and the gaps in each symbol's bars.
    """

    name: ClassVar[str] = "coinglass"
    describes: ClassVar[str] = "a CoinGlass snapshot folder"
    priority: ClassVar[int] = 20

    def accepts(self, paths: Sequence[str]) -> bool:
        """Every path is a folder with Parquet files below it."""
        return all(os.path.isdir(p) and any(Path(p).rglob("*.parquet")) for p in paths)

    def load(self, paths: Sequence[str], interval: str, symbols: Sequence[str] | None) -> History:
        frames: dict[str, Frame] = {}
        notes: list[str] = []
        other = ""  # the price bars' own interval, when it is not the one asked for
        for sym in symbols or ["BTC", "ETH"]:
            if not any(find_files(p, sym) for p in paths):
                if symbols:
                    raise PerpwatchError(f"--data: no CoinGlass responses for {sym} in {', '.join(paths)}")
                continue
            frame = load_snapshots(paths, sym, interval)
            has_price = all(_has_numbers(frame.columns.get(c)) for c in PRICE_COLUMNS)
            if not has_price:
                hint = _other_interval(frame.problems)
                other = other or hint
                if symbols:
                    raise PerpwatchError(
                        f"--data: the snapshots hold no {interval} price bars for {sym}{hint}"
                    )
                notes.append(f"{sym}: skipped, the snapshots hold no {interval} price bars for it{hint}")
                continue
            notes += [f"{sym}: {p}" for p in dict.fromkeys(frame.problems)]
            notes += [f"{sym}: {line}" for line in describe_gaps(frame.times, interval_ms(interval))]
            frames[sym] = frame
        if not frames:
            raise PerpwatchError(f"--data: no {interval} price history in {', '.join(paths)}{other}")
        source = "CoinGlass snapshot" + ("s " if len(paths) > 1 else " ") + " + ".join(paths)
        return History(frames, interval, source, notes)
