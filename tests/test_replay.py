"""The replay source and its file format: CSV and Parquet, located errors, the cache, fetch ranges."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from perpwatch.api.interfaces import FetchRequest, SourceError
from perpwatch.api.registry import load_registry
from perpwatch.common.errors import ErrorList, LocatedError, PerpwatchError
from perpwatch.common.timeutil import HOUR, parse_time
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.language.metrics import CATALOGUE
from perpwatch.plugins import replay
from perpwatch.plugins.replay import ReplaySource, load_replay_file, write_replay_csv

T0 = parse_time("2025-01-01T00:00:00Z")
H4 = 4 * HOUR


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def fetch(source: ReplaySource, symbol: str, interval: str, metrics: set[str], start: int, end: int) -> Frame:
    return asyncio.run(source.fetch(FetchRequest(symbol, interval, frozenset(metrics), start, end)))


def message(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


# ------------------------------------------------------------------------------------------------
# The file format


def test_csv_any_order_mixed_times_and_missing_cells(tmp_path: Path) -> None:
    f = write(
        tmp_path / "BTC_4h.csv",
        "time,price.close,oi.close,funding.max_exchange\n"
        f"{T0 + 2 * H4},102.5,,OKX\n"
        "2025-01-01T00:00:00Z,100,5e10,Binance\n"
        "\n"
        "2025-01-01T04:00:00+00:00,,5.1e10,\n",
    )
    frame = load_replay_file(f)
    assert frame.times.tolist() == [T0, T0 + H4, T0 + 2 * H4]
    close = frame.columns["price.close"]
    assert close[0] == 100 and np.isnan(close[1]) and close[2] == 102.5  # empty: unknown, never 0
    assert np.isnan(frame.columns["oi.close"][2])
    ex = frame.columns["funding.max_exchange"]
    assert isinstance(ex, Cat) and ex.to_list() == ["Binance", None, "OKX"]


def test_round_trip_through_the_writer(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 50
    times = T0 + np.arange(n) * H4
    cols = {
        "price.close": rng.normal(60_000, 500, n),
        "oi.close": np.round(rng.uniform(1e10, 2e10, n)),
        "funding.close": rng.normal(0, 0.01, n),
        "funding.max_exchange": Cat.from_values(["Bybit", None, "OKX", "Binance", "OKX"] * 10),
        "myplug.thing": rng.normal(0, 1, n),
    }
    cols["price.close"][[0, 7]] = np.nan
    path = tmp_path / "ETH_4h.csv"
    written = write_replay_csv(path, Frame(times, cols))
    assert written == ["price.close", "oi.close", "funding.close", "funding.max_exchange", "myplug.thing"]
    back = load_replay_file(path)
    assert np.array_equal(back.times, times)
    for name in ("price.close", "oi.close", "funding.close", "myplug.thing"):
        assert np.array_equal(back.columns[name], cols[name], equal_nan=True), name  # exact floats
    assert back.columns["funding.max_exchange"].to_list() == cols["funding.max_exchange"].to_list()
    assert path.read_text().splitlines()[1].startswith("2025-01-01T00:00:00Z,,")


def test_duplicate_time_names_file_and_both_lines(tmp_path: Path) -> None:
    f = write(
        tmp_path / "BTC_4h.csv",
        f"time,price.close\n{T0},1\n{T0 + H4},2\n\n2025-01-01T00:00:00Z,3\n",
    )
    with pytest.raises(LocatedError) as e:
        load_replay_file(f)
    assert message(e) == f"{f}:5:1: error: duplicate time 2025-01-01T00:00:00Z (first at line 2)"


def test_unknown_columns_name_the_closest_metric(tmp_path: Path) -> None:
    f = write(tmp_path / "BTC_4h.csv", "time,price.closee,oi.close,liq.total,synthetic.noise\n")
    with pytest.raises(ErrorList) as e:
        load_replay_file(f)
    lines = [err.format() for err in e.value.errors]
    assert lines == [
        f"{f}:1:6: error: unknown column 'price.closee' (did you mean: price.close?)",
        f"{f}:1:28: error: unknown column 'liq.total' (did you mean: liq.total_usd?)",
    ]


def test_plugin_prefixed_columns_are_accepted(tmp_path: Path) -> None:
    f = write(
        tmp_path / "BTC_1h.csv", f"time,synthetic.noise,synthetic.regime\n{T0},0.5,calm\n{T0 + HOUR},,storm\n"
    )
    frame = load_replay_file(f)
    assert np.isnan(frame.columns["synthetic.noise"][1]) and frame.columns["synthetic.noise"][0] == 0.5
    assert frame.columns["synthetic.regime"].to_list() == ["calm", "storm"]  # text: categorical


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("price.close\n1\n", "1:1: error: no 'time' column"),
        ("time,price.close,price.close\n", "1:18: error: column 'price.close' appears twice"),
        (
            f"time,price.close\n{T0},1\n{T0 + H4},abc\n",
            "3:15: error: column price.close: 'abc' is not a number",
        ),
        (f"time,price.close\n{T0},1,2\n", "2:1: error: 3 cells where the header names 2 columns"),
        ("time,price.close\n,1\n", "2:1: error: the time is empty"),
        ("time,price.close\nyesterday,1\n", "2:1: error: 'yesterday' is not a time"),
        (
            "time,price.close\n1735689600,1\n",
            "2:1: error: time 1735689600 is not epoch milliseconds (seconds?)",
        ),
        (
            f"time,price.close\n{T0 + HOUR},1\n",
            "2:1: error: time 2025-01-01T01:00:00Z is not the open of a 4h bar",
        ),
        ("", "1:1: error: empty file"),
    ],
)
def test_located_errors(tmp_path: Path, body: str, expected: str) -> None:
    f = write(tmp_path / "BTC_4h.csv", body)
    with pytest.raises(PerpwatchError) as e:
        load_replay_file(f)
    assert message(e).startswith(f"{f}:{expected}")


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "BTC_4h.parquet"
    pq.write_table(
        pa.table(
            {
                "time": [T0 + H4, T0],
                "price.close": ["101.5", "100"],  # numbers as strings, as CoinGlass saves them
                "oi.close": [None, 7.0],
                "funding.min_exchange": ["OKX", None],
            }
        ),
        path,
    )
    frame = load_replay_file(path)
    assert frame.times.tolist() == [T0, T0 + H4]
    assert frame.columns["price.close"].tolist() == [100.0, 101.5]
    assert frame.columns["oi.close"][0] == 7.0 and np.isnan(frame.columns["oi.close"][1])
    assert frame.columns["funding.min_exchange"].to_list() == [None, "OKX"]

    stamps = tmp_path / "ETH_4h.parquet"
    pq.write_table(
        pa.table({"time": pa.array([T0, T0 + H4], pa.timestamp("ms", tz="UTC")), "oi.close": [1, 2]}), stamps
    )
    assert load_replay_file(stamps).times.tolist() == [T0, T0 + H4]

    dup = tmp_path / "SOL_4h.parquet"
    pq.write_table(pa.table({"time": [T0, T0 + H4, T0], "oi.close": [1.0, 2.0, 3.0]}), dup)
    with pytest.raises(LocatedError) as e:
        load_replay_file(dup)
    assert message(e) == f"{dup}: error: row 3: duplicate time 2025-01-01T00:00:00Z (first at row 1)"


def test_parquet_without_pyarrow_says_which_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "BTC_4h.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(LocatedError) as e:
        load_replay_file(path)
    assert "pip install 'perpwatch[parquet]'" in message(e)
    source = ReplaySource({"path": str(tmp_path)})
    with pytest.raises(SourceError, match=r"perpwatch\[parquet\]"):
        fetch(source, "BTC", "4h", {"oi.close"}, T0, T0)


def test_cache_per_path_and_mtime(tmp_path: Path) -> None:
    f = write(tmp_path / "BTC_4h.csv", f"time,price.close\n{T0},1\n")
    first = replay._load_cached(str(f))
    assert replay._load_cached(str(f)) is first
    copy = load_replay_file(f)
    copy.columns["price.close"][0] = 99  # callers get a private copy
    assert replay._load_cached(str(f)).columns["price.close"][0] == 1
    write(f, f"time,price.close\n{T0},2\n")
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_replay_file(f).columns["price.close"].tolist() == [2.0]


def test_csv_speed_100k_rows(tmp_path: Path) -> None:
    """100k bars x 12 columns (real-looking numbers) load in well under the bound (CPU seconds: a busy
    machine does not count)."""
    n = 100_000
    rng = np.random.default_rng(0)
    times = T0 + np.arange(n) * HOUR
    price = np.round(60_000 * np.exp(np.cumsum(rng.normal(0, 0.003, n))), 1)
    cols: dict = {m: price for m in ("price.open", "price.high", "price.low", "price.close")}
    cols |= {
        "price.volume": np.round(rng.uniform(1e8, 5e9, n), 4),
        "oi.close": np.round(rng.uniform(5e10, 9e10, n)),
        "funding.close": np.round(rng.normal(0.005, 0.003, n), 6),
        "liq.long_usd": np.round(rng.exponential(3e6, n), 5),
        "liq.short_usd": np.round(rng.exponential(3e6, n), 5),
        "ls.global_long_pct": np.round(rng.uniform(40, 70, n), 2),
        "taker.buy_usd": np.round(rng.uniform(1e8, 4e9, n), 4),
        "funding.max_exchange": Cat.from_values(["Binance", "OKX", "Bybit", None] * (n // 4)),
    }
    path = tmp_path / "BTC_1h.csv"
    write_replay_csv(path, Frame(times, cols))
    t = time.process_time()
    frame = load_replay_file(path)
    took = time.process_time() - t
    assert len(frame) == n and np.array_equal(frame.columns["price.close"], price)
    assert took < 10


# ------------------------------------------------------------------------------------------------
# The source


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(
        tmp_path / "BTC_4h.csv",
        "time,price.close,oi.close\n" + "".join(f"{T0 + i * H4},{100 + i},{i}\n" for i in range(6)),
    )
    write(tmp_path / "ETH_1h.csv", f"time,liq.long_usd\n{T0},5\n")
    write(tmp_path / "notes.txt", "not a replay file")
    return tmp_path


def test_fetch_returns_the_range_inclusive(folder: Path) -> None:
    source = ReplaySource({"path": str(folder)})
    frame = fetch(source, "BTC", "4h", {"price.close", "liq.long_usd"}, T0 + H4, T0 + 3 * H4)
    assert frame.times.tolist() == [T0 + H4, T0 + 2 * H4, T0 + 3 * H4]
    assert sorted(frame.columns) == ["liq.long_usd", "price.close"]  # the absent one unknown
    assert frame.columns["price.close"].tolist() == [101, 102, 103]
    assert np.isnan(frame.columns["liq.long_usd"]).all()
    assert frame.problems == ["replay BTC_4h.csv has no column liq.long_usd (unknown; said once per file)"]
    newest = fetch(source, "btc", "4h", {"oi.close"}, T0 + 5 * H4 - 1, T0 + 100 * H4)  # live: the newest bar
    assert newest.times.tolist() == [T0 + 5 * H4] and newest.columns["oi.close"].tolist() == [5]
    assert len(fetch(source, "BTC", "4h", {"oi.close"}, T0 + 10 * H4, T0 + 20 * H4)) == 0


def test_provides_is_the_columns_found(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert ReplaySource({"path": str(folder)}).provides() == {"price.close", "oi.close", "liq.long_usd"}
    assert ReplaySource({"path": str(folder / "ETH_1h.csv")}).provides() == {"liq.long_usd"}
    assert ReplaySource({"path": str(folder / "nowhere")}).provides() == frozenset(CATALOGUE)
    assert ReplaySource({}).provides() == frozenset(CATALOGUE)
    assert ReplaySource({"path": str(tmp_path_factory.mktemp("empty"))}).provides() == frozenset()


def test_missing_file_and_bad_file_are_source_errors(folder: Path) -> None:
    source = ReplaySource({"path": str(folder)})
    with pytest.raises(SourceError, match=r"no file SOL_4h\.csv \(or \.parquet\) in .* for SOL 4h") as e:
        fetch(source, "SOL", "4h", {"price.close"}, T0, T0)
    assert e.value.retryable is False
    with pytest.raises(SourceError, match=r"no file BTC_1h\.csv"):
        fetch(source, "BTC", "1h", {"price.close"}, T0, T0)
    single = ReplaySource({"path": str(folder / "ETH_1h.csv")})
    assert fetch(single, "ETH", "1h", {"liq.long_usd"}, T0, T0).columns["liq.long_usd"].tolist() == [5]
    with pytest.raises(SourceError, match=r"holds ETH 1h; BTC 1h needs a file named BTC_1h\.csv"):
        fetch(single, "BTC", "1h", {"liq.long_usd"}, T0, T0)
    with pytest.raises(SourceError, match="needs a path option"):
        fetch(ReplaySource({}), "BTC", "4h", {"price.close"}, T0, T0)
    write(folder / "BTC_4h.csv", f"time,price.close\n{T0},1\n{T0},2\n")
    with pytest.raises(SourceError) as e:
        fetch(source, "BTC", "4h", {"price.close"}, T0, T0)
    assert (
        str(e.value)
        == f"{folder / 'BTC_4h.csv'}:3:1: error: duplicate time 2025-01-01T00:00:00Z (first at line 2)"
    )
    write(folder / "BTC_4h.parquet", "")
    with pytest.raises(SourceError, match="both .* exist for BTC 4h"):
        fetch(source, "BTC", "4h", {"price.close"}, T0, T0)


def test_registered_through_its_entry_point_with_a_path_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERPWATCH_DISABLE_PLUGINS", raising=False)
    reg = load_registry()
    assert reg.sources["replay"] is ReplaySource
    info = next(p for p in reg.plugins if p.name == "replay")
    assert info.error is None and info.registers == {
        "sources": ["replay"],
        "history_readers": ["replay"],
        "commands": [],
    }
    assert ReplaySource.options_schema["properties"]["path"]["type"] == "string"
