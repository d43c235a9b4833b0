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

import math
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
    out = []
    for e in r.events:
        if e.kind != "fired":
            continue
        side = e.signal.side if e.signal is not None else None
        sign = -1 if side == "short" else 1
        out.append(EventMove(e, sign, side in ("long", "short"), _moves(r, e.symbol, index.get(e.time))))
    return out


def _moves(r: BacktestResult, sym: str, i: int | None) -> tuple[float | None, ...]:
    opens, closes = r.ahead_opens.get(sym), r.ahead_closes.get(sym)
    if i is None or opens is None or closes is None or i + 1 >= len(opens):
        return (None,) * len(HORIZONS)
    entry = float(opens[i + 1])
    out: list[float | None] = []
    for h in HORIZONS:
        exit_ = float(closes[i + h]) if i + h < len(closes) else float("nan")
        ok = math.isfinite(entry) and math.isfinite(exit_) and entry > 0 and exit_ > 0
        out.append((exit_ / entry - 1.0) * 100.0 if ok else None)
    return tuple(out)


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
