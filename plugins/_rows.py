"""Rows of an API response onto the bar grid, with what cannot be right named, not guessed.

:func:`align_rows` puts the rows of one endpoint (all its pages: one batch) onto the bars of a
fetch. A value is taken only when it can be right; everything else is unknown and each *kind* of
problem becomes one note for the batch (with a count and an example), never one per row:

* times: a row without a usable time, a time before 1973 (timestamps in seconds, not
  milliseconds), dated in the future (after now, one minute of clock skew allowed), or between
  two bars of the grid: the row is ignored;
* fields: absent from some rows (those values unknown) or from every row (the metric is left out,
  so the fetch counts it as missing); a ``null`` (or ``""``) is a value the source does not have,
  not a problem;
* values: not a number (text, a boolean, a list), not finite (NaN, infinities), or impossible for
  the metric (:func:`value_range`: a price at or below 0, a negative volume, open interest or
  liquidation, a percentage outside 0..100).

``landed`` says how many distinct bars got a row; the HTTP sources fail an endpoint that sent rows
of which none landed (``_http.align_job``). :func:`drop_impossible` checks derived columns too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perpwatch.common.jsonsafe import finite_or_none
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.frame import Cat, Frame

#: Times below this (ms: 1973-03-03) are not milliseconds; a seconds timestamp is far below it.
MS_FLOOR = 10**11
#: Latest time (ms, 9999-12-31) a row may carry; anything later is not a time.
MS_CEILING = 253_402_300_799_999
#: Clock skew allowed before a row counts as dated in the future.
FUTURE_SLACK_MS = 60_000

#: The time of a row without a usable one (:func:`row_times`).
NO_TIME = int(np.iinfo(np.int64).min)

_POSITIVE = (0.0, math.inf, True)
_NON_NEGATIVE = (0.0, math.inf, False)
_PERCENT = (0.0, 100.0, False)


def to_ms(value: object) -> int | None:
    """A timestamp (int, numeric string, integral float) in ms, or None (also past year 9999)."""
    f = finite_or_none(value)
    if f is None or f != int(f) or abs(f) > MS_CEILING:
        return None
    return int(f)


def value_range(metric: str) -> tuple[float, float, bool] | None:
    """(low, high, low excluded) of the values ``metric`` can take; None: any finite value."""
    group, _, name = metric.partition(".")
    if group == "price":
        return _NON_NEGATIVE if name == "volume" else _POSITIVE
    if group in ("oi", "liq"):
        return _NON_NEGATIVE
    if group == "taker":
        return _PERCENT if name == "buy_pct" else _NON_NEGATIVE
    if group == "ls":
        return _PERCENT
    if group == "depth":  # resting order-book USD; the imbalance is signed
        return None if name.startswith("imbalance") else _NON_NEGATIVE
    return None  # funding rates may be negative; other plugins' metrics are theirs to judge


def _rule(low: float, high: float, low_open: bool) -> str:
    if high == math.inf:
        return f"must be {'above' if low_open else 'at least'} {low:g}"
    return f"must be within {low:g}..{high:g}"


def drop_impossible(
    columns: MutableMapping[str, np.ndarray | Cat], names: Sequence[str] | None = None
) -> str | None:
    """Make the impossible values (:func:`value_range`) of ``columns`` (or of ``names`` of them)
    unknown, in place; one note naming each metric, its count and an example, or None."""
    found = []
    for name in columns if names is None else names:
        col, rng = columns.get(name), value_range(name)
        if rng is None or not isinstance(col, np.ndarray):
            continue
        low, high, low_open = rng
        with np.errstate(invalid="ignore"):
            bad = (col <= low if low_open else col < low) | (col > high)
        if bad.any():
            example = float(col[bad][0])
            columns[name] = np.where(bad, np.nan, col)
            found.append(f"{name} {int(bad.sum())} (e.g. {example:g}: {_rule(*rng)})")
    return "impossible values, unknown: " + ", ".join(found) if found else None


@dataclass
class Aligned:
    """Rows on a grid: the frame (notes in ``problems``) and how many bars got a row."""

    frame: Frame
    landed: int


def _number(value: object) -> float | None:
    """A number or numeric string as float (maybe NaN or infinite); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):
        return None


def _example(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _time_notes(times: np.ndarray, valid: np.ndarray, now_ms: int | None) -> tuple[np.ndarray, list[str]]:
    """Which valid ``times`` are usable, and one note per kind of unusable time."""
    notes = []
    seconds = valid & (times < MS_FLOOR)
    if seconds.any():
        notes.append(
            f"{int(seconds.sum())} rows are timed before 1973 (e.g. {int(times[seconds][0])}): "
            "seconds instead of milliseconds? (ignored)"
        )
    usable = valid & ~seconds
    if now_ms is not None:
        future = usable & (times > now_ms + FUTURE_SLACK_MS)
        if future.any():
            notes.append(
                f"{int(future.sum())} rows are dated in the future (e.g. {format_time(int(times[future][0]))}, "
                f"now {format_time(now_ms)}) (ignored)"
            )
        usable &= ~future
    return usable, notes


def row_times(rows: Sequence[Mapping[str, Any]], time_key: str) -> np.ndarray:
    """The time of each row in ms, :data:`NO_TIME` where it has none (:func:`to_ms`)."""
    return np.fromiter(
        (t if (t := to_ms(row.get(time_key))) is not None else NO_TIME for row in rows),
        dtype=np.int64,
        count=len(rows),
    )


def check_times(
    rows: Sequence[Mapping[str, Any]], time_key: str, now_ms: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(times, usable, notes): each row's time, which rows have a usable one, and one note per
    kind of unusable time (none, seconds, future)."""
    times = row_times(rows, time_key)
    valid = times != NO_TIME
    notes = []
    if not valid.all():
        notes.append(f"{int((~valid).sum())} of {len(rows)} rows have no valid {time_key!r} (ignored)")
    usable, more = _time_notes(times, valid, now_ms)
    return times, usable, notes + more


def align_rows(
    rows: Sequence[Mapping[str, Any]],
    time_key: str,
    fields: Mapping[str, str],
    grid: np.ndarray,
    *,
    now_ms: int | None = None,
    scale: float = 1.0,
) -> Aligned:
    """Rows -> metric columns on ``grid`` (duplicate times: the last row wins; values times
    ``scale``), with what could not be used named in ``frame.problems``; see the module docstring."""
    grid = np.asarray(grid, dtype=np.int64)
    times, usable, notes = check_times(rows, time_key, now_ms)
    on_grid = usable & np.isin(times, grid)
    if len(grid):
        between = usable & ~on_grid & (times > grid[0]) & (times < grid[-1])
        if between.any():
            notes.append(
                f"{int(between.sum())} rows fall between the bars "
                f"(e.g. {format_time(int(times[between][0]))}) (ignored)"
            )
    by_time: dict[int, Mapping[str, Any]] = {}
    for i in np.flatnonzero(on_grid).tolist():
        by_time[int(times[i])] = rows[i]
    landed = np.asarray(sorted(by_time), dtype=np.int64)
    picked = [by_time[t] for t in landed.tolist()]
    pos = np.searchsorted(grid, landed)
    frame = Frame(grid)
    lacking, partly, garbage, infinite = [], [], [], []
    for key, metric in fields.items():
        values = np.full(len(picked), np.nan)
        absent = wrong = nonfinite = 0
        example = ""
        for j, row in enumerate(picked):
            if key not in row:
                absent += 1
                continue
            raw = row[key]
            if raw is None or raw == "":
                continue
            number = _number(raw)
            if number is None:
                wrong += 1
                example = example or _example(raw)
            elif not math.isfinite(number):
                nonfinite += 1
            else:
                values[j] = number * scale
        if picked and absent == len(picked):
            lacking.append(f"{key!r} ({metric})")
            continue
        if absent:
            partly.append(f"{key!r} ({metric}) missing from {absent} of {len(picked)} rows")
        if wrong:
            garbage.append(f"{metric} {wrong} (e.g. {example})")
        if nonfinite:
            infinite.append(f"{metric} {nonfinite}")
        column = np.full(len(grid), np.nan)
        column[pos] = values
        frame.columns[metric] = column
    if lacking:
        notes.append(f"rows lack {', '.join(lacking)}: missing")
    if partly:
        notes.append(f"some rows lack fields, those values unknown: {', '.join(partly)}")
    if garbage:
        notes.append(f"values that are not numbers, unknown: {', '.join(garbage)}")
    if infinite:
        notes.append(f"values that are not finite (NaN or infinite), unknown: {', '.join(infinite)}")
    impossible = drop_impossible(frame.columns)
    if impossible:
        notes.append(impossible)
    frame.problems = notes
    return Aligned(frame, len(landed))


def align(
    rows: Sequence[Mapping[str, Any]],
    time_key: str,
    fields: Mapping[str, str],
    grid: np.ndarray,
    *,
    now_ms: int | None = None,
    scale: float = 1.0,
) -> Frame:
    """:func:`align_rows`'s frame: metric columns on ``grid``, notes in ``frame.problems``."""
    return align_rows(rows, time_key, fields, grid, now_ms=now_ms, scale=scale).frame


def span(times: np.ndarray) -> str:
    """``first .. last`` of some ms times, for a note."""
    return f"{format_time(int(times.min()))} .. {format_time(int(times.max()))}" if len(times) else "none"
