"""The risk layer: what must hold before a signal may open a position (strategy ``risk:`` block).

Closing is always allowed (a ``flat`` signal, or the closing half of a reversal); these checks
guard *new* positions only, in this order, the first that fails giving the recorded reason:

1. the kill switch (``perpwatch halt``; a store flag) is off;
2. no ``inhibited_by`` rule (``strategy/rule``) is firing for the symbol;
3. ``max_daily_loss_pct``: the strategy's PnL since the start of the UTC day (realised and
   unrealised, after fees and funding) has not lost that share of the account equity at the
   start of the day; once it has, no new positions until the next UTC day;
4. ``max_open_positions``: fewer positions of the strategy are open on other symbols;
5. ``max_position_usd``: a larger size is clipped to the limit (noted on the order), not rejected.

Belt and braces: the compiler refuses a limit that is not a finite number, so only a bug can bring
one here; the gate then refuses to open (with that reason) rather than compare against it, as it
does for a size, PnL or equity that is not a finite number. A NaN never switches a check off.

Data freshness (``max_data_age``) applies to every action, closing included: the trading layer
never acts when the price or a metric the rule used is unknown or stale at the bar.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from perpwatch.common.numbers import is_number
from perpwatch.common.timeutil import DAY, format_time
from perpwatch.evaluation.evaluate import Evaluation
from perpwatch.language.compiler import Rule, Strategy

HALT_FLAG = "trading.halted"
_MIN_TIME = np.iinfo(np.int64).min

_SCHEMA = """
CREATE TABLE IF NOT EXISTS risk_days (
    strategy TEXT NOT NULL, day INTEGER NOT NULL, equity REAL NOT NULL, pnl REAL NOT NULL,
    PRIMARY KEY (strategy, day)
)
"""


@dataclass
class Verdict:
    """A risk decision on a new position: the size to use, or why not."""

    size_usd: float
    reason: str | None = None  # set: rejected
    note: str | None = None  # set: accepted with a change (clipped)

    @property
    def ok(self) -> bool:
        return self.reason is None


# --- the kill switch -------------------------------------------------------------------------------


def halt(store: Any, reason: str = "", now: float | None = None) -> None:
    """Stop opening positions (persisted; closing stays allowed)."""
    when = format_time(int((time.time() if now is None else now) * 1000))
    store.set_flag(HALT_FLAG, f"since {when}" + (f": {reason}" if reason else ""))


def resume(store: Any) -> bool:
    """Lift the kill switch; whether it was set."""
    was = store.get_flag(HALT_FLAG) is not None
    store.set_flag(HALT_FLAG, None)
    return was


def halted(store: Any) -> str | None:
    """The kill switch's note (``since <time>: reason``), or None when trading is allowed."""
    return store.get_flag(HALT_FLAG)


# --- data checks -----------------------------------------------------------------------------------


def rule_inputs(strategy: Strategy, rule: Rule) -> list[tuple[str, int]]:
    """(metric name, plan node) of every metric the rule's condition and signal depend on."""
    nodes = strategy.plan.nodes
    roots = [n for n in (rule.cond, rule.side, rule.size) if n is not None]
    seen: set[int] = set()
    out: dict[str, int] = {}
    while roots:
        n = roots.pop()
        if n in seen:
            continue
        seen.add(n)
        node = nodes[n]
        if node.op == "metric":
            out.setdefault(node.data, n)
        roots.extend(node.args)
    return sorted(out.items())


def unknown_inputs(ev: Evaluation, i: int, inputs: list[tuple[str, int]]) -> list[str]:
    """The inputs that are unknown (missing, NaN or older than ``max_data_age``) at bar ``i``."""
    return [name for name, node in inputs if ev.value(node, i) is None]


#: Per evaluation, the market columns with unknown and stale values as NaN (computed once each).
_MARKET: weakref.WeakKeyDictionary[Evaluation, dict[tuple[str, int], np.ndarray | None]] = (
    weakref.WeakKeyDictionary()
)


def market_column(ev: Evaluation, name: str, max_age_ms: int) -> np.ndarray | None:
    """A numeric column of the evaluated frame, NaN where unknown or older than ``max_age_ms``."""
    cache = _MARKET.setdefault(ev, {})
    key = (name, max_age_ms)
    if key not in cache:
        col = ev.frame.columns.get(name)
        out = None
        if isinstance(col, np.ndarray):
            out = np.where(np.isfinite(col), col, np.nan).astype(float)
            obs = ev.frame.observed.get(name)
            if obs is not None:
                out[(obs == _MIN_TIME) | (ev.frame.times - obs > max_age_ms)] = np.nan
        cache[key] = out
    return cache[key]


def market_value(ev: Evaluation, name: str, i: int, max_age_ms: int) -> float | None:
    """A numeric column of the evaluated frame at bar ``i``; None when absent, unknown or stale."""
    col = market_column(ev, name, max_age_ms)
    if col is None or not 0 <= i < len(col):
        return None
    x = float(col[i])
    return x if x == x else None


# --- the checks on new positions -------------------------------------------------------------------


class RiskGate:
    """Decides whether a strategy may open a position; keeps the day-start snapshots."""

    def __init__(self, store: Any):
        self.store = store
        store.conn.execute(_SCHEMA)

    def note_day_start(self, strategy: str, day: int, equity: float, pnl: float) -> None:
        """Remember the account equity and the strategy's PnL at the start of UTC day ``day`` (once;
        not when either is not a finite number: the day's check then refuses to open)."""
        if not (_finite(equity) and _finite(pnl)):
            return
        self.store.conn.execute(
            "INSERT INTO risk_days (strategy, day, equity, pnl) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (strategy, day) DO NOTHING",
            (strategy, day, equity, pnl),
        )

    def day_start(self, strategy: str, day: int) -> tuple[float, float] | None:
        row = self.store.conn.execute(
            "SELECT equity, pnl FROM risk_days WHERE strategy = ? AND day = ?", (strategy, day)
        ).fetchone()
        return (float(row[0]), float(row[1])) if row else None

    def inhibitor(self, strategy: Strategy, symbol: str) -> str | None:
        """The first ``inhibited_by`` rule firing for ``symbol``."""
        for ref in strategy.risk.inhibited_by:
            other, _, rule = ref.partition("/")
            if self.store.rule_status(other, rule, symbol) == "firing":
                return ref
        return None

    def check_open(
        self,
        strategy: Strategy,
        symbol: str,
        size_usd: float,
        *,
        bar_time: int,
        open_elsewhere: int,
        pnl_now: float | None,
        equity_now: float | None,
    ) -> Verdict:
        """Whether ``strategy`` may open ``size_usd`` on ``symbol`` at ``bar_time`` (see the module doc)."""
        risk = strategy.risk
        bad = bad_limit(risk)
        if bad is not None:
            return Verdict(size_usd, bad)
        if not _finite(size_usd):
            return Verdict(size_usd, f"size_usd is {size_usd!r}, not a finite number; not opening")
        note = halted(self.store)
        if note is not None:
            return Verdict(
                size_usd, f"trading is halted ({note}); only closing is allowed until `perpwatch resume`"
            )
        ref = self.inhibitor(strategy, symbol)
        if ref is not None:
            return Verdict(size_usd, f"inhibited: {ref} is firing for {symbol}")
        if risk.max_daily_loss_pct is not None:
            reason = self._daily_loss(strategy.name, bar_time, risk.max_daily_loss_pct, pnl_now, equity_now)
            if reason:
                return Verdict(size_usd, reason)
        if risk.max_open_positions is not None and open_elsewhere >= risk.max_open_positions:
            return Verdict(
                size_usd,
                f"max_open_positions: {open_elsewhere} of {risk.max_open_positions} already open for {strategy.name}",
            )
        if risk.max_position_usd is not None and size_usd > risk.max_position_usd:
            return Verdict(
                float(risk.max_position_usd),
                note=f"size {size_usd:,.2f} USD clipped to max_position_usd {risk.max_position_usd:,.2f}",
            )
        return Verdict(size_usd)

    def _daily_loss(
        self, strategy: str, bar_time: int, limit: float, pnl_now: float | None, equity_now: float | None
    ) -> str | None:
        if pnl_now is None or equity_now is None:
            return "max_daily_loss_pct is set but the executor does not report PnL; not opening"
        if not (_finite(pnl_now) and _finite(equity_now)):
            return (
                f"max_daily_loss_pct: the executor reports PnL {pnl_now!r} and equity {equity_now!r}, "
                "not finite numbers; not opening"
            )
        day = bar_time // DAY
        start = self.day_start(strategy, day)
        if start is None:  # first look at this day: now is its start
            self.note_day_start(strategy, day, equity_now, pnl_now)
            start = (equity_now, pnl_now)
        equity0, pnl0 = start
        lost = pnl0 - pnl_now
        if equity0 <= 0:
            return f"max_daily_loss_pct: the day's starting equity is {equity0:,.2f} USD"
        pct = lost / equity0 * 100
        if pct >= limit:
            return (
                f"max_daily_loss_pct: {strategy} lost {lost:,.2f} USD ({pct:.2f}% of the day's starting "
                f"equity {equity0:,.2f}) on {format_time(day * DAY)[:10]}; no new positions until the next UTC day"
            )
        return None


def bad_limit(risk: Any) -> str | None:
    """Why a limit of ``risk`` cannot be checked (not a finite number of its kind), or None."""
    for name, whole in (
        ("max_position_usd", False),
        ("max_open_positions", True),
        ("max_daily_loss_pct", False),
    ):
        value = getattr(risk, name)
        if value is not None and (not is_number(value) or (whole and not isinstance(value, int))):
            kind = "whole number" if whole else "number"
            return f"risk limit {name} is {value!r}, not a finite {kind}; not opening"
    return None


def _finite(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
