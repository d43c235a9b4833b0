"""Hostile replay files: every bad file is a located error (exit 2), never a crash or a silent guess.

Times in the wrong unit, out of range or with fractions of a millisecond; binary garbage, huge
cells, booleans and exotic digits where numbers belong; corrupt Parquet, a CSV named ``.parquet``,
list and struct columns; symlink loops, folders and FIFOs named like replay files; CoinGlass
snapshot files with the same faults. In ``perpwatch run`` a bad file is reported once per content
version and its symbol's metrics are unknown while the other symbols go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke, run_perpwatch

from perpwatch.api.interfaces import FetchRequest, SourceError
from perpwatch.backtest import walk
from perpwatch.common.errors import ErrorList, LocatedError, PerpwatchError
from perpwatch.common.timeutil import HOUR, parse_time
from perpwatch.evaluation.frame import Cat
from perpwatch.plugins import _values
from perpwatch.plugins.replay import ReplaySource, load_replay_file, read_columns

T0 = parse_time("2025-01-01T00:00:00Z")
HEAD = "time,price.open,price.close\n"

STRATEGY = """\
version: 1
name: hostile
interval: 1h
symbols: [BTC, ETH]
rules:
  - name: up
    when: price.close > 0
notify: [file]
"""


def good_rows(n: int = 30, start: int = T0) -> str:
    return "".join(f"{start + i * HOUR},{100 + i},{101 + i}\n" for i in range(n))


@contextmanager
def fifo(path: Path) -> Iterator[Path]:
    """A FIFO with a writer waiting on it: code that wrongly opens it reads an empty file and goes
    on (so a test fails instead of hanging); the writer is released on the way out."""
    os.mkfifo(path)
    writer = threading.Thread(target=lambda: open(path, "wb").close(), daemon=True)
    writer.start()
    try:
        yield path
    finally:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(10)
        os.close(fd)


def error_text(path: Path) -> str:
    with pytest.raises(PerpwatchError) as e:
        load_replay_file(path)
    if isinstance(e.value, ErrorList):
        return "\n".join(err.format() for err in e.value.errors)
    assert isinstance(e.value, LocatedError), type(e.value)
    return str(e.value)


# ------------------------------------------------------------------------------------------------
# CSV: times


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("1735689600", "time 1735689600 is not epoch milliseconds (seconds?)"),
        ("1735689600000000", "time 1735689600000000 is not epoch milliseconds (microseconds?)"),
        ("1735689600000000000", "time 1735689600000000000 is not epoch milliseconds (nanoseconds?)"),
        ("253402300800000", "time 253402300800000 is not epoch milliseconds (microseconds?)"),
        ("99999999999999999999999", "time 99999999999999999999999 is out of range"),
        ("9" * 5000, "is out of range"),
        ("-9223372036854775808", "time -9223372036854775808 is before 1970"),
        ("-3600000000000", "time -3600000000000 is before 1970"),
        ("10000-01-01T00:00:00Z", "time '10000-01-01T00:00:00Z' is after 9999"),
        ("+10000-01-01T00:00:00Z", "time '+10000-01-01T00:00:00Z' is after 9999"),
        ("1969-12-31T23:00:00Z", "time '1969-12-31T23:00:00Z' is before 1970"),
        ("0001-01-01T00:00:00Z", "time '0001-01-01T00:00:00Z' is before 1970"),
        ("9999-12-31T23:00:00-05:00", "is after 9999"),
        ("1735689600000.5", "time '1735689600000.5' has a fraction of a millisecond"),
        ("2025-01-01T00:00:00.0005Z", "has a fraction of a millisecond"),
        ("2025-01-01T00:00:00.000000001Z", "has a fraction of a millisecond"),
        ("1.7356896e12", "'1.7356896e12' is not a time"),
        ("１７３５６８９６０００００", "is not a time"),
        ("1_735_689_600_000", "is not a time"),
        ("True", "'True' is not a time"),
    ],
)
def test_bad_times_are_located_and_name_the_unit(tmp_path: Path, cell: str, expected: str) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_text(HEAD + good_rows(2) + f"{cell},1,2\n", encoding="utf-8")
    text = error_text(f)
    assert text.startswith(f"{f}:4:1: error: "), text
    assert expected in text
    assert len(text) < 600  # a 5,000-digit cell is not echoed whole


def test_the_unit_message_says_milliseconds_are_expected_and_what_the_value_would_be(tmp_path: Path) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_text(HEAD + f"{T0 * 1000},1,2\n")
    text = error_text(f)
    assert "as microseconds it is 2025-01-01T00:00:00Z" in text
    assert "milliseconds are expected" in text and str(T0) in text


def test_time_unit_is_checked_in_every_row_not_only_the_first(tmp_path: Path) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_text(HEAD + good_rows(5) + f"{(T0 + 9 * HOUR) * 10**6},1,2\n" + good_rows(3, T0 + 20 * HOUR))
    assert error_text(f).startswith(
        f"{f}:7:1: error: time {(T0 + 9 * HOUR) * 10**6} is not epoch milliseconds"
    )


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["1735689600000.0", "1735776000000.000"], ["2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z"]),
        (
            ["2025-01-01T00:00:00.000Z", "2025-01-02T00:00:00.000000Z"],
            ["2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z"],
        ),
        (["1971-06-01T00:00:00Z", "9999-12-31T00:00:00Z"], ["1971-06-01T00:00:00Z", "9999-12-31T00:00:00Z"]),
    ],
)
def test_whole_milliseconds_written_with_zeros_and_the_ends_of_the_range_are_accepted(
    tmp_path: Path, cells: list[str], expected: list[str]
) -> None:
    f = tmp_path / "BTC_1d.csv"  # 1971 .. 9999 in days fits a bar grid; in hours it would not
    f.write_text(HEAD + "".join(f"{c},1,2\n" for c in cells))
    assert load_replay_file(f).times.tolist() == [parse_time(e) for e in expected]


def test_fractional_milliseconds_are_never_truncated(tmp_path: Path) -> None:
    """All-ISO columns go through numpy, which truncates below its unit: they must be refused there too."""
    f = tmp_path / "BTC_1h.csv"
    rows = [f"2025-01-01T{h:02d}:00:00Z" for h in range(5)] + ["2025-01-01T05:00:00.0009Z"]
    f.write_text(HEAD + "".join(f"{r},1,2\n" for r in rows))
    assert error_text(f).startswith(f"{f}:7:1: error: time '2025-01-01T05:00:00.0009Z' has a fraction")


# ------------------------------------------------------------------------------------------------
# CSV: cells and bytes


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("True", "column price.close: 'True' is a boolean, not a number"),
        ("false", "column price.close: 'false' is a boolean, not a number"),
        ("1_000", "column price.close: '1_000' is not a number"),
        ("１２", "column price.close: '１２' is not a number"),
        ("١٢", "column price.close: '١٢' is not a number"),
        ("inf", "column price.close: 'inf' is not a finite number"),
        ("-Infinity", "column price.close: '-Infinity' is not a finite number"),
        ("1e999", "column price.close: '1e999' is not a finite number"),
        ("0x10", "column price.close: '0x10' is not a number"),
    ],
)
def test_booleans_infinities_and_exotic_digits_are_not_numbers(
    tmp_path: Path, cell: str, expected: str
) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_text(HEAD + good_rows(3) + f"{T0 + 5 * HOUR},7,{cell}\n", encoding="utf-8")
    text = error_text(f)
    assert text.startswith(f"{f}:5:"), text
    assert expected in text


def test_nan_and_empty_cells_are_unknown(tmp_path: Path) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_text(HEAD + f"{T0},NaN,1\n{T0 + HOUR},,nan\n{T0 + 2 * HOUR}, 3 ,2\n")
    frame = load_replay_file(f)
    opens, closes = frame.columns["price.open"], frame.columns["price.close"]
    assert np.isnan(opens[0]) and np.isnan(opens[1]) and opens[2] == 3
    assert closes[0] == 1 and np.isnan(closes[1])


def test_binary_garbage_is_not_utf8_at_its_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_bytes(os.urandom(1).replace(b"\n", b"x") + b"\xff\xfe" + os.urandom(5000))
    text = error_text(f)
    assert text.startswith(f"{f}:1:") and "not UTF-8 text" in text


def test_a_latin1_byte_is_located(tmp_path: Path) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_bytes(HEAD.encode() + f"{T0},1,2\n".encode() + f"{T0 + HOUR},1,".encode() + b"caf\xe9\n")
    assert error_text(f).startswith(f"{f}:3:20: error: not UTF-8 text (byte 0xe9)")


@pytest.mark.parametrize("quote", ['"', ""])
def test_a_cell_over_the_csv_field_limit_is_located(tmp_path: Path, quote: str) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_text(HEAD + good_rows(2) + f"{T0 + 5 * HOUR},1,{quote}{'9' * 200_000}{quote}\n")
    text = error_text(f)
    assert text.startswith(f"{f}:4:"), text[:200]
    assert "longer than 131,072 characters" in text and len(text) < 600


def test_an_unclosed_quote_is_located_where_it_starts(tmp_path: Path) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_text(HEAD + good_rows(2) + f'{T0 + 5 * HOUR},1,"2\n' + good_rows(20_000, T0 + 6 * HOUR))
    text = error_text(f)
    assert text.startswith(f"{f}:4:") and "unclosed quote" in text, text[:300]


def test_header_problems_are_bounded(tmp_path: Path) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_text("time," + ",".join(["bogus"] * 900) + "\n")
    with pytest.raises(ErrorList) as e:
        load_replay_file(f)
    assert len(e.value.errors) == 11
    assert e.value.errors[-1].message == "and 890 more problems"


def test_too_many_columns(tmp_path: Path) -> None:
    f = tmp_path / "BTC_1h.csv"
    f.write_text("time," + ",".join(f"x.c{i}" for i in range(1_500)) + "\n")
    assert "1,501 columns; a replay file has at most 1,000" in error_text(f)


def test_a_span_too_long_for_a_bar_grid_is_refused_before_any_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_values, "MAX_BARS", 1_000)
    f = tmp_path / "BTC_1h.csv"
    f.write_text(HEAD + f"{T0},1,2\n{T0 + 5_000 * HOUR},1,2\n")
    text = error_text(f)
    assert text == (
        f"{f}: error: its times 2025-01-01T00:00:00Z .. 2025-07-28T08:00:00Z span 5,001 bars of 1h; "
        "a replay file spans at most 1,000 bars"
    )


# ------------------------------------------------------------------------------------------------
# Things that are not regular files


def test_a_symlink_loop_a_folder_and_a_fifo_named_like_replay_files(tmp_path: Path) -> None:
    loop = tmp_path / "BTC_1h.csv"
    os.symlink(loop.name, loop)
    assert error_text(loop).startswith(f"{loop}: error: cannot read: ")
    folder = tmp_path / "ETH_1h.csv"
    folder.mkdir()
    assert error_text(folder) == f"{folder}: error: not a regular file (a folder)"
    with fifo(tmp_path / "SOL_1h.csv") as pipe:
        assert error_text(pipe) == f"{pipe}: error: not a regular file (a FIFO)"


def test_a_fifo_named_parquet_does_not_block(tmp_path: Path) -> None:
    with fifo(tmp_path / "BTC_1h.parquet") as pipe:
        assert error_text(pipe) == f"{pipe}: error: not a regular file (a FIFO)"
        with pytest.raises(LocatedError, match="not a regular file"):
            read_columns(pipe)


def test_a_csv_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_values, "MAX_CSV_BYTES", 1_000)
    f = tmp_path / "BTC_1h.csv"
    f.write_text(HEAD + good_rows(100))
    size = f.stat().st_size
    assert error_text(f) == (
        f"{f}: error: file larger than 1,000 bytes ({size:,}); write a larger history as Parquet"
    )


def test_provides_skips_unreadable_files_instead_of_crashing(tmp_path: Path) -> None:
    (tmp_path / "ETH_1h.csv").write_text(HEAD + good_rows(2))
    (tmp_path / "BTC_1h.csv").write_bytes(b"\xff\xfe\x00garbage")
    os.symlink("XRP_1h.csv", tmp_path / "XRP_1h.csv")
    (tmp_path / "SOL_1h.parquet").write_text(HEAD + good_rows(2))
    (tmp_path / "ADA_1h.csv").write_text("time," + "9" * 300_000 + "\n")
    assert ReplaySource({"path": str(tmp_path)}).provides() == {"price.open", "price.close"}
    for name in ("BTC_1h.csv", "SOL_1h.parquet", "ADA_1h.csv"):
        with pytest.raises(PerpwatchError):
            read_columns(tmp_path / name)


# ------------------------------------------------------------------------------------------------
# Parquet


@pytest.fixture
def pa():
    return pytest.importorskip("pyarrow")


def write_parquet(path: Path, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_not_parquet_files(tmp_path: Path, pa) -> None:
    csv_named = tmp_path / "BTC_1h.parquet"
    csv_named.write_text(HEAD + good_rows(3))
    assert error_text(csv_named) == (
        f"{csv_named}: error: not a Parquet file (it starts with 'time,pri'; a CSV file is named .csv)"
    )
    empty = tmp_path / "ETH_1h.parquet"
    empty.write_bytes(b"")
    assert error_text(empty) == f"{empty}: error: not a Parquet file (it is empty)"
    corrupt = tmp_path / "SOL_1h.parquet"
    corrupt.write_bytes(b"PAR1" + os.urandom(500) + b"PAR1")
    assert error_text(corrupt).startswith(f"{corrupt}: error: a corrupt Parquet file: ")
    parquet_named_csv = tmp_path / "XRP_1h.csv"
    write_parquet(parquet_named_csv, {"time": [T0], "price.close": [1.0]})
    assert error_text(parquet_named_csv) == (
        f"{parquet_named_csv}:1:1: error: a Parquet file named .csv (a Parquet file is named .parquet)"
    )
    truncated = tmp_path / "ADA_1h.parquet"
    write_parquet(truncated, {"time": [T0, T0 + HOUR], "price.close": [1.0, 2.0]})
    truncated.write_bytes(truncated.read_bytes()[:-30])
    assert error_text(truncated).startswith(f"{truncated}: error: a corrupt Parquet file")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([[1.0, 2.0], [3.0]], "column price.open holds list<element: double>, not numbers"),
        ([{"a": 1}, {"a": 2}], "column price.open holds struct<a: int64>, not numbers"),
        ([True, False], "column price.open holds booleans (true/false), not numbers"),
        ([b"\xff", b"1"], "column price.open holds binary, not numbers"),
    ],
)
def test_parquet_columns_of_the_wrong_type(tmp_path: Path, pa, values: list, expected: str) -> None:
    f = write_parquet(tmp_path / "BTC_1h.parquet", {"time": [T0, T0 + HOUR], "price.open": values})
    assert error_text(f).startswith(f"{f}: error: {expected}")


def test_parquet_cells(tmp_path: Path, pa) -> None:
    import pyarrow as pa_

    f = write_parquet(
        tmp_path / "BTC_1h.parquet", {"time": [T0, T0 + HOUR], "price.close": [1.0, float("inf")]}
    )
    assert error_text(f) == f"{f}: error: row 2: column price.close: inf is not a finite number"
    f = write_parquet(tmp_path / "ETH_1h.parquet", {"time": [T0, T0 + HOUR], "price.close": ["1", "True"]})
    assert error_text(f) == f"{f}: error: row 2: column price.close: 'True' is a boolean, not a number"
    f = write_parquet(
        tmp_path / "SOL_1h.parquet",
        {
            "time": [T0, T0 + HOUR, T0 + 2 * HOUR],
            "price.close": [1.0, float("nan"), None],
            "oi.close": pa_.array(["5", "6", "5"]).dictionary_encode(),
            "funding.max_exchange": pa_.array(["OKX", None, "OKX"]).dictionary_encode(),
        },
    )
    frame = load_replay_file(f)
    assert frame.columns["price.close"][0] == 1 and np.isnan(frame.columns["price.close"][1:]).all()
    assert frame.columns["oi.close"].tolist() == [5, 6, 5]
    assert frame.columns["funding.max_exchange"].to_list() == ["OKX", None, "OKX"]


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("ns_int", "row 1: time 1735689600000000000 is not epoch milliseconds (nanoseconds?)"),
        ("us_int", "row 1: time 1735689600000000 is not epoch milliseconds (microseconds?)"),
        ("ns_frac", "row 2: time 2025-01-01T01:00:00.000000005Z has a fraction of a millisecond"),
        ("float_frac", "row 2: time 1735693200000.5 has a fraction of a millisecond"),
        ("uint_huge", "row 2: time 18446744073709551615 is not epoch milliseconds (nanoseconds?)"),
        ("null", "row 2: the time is empty"),
        ("list", "column time holds list<element: int64>, not times"),
        ("bool", "column time holds booleans (true/false), not times"),
        ("year0", "row 1: time 1000-01-01T00:00:00Z is before 1970"),
    ],
)
def test_parquet_times(tmp_path: Path, pa, time: str, expected: str) -> None:
    import pyarrow as pa_

    values = {
        "ns_int": pa_.array([T0 * 10**6, (T0 + HOUR) * 10**6], pa_.int64()),
        "us_int": pa_.array([T0 * 10**3, (T0 + HOUR) * 10**3], pa_.int64()),
        "ns_frac": pa_.array([T0 * 10**6, (T0 + HOUR) * 10**6 + 5], pa_.timestamp("ns", tz="UTC")),
        "float_frac": pa_.array([float(T0), T0 + HOUR + 0.5]),
        "uint_huge": pa_.array([T0, 2**64 - 1], pa_.uint64()),
        "null": pa_.array([T0, None], pa_.int64()),
        "list": pa_.array([[T0], [T0 + HOUR]]),
        "bool": pa_.array([True, False]),
        "year0": pa_.array([-30610224000000, T0], pa_.timestamp("ms")),
    }[time]
    f = write_parquet(tmp_path / "BTC_1h.parquet", {"time": values, "price.close": [1.0, 2.0]})
    assert error_text(f).startswith(f"{f}: error: {expected}")


def test_parquet_times_that_are_fine(tmp_path: Path, pa) -> None:
    import pyarrow as pa_

    for unit, scale in (("s", 10**-3), ("ms", 1), ("us", 10**3), ("ns", 10**6)):
        raw = [int(T0 * scale), int((T0 + HOUR) * scale)]
        f = write_parquet(
            tmp_path / f"BTC_1h.{unit}.parquet",
            {"time": pa_.array(raw, pa_.timestamp(unit)), "price.close": [1, 2]},
        )
        target = tmp_path / "BTC_1h.parquet"
        f.replace(target)
        assert load_replay_file(target).times.tolist() == [T0, T0 + HOUR], unit
    f = write_parquet(
        tmp_path / "ETH_1h.parquet", {"time": [float(T0), float(T0 + HOUR)], "price.close": [1, 2]}
    )
    assert load_replay_file(f).times.tolist() == [T0, T0 + HOUR]
    f = write_parquet(
        tmp_path / "SOL_1h.parquet",
        {"time": ["2025-01-01T00:00:00Z", "2025-01-01T01:00:00Z"], "price.close": [1, 2]},
    )
    assert load_replay_file(f).times.tolist() == [T0, T0 + HOUR]


def test_parquet_row_limit_is_checked_from_the_metadata(
    tmp_path: Path, pa, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_values, "MAX_BARS", 10)
    f = write_parquet(
        tmp_path / "BTC_1h.parquet", {"time": [T0 + i * HOUR for i in range(20)], "price.close": [1.0] * 20}
    )
    assert error_text(f) == f"{f}: error: 20 rows; a file holds at most 10 bars"


# ------------------------------------------------------------------------------------------------
# The command line: exit 2 and a located line, never an internal error


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("BTC_1h.csv", HEAD + f"{T0 * 10**6},1,2\n{(T0 + 10_000 * HOUR) * 10**6},1,2\n"),
        ("BTC_1h.csv", HEAD + f"{T0},1,2\n{(T0 + HOUR) * 10**6},1,2\n"),
        ("BTC_1h.csv", HEAD + f"{T0},1,2\n10000-01-01T00:00:00Z,1,2\n"),
        ("BTC_1h.csv", HEAD + f"{T0},1,2\n99999999999999999999999,1,2\n"),
        ("BTC_1h.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20),
        ("BTC_1h.csv", HEAD + f'{T0},1,"{"9" * 140_000}"\n'),
        ("BTC_1h.parquet", b"PAR1" + bytes(300) + b"PAR1"),
        ("BTC_1h.parquet", HEAD + good_rows(5)),
        ("BTC_1h.csv", None),  # a symlink loop
    ],
)
def test_backtest_and_explain_exit_2_with_a_located_error(
    tmp_path: Path, name: str, body: str | bytes | None
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    f = data / name
    if body is None:
        os.symlink(name, f)
    elif isinstance(body, bytes):
        f.write_bytes(body)
    else:
        f.write_text(body)
    strategy = tmp_path / "s.yaml"
    strategy.write_text(STRATEGY.replace("[file]", "[console]").replace("[BTC, ETH]", "[BTC]"))
    tracemalloc.start()
    try:
        result = invoke("backtest", strategy, "--data", data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"{f}"), result.output
    assert peak < 64 * 2**20  # nothing sized from a value in the file
    explained = invoke("explain", strategy, "--data", data, "--at", "2025-01-01T00:00:00Z")
    assert explained.exit_code == 2 and explained.output.startswith(f"{f}"), explained.output


# ------------------------------------------------------------------------------------------------
# perpwatch run: a bad file is reported once, its symbol unknown, the others go on


def fetch(source: ReplaySource, symbol: str, start: int, end: int):
    request = FetchRequest(symbol, "1h", frozenset({"price.close", "funding.max_exchange"}), start, end)
    return asyncio.run(source.fetch(request))


def test_the_source_fails_once_per_content_version_then_serves_unknown(tmp_path: Path, caplog) -> None:
    """The first fetch of a bad file fails with its located error (the runner logs that once and
    holds the symbol for that cycle); later fetches of the same version give no bars, so every
    metric is unknown; a new version is checked (and reported) again; a fixed file is served."""
    bad = tmp_path / "BTC_1h.csv"
    bad.write_text(HEAD + f"{T0 * 1000},1,2\n")
    source = ReplaySource({"path": str(tmp_path)})
    with pytest.raises(SourceError) as e:
        fetch(source, "BTC", T0, T0 + 5 * HOUR)
    assert e.value.retryable is False
    assert str(e.value).startswith(f"{bad}:2:1: error: time {T0 * 1000} is not epoch milliseconds")
    for _ in range(3):
        frame = fetch(source, "BTC", T0, T0 + 5 * HOUR)
        assert len(frame) == 0 and set(frame.columns) == {"price.close", "funding.max_exchange"}
        assert isinstance(frame.columns["funding.max_exchange"], Cat)

    bad.write_text(HEAD + f"{T0},1,True\n")  # a new version, still bad: reported again
    os.utime(bad, ns=(1, 10**18))
    with pytest.raises(SourceError, match="'True' is a boolean"):
        fetch(source, "BTC", T0, T0)
    assert len(fetch(source, "BTC", T0, T0)) == 0

    caplog.set_level(logging.INFO, logger="perpwatch.plugins.replay")
    bad.write_text(HEAD + good_rows(3))
    os.utime(bad, ns=(1, 2 * 10**18))
    assert fetch(source, "BTC", T0, T0 + 2 * HOUR).columns["price.close"].tolist() == [101, 102, 103]
    said = [r.getMessage() for r in caplog.records if r.name == "perpwatch.plugins.replay"]
    assert said == [f"replay: {bad} is readable again"]


def run_folder(tmp_path: Path, bad: bytes) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "ETH_1h.csv").write_text(HEAD + good_rows(30))
    (data / "BTC_1h.csv").write_bytes(bad)
    (tmp_path / "s.yaml").write_text(STRATEGY)
    (tmp_path / "perpwatch.yaml").write_text(
        f"sources:\n  replay: {{path: '{data}'}}\nnotifiers:\n  file: {{plugin: jsonl, path: events.jsonl}}\n"
    )
    return data


@pytest.mark.parametrize(
    "bad",
    [os.urandom(3000).replace(b"\n", b"") + b"\xff", (HEAD + f"{T0 * 10**6},1,2\n").encode()],
    ids=["garbage", "nanoseconds"],
)
def test_run_simulated_goes_on_without_the_bad_symbol(tmp_path: Path, bad: bytes) -> None:
    run_folder(tmp_path, bad)
    result = run_perpwatch(
        "run", "s.yaml", "--state", "state.db",
        "--simulate-from", "2025-01-01T10:00:00Z", "--simulate-to", "2025-01-01T20:00:00Z",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    reports = [line for line in result.stderr.splitlines() if "BTC_1h.csv" in line]
    assert len(reports) == 1, result.stderr  # once, not once per cycle
    assert "WARNING" in reports[0] and "source replay failed for BTC 1h: " in reports[0]
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    events = [e for e in lines if e["strategy"] != "perpwatch"]  # not the engine's own alerts
    assert {e["symbol"] for e in events} == {"ETH"}
    assert len(events) == 1  # ETH's rule fired (and stays firing); BTC's is unknown, never fired
    # BTC without usable data, cycle after cycle, is one meta-alert (stale data, or the source
    # failing), said once
    meta = [(e["rule"], e["symbol"]) for e in lines if e["strategy"] == "perpwatch"]
    assert meta in ([("stale_data", "BTC")], [("source_failing", "replay")]), meta


def test_run_once_goes_on_without_the_bad_symbol(tmp_path: Path) -> None:
    run_folder(tmp_path, b"PK\x03\x04" + bytes(range(256)))
    now = (T0 + 30 * HOUR) / 1000 + 30  # the 30th bar (ETH's last) has just closed
    result = run_perpwatch("run", "s.yaml", "--state", "state.db", "--once", cwd=tmp_path, now=now)
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr  # a source failed in this cycle: BTC's file
    assert len([line for line in result.stderr.splitlines() if "BTC_1h.csv" in line]) == 1
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["symbol"] for e in events] == ["ETH"]


# ------------------------------------------------------------------------------------------------
# CoinGlass snapshot files: the same classes of fault


PRICE_STEM = "api_price_ohlc_history"


def snapshot(tmp_path: Path, table: dict | bytes) -> Path:
    folder = tmp_path / "20250101"
    folder.mkdir()
    f = folder / f"{PRICE_STEM}.parquet"
    if isinstance(table, bytes):
        f.write_bytes(table)
    else:
        write_parquet(f, table)
    return f


def load_btc(folder: Path):
    from perpwatch.plugins.coinglass_files import SnapshotReader

    return SnapshotReader().load([str(folder)], "4h", ["BTC"])


H4 = 4 * HOUR
PRICE = {"open": ["1", "2", "3"], "high": ["1", "2", "3"], "low": ["1", "2", "3"], "close": ["1", "2", "3"]}


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (b"PAR1" + bytes(100) + b"PAR1", ": error: a corrupt Parquet file"),
        (HEAD.encode() + b"1,2,3\n", ": error: not a Parquet file (it starts with 'time,pri'"),
        ({"time": [T0 * 1000, (T0 + H4) * 1000, (T0 + 2 * H4) * 1000], **PRICE}, "(microseconds?)"),
        ({"time": [T0 // 1000, (T0 + H4) // 1000, (T0 + 2 * H4) // 1000], **PRICE}, "(seconds?)"),
        ({"time": [[T0], [T0 + H4], [T0 + 2 * H4]], **PRICE}, "column time holds list<element: int64>"),
        ({"time": ["x", "y", "z"], **PRICE}, "row 1: 'x' is not a time"),
    ],
)
def test_snapshot_files_are_located_errors(tmp_path: Path, pa, table: dict | bytes, expected: str) -> None:
    f = snapshot(tmp_path, table)
    with pytest.raises(LocatedError) as e:
        load_btc(f.parent)
    assert str(e.value).startswith(str(f)) and expected in str(e.value), str(e.value)


def test_snapshot_command_line_exit_2(tmp_path: Path, pa) -> None:
    f = snapshot(tmp_path, {"time": [T0 * 10**6, (T0 + H4) * 10**6, (T0 + 2 * H4) * 10**6], **PRICE})
    strategy = tmp_path / "s.yaml"
    strategy.write_text(
        STRATEGY.replace("[file]", "[console]").replace("1h", "4h").replace("[BTC, ETH]", "[BTC]")
    )
    result = invoke("backtest", strategy, "--data", f.parent)
    assert result.exit_code == 2 and result.output.startswith(str(f)), result.output
    assert "(nanoseconds?)" in result.output
    out = tmp_path / "out"
    converted = invoke("convert-coinglass", f.parent, "--symbol", "BTC", "--out", out)
    assert converted.exit_code == 2 and converted.output.startswith(str(f)), converted.output


def test_snapshot_fifo_does_not_block(tmp_path: Path, pa) -> None:
    folder = tmp_path / "20250101"
    folder.mkdir()
    with fifo(folder / f"{PRICE_STEM}.parquet"), pytest.raises(LocatedError, match="not a regular file"):
        load_btc(folder)


def test_snapshot_symlink_loop_is_a_located_error(tmp_path: Path, pa) -> None:
    f = snapshot(tmp_path, {"time": [T0, T0 + H4, T0 + 2 * H4], **PRICE})
    f.unlink()
    os.symlink(f.name, f)
    with pytest.raises(LocatedError, match="cannot read"):
        load_btc(f.parent)


# ------------------------------------------------------------------------------------------------
# The backtest grid


def test_the_backtest_grid_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file is fine, but together they span centuries of 1h bars: refused before allocating."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "BTC_1h.csv").write_text(HEAD + good_rows(3))
    (data / "ETH_1h.csv").write_text(HEAD + good_rows(3, parse_time("9000-01-01T00:00:00Z")))
    strategy = tmp_path / "s.yaml"
    strategy.write_text(STRATEGY.replace("[file]", "[console]"))
    tracemalloc.start()
    try:
        result = invoke("backtest", strategy, "--data", data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 2, result.output
    assert "bars of 1h" in result.output and "at most" in result.output
    assert peak < 64 * 2**20
    assert walk.MAX_GRID_BARS == _values.MAX_BARS
