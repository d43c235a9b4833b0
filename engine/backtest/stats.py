"""The figures of a backtest: PnL, drawdown, Sharpe/Sortino, trade statistics, the assumptions
printed with every report, and the events per rule."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from perpwatch.backtest.result import ACCOUNT_OPTIONS, BacktestResult
from perpwatch.common.timeutil import DAY, format_time


def compute_stats(r: BacktestResult) -> dict[str, Any]:
    """PnL, return, drawdown, Sharpe/Sortino (annualised by the bar interval), trade statistics."""
    balance = r.options.balance_usd
    eq = r.equity_curve
    times = r.equity_times
    net = float(eq[-1] - balance)
    peak = np.maximum.accumulate(eq)
    dd = eq / peak - 1.0
    j = int(np.argmin(dd))
    p = int(np.flatnonzero(eq[: j + 1] == peak[j])[-1])
    rets = np.diff(eq) / eq[:-1]
    per_year = 365 * DAY / r.step_ms
    sd = float(np.std(rets, ddof=1)) if len(rets) > 1 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2))) if len(rets) else 0.0
    mean = float(np.mean(rets)) if len(rets) else 0.0
    closed = [t for t in r.trades if t.status == "closed"]
    wins = [t.net_pnl for t in closed if t.net_pnl > 0]
    losses = [t.net_pnl for t in closed if t.net_pnl <= 0]
    fees = sum(t.fees for t in r.trades)
    funding = sum(t.funding for t in r.trades)
    hold = buy_and_hold(r)
    return {
        "start": format_time(int(r.times[0])),
        "end": format_time(int(r.times[-1] + r.step_ms)),
        "bars": len(r.times),
        "starting_balance_usd": balance,
        "final_equity_usd": float(eq[-1]),
        "net_pnl_usd": net,
        "total_return_pct": net / balance * 100,
        "gross_pnl_usd": sum(t.pnl for t in r.trades),
        "fees_usd": fees,
        "funding_usd": funding,
        "max_drawdown_pct": float(-dd[j] * 100),
        "max_drawdown_usd": float(peak[j] - eq[j]),
        "max_drawdown_start": format_time(int(times[p])) if j else None,
        "max_drawdown_end": format_time(int(times[j])) if j else None,
        "sharpe": mean / sd * math.sqrt(per_year) if sd > 0 else None,
        "sortino": mean / downside * math.sqrt(per_year) if downside > 0 else None,
        "bars_per_year": per_year,
        "trades": len(r.trades),
        "closed_trades": len(closed),
        "open_trades": len(r.trades) - len(closed),
        "win_rate_pct": len(wins) / len(closed) * 100 if closed else None,
        "avg_win_usd": sum(wins) / len(wins) if wins else None,
        "avg_loss_usd": sum(losses) / len(losses) if losses else None,
        "exposure_pct": float(np.mean(r.exposed) * 100) if len(r.exposed) else 0.0,
        "funding_settlements": r.funding_settlements,
        "funding_settlements_skipped": r.funding_skipped,
        "rejected": sum(e.kind == "rejected" for e in r.trading),
        "buy_and_hold_return_pct": None if hold is None else float(hold[-1] / balance - 1) * 100,
    }


def buy_and_hold(r: BacktestResult) -> np.ndarray | None:
    """The equity of buying every traded symbol with an equal share of the starting balance at the
    first bar's open (else its first known close) and holding it, without costs or funding; one
    point per equity point (the start, then each bar's close, an unknown close carrying the last
    known one). ``None`` when no symbol has a price."""
    symbols = list(dict.fromkeys(sym for syms in r.symbols.values() for sym in syms))
    curves = []
    for sym in symbols:
        close = r.closes.get(sym)
        if close is None or not np.isfinite(close).any():
            continue
        opens = r.ahead_opens.get(sym)
        first = float(opens[0]) if opens is not None and len(opens) else math.nan
        if not (math.isfinite(first) and first > 0):
            first = float(close[np.isfinite(close)][0])
        known = np.where(np.isfinite(close), close, np.nan)
        filled = _carry(np.concatenate([[first], known]))
        curves.append(filled / first)
    if not curves:
        return None
    return r.options.balance_usd * np.mean(curves, axis=0)


def _carry(x: np.ndarray) -> np.ndarray:
    """Each unknown value replaced by the last known one before it (``x[0]`` is known)."""
    idx = np.where(np.isfinite(x), np.arange(len(x)), 0)
    return x[np.maximum.accumulate(idx)]


def assumptions(r: BacktestResult) -> list[str]:
    o = r.options
    per_year = r.stats.get("bars_per_year", 365 * DAY / r.step_ms)
    if o.executor == "paper":
        account = [
            f"Slippage: {o.slippage_bps:g} bps against every fill (buys higher, sells lower).",
            f"Fees: {o.fee_bps:g} bps of notional (qty x fill price) on every fill, opening and closing.",
            f"Funding: settled every {o.funding_interval_hours} h on UTC boundaries, at funding.close of the "
            "bar in which the settlement falls (percent per interval), on qty x price.close; longs pay when "
            f"it is positive, shorts receive. {r.funding_skipped} settlement(s) skipped because funding.close "
            "was unknown.",
            "Sizing: qty = size_usd / fill reference price; one position per strategy and symbol; a signal for "
            "the side already held does nothing; the opposite side reverses (close, then open); flat closes.",
            f"One paper account of {o.balance_usd:,.2f} USD for all strategies; fixed USD sizes (no compounding).",
        ]
    else:
        shown = ", ".join(
            f"{k}={v}" for k, v in sorted(o.executor_options.items()) if k not in ACCOUNT_OPTIONS
        )
        account = [
            f"Fills, fees, slippage, funding and sizing are the {o.executor} executor's own (a plugin; "
            f"{'its options: ' + shown if shown else 'no other options'}); it is handed each order at the "
            "price above.",
            f"One {o.executor} account for all strategies, starting at {o.balance_usd:,.2f} USD (its equity "
            f"before the first bar); {r.funding_skipped} funding settlement(s) skipped, as it reports them.",
        ]
    return [
        "Signals are decided at each bar's close; market orders fill at the NEXT bar's open (price.open). "
        "A signal on the last bar has no next bar and does not fill. Live fills at the bar's close instead.",
        *account,
        "Risk limits of each strategy's risk: block apply as live (max_position_usd clips); the kill switch "
        "is never set in a backtest.",
        "Missing or stale values are unknown: no rule fires on them and no order is placed; bars the data "
        "lacks are unknown bars on the interval's grid.",
        f"Sharpe and Sortino: per-bar returns of the equity curve, risk-free rate 0, annualised by "
        f"sqrt({per_year:g}) bars per 365-day year.",
    ]


def rule_counts(r: BacktestResult) -> list[dict[str, Any]]:
    """Per (strategy, rule): fired, suppressed, resolved, orders, no-ops and rejections."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for s in r.strategies:
        for rule in s.rules:
            rows[(s.name, rule.name)] = {
                "strategy": s.name,
                "rule": rule.name,
                **dict.fromkeys(("fired", "suppressed", "resolved", "order", "no_order", "rejected"), 0),
            }
    for e in [*r.events, *r.trading]:
        row = rows.get((e.strategy, e.rule))
        if row is not None and e.kind in row:
            row[e.kind] += 1
    return list(rows.values())
