"""Replay source: metric history from files, for backtests and offline runs.

One file per symbol and interval, ``<SYMBOL>_<interval>.csv`` or ``.parquet`` (``BTC_4h.csv``),
in a folder (the ``path`` option; it may also name one such file). Columns: ``time`` (the bar's
open time, UTC: integer milliseconds or ISO 8601) and any metric names of the namespace
(``price.close``, ``oi.close``, ``funding.max_exchange`` (text), ...; a plugin's own
``prefix.name`` too). An empty cell is missing (unknown, never 0). Rows may come in any order.
Nothing is guessed: a time in another unit (by magnitude), outside 1970..9999 or with a fraction
of a millisecond, a duplicated time, a time that is not the open of a bar of the file's interval,
a cell that is not a finite number (a boolean, ``1_000``, ``inf``), an unknown column, bytes that
are not UTF-8, a cell over the CSV field limit, a corrupt Parquet file or a list column, a file
that is not a regular file: each is an error naming the file and line or row
(``file:line:col: error: ...``); see ``_values.py`` (times, numbers, limits) and ``_parquet.py``.
Sizes are bounded before anything is allocated from them (rows, columns, the span in bars).

Parsed files, and the error of a bad one, are cached per (path, modification time, size).
Parquet needs pyarrow (``pip install 'perpwatch[parquet]'``). Live (``run``), replay just serves
what is in range, so a file that grows serves its newest bar; a bad file fails its first fetch,
then serves no bars (unknown) until it changes.

Public helpers: :func:`load_replay_file` (parse one file -> :class:`Frame`, located errors),
:func:`replay_file_name`, :func:`parse_file_name`, :func:`read_columns` and
:func:`write_replay_csv` (the writer ``perpwatch fetch`` and ``convert-coinglass`` use).

The plugin also registers :class:`ReplayReader`, the history reader of ``perpwatch backtest
--data`` and ``explain --data`` for these files, and the command that writes them from any
source, ``perpwatch fetch`` (``replay_fetch.py``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import click
import numpy as np

from perpwatch.api.history import History, HistoryReader
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import FetchRequest, PluginContext, Source, SourceError
from perpwatch.common.errors import ErrorList, Loc, LocatedError, PerpwatchError, did_you_mean
from perpwatch.common.extras import MissingExtra
from perpwatch.common.timeutil import INTERVALS, format_time
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.language.metrics import CATALOGUE, CORE_PREFIXES

from . import _values
from ._parquet import check_magic, numbers_of, pyarrow_parquet, read_table, text_of, times_of, unreadable
from ._values import (
    MAX_COLUMNS,
    MAX_FIELD,
    Err,
    numbers_from_text,
    regular_file,
    show,
    span_problem,
    times_from_text,
)

EXTENSIONS = (".csv", ".parquet")
TIME = "time"
# \Z, not $ (which also matches before a final newline); ASCII digits only
_NAME = re.compile(r"^(?P<symbol>[A-Za-z0-9]+)_(?P<interval>[0-9]+[smhdwM])\.(?P<ext>csv|parquet)\Z")
_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\Z")
log = logging.getLogger(__name__)

#: (mtime_ns, size) and the parsed frame (or the error that parsing it raised), per absolute path.
_CACHE: dict[str, tuple[tuple[int, int], Frame | PerpwatchError]] = {}
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


def check_columns(names: Sequence[str], file: str, line: int = 1, limit: int = 10) -> list[LocatedError]:
    """Problems with a header: no or two ``time`` columns, unknown or repeated metric names.

    At most ``limit`` problems are described; one more error counts the rest.
    """
    errors: list[LocatedError] = []
    more = 0
    seen: dict[str, int] = {}
    col = 1
    for name in names:
        loc = Loc(file, line, col) if line else Loc(file)
        col += len(name) + 1
        if name in seen:
            problem: str | None = f"column {show(name)} appears twice"
        else:
            seen[name] = 1
            problem = None if name == TIME else _column_problem(name, hint=len(errors) < limit)
        if problem:
            if len(errors) < limit:
                errors.append(LocatedError(loc, problem))
            else:
                more += 1
    if TIME not in seen:
        loc = Loc(file, line, 1) if line else Loc(file)
        hint = did_you_mean(TIME, [n for n in names[:MAX_COLUMNS] if "." not in n and len(n) < 40])
        problem = f"no 'time' column{hint}: the first line names the columns, e.g. time,price.close"
        if len(errors) < limit:
            errors.append(LocatedError(loc, problem))
        else:
            more += 1
    if more:
        errors.append(LocatedError(Loc(file, line, 1) if line else Loc(file), f"and {more:,} more problems"))
    return errors


def _column_problem(name: str, hint: bool = True) -> str | None:
    if name in CATALOGUE:
        return None
    if not name:
        return "a column has no name"
    prefix = name.split(".", 1)[0]
    if _METRIC.match(name) and prefix not in CORE_PREFIXES:
        return None  # a plugin's own metric (prefix.name)
    close = did_you_mean(name, CATALOGUE, n=1) if hint and len(name) < 100 else ""
    return f"unknown column {show(name)}{close or ' (metric names are listed by `perpwatch metrics`)'}"


def metric_order(names: Iterable[str]) -> list[str]:
    """Catalogue order for core metrics, then the others sorted."""
    core = list(CATALOGUE)
    names = set(names)
    return [n for n in core if n in names] + sorted(names - set(core))


def _raise(errors: list[LocatedError]) -> None:
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]


# --------------------------------------------------------------------------------------------
# Loading


def _version(path: str) -> tuple[int, int] | None:
    """(mtime_ns, size) of the file, or of the link itself when it cannot be followed; None if gone."""
    for stat_fn in (os.stat, os.lstat):
        try:
            st = stat_fn(path)
        except OSError:
            continue
        return (st.st_mtime_ns, st.st_size)
    return None


def load_replay_file(path: str | os.PathLike[str]) -> Frame:
    """Parse one replay file (CSV or Parquet) into a :class:`Frame`, sorted by time.

    Every problem, an unreadable file included, is a :class:`LocatedError` / :class:`ErrorList`
    (``file:line:col: error: ...``). The result is a private copy.
    """
    return _copy(_load_cached(os.fspath(path)))


def _load_cached(path: str) -> Frame:
    """The parsed file, cached per (path, version); a bad file's error is cached the same way."""
    key = os.path.abspath(path)
    stamp = regular_file(path)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        if isinstance(hit[1], PerpwatchError):
            raise hit[1].with_traceback(None)
        return hit[1]
    try:
        frame = _parse(path)
    except PerpwatchError as e:
        _CACHE[key] = (stamp, e)
        raise
    _CACHE[key] = (stamp, frame)
    return frame


def _parse(path: str) -> Frame:
    ext = Path(path).suffix.lower()
    if ext == ".csv":
        return _read_csv(path)
    if ext == ".parquet":
        return _read_parquet(path)
    raise LocatedError(Loc(path), f"a replay file ends in .csv or .parquet, not {ext or '(nothing)'}")


def _copy(frame: Frame, lo: int = 0, hi: int | None = None) -> Frame:
    sl = slice(lo, hi)
    cols: dict[str, np.ndarray | Cat] = {
        name: Cat(col.codes[sl].copy(), col.labels) if isinstance(col, Cat) else col[sl].copy()
        for name, col in frame.columns.items()
    }
    return Frame(frame.times[sl].copy(), cols)


def read_columns(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The metric columns of a replay file (header only; invalid names left out; cached).

    Raises :class:`LocatedError` when the header cannot be read.
    """
    path = os.fspath(path)
    key = os.path.abspath(path)
    stamp = regular_file(path)
    hit = _HEADER_CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    if path.lower().endswith(".parquet"):
        pq = pyarrow_parquet(path)  # first: without pyarrow, an error naming the extra
        import pyarrow as pa

        check_magic(path)
        try:
            names = [str(n) for n in pq.read_schema(path).names]
        except (pa.ArrowException, OSError) as e:
            raise unreadable(path, e) from None
    else:
        names = _csv_header(path)
    cols = tuple(
        n.strip() for n in names if n.strip() != TIME and _column_problem(n.strip(), hint=False) is None
    )
    _HEADER_CACHE[key] = (stamp, cols)
    return cols


def _csv_header(path: str) -> list[str]:
    """The first line of a CSV file, read without reading more than a bounded prefix."""
    limit = MAX_COLUMNS * 128
    try:
        with open(path, "rb") as fh:
            first = fh.readline(limit + 1)
    except OSError as e:
        raise LocatedError(Loc(path), f"cannot read: {e.strerror or e}") from None
    if len(first) > limit:
        raise LocatedError(Loc(path, 1, 1), f"the first line is longer than {limit:,} bytes")
    rows = _csv_rows(path, _decode(path, first))
    return next(rows, ([], 1))[0]


def _decode(path: str, data: bytes) -> str:
    """UTF-8 text (a byte order mark dropped), or a located error at the first byte that is not."""
    if data.startswith(b"PAR1"):
        raise LocatedError(Loc(path, 1, 1), "a Parquet file named .csv (a Parquet file is named .parquet)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        start = data.rfind(b"\n", 0, e.start) + 1
        col = len(data[start : e.start].decode("utf-8", "replace")) + 1
        raise LocatedError(
            Loc(path, line, col),
            f"not UTF-8 text (byte 0x{data[e.start]:02x}): a replay CSV is UTF-8 text "
            "(a binary or differently encoded file?)",
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _csv_rows(path: str, text: str) -> Iterator[tuple[list[str], int]]:
    """(cells, line) of every non-empty row; a CSV syntax error is located where its row starts."""
    reader = csv.reader(io.StringIO(text, newline=""))
    last = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            message = str(e)
            if "field larger than field limit" in message:
                message = (
                    f"a cell longer than {MAX_FIELD:,} characters (an unclosed quote makes the rest "
                    "of the file one cell)"
                )
            raise LocatedError(Loc(path, last + 1, 1), message) from None
        if row:
            yield row, reader.line_num
        last = reader.line_num


def _read_csv(path: str) -> Frame:
    size = regular_file(path)[1]
    if size > _values.MAX_CSV_BYTES:
        raise LocatedError(
            Loc(path),
            f"file larger than {_values.MAX_CSV_BYTES:,} bytes ({size:,}); write a larger history as Parquet",
        )
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LocatedError(Loc(path), f"cannot read: {e.strerror or e}") from None
    rows_lines = _csv_rows(path, _decode(path, data))
    first = next(rows_lines, None)
    if first is None:
        raise LocatedError(
            Loc(path, 1, 1), "empty file: the first line names the columns (time, metric names)"
        )
    header, header_line = first
    if len(header) > MAX_COLUMNS:
        raise LocatedError(
            Loc(path, header_line, 1), f"{len(header):,} columns; a replay file has at most {MAX_COLUMNS:,}"
        )
    names = [h.strip() for h in header]
    _raise(check_columns(names, path, header_line))
    width = len(names)
    rows: list[list[str]] = []
    lines: list[int] = []
    for row, line in rows_lines:
        if len(row) != width:
            raise LocatedError(Loc(path, line, 1), f"{len(row)} cells where the header names {width} columns")
        rows.append(row)
        lines.append(line)
        if len(rows) > _values.MAX_BARS:
            raise LocatedError(
                Loc(path, line, 1),
                f"more than {_values.MAX_BARS:,} rows; a replay file holds at most {_values.MAX_BARS:,} bars",
            )
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]

    def err_at(j: int) -> Err:
        prefix = "" if names[j] == TIME else f"column {names[j]}: "
        return lambda i, message: LocatedError(Loc(path, lines[i], _cell_col(rows[i], j)), prefix + message)

    ti = names.index(TIME)
    times = times_from_text(columns[ti], err_at(ti))
    cols: dict[str, np.ndarray | Cat] = {}
    for j, name in enumerate(names):
        if j == ti:
            continue
        kind = CATALOGUE[name].kind if name in CATALOGUE else None
        cells = columns[j]
        if kind == "str":
            cols[name] = Cat.from_values(c.strip() for c in cells)
            continue
        try:
            cols[name] = numbers_from_text(cells, err_at(j))
        except LocatedError:
            if kind is not None:
                raise
            cols[name] = Cat.from_values(c.strip() for c in cells)  # a plugin's text metric

    def where(i: int) -> str:
        return f"line {lines[i]}"

    return _build(path, times, cols, lambda i: Loc(path, lines[i], 1), where)


def _cell_col(row: Sequence[str], j: int) -> int:
    """The 1-based character column of cell ``j`` (exact for unquoted lines)."""
    return sum(len(c) + 1 for c in row[:j]) + 1


def _read_parquet(path: str) -> Frame:
    table = read_table(path)
    names = [str(n) for n in table.column_names]
    _raise(check_columns(names, path, line=0))
    cols: dict[str, np.ndarray | Cat] = {}
    times = np.zeros(0, dtype=np.int64)
    for name in names:
        col = table.column(name)
        kind = CATALOGUE[name].kind if name in CATALOGUE else None
        if name == TIME:
            times = times_of(col, path)
        elif kind == "str":
            cols[name] = text_of(col, path, name)
        elif kind is None and _is_plugin_text(col):
            try:
                cols[name] = numbers_of(col, path, name)
            except LocatedError:
                cols[name] = text_of(col, path, name)  # a plugin's text metric
        else:
            cols[name] = numbers_of(col, path, name)

    def where(i: int) -> str:
        return f"row {i + 1}"

    def loc(i: int) -> Loc:
        return Loc(path)

    return _build(path, times, cols, loc, where, row_word=True)


def _is_plugin_text(col: Any) -> bool:
    import pyarrow as pa

    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _interval_of(path: str) -> str | None:
    parsed = parse_file_name(path)
    return parsed[1] if parsed else None


def _build(
    path: str,
    times: np.ndarray,
    columns: dict[str, np.ndarray | Cat],
    loc: Callable[[int], Loc],
    where: Callable[[int], str],
    *,
    row_word: bool = False,
) -> Frame:
    """Checked times and parsed columns (file order) -> a sorted Frame: times unique, bar-aligned,
    and spanning no more bars than a grid may hold."""

    def err(i: int, message: str) -> LocatedError:
        return LocatedError(loc(i), f"row {i + 1}: {message}" if row_word else message)

    order = np.argsort(times, kind="stable")
    ordered = times[order]
    dup = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(dup):
        a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise err(b, f"duplicate time {format_time(int(times[b]))} (first at {where(a)})")
    interval = _interval_of(path)
    step = INTERVALS.get(interval or "")
    if step and interval:
        off = np.flatnonzero(times % step)
        if len(off):
            i = int(off[0])
            raise err(
                i,
                f"time {format_time(int(times[i]))} is not the open of a {interval} bar "
                f"(bars of {interval} open at multiples of {interval} since 1970-01-01 UTC)",
            )
        problem = span_problem(ordered, step, interval)
        if problem:
            raise LocatedError(Loc(path), problem)
    frame = Frame(ordered)
    for name, col in columns.items():
        frame.columns[name] = col[order]
    return frame


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

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None):
        super().__init__(options, ctx)
        #: Path -> the version (mtime_ns, size) of the bad file whose problem was logged.
        self._reported: dict[str, tuple[int, int] | None] = {}
        #: Path -> (version, the absent columns already reported for that version of the file).
        self._absent: dict[str, tuple[tuple[int, int] | None, frozenset[str]]] = {}

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
            except MissingExtra:
                raise  # not a bad file: nothing can be read until the extra is installed
            except PerpwatchError:
                continue  # a bad file: said, once, when it is fetched
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
        if os.path.isfile(path) or (os.path.lexists(path) and not os.path.isdir(path)):
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
            if same:  # a folder, a broken link named so: an error of the file, said when it is read
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
        """The file's bars in [start, end] with the requested columns; absent columns are listed in ``problems``.

        A file that cannot be used (bad contents, unreadable) fails the first fetch of each
        version of it (SourceError with the located error: the runner logs it once); later
        fetches give its symbol no bars, every metric unknown, until the file changes.
        """
        path = self.file_for(request.symbol, request.interval)
        try:
            full = _load_cached(path)
        except PerpwatchError as e:
            return self._unusable(path, e, request)
        if path in self._reported:
            del self._reported[path]
            log.info("replay: %s is readable again", path)
        lo = int(np.searchsorted(full.times, request.start, side="left"))
        hi = int(np.searchsorted(full.times, request.end, side="right"))
        part = _copy(_select(full, request.metrics), lo, hi)
        missing = request.metrics - full.columns.keys()
        for name in missing:  # unknown, never a failure that holds the rules bar after bar
            part.columns[name] = _unknown_column(name, len(part.times))
        version = _version(path)
        said = self._absent.get(path)
        new = missing if said is None or said[0] != version else missing - said[1]
        if new:
            self._absent[path] = (version, (said[1] if said and said[0] == version else frozenset()) | new)
            part.problems.append(
                f"replay {os.path.basename(path)} has no column {', '.join(sorted(new))} "
                "(unknown; said once per file)"
            )
        return part

    def check(self, symbols: Sequence[str], interval: str) -> list[str]:
        """Start-up: a missing ``path`` or a missing file for a (symbol, interval), naming the
        files that are there. A file that exists but is bad is said when it is fetched."""
        problems = []
        for symbol in symbols:
            try:
                self.file_for(symbol, interval)
            except SourceError as e:
                problems.append(str(e) + self._files_there())
        return problems

    def _files_there(self) -> str:
        path = self.path
        if path is None or not os.path.isdir(path):
            return ""
        names = _replay_names(path)
        if not names:
            return " (the folder holds no <SYMBOL>_<interval>.csv|.parquet file)"
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        return f" (files there: {shown})"

    def stale_hint(self, symbol: str, interval: str) -> str | None:
        """For stale data: the span the file holds and the ``--simulate-from`` that replays it."""
        try:
            full = _load_cached(self.file_for(symbol, interval))
        except PerpwatchError:
            return None
        if not len(full.times):
            return None
        first, last = format_time(int(full.times[0])), format_time(int(full.times[-1]))
        return (
            f"the replay file holds {first} .. {last}: replay it as if live with "
            f"--simulate-from {first} (and --simulate-to {last})"
        )

    def _unusable(self, path: str, error: PerpwatchError, request: FetchRequest) -> Frame:
        """A bad file: SourceError (the located error) the first time this version of it is read;
        after that no bars, every requested column present and unknown, until the file changes."""
        version = _version(path)
        if path not in self._reported or self._reported[path] != version:
            self._reported[path] = version
            raise SourceError(str(error), retryable=False) from None
        empty = Frame(np.zeros(0, dtype=np.int64))  # no problems: it was said once, above
        for name in request.metrics:
            kind = CATALOGUE[name].kind if name in CATALOGUE else None
            empty.columns[name] = Cat(np.zeros(0, dtype=np.int32), ()) if kind == "str" else np.zeros(0)
        return empty


def _unknown_column(name: str, n: int) -> np.ndarray | Cat:
    """``n`` unknown values of the metric ``name`` (a text metric as codes with no labels)."""
    if name in CATALOGUE and CATALOGUE[name].kind == "str":
        return Cat(np.full(n, -1, dtype=np.int32), ())
    return np.full(n, np.nan)


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
