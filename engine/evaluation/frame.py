"""Frames: a bar timeline and one column per metric, column-wise numpy arrays.

A numeric column is float64 with NaN for *unknown*. A string column (such as
``funding.max_exchange``) is a :class:`Cat`: int32 codes into a label tuple, -1 for unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Column = "np.ndarray | Cat"


@dataclass
class Cat:
    """A categorical (string) series: ``labels[codes[i]]``, or unknown where the code is -1."""

    codes: np.ndarray
    labels: tuple[str, ...]

    @classmethod
    def from_values(cls, values: Iterable[object]) -> Cat:
        """Build from Python values; None, NaN and "" are unknown."""
        labels: dict[str, int] = {}
        codes = []
        for v in values:
            if v is None or v == "" or (isinstance(v, float) and v != v):
                codes.append(-1)
            else:
                codes.append(labels.setdefault(str(v), len(labels)))
        return cls(np.asarray(codes, dtype=np.int32), tuple(labels))

    @classmethod
    def constant(cls, label: str, n: int) -> Cat:
        return cls(np.zeros(n, dtype=np.int32), (label,))

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, key) -> Cat:
        return Cat(self.codes[key], self.labels)

    def value(self, i: int) -> str | None:
        c = int(self.codes[i])
        return None if c < 0 else self.labels[c]

    def to_list(self) -> list[str | None]:
        return [None if c < 0 else self.labels[c] for c in self.codes.tolist()]

    def code_of(self, label: str) -> int:
        """The code of ``label``, or -2 (matches nothing) when it never occurs."""
        try:
            return self.labels.index(label)
        except ValueError:
            return -2

    def recode(self, labels: Sequence[str]) -> np.ndarray:
        """Codes of this series in another label table (which must hold all of this one's labels)."""
        index = {lab: i for i, lab in enumerate(labels)}
        table = np.asarray([index[lab] for lab in self.labels] + [-1], dtype=np.int32)
        return table[self.codes]  # -1 indexes the trailing -1


def is_cat(x: object) -> bool:
    return isinstance(x, Cat)


@dataclass
class Frame:
    """Bars (open times, ms, ascending and unique) and metric columns aligned on them.

    ``observed`` optionally gives, per column, the time each value was observed; a value carried
    forward from an older observation (a funding settlement, a snapshot) is stale once
    ``bar time - observed`` exceeds the strategy's ``max_data_age``.
    """

    times: np.ndarray
    columns: dict[str, np.ndarray | Cat] = field(default_factory=dict)
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    #: Why requested metrics are absent (one short reason each, safe to log; no secrets).
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.times)

    def slice(self, start: int, stop: int | None = None) -> Frame:
        """Rows ``start:stop`` as a new frame (views, no copies)."""
        sl = slice(start, stop)
        return Frame(
            self.times[sl],
            {k: v[sl] for k, v in self.columns.items()},
            {k: v[sl] for k, v in self.observed.items()},
        )

    def column(self, name: str) -> np.ndarray | Cat:
        """The column, or an all-unknown numeric column when the frame lacks it."""
        col = self.columns.get(name)
        if col is None:
            return np.full(len(self.times), np.nan)
        return col

    def merge(self, other: Frame) -> Frame:
        """Columns of both frames on the union of their bars; ``other`` wins where both have a column."""
        times = np.union1d(self.times, other.times)
        out = Frame(times, problems=[*self.problems, *other.problems])
        for src in (self, other):
            idx = np.searchsorted(times, src.times)
            for name, col in src.columns.items():
                out.columns[name] = _scatter(col, idx, len(times))
                if name in src.observed:
                    obs = np.full(len(times), np.iinfo(np.int64).min, dtype=np.int64)
                    obs[idx] = src.observed[name]
                    out.observed[name] = obs
                else:
                    out.observed.pop(name, None)
        return out

    def reindex(self, times: np.ndarray) -> Frame:
        """The same columns on another bar timeline; bars this frame lacks are unknown."""
        times = np.asarray(times, dtype=np.int64)
        pos = np.searchsorted(self.times, times)
        pos_c = np.minimum(pos, max(len(self.times) - 1, 0))
        hit = (
            (pos < len(self.times)) & (self.times[pos_c] == times)
            if len(self.times)
            else np.zeros(len(times), bool)
        )
        out = Frame(times)
        for name, col in self.columns.items():
            if isinstance(col, Cat):
                codes = np.where(hit, col.codes[pos_c] if len(col) else -1, -1).astype(np.int32)
                out.columns[name] = Cat(codes, col.labels)
            else:
                out.columns[name] = np.where(hit, col[pos_c] if len(col) else np.nan, np.nan)
            if name in self.observed:
                out.observed[name] = np.where(hit, self.observed[name][pos_c], np.iinfo(np.int64).min)
        return out


def _scatter(col: np.ndarray | Cat, idx: np.ndarray, n: int) -> np.ndarray | Cat:
    if isinstance(col, Cat):
        codes = np.full(n, -1, dtype=np.int32)
        codes[idx] = col.codes
        return Cat(codes, col.labels)
    out = np.full(n, np.nan)
    out[idx] = col
    return out


def join_frames(frames: Sequence[Frame]) -> Frame:
    """The union of the frames' bars; a later frame's known value wins over an earlier one's.

    Unlike :meth:`Frame.merge` (whole columns), this joins value by value: chunks of one history,
    or snapshots that overlap. ``problems`` are concatenated; ``observed`` is not kept.
    """
    times = np.unique(np.concatenate([f.times for f in frames])) if frames else np.zeros(0, np.int64)
    out = Frame(times, problems=[p for f in frames for p in f.problems])
    n = len(times)
    for f in frames:
        idx = np.searchsorted(times, f.times)
        for name, col in f.columns.items():
            if isinstance(col, Cat):
                old = out.columns.get(name)
                labels = tuple(dict.fromkeys([*(old.labels if isinstance(old, Cat) else ()), *col.labels]))
                codes = old.recode(labels) if isinstance(old, Cat) else np.full(n, -1, np.int32)
                new = col.recode(labels)
                known = new >= 0
                codes[idx[known]] = new[known]
                out.columns[name] = Cat(codes, labels)
            else:
                dst = out.columns.get(name)
                if not isinstance(dst, np.ndarray):
                    dst = out.columns[name] = np.full(n, np.nan)
                known = ~np.isnan(col)
                dst[idx[known]] = col[known]
    return out


def frame_from_records(
    records: Iterable[Mapping[str, Any]], time_key: str, fields: Mapping[str, str]
) -> Frame:
    """Rows of ``{time_key: ms, field: value}`` -> a Frame with ``fields`` mapped to metric names.

    Values may be numbers or numeric strings; anything unparsable is unknown. Duplicate times keep
    the last row; rows may come in any order.
    """
    by_time: dict[int, Mapping[str, Any]] = {}
    for rec in records:
        by_time[int(rec[time_key])] = rec
    times = np.asarray(sorted(by_time), dtype=np.int64)
    frame = Frame(times)
    for src, metric in fields.items():
        frame.columns[metric] = np.asarray(
            [to_float(by_time[t].get(src)) for t in times.tolist()], dtype=float
        )
    return frame


def to_float(value: object) -> float:
    """A number or numeric string -> float; None, "", garbage and non-finite values -> NaN."""
    if value is None or isinstance(value, bool):
        return float("nan")
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return f if np.isfinite(f) else float("nan")
