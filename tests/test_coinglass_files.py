"""Saved CoinGlass V4 responses -> metrics: the real files of ../shared/data (see SOURCES.md there).

Known bars, units, no zeros for missing values, the dropped incomplete bar, the joined one-year 4h
timeline, and the proof that the converter maps fields exactly as the live CoinGlass source does.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import COINGLASS_REPORT, invoke

from perpwatch.api.interfaces import FetchRequest, PluginContext
from perpwatch.common.clock import FakeClock
from perpwatch.common.timeutil import HOUR, format_time, parse_time
from perpwatch.evaluation.frame import Frame
from perpwatch.plugins import coinglass_files as cf
from perpwatch.plugins.coinglass import HISTORY, CoinGlassSource
from perpwatch.plugins.replay import ReplaySource, load_replay_file

pytest.importorskip("pyarrow")

REPORT = COINGLASS_REPORT
NOV, MAY, OLD = REPORT / "20251114", REPORT / "20250529", REPORT / "20250512-old-v2"
H4 = 4 * HOUR
CRASH = parse_time("2025-10-10T20:00:00Z")

pytestmark = pytest.mark.skipif(
    not (NOV.is_dir() and MAY.is_dir()), reason=f"the saved CoinGlass responses are not at {REPORT}"
)


@pytest.fixture(scope="module")
def nov() -> Frame:
    return cf.load_snapshot(NOV, "BTC", "4h")


@pytest.fixture(scope="module")
def year() -> Frame:
    return cf.load_snapshots([NOV, MAY], "BTC", "4h")


def at(frame: Frame, when: int) -> dict[str, float]:
    i = int(np.searchsorted(frame.times, when))
    assert frame.times[i] == when, format_time(when)
    return {name: float(col[i]) for name, col in frame.columns.items()}


def test_the_crash_bar(nov: Frame) -> None:
    """2025-10-10 20:00 UTC: the perp low, the OI flush, the largest liquidations, funding negative."""
    bar, before = at(nov, CRASH), at(nov, CRASH - H4)
    assert bar["price.low"] == 101516.5
    assert (bar["price.open"], bar["price.high"], bar["price.close"]) == (116605.2, 117145.3, 112714.9)
    assert bar["oi.open"] == 85765445784 and bar["oi.close"] == 70505795930  # $85.8 B -> $70.5 B, USD
    assert before["oi.close"] == bar["oi.open"]
    assert bar["liq.long_usd"] == 235601013.09389 and bar["liq.short_usd"] == 107461506.04199
    assert bar["liq.total_usd"] == bar["liq.long_usd"] + bar["liq.short_usd"]
    assert round(bar["liq.total_usd"] / 1e6) == 343
    assert int(np.nanargmax(nov.columns["liq.total_usd"])) == int(np.searchsorted(nov.times, CRASH))
    assert before["funding.close"] > 0 > bar["funding.close"] == -0.010923  # percent, as CoinGlass sends it
    eth = cf.load_snapshot(NOV, "ETH", "4h")
    assert round(at(eth, CRASH)["liq.total_usd"] / 1e6) == 498
    assert int(np.nanargmax(eth.columns["liq.total_usd"])) == int(np.searchsorted(eth.times, CRASH))


def test_units(year: Frame) -> None:
    c = year.columns
    ok = ~np.isnan(c["oi.close"])
    assert np.nanmin(c["oi.close"]) > 4e10 and np.nanmax(c["oi.close"]) < 1.2e11  # USD, all exchanges
    assert np.nanmin(c["price.low"]) > 7e4 and np.nanmax(c["price.high"]) < 1.3e5  # USD
    assert np.nanmax(np.abs(c["funding.close"])) < 0.2  # percent per interval (0.01 = 0.01 %)
    pct = c["ls.global_long_pct"] + c["ls.global_short_pct"]
    assert np.allclose(pct[ok], 100, atol=0.02) and np.nanmax(c["ls.top_long_pct"]) < 100  # percent 0-100
    buy, sell = c["taker.buy_usd"], c["taker.sell_usd"]
    assert np.allclose(c["taker.buy_pct"], buy / (buy + sell) * 100, equal_nan=True)
    assert np.array_equal(c["liq.total_usd"], c["liq.long_usd"] + c["liq.short_usd"], equal_nan=True)


def test_the_last_incomplete_bar_is_dropped(nov: Frame) -> None:
    assert format_time(int(nov.times[-1])) == "2025-11-14T12:00:00Z"  # the saved files end at 16:00


def test_missing_is_unknown_never_zero(nov: Frame) -> None:
    """The Nov price file starts 4 days before the other responses: those bars have no OI, not 0."""
    assert format_time(int(nov.times[0])) == "2025-05-14T16:00:00Z"
    first = at(nov, nov.times[0])
    assert first["price.close"] == 103278.7
    for name in ("oi.close", "funding.close", "liq.total_usd", "ls.top_long_pct", "taker.buy_pct"):
        assert np.isnan(first[name]), name
    for name in ("price.close", "price.low", "oi.close", "oi.low", "ls.global_long_pct", "taker.buy_usd"):
        assert not (nov.columns[name] == 0).any(), name


def test_leading_zero_rows_before_the_provider_had_data_are_unknown() -> None:
    if not OLD.is_dir():
        pytest.skip(f"no {OLD}")
    daily = cf.load_snapshot(OLD, "BTC", "1d")
    liq = daily.columns["liq.long_usd"]
    first = int(np.flatnonzero(~np.isnan(liq))[0])
    assert format_time(int(daily.times[first])) == "2020-12-23T00:00:00Z"
    assert np.isnan(liq[:first]).all() and liq[first] > 0  # the file has 0.0 there, from 2013 on
    assert round(at(daily, parse_time("2021-05-19"))["liq.long_usd"] / 1e6) == 146
    assert any("4h apart, not 1d" in p for p in daily.problems)  # the 4h price file is skipped


def test_joined_year_is_one_continuous_4h_timeline(year: Frame) -> None:
    assert format_time(int(year.times[0])) == "2024-11-29T20:00:00Z"
    assert format_time(int(year.times[-1])) == "2025-11-14T12:00:00Z"
    assert set(np.diff(year.times).tolist()) == {H4}
    assert cf.gaps(year.times, H4) == []
    full = year.times >= parse_time("2024-11-30T20:00:00Z")  # every response has started
    for name, col in year.columns.items():
        assert not np.isnan(col[full]).any(), name


def test_newer_snapshot_wins_on_overlap(year: Frame, nov: Frame) -> None:
    may = cf.load_snapshot(MAY, "BTC", "4h")
    common = np.intersect1d(may.times, nov.times)
    old, new = may.reindex(common).columns["liq.long_usd"], nov.reindex(common).columns["liq.long_usd"]
    revised = np.flatnonzero(~np.isnan(old) & ~np.isnan(new) & (old != new))
    assert len(revised) > 0  # liquidations were revised between the fetches (SOURCES.md)
    t = int(common[revised[0]])
    assert at(year, t)["liq.long_usd"] == at(nov, t)["liq.long_usd"] != at(may, t)["liq.long_usd"]
    # where only the older snapshot knows a value, it is kept
    t_old = int(common[np.flatnonzero(~np.isnan(old) & np.isnan(new))[0]])
    assert at(year, t_old)["liq.long_usd"] == at(may, t_old)["liq.long_usd"]
    swapped = cf.load_snapshots([MAY, NOV], "BTC", "4h")
    for name, col in year.columns.items():
        assert np.array_equal(swapped.columns[name], col, equal_nan=True), name


def test_same_mapping_as_the_live_source(nov: Frame) -> None:
    """The saved responses served to CoinGlassSource give exactly the converted frame."""
    files = {f.key: f.path for f in cf.find_files(NOV, "BTC")}
    import pyarrow.parquet as pq

    rows = {HISTORY[key].path: pq.read_table(path).to_pylist() for key, path in files.items()}

    def handler(request: httpx.Request) -> httpx.Response:
        p = request.url.params
        lo, hi, limit = int(p["start_time"]), int(p["end_time"]), int(p["limit"])
        data = [r for r in rows[request.url.path] if lo <= r["time"] <= hi][:limit]
        return httpx.Response(200, content=json.dumps({"code": "0", "msg": "success", "data": data}))

    last_saved = max(r["time"] for r in rows[HISTORY["oi"].path])
    clock = FakeClock(start=(last_saved + HOUR) / 1000)  # the newest saved bar is still open
    ctx = PluginContext(clock=clock, transport=httpx.MockTransport(handler))
    source = CoinGlassSource({"api_key": "k", "plan": "professional"}, ctx)
    metrics = frozenset().union(*(HISTORY[key].metrics for key in files))  # the endpoints saved
    start = parse_time("2025-05-18T20:00:00Z")
    live = asyncio.run(source.fetch(FetchRequest("BTC", "4h", metrics, start, last_saved)))
    assert live.problems == []
    assert format_time(int(live.times[-1])) == "2025-11-14T12:00:00Z"
    conv = nov.reindex(live.times)
    assert sorted(conv.columns) == sorted(metrics)
    for name in metrics:
        assert np.array_equal(live.columns[name], conv.columns[name], equal_nan=True), name


def test_convert_command_writes_replay_files(tmp_path: Path, year: Frame) -> None:
    out = tmp_path / "data"
    result = invoke("convert-coinglass", NOV, MAY, "--symbol", "BTC,eth", "--out", out)
    assert result.exit_code == 0, result.output
    assert (
        f"wrote {out / 'BTC_4h.csv'}: 2099 bars 2024-11-29T20:00:00Z .. 2025-11-14T12:00:00Z, 25 metrics"
        in result.stdout
    )
    assert "no ETH response for api_price_ohlc_history" in result.stderr
    back = load_replay_file(out / "BTC_4h.csv")
    assert np.array_equal(back.times, year.times)
    for name, col in year.columns.items():
        assert np.array_equal(back.columns[name], col, equal_nan=True), name
    eth = load_replay_file(out / "ETH_4h.csv")
    assert "price.close" not in eth.columns and "oi.close" in eth.columns
    source = ReplaySource({"path": str(out)})
    bar = asyncio.run(source.fetch(FetchRequest("BTC", "4h", frozenset({"price.low"}), CRASH, CRASH)))
    assert bar.columns["price.low"].tolist() == [101516.5]


def test_convert_command_errors(tmp_path: Path) -> None:
    empty = invoke("convert-coinglass", tmp_path, "--symbol", "BTC", "--out", tmp_path / "o")
    assert empty.exit_code == 2
    assert f"error: no 4h data for BTC in {tmp_path}" in empty.stderr
    missing = invoke("convert-coinglass", tmp_path / "nope", "--symbol", "BTC", "--out", "o")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    daily = invoke("convert-coinglass", NOV, "--symbol", "BTC", "--interval", "1d", "--out", tmp_path)
    assert daily.exit_code == 2 and "its bars are 4h apart, not 1d" in daily.stderr
