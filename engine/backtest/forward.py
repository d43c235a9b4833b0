"""The forward price move after each fired event, per rule: what an alert was followed by.

A rule's event on bar *i* is decided at that bar's close; an order on it would fill at bar
*i + 1*'s open (the backtest's fill rule). So the move over *h* bars is measured from
``price.open`` of bar *i + 1* to ``price.close`` of bar *i + h*, in percent (on continuous data,
where each bar opens at the previous close, that is close *i* to close *i + h*). A move whose
prices the data lacks (past its end, a gap, a bar without a price) is unknown, never 0, and is
left out of the figures, which count it.

The hit rate is the share of known moves in the event's expected direction: up for a ``long``
signal, down for a ``short`` one, and up for an event without a long/short signal (a plain alert,
or ``flat``), which the report says (``direction``: ``signal side``, ``up`` or ``mixed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from perpwatch.backtest.result import HORIZONS, BacktestResult
from perpwatch.evaluation.events import Event


@dataclass(frozen=True)
class EventMove:
    """One fired event and its forward moves (percent; ``None`` when unknown), one per horizon."""

    event: Event
    sign: int  # +1: up expected, -1: down expected
    by_signal: bool  # the sign is the event's long/short signal (else: a plain alert, up)
    moves: tuple[float | None, ...]


def event_moves(r: BacktestResult) -> list[EventMove]:
    """Every fired event of ``r`` with its forward moves over :data:`HORIZONS`, in event order."""
    index = {int(t): i for i, t in enumerate(r.times)}
    fired = [e for e in r.events if e.kind == "fired"]
    moves = _moves(r, fired, [index.get(e.time, -1) for e in fired])
    out = []
    for e, m in zip(fired, moves, strict=True):
        side = e.signal.side if e.signal is not None else None
        out.append(EventMove(e, -1 if side == "short" else 1, side in ("long", "short"), m))
    return out


def _moves(r: BacktestResult, fired: list[Event], rows: list[int]) -> list[tuple[float | None, ...]]:
    """The moves of each fired event (its bar ``rows[k]``, -1: not on the grid), one symbol's
    events at a time in numpy: the same float operations as one by one, so the same numbers."""
    unknown: tuple[float | None, ...] = (None,) * len(HORIZONS)
    out = [unknown] * len(fired)
    by_symbol: dict[str, list[int]] = {}
    for k, e in enumerate(fired):
        by_symbol.setdefault(e.symbol, []).append(k)
    for sym, ks in by_symbol.items():
        opens, closes = r.ahead_opens.get(sym), r.ahead_closes.get(sym)
        if opens is None or closes is None:
            continue
        i = np.asarray([rows[k] for k in ks], dtype=np.int64)
        placed = (i >= 0) & (i + 1 < len(opens))
        entry = np.where(placed, opens[np.where(placed, i + 1, 0)], np.nan).astype(float)
        values, known = [], []
        for h in HORIZONS:
            inside = placed & (i + h < len(closes))
            exit_ = np.where(inside, closes[np.where(inside, i + h, 0)], np.nan).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                values.append(((exit_ / entry - 1.0) * 100.0).tolist())
            known.append((np.isfinite(entry) & np.isfinite(exit_) & (entry > 0) & (exit_ > 0)).tolist())
        for n, k in enumerate(ks):
            if placed[n]:
                out[k] = tuple(v[n] if ok[n] else None for v, ok in zip(values, known, strict=True))
    return out


def forward_table(r: BacktestResult, moves: list[EventMove] | None = None) -> list[dict[str, Any]]:
    """Per (strategy, rule): fired events, the direction counted as a hit, and per horizon the
    known and unknown moves, their mean and median (percent) and the hit rate (percent)."""
    moves = event_moves(r) if moves is None else moves
    by_rule: dict[tuple[str, str], list[EventMove]] = {
        (s.name, rule.name): [] for s in r.strategies for rule in s.rules
    }
    for m in moves:
        by_rule.setdefault((m.event.strategy, m.event.rule), []).append(m)
    rows = []
    for (strategy, rule), ms in by_rule.items():
        signal = {m.by_signal for m in ms}
        direction = "mixed" if len(signal) == 2 else "signal side" if signal == {True} else "up"
        horizons = []
        for k, h in enumerate(HORIZONS):
            known = [(v, m.sign) for m in ms if (v := m.moves[k]) is not None]
            values = np.asarray([v for v, _ in known], dtype=float)
            hits = sum(v * sign > 0 for v, sign in known)
            horizons.append(
                {
                    "bars": h,
                    "known": len(known),
                    "unknown": len(ms) - len(known),
                    "mean_pct": float(np.mean(values)) if known else None,
                    "median_pct": float(np.median(values)) if known else None,
                    "hit_rate_pct": hits / len(known) * 100 if known else None,
                }
            )
        rows.append(
            {
                "strategy": strategy,
                "rule": rule,
                "events": len(ms),
                "direction": direction,
                "horizons": horizons,
            }
        )
    return rows
