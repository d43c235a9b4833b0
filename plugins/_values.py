"""Times and numbers read from data files: strict parsing, units by magnitude, ranges and limits.

What the replay files (``replay.py``, ``_parquet.py``) and the CoinGlass snapshot reader share.
Nothing is guessed: a time is whole epoch milliseconds (integer text, exact ``.0`` allowed) or
ISO 8601, from 1970 to 9999 (an integer from 1973-03-03 on: smaller ones look like seconds);
integers that look like seconds, microseconds or nanoseconds are refused with what they would be
in that unit; a fraction of a millisecond is refused, never truncated. A number cell is ASCII
decimal notation (``12``, ``-1.5``, ``2e10``); empty or ``NaN`` is unknown; booleans, infinities,
numbers too large for a float, ``1_000`` and non-ASCII digits are refused.

Every parser takes ``err(i, message) -> LocatedError`` and raises what it returns, so the caller
decides the location (a CSV line and column, a Parquet row). Messages quote at most
:data:`SHOWN` characters of a cell.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from perpwatch.common.errors import Loc, LocatedError
from perpwatch.common.timeutil import format_time

#: 9999-12-31T23:59:59.999Z, the last millisecond a time may be.
MAX_MS = 253_402_300_799_999
#: 1973-03-03T09:46:40Z: an integer time below this looks like seconds (ISO times may be earlier).
MIN_INT_MS = 100_000_000_000
#: The longest cell, in characters (Python's csv default field limit; a replay cell is far shorter).
MAX_FIELD = 131_072
#: Columns of one replay file, ``time`` included.
MAX_COLUMNS = 1_000
#: Bars of one file's interval between its first and last time, and rows of one file: what a
#: backtest's bar grid may hold (10 million: 19 years of 1m bars).
MAX_BARS = 10_000_000
#: Bytes of one replay CSV file (1 GiB); a longer history is written as Parquet.
MAX_CSV_BYTES = 2**30
#: Characters of a bad cell quoted in a message.
SHOWN = 60

Err = Callable[[int, str], LocatedError]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_INT = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"([+-]?[0-9]+)\.([0-9]*)")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FRACTION = re.compile(r"[.,]([0-9]+)")
_BIG_YEAR = re.compile(r"\+?0*[1-9][0-9]{4,}-")
_ISO_MS = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,3})?)?Z"
_ISO_COLUMN = re.compile(rf"(?:{_ISO_MS}\n)*{_ISO_MS}")
_INT_CHARS = re.compile(r"[0-9\n-]*")
_NUMBER_CHARS = re.compile(r"[0-9eE.+\-\n]*")
_BOOLEANS = {"true", "false"}
#: Other units an integer time may be in: (name, times, per) turn it into ms as value * times // per.
_UNITS = (("seconds", 1000, 1), ("microseconds", 1, 1000), ("nanoseconds", 1, 1_000_000))

_RANGE = (
    f"times are epoch milliseconds from {MIN_INT_MS} (1973-03-03) to {MAX_MS} (9999-12-31), "
    "or ISO 8601 from 1970 to 9999"
)


def show(value: object) -> str:
    """``repr`` of a cell, cut to :data:`SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[: SHOWN - 5]}…{text[-4:]} ({len(str(value)):,} characters)"


# --------------------------------------------------------------------------------------------
# Times


def int_time_problem(value: int) -> str | None:
    """Why an integer is not epoch milliseconds of 1973..9999 (naming the unit it looks like), or None."""
    if MIN_INT_MS <= value <= MAX_MS:
        return None
    shown = str(value) if len(str(value)) <= 30 else show(str(value))
    if value < 0:
        return f"time {shown} is before 1970-01-01 ({_RANGE})"
    for unit, times, per in _UNITS:
        ms, rest = divmod(value * times, per)
        if MIN_INT_MS <= ms <= MAX_MS:
            as_ms = "" if rest else f" ({ms})"
            return (
                f"time {shown} is not epoch milliseconds ({unit}?): as {unit} it is "
                f"{format_time(ms)}; milliseconds are expected{as_ms}, or ISO 8601 such as "
                "2025-01-01T00:00:00Z"
            )
    if value < MIN_INT_MS:
        return (
            f"time {shown} is not epoch milliseconds (seconds?): write 13-digit ms or ISO 8601 "
            f"such as 2025-01-01T00:00:00Z ({_RANGE})"
        )
    return f"time {shown} is out of range ({_RANGE})"


def ms_range_problem(ms: int, shown: str) -> str | None:
    """Why a time given with its unit (ISO 8601, a timestamp) is outside 1970..9999, or None."""
    if ms < 0:
        return f"time {shown} is before 1970-01-01 ({_RANGE})"
    if ms > MAX_MS:
        return f"time {shown} is after 9999-12-31 ({_RANGE})"
    return None


def parse_time_cell(cell: str) -> int:
    """One time cell -> epoch ms, or ValueError with the reason (see the module docstring)."""
    text = cell.strip()
    if not text:
        raise ValueError("the time is empty")
    if _INT.fullmatch(text):
        return _int_time(text)
    if len(text) > 40 or not text.isascii():
        raise ValueError(f"{show(text)} is not a time; {_WRITE}")
    m = _DECIMAL.fullmatch(text)
    if m:
        if m.group(2).strip("0"):
            raise ValueError(
                f"time {show(text)} has a fraction of a millisecond; times are whole milliseconds"
            )
        return _int_time(m.group(1))
    return _iso_time(text)


_WRITE = "write ISO 8601 such as 2024-08-05T00:00:00Z, or epoch milliseconds"


def _int_time(text: str) -> int:
    if len(text.lstrip("+-")) > 25:
        raise ValueError(f"time {show(text)} is out of range ({_RANGE})")
    value = int(text)
    problem = int_time_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _iso_time(text: str) -> int:
    big = _BIG_YEAR.match(text)
    if big:
        raise ValueError(f"time {show(text)} is after 9999-12-31 ({_RANGE})")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{show(text)} is not a time; {_WRITE}") from None
    fraction = _FRACTION.search(text)
    if fraction and fraction.group(1)[3:].strip("0"):
        raise ValueError(f"time {show(text)} has a fraction of a millisecond; times are whole milliseconds")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = (dt - _EPOCH) // _MS
    problem = ms_range_problem(ms, show(text))
    if problem:
        raise ValueError(problem)
    return ms


def times_from_text(cells: Sequence[str | None], err: Err) -> np.ndarray:
    """Time cells (text; None is empty) -> int64 epoch ms, each checked; the first bad cell raises."""
    n = len(cells)
    if not n:
        return np.zeros(0, dtype=np.int64)
    if all(isinstance(c, str) for c in cells):
        joined = "\n".join(cells)  # type: ignore[arg-type]
        fast = _fast_ints(cells, joined) if _INT_CHARS.fullmatch(joined) else None
        if fast is not None:
            bad = np.flatnonzero((fast < MIN_INT_MS) | (fast > MAX_MS))
            if not len(bad):
                return fast
            i = int(bad[0])
            raise err(i, int_time_problem(int(fast[i])) or "")
        if _ISO_COLUMN.fullmatch(joined):
            try:
                fast = np.array([c[:-1] for c in cells], dtype="datetime64[ms]").astype(np.int64)  # type: ignore[index]
            except ValueError:
                fast = None  # an impossible date: the cell by cell pass says which
            if fast is not None:
                bad = np.flatnonzero(fast < 0)  # four-digit years cannot pass 9999
                if not len(bad):
                    return fast
    out = np.empty(n, dtype=np.int64)
    for i, cell in enumerate(cells):
        try:
            out[i] = parse_time_cell("" if cell is None else str(cell))
        except ValueError as e:
            raise err(i, str(e)) from None
    return out


def _fast_ints(cells: Sequence[object], joined: str) -> np.ndarray | None:
    if "\n\n" in f"\n{joined}\n":
        return None  # an empty cell: the slow path locates it
    try:
        return np.array(cells, dtype=np.int64)
    except (ValueError, OverflowError):
        return None


def check_int_times(values: np.ndarray, err: Err) -> np.ndarray:
    """Integer times (int64 or uint64) as epoch ms; the first that is not raises."""
    if values.dtype.kind == "u" and len(values) and int(values.max()) > MAX_MS:
        i = int(np.argmax(values > MAX_MS))
        raise err(i, int_time_problem(int(values[i])) or "")
    times = values.astype(np.int64)
    bad = np.flatnonzero((times < MIN_INT_MS) | (times > MAX_MS))
    if len(bad):
        i = int(bad[0])
        raise err(i, int_time_problem(int(times[i])) or "")
    return times


def check_float_times(values: np.ndarray, err: Err) -> np.ndarray:
    """Float times: whole milliseconds written as floats (``1735689600000.0``); NaN is empty."""
    odd = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
    if len(odd):
        i = int(odd[0])
        v = float(values[i])
        if math.isnan(v):
            raise err(i, "the time is empty")
        if math.isinf(v):
            raise err(i, f"time {v} is not a time; {_WRITE}")
        raise err(i, f"time {v!r} has a fraction of a millisecond; times are whole milliseconds")
    too_big = np.flatnonzero(np.abs(values) >= 2.0**63)
    if len(too_big):
        i = int(too_big[0])
        raise err(i, f"time {float(values[i])!r} is out of range ({_RANGE})")
    return check_int_times(values.astype(np.int64), err)


# --------------------------------------------------------------------------------------------
# Numbers


def number_problem(cell: str) -> str:
    """Why a cell is not a number (it is not one: the caller has tried)."""
    text = cell.strip()
    if text.lower() in _BOOLEANS:
        return f"{show(text)} is a boolean, not a number"
    if _NUMBER.fullmatch(text) or text.lower().lstrip("+-") in ("inf", "infinity"):
        return f"{show(text)} is not a finite number"
    return f"{show(text)} is not a number (leave the cell empty when the value is missing)"


def number_cell(cell: str) -> float:
    """One number cell -> float (NaN when empty or ``NaN``), or ValueError with the reason."""
    text = cell.strip()
    if not text or text.lower() == "nan":
        return math.nan
    if _NUMBER.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    raise ValueError(number_problem(text))


def numbers_from_text(cells: Sequence[str | None], err: Err) -> np.ndarray:
    """Number cells (text; None is empty) -> float64, NaN for unknown; the first bad cell raises."""
    try:
        joined: str | None = "\n".join(cells)  # type: ignore[arg-type]
    except TypeError:  # a None cell: the cell-by-cell path below
        joined = None
    if joined is not None and _NUMBER_CHARS.fullmatch(joined):
        try:
            out = np.array([c or "nan" for c in cells], dtype=float)
        except ValueError:
            out = None
        # These characters cannot spell "nan" or "inf": a NaN here is an empty cell (unknown), an
        # infinity an overflow such as 1e999 (refused below, at its row).
        if out is not None and not np.isinf(out).any():
            return out
    out = np.empty(len(cells))
    for i, cell in enumerate(cells):
        try:
            out[i] = number_cell("" if cell is None else cell)
        except ValueError as e:
            raise err(i, str(e)) from None
    return out


def check_numbers(values: np.ndarray, err: Err) -> np.ndarray:
    """Floats from a typed column: NaN is unknown, an infinity raises at its row."""
    inf = np.flatnonzero(np.isinf(values))
    if len(inf):
        i = int(inf[0])
        raise err(i, f"{float(values[i])} is not a finite number")
    return values


# --------------------------------------------------------------------------------------------
# Bounds


def regular_file(path: str) -> tuple[int, int]:
    """(mtime_ns, size) of a regular file, or a located error: cannot read (a symlink loop, no
    permission), or not a regular file (a folder, a FIFO that would block, a device that never ends)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise LocatedError(Loc(path), f"cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
        raise LocatedError(Loc(path), f"not a regular file ({kind})")
    return (st.st_mtime_ns, st.st_size)


_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def span_problem(times: np.ndarray, step: int, interval: str) -> str | None:
    """Why sorted bar times span more bars than a grid may hold, or None."""
    if len(times) > MAX_BARS:
        return f"{len(times):,} rows; a replay file holds at most {MAX_BARS:,} bars"
    if not len(times):
        return None
    bars = (int(times[-1]) - int(times[0])) // step + 1
    if bars > MAX_BARS:
        return (
            f"its times {format_time(int(times[0]))} .. {format_time(int(times[-1]))} span {bars:,} bars of "
            f"{interval}; a replay file spans at most {MAX_BARS:,} bars"
        )
    return None
