"""Replay source: metric history from files, for backtests and offline runs.

One file per symbol and interval, ``<SYMBOL>_<interval>.csv`` or ``.parquet`` (``BTC_4h.csv``),
in a folder (the ``path`` option; it may also name one such file). Columns: ``time`` (the bar's
open time, UTC: integer milliseconds or ISO 8601) and any metric names of the namespace
(``price.close``, ``oi.close``, ``funding.max_exchange`` (text), ...; a plugin's own
``prefix.name`` too). An empty cell is missing (unknown, never 0). Rows may come in any order; a
duplicated time, a cell that is not a number, a time that is not the open of a bar of the file's
interval, or an unknown column is an error naming the file and line (``file:line:col: error: ...``).

Parsed files are cached per (path, modification time, size). Parquet needs pyarrow
(``pip install 'perpwatch[parquet]'``). Live (``run``), replay just serves what is in range, so a
file that grows serves its newest bar.

Public helpers: :func:`load_replay_file` (parse one file -> :class:`Frame`, located errors),
:func:`replay_file_name`, :func:`parse_file_name`, :func:`read_columns` and
:func:`write_replay_csv` (the writer ``perpwatch fetch`` and ``convert-coinglass`` use).

The plugin also registers :class:`ReplayReader`, the history reader of ``perpwatch backtest
--data`` and ``explain --data`` for these files, and the command that writes them from any
source, ``perpwatch fetch`` (``replay_fetch.py``).
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import click
import numpy as np

from perpwatch.api.history import History, HistoryReader
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import FetchRequest, Source, SourceError
from perpwatch.common.errors import ErrorList, Loc, LocatedError, PerpwatchError, did_you_mean
from perpwatch.common.timeutil import INTERVALS, format_time, parse_time
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.language.metrics import CATALOGUE, CORE_PREFIXES

EXTENSIONS = (".csv", ".parquet")
TIME = "time"
PARQUET_HINT = "reading Parquet files needs pyarrow: pip install 'perpwatch[parquet]'"
# \Z, not $ (which also matches before a final newline); ASCII digits only
_NAME = re.compile(r"^(?P<symbol>[A-Za-z0-9]+)_(?P<interval>[0-9]+[smhdwM])\.(?P<ext>csv|parquet)\Z")
_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\Z")
_SECONDS_LIMIT = 100_000_000_000  # epoch ms below this (1973) are almost surely seconds

#: (mtime_ns, size) and the parsed frame, per absolute path.
_CACHE: dict[str, tuple[tuple[int, int], Frame]] = {}
_HEADER_CACHE: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {}


# --------------------------------------------------------------------------------------------
# File names


def replay_file_name(symbol: str, interval: str, ext: str = "csv") -> str:
    """``BTC``, ``4h`` -> ``BTC_4h.csv``."""
    return f"{symbol}_{interval}.{ext.lstrip('.')}"


def parse_file_name(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``.../BTC_4h.csv`` -> (``BTC``, ``4h``); None when the name does not follow the layout."""
    m = _NAME.match(Path(path).name)
    return (m.group("symbol"), m.group("interval")) if m else None


# --------------------------------------------------------------------------------------------
# Columns


def check_columns(names: Sequence[str], file: str, line: int = 1) -> list[LocatedError]:
    """Problems with a header: no or two ``time`` columns, unknown or repeated metric names."""
    errors: list[LocatedError] = []
    seen: dict[str, int] = {}
    col = 1
    for name in names:
        loc = Loc(file, line, col) if line else Loc(file)
        col += len(name) + 1
        if name in seen:
            errors.append(LocatedError(loc, f"column {name!r} appears twice"))
            continue
        seen[name] = 1
        if name == TIME:
            continue
        problem = _column_problem(name)
        if problem:
            errors.append(LocatedError(loc, problem))
    if TIME not in seen:
        loc = Loc(file, line, 1) if line else Loc(file)
        hint = did_you_mean(TIME, [n for n in names if "." not in n])
        errors.append(
            LocatedError(
                loc, f"no 'time' column{hint}: the first line names the columns, e.g. time,price.close"
            )
        )
    return errors


def _column_problem(name: str) -> str | None:
    if name in CATALOGUE:
        return None
    if not name:
        return "a column has no name"
    prefix = name.split(".", 1)[0]
    if _METRIC.match(name) and prefix not in CORE_PREFIXES:
        return None  # a plugin's own metric (prefix.name)
    hint = did_you_mean(name, CATALOGUE, n=1) or " (metric names are listed by `perpwatch metrics`)"
    return f"unknown column {name!r}{hint}"


def metric_order(names: Iterable[str]) -> list[str]:
    """Catalogue order for core metrics, then the others sorted."""
    core = list(CATALOGUE)
    names = set(names)
    return [n for n in core if n in names] + sorted(names - set(core))


# --------------------------------------------------------------------------------------------
# Loading


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


def load_replay_file(path: str | os.PathLike[str]) -> Frame:
    """Parse one replay file (CSV or Parquet) into a :class:`Frame`, sorted by time.

    Raises :class:`LocatedError` / :class:`ErrorList` (``file:line:col: error: ...``) for bad
    contents and ``OSError`` when the file cannot be read. The result is a private copy.
    """
    return _copy(_load_cached(os.fspath(path)))


def _load_cached(path: str) -> Frame:
    key = os.path.abspath(path)
    stamp = _stamp(path)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    ext = Path(path).suffix.lower()
    if ext == ".csv":
        frame = _read_csv(path)
    elif ext == ".parquet":
        frame = _read_parquet(path)
    else:
        raise LocatedError(Loc(path), f"a replay file ends in .csv or .parquet, not {ext or '(nothing)'}")
    _CACHE[key] = (stamp, frame)
    return frame


def _copy(frame: Frame, lo: int = 0, hi: int | None = None) -> Frame:
    sl = slice(lo, hi)
    cols: dict[str, np.ndarray | Cat] = {
        name: Cat(col.codes[sl].copy(), col.labels) if isinstance(col, Cat) else col[sl].copy()
        for name, col in frame.columns.items()
    }
    return Frame(frame.times[sl].copy(), cols)


def read_columns(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The metric columns of a replay file (header only; invalid names left out; cached)."""
    path = os.fspath(path)
    key = os.path.abspath(path)
    stamp = _stamp(path)
    hit = _HEADER_CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    if path.lower().endswith(".parquet"):
        pq = _pyarrow_parquet(path)
        names = list(pq.read_schema(path).names)
    else:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            names = next(csv.reader(fh), [])
    cols = tuple(n.strip() for n in names if n.strip() != TIME and _column_problem(n.strip()) is None)
    _HEADER_CACHE[key] = (stamp, cols)
    return cols


def _read_csv(path: str) -> Frame:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        rows = [row for row in reader if row]
    if header is None:
        raise LocatedError(
            Loc(path, 1, 1), "empty file: the first line names the columns (time, metric names)"
        )
    names = [h.strip() for h in header]
    errors = check_columns(names, path)
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    width = len(names)
    lines = _LineMap(path)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise LocatedError(
                Loc(path, lines[i], 1), f"{len(row)} cells where the header names {width} columns"
            )
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]

    def where(i: int, j: int) -> Loc:
        return Loc(path, lines[i], _cell_col(rows[i], j))

    return _build(path, names, columns, where, interval=_interval_of(path))


def _cell_col(row: Sequence[str], j: int) -> int:
    """The 1-based character column of cell ``j`` (exact for unquoted lines)."""
    return sum(len(c) + 1 for c in row[:j]) + 1


class _LineMap:
    """Data row index -> line number, computed (by re-reading the file) only when an error needs it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lines: list[int] | None = None

    def __getitem__(self, i: int) -> int:
        if self._lines is None:
            with open(self.path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh)
                next(reader, None)
                self._lines = [reader.line_num for row in reader if row]
        return self._lines[i]


def _read_parquet(path: str) -> Frame:
    pq = _pyarrow_parquet(path)
    table = pq.read_table(path)
    names = [str(n) for n in table.column_names]
    errors = check_columns(names, path, line=0)
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    import pyarrow as pa

    columns: list[Sequence[Any]] = []
    for name in names:
        col = table.column(name)
        if name == TIME and pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("ms", tz=col.type.tz)).cast(pa.int64())
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            arr = col.to_numpy(zero_copy_only=False)
            columns.append(arr if not col.null_count else col.to_pylist())
        else:
            columns.append(col.to_pylist())

    def where(i: int, j: int) -> Loc:
        return Loc(path)

    return _build(path, names, columns, where, interval=_interval_of(path), row_word=True)


def _pyarrow_parquet(path: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LocatedError(Loc(path), PARQUET_HINT) from None
    return pq


def _interval_of(path: str) -> str | None:
    parsed = parse_file_name(path)
    return parsed[1] if parsed else None


def _build(
    path: str,
    names: Sequence[str],
    columns: Sequence[Sequence[Any]],
    where: Callable[[int, int], Loc],
    *,
    interval: str | None,
    row_word: bool = False,
) -> Frame:
    """Cells by column -> a sorted Frame, checking times (unique, bar-aligned) and values."""

    def err(i: int, j: int, message: str) -> LocatedError:
        return LocatedError(where(i, j), f"row {i + 1}: {message}" if row_word else message)

    ti = names.index(TIME)
    times = _parse_times(columns[ti], lambda i, m: err(i, ti, m))
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    dup = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(dup):
        a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        first = f"row {a + 1}" if row_word else f"line {where(a, ti).line}"
        raise err(b, ti, f"duplicate time {format_time(int(times[b]))} (first at {first})")
    step = INTERVALS.get(interval or "")
    if step:
        off = np.flatnonzero(times % step)
        if len(off):
            i = int(off[0])
            raise err(
                i,
                ti,
                f"time {format_time(int(times[i]))} is not the open of a {interval} bar "
                f"(bars of {interval} open at multiples of {interval} since 1970-01-01 UTC)",
            )
    frame = Frame(ordered)
    for j, name in enumerate(names):
        if j == ti:
            continue
        kind = CATALOGUE[name].kind if name in CATALOGUE else None
        cells = columns[j]
        if kind == "str":
            frame.columns[name] = Cat.from_values(_text(cells))[order]
            continue
        try:

            def cell_error(i: int, message: str, j: int = j) -> LocatedError:
                return err(i, j, f"column {names[j]}: {message}")

            values = _parse_numbers(cells, cell_error)
        except LocatedError:
            if kind is not None:
                raise
            frame.columns[name] = Cat.from_values(_text(cells))[order]  # a plugin's text metric
            continue
        frame.columns[name] = values[order]
    return frame


def _text(cells: Sequence[Any]) -> list[object]:
    return [c.strip() if isinstance(c, str) else c for c in cells]


def _parse_times(cells: Sequence[Any], err: Callable[[int, str], LocatedError]) -> np.ndarray:
    n = len(cells)
    if isinstance(cells, np.ndarray) and cells.dtype.kind in "iu":
        times = cells.astype(np.int64)
    else:
        times = _fast_times(cells)
        if times is None:
            times = np.empty(n, dtype=np.int64)
            for i, cell in enumerate(cells):
                text = "" if cell is None else str(cell).strip()
                if not text:
                    raise err(i, "the time is empty")
                try:
                    times[i] = parse_time(text)
                except ValueError as e:
                    raise err(i, str(e)) from None
    if n:
        small = np.flatnonzero(np.abs(times) < _SECONDS_LIMIT)
        if len(small):
            i = int(small[0])
            raise err(
                i,
                f"time {int(times[i])} is not epoch milliseconds (seconds?); write 13-digit ms "
                "or ISO 8601 such as 2025-01-01T00:00:00Z",
            )
    return times


def _fast_times(cells: Sequence[Any]) -> np.ndarray | None:
    """All-integer or all-``...Z`` ISO times parsed by numpy; None when the slow path is needed."""
    if not len(cells):
        return np.zeros(0, dtype=np.int64)
    try:
        return np.array(cells, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        pass
    if all(isinstance(c, str) and c.endswith("Z") and "+" not in c for c in cells):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                return np.array([c[:-1] for c in cells], dtype="datetime64[ms]").astype(np.int64)
        except (ValueError, TypeError, Warning):
            return None
    return None


def _parse_numbers(cells: Sequence[Any], err: Callable[[int, str], LocatedError]) -> np.ndarray:
    """Cells -> float64, empty / null -> NaN (non-finite too); a non-number raises at its cell."""
    if isinstance(cells, np.ndarray) and cells.dtype.kind in "iuf":
        out = cells.astype(float)
    else:
        try:
            out = np.array([("nan" if c is None or c == "" else c) for c in cells], dtype=float)
        except (ValueError, TypeError):
            out = np.empty(len(cells))
            for i, c in enumerate(cells):
                if c is None or (isinstance(c, str) and not c.strip()):
                    out[i] = np.nan
                    continue
                try:
                    out[i] = float(c)
                except (ValueError, TypeError):
                    raise err(
                        i, f"{c!r} is not a number (leave the cell empty when the value is missing)"
                    ) from None
    out[~np.isfinite(out)] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# Writing


def _fmt(values: np.ndarray) -> list[str]:
    out = []
    for v in values.tolist():
        if v != v:
            out.append("")
        elif v.is_integer() and abs(v) < 2**53:
            out.append(str(int(v)))
        else:
            out.append(repr(v))
    return out


def write_replay_csv(
    path: str | os.PathLike[str], frame: Frame, metrics: Iterable[str] | None = None
) -> list[str]:
    """Write ``frame`` as a replay CSV (ISO 8601 times, empty cells for unknown); returns the columns.

    ``metrics`` picks and orders columns (default: all, catalogue order); a metric the frame lacks
    is written as an empty column. The file is replaced atomically.
    """
    path = os.fspath(path)
    names = list(metrics) if metrics is not None else metric_order(frame.columns)
    times = np.datetime_as_string(np.asarray(frame.times, dtype="datetime64[ms]"), unit="s")
    cells: list[list[str]] = [[t + "Z" for t in times.tolist()]]
    for name in names:
        col = frame.column(name)
        if isinstance(col, Cat):
            cells.append(["" if v is None else v for v in col.to_list()])
        else:
            cells.append(_fmt(np.asarray(col, dtype=float)))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".replay-", suffix=".csv", dir=folder)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([TIME, *names])
            writer.writerows(zip(*cells, strict=True))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return names


# --------------------------------------------------------------------------------------------
# The source


class ReplaySource(Source):
    """History from ``<SYMBOL>_<interval>.csv|.parquet`` files (the ``path`` option)."""

    name: ClassVar[str] = "replay"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {
                "type": "string",
                "minLength": 1,
                "description": "a folder of <SYMBOL>_<interval>.csv|.parquet files, or one such file",
            },
        },
    }

    @property
    def path(self) -> str | None:
        p = self.options.get("path")
        return str(p) if p else None

    @classmethod
    def provides(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """The metric columns found in the files (the whole core namespace when there are none to read)."""
        path = options.get("path")
        files = _files_at(str(path) if path else None)
        if files is None:
            return frozenset(CATALOGUE)
        found: set[str] = set()
        for f in files:
            try:
                found.update(read_columns(f))
            except (OSError, PerpwatchError):
                continue
        return frozenset(found)

    def file_for(self, symbol: str, interval: str) -> str:
        """The file that holds ``symbol`` at ``interval``, or SourceError naming the expected file."""
        path = self.path
        expected = replay_file_name(symbol, interval)
        if path is None:
            raise SourceError(
                f"replay needs a path option: a folder of files like {expected}, or one such file",
                retryable=False,
            )
        if os.path.isfile(path):
            held = parse_file_name(path)
            if held and held[0].upper() == symbol.upper() and held[1] == interval:
                return path
            what = f"holds {held[0]} {held[1]}" if held else "is not named <SYMBOL>_<interval>.csv"
            raise SourceError(
                f"replay file {path} {what}; {symbol} {interval} needs a file named {expected}",
                retryable=False,
            )
        if not os.path.isdir(path):
            raise SourceError(f"replay path {path} does not exist", retryable=False)
        found = []  # symbols are not case-sensitive: btc_1h.csv holds BTC
        for name in _replay_names(path):
            held = parse_file_name(name)
            candidate = os.path.join(path, name)
            same = held is not None and held[0].upper() == symbol.upper() and held[1] == interval
            if same and os.path.isfile(candidate):
                found.append(candidate)
        if not found:
            raise SourceError(
                f"replay: no file {expected} (or .parquet) in {path} for {symbol} {interval}",
                retryable=False,
            )
        if len(found) > 1:
            raise SourceError(
                f"replay: both {' and '.join(found)} exist for {symbol} {interval}; keep one",
                retryable=False,
            )
        return found[0]

    async def fetch(self, request: FetchRequest) -> Frame:
        """The file's bars in [start, end] with the requested columns; absent columns are listed in ``problems``."""
        path = self.file_for(request.symbol, request.interval)
        try:
            full = _load_cached(path)
        except PerpwatchError as e:
            raise SourceError(str(e), retryable=False) from None
        except OSError as e:
            raise SourceError(f"cannot read {path}: {e.strerror or e}", retryable=False) from None
        lo = int(np.searchsorted(full.times, request.start, side="left"))
        hi = int(np.searchsorted(full.times, request.end, side="right"))
        part = _copy(_select(full, request.metrics), lo, hi)
        missing = sorted(request.metrics - full.columns.keys())
        if missing:
            part.problems.append(f"replay {os.path.basename(path)} has no column {', '.join(missing)}")
        return part


def _files_at(path: str | None) -> list[str] | None:
    """The replay files at ``path``, a file or a folder (None when there is no readable folder or file)."""
    if path is None:
        return None
    if os.path.isfile(path):
        return [path]
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return None
    return [os.path.join(path, n) for n in names if _NAME.match(n)]


def _select(frame: Frame, metrics: Iterable[str]) -> Frame:
    return Frame(frame.times, {m: frame.columns[m] for m in metrics if m in frame.columns})


# --------------------------------------------------------------------------------------------
# The history reader (backtest and explain --data)


class ReplayReader(HistoryReader):
    """``--data`` as one replay file, or a folder of them (the strategy's interval picks the files)."""

    name: ClassVar[str] = "replay"
    describes: ClassVar[str] = "replay files (<SYMBOL>_<interval>.csv)"
    priority: ClassVar[int] = 10

    def accepts(self, paths: Sequence[str]) -> bool:
        """One file (of any name: a badly named one gets its own message), or one folder holding replay files."""
        if len(paths) != 1:
            return False
        path = paths[0]
        return os.path.isfile(path) or (os.path.isdir(path) and bool(_replay_names(path)))

    def load(self, paths: Sequence[str], interval: str, symbols: Sequence[str] | None) -> History:
        path = paths[0]
        if os.path.isfile(path):
            return _history_file(path, interval, symbols)
        return _history_folder(path, _replay_names(path), interval, symbols)


def _replay_names(folder: str) -> list[str]:
    return [n for n in sorted(os.listdir(folder)) if _NAME.match(n)]


def _history_file(path: str, interval: str, wanted: Sequence[str] | None) -> History:
    held = parse_file_name(path)
    if held is None:
        raise PerpwatchError(f"--data {path}: a replay file is named <SYMBOL>_<interval>.csv or .parquet")
    sym, iv = held[0].upper(), held[1]
    if iv != interval:
        raise PerpwatchError(
            f"--data {path} holds {iv} bars but the strategy runs on {interval} (use --interval {iv})"
        )
    if wanted and list(wanted) != [sym]:
        raise PerpwatchError(f"--data {path} holds only {sym}")
    return History({sym: load_replay_file(path)}, interval, f"replay file {path}")


def _history_folder(folder: str, names: list[str], interval: str, wanted: Sequence[str] | None) -> History:
    files: dict[str, list[str]] = {}
    intervals: set[str] = set()
    for name in names:
        held = parse_file_name(name)
        assert held is not None  # the names matched the layout
        sym, iv = held
        intervals.add(iv)
        if iv == interval:
            files.setdefault(sym.upper(), []).append(os.path.join(folder, name))
    if not files:
        raise PerpwatchError(
            f"--data {folder}: no {interval} files (<SYMBOL>_{interval}.csv); it has "
            f"{', '.join(sorted(intervals))} bars (use --interval)"
        )
    for sym, found in files.items():
        if len(found) > 1:
            raise PerpwatchError(f"--data: both {' and '.join(found)} hold {sym} {interval}; keep one")
    missing = [s for s in wanted or () if s not in files]
    if missing:
        raise PerpwatchError(
            f"--data {folder}: no {interval} file for {', '.join(missing)} (it has {', '.join(sorted(files))})"
        )
    chosen = list(wanted or sorted(files))
    frames = {sym: load_replay_file(files[sym][0]) for sym in chosen}
    return History(frames, interval, f"replay folder {folder}")


@hookimpl
def register_sources(register: Callable[[type[Source]], None]) -> None:
    register(ReplaySource)


@hookimpl
def register_history_readers(register: Callable[[type[HistoryReader]], None]) -> None:
    register(ReplayReader)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """``perpwatch fetch`` (``replay_fetch.py``, which imports this module: imported here, not at the top)."""
    from .replay_fetch import fetch

    cli.add_command(fetch)
