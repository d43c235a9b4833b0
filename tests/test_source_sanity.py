"""Data that arrives but cannot be right: timestamps in seconds, bars dated in the future, rows
without their fields, values that are not numbers, not finite or impossible (a negative price,
open interest or volume, a percentage over 100). Each kind is named once per fetch and endpoint
(never once per row), the values are unknown, and a batch with nothing usable fails its endpoint
so rules needing it are held rather than resolved; the runner logs it once per cycle."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.market import FakeMarket
from helpers import H

from perpwatch.api.interfaces import FetchRequest, PluginContext
from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.evaluation.frame import Frame
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, Instance
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore
from perpwatch.plugins._http import align
from perpwatch.plugins.binance import BinanceSource
from perpwatch.plugins.coinglass import CoinGlassSource

OPEN_BAR = 1763136000000
NOW = (OPEN_BAR + H // 2) / 1000
START = OPEN_BAR - 47 * H
KEY = "cg-sanity-key-31337"
CG_OI = "/api/futures/open-interest/aggregated-history"
CG_PRICE = "/api/futures/price/history"
CG_LS = "/api/futures/global-long-short-account-ratio/history"
BN_KLINES = "/fapi/v1/klines"
BN_OI = "/futures/data/openInterestHist"
FAST = {"timeout": 5, "retries": 0}
YEAR = 365 * 24 * H

Rows = list[Any]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def market(clock: FakeClock) -> Iterator[FakeMarket]:
    with FakeMarket(clock=clock, api_key=KEY) as m:
        m.generate("BTC", "1h", START, 48, seed=11)
        yield m


def fetch(plugin: str, market: FakeMarket, clock: FakeClock, metrics: set[str]) -> Frame:
    """``metrics`` and the healthy price.close and oi.close (so that one endpoint failing is not
    every endpoint failing, which would raise)."""
    metrics = metrics | {"price.close", "oi.close"}
    ctx = PluginContext(clock=clock)
    if plugin == "coinglass":
        src: Any = CoinGlassSource({"base_url": market.base_url, "api_key": KEY, **FAST}, ctx)
    else:
        src = BinanceSource({"base_url": market.base_url, **FAST}, ctx)

    async def go() -> Frame:
        try:
            return await src.fetch(FetchRequest("BTC", "1h", frozenset(metrics), START, OPEN_BAR))
        finally:
            await src.aclose()

    return asyncio.run(go())


def expected(market: FakeMarket, metric: str) -> np.ndarray:
    return market._lookup("BTC", "1h").columns[metric][:47]


def each(change: Callable[[int, Any], Any]) -> Callable[[Rows], Rows]:
    """A "rewrite" fault: ``change(i, row)`` for every row (CoinGlass dicts, Binance arrays)."""
    return lambda rows: [change(i, row) for i, row in enumerate(rows)]


def set_time(row: Any, value: Any) -> Any:
    if isinstance(row, list):
        return [value, *row[1:]]
    return {**row, ("timestamp" if "timestamp" in row else "time"): value}


def time_of(row: Any) -> int:
    return int(row[0]) if isinstance(row, list) else int(row.get("time", row.get("timestamp")))


def set_field(row: Any, key: Any, value: Any) -> Any:
    if isinstance(row, list):
        return [value if i == key else v for i, v in enumerate(row)]
    return {**row, key: value}


# which endpoint, which metric it fills, and the row field (or kline position) of that metric
ENDPOINTS = [
    ("coinglass", CG_OI, "oi.close", "close"),
    ("coinglass", CG_PRICE, "price.close", "close"),
    ("binance", BN_KLINES, "price.close", 4),
    ("binance", BN_OI, "oi.close", "sumOpenInterestValue"),
]


def one_note(frame: Frame, *words: str) -> str:
    """The one problem of ``frame``, which names the endpoint and has all ``words``."""
    assert len(frame.problems) == 1, frame.problems
    note = frame.problems[0]
    for word in words:
        assert word in note, note
    return note


@pytest.mark.parametrize(("plugin", "path", "metric", "key"), ENDPOINTS)
def test_timestamps_in_seconds_fail_the_endpoint_with_one_reason(plugin, path, metric, key, market, clock):
    market.fail(path, "rewrite", rows=each(lambda i, r: set_time(r, time_of(r) // 1000)))
    frame = fetch(plugin, market, clock, {metric})
    assert metric not in frame.columns  # missing, so rules needing it are held, not resolved
    note = one_note(frame, path, "seconds instead of milliseconds", "no row falls on the requested bars")
    assert str(START // 1000) in note or str(OPEN_BAR // 1000) in note or "e.g." in note


@pytest.mark.parametrize(("plugin", "path", "metric", "key"), ENDPOINTS)
def test_rows_dated_in_the_future_are_named_and_ignored(plugin, path, metric, key, market, clock):
    newest = 3  # the three newest rows jump a year ahead; the rest are fine
    market.fail(path, "rewrite", rows=lambda rows: [
        set_time(r, time_of(r) + YEAR) if i >= len(rows) - newest else r for i, r in enumerate(rows)
    ])  # fmt: skip
    frame = fetch(plugin, market, clock, {metric})
    one_note(frame, path, "rows are dated in the future", "ignored")
    column = frame.columns[metric]
    assert np.isnan(column[-3:]).all()  # those bars are not served any more: unknown
    assert column[:-3].tolist() == expected(market, metric)[:-3].tolist()


@pytest.mark.parametrize(("plugin", "path", "metric", "key"), ENDPOINTS)
def test_every_row_in_the_future_fails_the_endpoint(plugin, path, metric, key, market, clock):
    market.fail(path, "rewrite", rows=each(lambda i, r: set_time(r, time_of(r) + YEAR)))
    frame = fetch(plugin, market, clock, {metric})
    assert metric not in frame.columns
    one_note(frame, path, "dated in the future", "no row falls on the requested bars")


@pytest.mark.parametrize(("plugin", "path", "metric", "key"), ENDPOINTS)
def test_negative_values_are_unknown_and_named_once(plugin, path, metric, key, market, clock):
    bad = {5, 9, 20}
    market.fail(path, "rewrite", rows=each(lambda i, r: set_field(r, key, -1234.5) if i in bad else r))
    frame = fetch(plugin, market, clock, {metric})
    one_note(frame, path, "impossible values", metric, "3", "-1234.5")
    column = frame.columns[metric]
    want = expected(market, metric).copy()
    want[list(bad)] = np.nan
    assert np.array_equal(column, want, equal_nan=True)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("NaN", ["not finite"]),
        ("Infinity", ["not finite"]),
        (float("nan"), ["not finite"]),  # a bare NaN token in the JSON
        (float("inf"), ["not finite"]),
        ("abc", ["not numbers", "'abc'"]),
        (True, ["not numbers"]),
        ([1], ["not numbers"]),
    ],
)
@pytest.mark.parametrize(("plugin", "path", "metric", "key"), [ENDPOINTS[0], ENDPOINTS[2]])
def test_values_that_are_not_finite_numbers_are_unknown_and_named(
    plugin, path, metric, key, value, words, market, clock
):
    market.fail(path, "rewrite", rows=each(lambda i, r: set_field(r, key, value) if i in (3, 4) else r))
    frame = fetch(plugin, market, clock, {metric})
    one_note(frame, path, metric, "2", *words)
    column = frame.columns[metric]
    assert np.isnan(column[3:5]).all() and np.isfinite(np.delete(column, [3, 4])).all()


def test_a_null_is_a_missing_value_not_a_problem(market, clock):
    market.fail(CG_OI, "rewrite", rows=each(lambda i, r: set_field(r, "close", None) if i == 7 else r))
    frame = fetch("coinglass", market, clock, {"oi.close"})
    assert frame.problems == [] and np.isnan(frame.columns["oi.close"][7])


def drop(key: Any) -> Callable[[int, Any], Any]:
    def change(i: int, row: Any) -> Any:
        if isinstance(row, list):
            return row[:key]
        return {k: v for k, v in row.items() if k != key}

    return change


@pytest.mark.parametrize(("plugin", "path", "metric", "key"), ENDPOINTS)
def test_a_field_missing_from_every_row_fails_that_metric(plugin, path, metric, key, market, clock):
    market.fail(path, "rewrite", rows=each(drop(key)))
    frame = fetch(plugin, market, clock, {metric})
    assert metric not in frame.columns
    one_note(frame, path, "rows lack", metric)


@pytest.mark.parametrize(("plugin", "path", "metric", "key"), ENDPOINTS)
def test_a_field_missing_from_some_rows_leaves_those_values_unknown(plugin, path, metric, key, market, clock):
    market.fail(path, "rewrite", rows=each(lambda i, r: drop(key)(i, r) if i in (1, 2) else r))
    frame = fetch(plugin, market, clock, {metric})
    one_note(frame, path, "missing from 2 of", metric)
    column = frame.columns[metric]
    assert np.isnan(column[1:3]).all() and np.isfinite(column[3:]).all()


def test_rows_without_a_time_and_rows_between_bars_are_named(market, clock):
    def spoil(i: int, row: dict) -> dict:
        return {**row, "time": "soon"} if i == 2 else {**row, "time": row["time"] + 60_000} if i == 4 else row

    market.fail(CG_OI, "rewrite", rows=each(spoil))
    frame = fetch("coinglass", market, clock, {"oi.close"})
    assert len(frame.problems) == 2, frame.problems
    assert "1 of 47 rows have no valid 'time'" in frame.problems[0]
    assert "1 rows fall between the bars" in frame.problems[1]
    assert np.isnan(frame.columns["oi.close"][[2, 4]]).all()


def test_binance_sell_volume_above_total_is_impossible(market, clock):
    # taker buy quote volume (position 10) above the quote volume (position 7): sell would be negative
    market.fail(BN_KLINES, "rewrite", rows=each(lambda i, r: set_field(r, 10, "9e12") if i == 6 else r))
    frame = fetch("binance", market, clock, {"taker.sell_usd", "taker.buy_pct", "taker.buy_usd"})
    one_note(frame, "impossible values", "taker.sell_usd")
    assert np.isnan(frame.columns["taker.sell_usd"][6]) and np.isnan(frame.columns["taker.buy_pct"][6])


def test_percentages_outside_0_to_100_are_impossible(market, clock):
    market.fail(
        CG_LS,
        "rewrite",
        rows=each(lambda i, r: set_field(r, "global_account_long_percent", 150.0) if i == 0 else r),
    )
    frame = fetch("coinglass", market, clock, {"ls.global_long_pct"})
    one_note(frame, "impossible values", "ls.global_long_pct", "150")
    assert np.isnan(frame.columns["ls.global_long_pct"][0])


def test_binance_funding_in_seconds_fails_with_a_reason(market, clock):
    market.fail(
        "/fapi/v1/fundingRate",
        "rewrite",
        rows=each(lambda i, r: {**r, "fundingTime": r["fundingTime"] // 1000}),
    )
    frame = fetch("binance", market, clock, {"funding.close"})
    assert "funding.close" not in frame.columns
    one_note(frame, "/fapi/v1/fundingRate", "seconds instead of milliseconds")


def test_align_keeps_the_values_of_saved_responses_and_blanks_impossible_ones():
    rows = [{"time": START, "close": "5"}, {"time": START + H, "close": -3}, {"time": START + 2 * H}]
    frame = align(rows, "time", {"close": "price.close"}, np.asarray([START, START + H, START + 2 * H]))
    assert frame.columns["price.close"][0] == 5 and math.isnan(frame.columns["price.close"][1])
    assert len(frame.problems) == 2  # one impossible value, one row without the field


# -- the runner: one warning per cycle ------------------------------------------------------------

STRATEGY = """
version: 1
name: sane
interval: 1h
rules:
  - name: up
    when: price.close > 0
notify: []
"""


def test_the_runner_warns_once_per_cycle_naming_the_problem_and_the_symbols(tmp_path: Path, caplog):
    clock = FakeClock(NOW + 5)
    with FakeMarket(clock=clock) as market:
        for seed, coin in enumerate(("BTC", "ETH", "SOL")):
            market.generate(coin, "1h", START - 400 * H, 448, seed=seed)
        market.fail(BN_KLINES, "rewrite", times=None, rows=each(
            lambda i, r: set_field(r, 4, "-1") if i == 0 else r
        ))  # fmt: skip
        path = tmp_path / "sane.yaml"
        path.write_text(STRATEGY)
        cfg = Config(
            symbols=["BTC", "ETH", "SOL"],
            sources={"binance": Instance("binance", "binance", {"base_url": market.base_url, **FAST})},
            notifiers={},
        )
        store = StateStore(str(tmp_path / "state.db"))

        async def cycle() -> Any:
            runner = Runner.build(
                [load_strategy(str(path))], cfg, load_registry(), store, clock, options=RunnerOptions()
            )
            try:
                return await runner.run_cycle(NOW + 5)
            finally:
                await runner.aclose()

        with caplog.at_level(logging.WARNING, logger="perpwatch"):
            report = asyncio.run(cycle())
        store.close()
    assert not report.failed
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert "BTC 1h, ETH 1h, SOL 1h" in warned[0] and "impossible values" in warned[0], warned[0]
    assert "price.close" in warned[0]
