"""Parquet files read with located errors: what the replay files and CoinGlass snapshots share.

:func:`read_table` checks that the file is Parquet at all (the ``PAR1`` magic at both ends: a CSV
named ``.parquet`` or a truncated file says so), then its footer (a corrupt file is an error, not
an ``ArrowInvalid``) and its row and column counts (bounded before anything is read), and reads
text columns dictionary-encoded (a value repeated on every row is decoded once). The column
converters turn one column into epoch ms, floats or a :class:`Cat`, refusing booleans, lists,
structs, bytes and other types by name, and each bad value at its row (``row N: ...``).
Needs pyarrow (``pip install 'perpwatch[parquet]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from perpwatch.common.errors import Loc, LocatedError
from perpwatch.common.extras import require
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.frame import Cat

from . import _values
from ._values import Err, ms_range_problem, number_cell, parse_time_cell

MAGIC = b"PAR1"
_TIMES = "times (integer milliseconds, timestamps or ISO 8601 text)"
_PER_MS = {"s": 0, "ms": 1, "us": 1_000, "ns": 1_000_000}
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def pyarrow_parquet(path: str) -> Any:
    """``pyarrow.parquet``, or :class:`~perpwatch.common.extras.MissingExtra` at ``path``: "reading
    Parquet files needs pyarrow: pip install 'perpwatch[parquet]'"."""
    return require("pyarrow.parquet", extra="parquet", purpose="reading Parquet files", where=path)


def check_magic(path: str) -> None:
    """A located error unless the file is a regular file that starts and ends with Parquet's magic bytes."""
    _values.regular_file(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            size = fh.seek(0, 2)
            fh.seek(max(size - 4, 0))
            tail = fh.read(4)
    except OSError as e:
        raise LocatedError(Loc(path), f"cannot read: {e.strerror or e}") from None
    if not head:
        raise LocatedError(Loc(path), "not a Parquet file (it is empty)")
    if not head.startswith(MAGIC):
        try:
            text = head.decode("ascii")
            looks = text.isprintable() or text.rstrip("\r\n").isprintable()
        except UnicodeDecodeError:
            looks = False
        what = f"it starts with {text!r}; a CSV file is named .csv" if looks else f"it starts with {head!r}"
        raise LocatedError(Loc(path), f"not a Parquet file ({what})")
    if size < 12 or tail != MAGIC:
        raise LocatedError(
            Loc(path), "a corrupt Parquet file: it does not end with a Parquet footer (truncated?)"
        )


def read_table(path: str) -> Any:
    """The file as a ``pyarrow.Table`` (text columns dictionary-encoded); located errors for a file
    that is not Parquet, is corrupt, or has more rows or columns than allowed (checked from the
    footer, before any column is read)."""
    pq = pyarrow_parquet(path)
    import pyarrow as pa

    check_magic(path)
    try:
        with pq.ParquetFile(path) as pf:
            rows, schema = pf.metadata.num_rows, pf.schema_arrow
    except (pa.ArrowException, OSError) as e:
        raise unreadable(path, e) from None
    if rows > _values.MAX_BARS:
        raise LocatedError(Loc(path), f"{rows:,} rows; a file holds at most {_values.MAX_BARS:,} bars")
    if len(schema.names) > _values.MAX_COLUMNS:
        raise LocatedError(
            Loc(path), f"{len(schema.names):,} columns; a file has at most {_values.MAX_COLUMNS:,}"
        )
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    try:
        with pq.ParquetFile(path, read_dictionary=text) as pf:
            return pf.read()
    except (pa.ArrowException, OSError) as e:
        raise unreadable(path, e) from None


def unreadable(path: str, e: BaseException) -> LocatedError:
    """pyarrow's complaint as a located error: an OSError with an errno is the system's (cannot
    read), anything else is about the contents (a corrupt file)."""
    if isinstance(e, OSError) and e.errno:
        return LocatedError(Loc(path), f"cannot read: {e.strerror or e}")
    return LocatedError(Loc(path), f"a corrupt Parquet file: {_first_line(e)}")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 200 else text[:200] + "…"


def row_err(path: str, column: str | None = None) -> Err:
    """``err(i, message)`` for values of one column: ``path: error: row N: [column C: ]message``."""
    prefix = f"column {column}: " if column else ""
    return lambda i, message: LocatedError(Loc(path), f"row {i + 1}: {prefix}{message}")


def _type_name(t: Any) -> str:
    import pyarrow as pa

    return "booleans (true/false)" if pa.types.is_boolean(t) else str(t)


def _is_text(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def one_array(col: Any) -> Any:
    """A column (a ``ChunkedArray``, dictionaries unified) as one ``pyarrow.Array``."""
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        if pa.types.is_dictionary(col.type):
            col = col.unify_dictionaries()
        return col.combine_chunks()
    return col


def _first_null(arr: Any) -> int | None:
    if not arr.null_count:
        return None
    return int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))


def _by_label(arr: Any, parse: Callable[[str], Any], err: Err, fill: Any, dtype: Any) -> np.ndarray:
    """A dictionary-encoded text column through ``parse`` once per distinct value; the first row
    holding a bad value is the one named; null rows get ``fill``."""
    labels = arr.dictionary.to_pylist()
    indices = arr.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    parsed = np.empty(len(labels) + 1, dtype=dtype)
    parsed[-1] = fill
    for k, label in enumerate(labels):
        try:
            parsed[k] = parse(label if label is not None else "")
        except ValueError as e:
            hits = np.flatnonzero(indices == k)
            if len(hits):
                raise err(int(hits[0]), str(e)) from None
            parsed[k] = fill  # a dictionary value no row uses
    return parsed[indices]


# --------------------------------------------------------------------------------------------
# Columns


def times_of(col: Any, path: str, name: str = "time") -> np.ndarray:
    """A time column -> int64 epoch ms, checked (unit by magnitude, 1970..9999, whole ms)."""
    import pyarrow as pa

    arr = one_array(col)
    t = arr.type
    ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)
    if not ok and not _is_text(t):
        raise LocatedError(Loc(path), f"column {name} holds {_type_name(t)}, not {_TIMES}")
    err = row_err(path)
    null = _first_null(arr)
    if null is not None:
        raise err(null, "the time is empty")
    if pa.types.is_integer(t):
        return _values.check_int_times(arr.to_numpy(zero_copy_only=False), err)
    if pa.types.is_floating(t):
        return _values.check_float_times(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), err)
    if pa.types.is_dictionary(t):
        return _by_label(arr, parse_time_cell, err, 0, np.int64)
    if _is_text(t):
        return _values.times_from_text(arr.to_pylist(), err)
    return _timestamps(arr, err)


def _timestamps(col: Any, err: Err) -> np.ndarray:
    import pyarrow as pa

    t = col.type
    if pa.types.is_date32(t):
        unit, raw = "d", col.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    elif pa.types.is_date64(t):
        unit, raw = "ms", col.cast(pa.int64()).to_numpy(zero_copy_only=False)
    else:
        unit, raw = t.unit, col.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if unit == "d":
        raw = raw * 86_400_000
        unit = "ms"
    if unit == "s":
        lo, hi = -(2**62) // 1000, (2**62) // 1000
        big = np.flatnonzero((raw < lo) | (raw > hi))
        if len(big):
            i = int(big[0])
            raise err(i, f"time {int(raw[i])} s is out of range")
        ms = raw * 1000
    else:
        per = _PER_MS[unit]
        frac = np.flatnonzero(raw % per) if per > 1 else np.zeros(0, dtype=np.int64)
        if len(frac):
            i = int(frac[0])
            raise err(
                i,
                f"time {_stamp_text(int(raw[i]), unit)} has a fraction of a millisecond; times are whole milliseconds",
            )
        ms = raw // per
    bad = np.flatnonzero((ms < 0) | (ms > _values.MAX_MS))
    if len(bad):
        i = int(bad[0])
        raise err(i, ms_range_problem(int(ms[i]), _stamp_text(int(raw[i]), unit)) or "")
    return ms.astype(np.int64)


def _stamp_text(raw: int, unit: str) -> str:
    """A timestamp in its own unit as ISO 8601 with every digit of its fraction."""
    per = _PER_SECOND[unit]
    seconds, frac = divmod(raw, per)
    try:
        whole = format_time(seconds * 1000)[:-1]
    except (ValueError, OverflowError, OSError):
        return f"{raw} ({unit} since 1970)"
    digits = len(str(per)) - 1
    return f"{whole}.{frac:0{digits}d}Z" if frac else f"{whole}Z"


def numbers_of(col: Any, path: str, name: str) -> np.ndarray:
    """A metric column -> float64 (NaN unknown), or a located error (wrong type; a bad value's row)."""
    import pyarrow as pa

    arr = one_array(col)
    t = arr.type
    err = row_err(path, name)
    if pa.types.is_null(t):
        return np.full(len(arr), np.nan)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        try:
            values = arr.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        except pa.ArrowException as e:
            raise LocatedError(Loc(path), f"column {name}: {_first_line(e)}") from None
        return _values.check_numbers(np.asarray(values, dtype=float), err)
    if pa.types.is_dictionary(t) and _is_text(t):
        return _by_label(arr, number_cell, err, np.nan, float)
    if _is_text(t):
        return _values.numbers_from_text(arr.to_pylist(), err)
    raise LocatedError(Loc(path), f"column {name} holds {_type_name(t)}, not numbers")


def text_of(col: Any, path: str, name: str) -> Cat:
    """A text metric column -> :class:`Cat` (empty and null unknown); numbers are taken as their text."""
    import pyarrow as pa

    arr = one_array(col)
    t = arr.type
    if pa.types.is_null(t):
        return Cat(np.full(len(arr), -1, dtype=np.int32), ())
    if pa.types.is_dictionary(t) and _is_text(t):
        labels = Cat.from_values(s.strip() if isinstance(s, str) else s for s in arr.dictionary.to_pylist())
        table = np.append(labels.codes, np.int32(-1))
        indices = arr.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return Cat(table[indices].astype(np.int32), labels.labels)
    if _is_text(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return Cat.from_values(v.strip() if isinstance(v, str) else v for v in arr.to_pylist())
    raise LocatedError(Loc(path), f"column {name} holds {_type_name(t)}, not text")
