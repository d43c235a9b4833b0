"""The figures of a backtest: PnL, drawdown, Sharpe/Sortino, trade statistics, the assumptions
printed with every report, and the events per rule."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from perpwatch.backtest.result import ACCOUNT_OPTIONS, EXIT_KINDS, BacktestResult, TradeRecord
from perpwatch.common.timeutil import DAY, HOUR, format_time


def compute_stats(r: BacktestResult) -> dict[str, Any]:
    """The report's figures, flat: numbers, ISO times or None (never NaN or infinity).

    Once equity reaches zero or below the account is bust and per-bar returns are no longer
    defined, so Sharpe, Sortino, volatility and CAGR use the equity curve up to the bust point
    only; the drawdown floors equity at 0 (at most 100 %)."""
    balance = r.options.balance_usd
    eq = r.equity_curve
    times = r.equity_times
    bars = len(r.times)
    net = float(eq[-1] - balance)
    b = bust_index(r)
    cut = eq if b is None else eq[: b + 1]  # the returns are defined up to here
    rets = np.diff(cut) / cut[:-1] if balance > 0 else np.empty(0)
    per_year = 365 * DAY / r.step_ms
    sd = float(np.std(rets, ddof=1)) if len(rets) > 1 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2))) if len(rets) else 0.0
    mean = float(np.mean(rets)) if len(rets) else 0.0
    dd_pct, dd_usd, dd_from, dd_to = _drawdown(eq, times)
    cagr = _cagr(cut, (len(cut) - 1) * r.step_ms)
    closed = [t for t in r.trades if t.status == "closed"]
    wins = [t.net_pnl for t in closed if t.net_pnl > 0]
    losses = [t.net_pnl for t in closed if t.net_pnl <= 0]
    gross_loss = -sum(x for x in losses if x < 0)
    worst = min(
        (k for k, t in enumerate(r.trades) if t.status == "closed" and t.net_pnl < 0),
        key=lambda k: r.trades[k].net_pnl,
        default=None,
    )
    fees = sum(t.fees for t in r.trades)
    funding = sum(t.funding for t in r.trades)
    hold = buy_and_hold(r)
    return {
        "start": format_time(int(r.times[0])) if bars else None,
        "end": format_time(int(r.times[-1] + r.step_ms)) if bars else None,
        "bars": bars,
        "bust_time": None if b is None else format_time(int(times[b])),
        "returns_until": format_time(int(times[len(cut) - 1])) if bars else None,
        "starting_balance_usd": balance,
        "final_equity_usd": float(eq[-1]),
        "net_pnl_usd": net,
        "total_return_pct": _finite(net / balance * 100) if balance > 0 else None,
        "gross_pnl_usd": sum(t.pnl for t in r.trades),
        "fees_usd": fees,
        "funding_usd": funding,
        "max_drawdown_pct": dd_pct,
        "max_drawdown_usd": dd_usd,
        "max_drawdown_start": dd_from,
        "max_drawdown_end": dd_to,
        "sharpe": _finite(mean / sd * math.sqrt(per_year)) if sd > 0 else None,
        "sortino": _finite(mean / downside * math.sqrt(per_year)) if downside > 0 else None,
        "volatility_pct": _finite(sd * math.sqrt(per_year) * 100) if len(rets) > 1 else None,
        "cagr_pct": None if cagr is None else cagr * 100,
        "calmar": _finite(cagr / (dd_pct / 100)) if cagr is not None and dd_pct else None,
        "bars_per_year": per_year,
        "trades": len(r.trades),
        "closed_trades": len(closed),
        "open_trades": len(r.trades) - len(closed),
        "win_rate_pct": len(wins) / len(closed) * 100 if closed else None,
        "avg_win_usd": sum(wins) / len(wins) if wins else None,
        "avg_loss_usd": sum(losses) / len(losses) if losses else None,
        "profit_factor": sum(wins) / gross_loss if gross_loss > 0 else None,
        "largest_loss_usd": None if worst is None else r.trades[worst].net_pnl,
        "largest_loss_trade": None if worst is None else worst + 1,
        "avg_trade_duration_hours": (
            sum(_held_ms(t) for t in closed) / len(closed) / HOUR if closed else None
        ),
        "exposure_pct": float(np.mean(r.exposed) * 100) if len(r.exposed) else 0.0,
        "funding_settlements": r.funding_settlements,
        "funding_settlements_skipped": r.funding_skipped,
        "rejected": sum(e.kind == "rejected" for e in r.trading),
        **{f"exits_{why}": sum(t.exit_reason == why for t in closed) for why in EXIT_KINDS},
        "buy_and_hold_return_pct": None if hold is None else _finite(float(hold[-1] / balance - 1) * 100),
    }


def bust_index(r: BacktestResult) -> int | None:
    """The first point of the equity curve at zero or below (the account is bust from there), else
    the first point at or after ``r.bust_time`` when the executor reported one; ``None`` if neither."""
    low = np.flatnonzero(r.equity_curve <= 0)
    if len(low):
        return int(low[0])
    if r.bust_time is None:
        return None
    return min(int(np.searchsorted(r.equity_times, r.bust_time, side="left")), len(r.equity_curve) - 1)


def _drawdown(eq: np.ndarray, times: np.ndarray) -> tuple[float | None, float | None, str | None, str | None]:
    """Largest fall from a running peak, in % and USD, with the peak's and the trough's times; equity
    below 0 counts as 0 (a bust account has lost all it had: 100 %, no more)."""
    if eq[0] <= 0:
        return None, None, None, None
    floored = np.maximum(eq, 0.0)
    peak = np.maximum.accumulate(floored)
    dd = floored / peak - 1.0
    j = int(np.argmin(dd))
    if not j:
        return 0.0, 0.0, None, None
    p = int(np.flatnonzero(floored[: j + 1] == peak[j])[-1])
    return (
        float(-dd[j] * 100),
        float(peak[j] - floored[j]),
        format_time(int(times[p])),
        format_time(int(times[j])),
    )


def _cagr(eq: np.ndarray, span_ms: int) -> float | None:
    """Compound annual growth from ``eq[0]`` to ``eq[-1]`` over ``span_ms`` (a fraction): -1 when the
    end is at or below 0; None for an empty span or when the annualised figure overflows."""
    if span_ms <= 0 or eq[0] <= 0:
        return None
    if eq[-1] <= 0:
        return -1.0
    years = span_ms / (365 * DAY)
    try:
        return _finite(math.exp(math.log(float(eq[-1] / eq[0])) / years) - 1)
    except OverflowError:
        return None


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _held_ms(t: TradeRecord) -> int:
    return (t.exit_time if t.exit_time is not None else t.entry_time) - t.entry_time


def per_symbol(r: BacktestResult) -> list[dict[str, Any]]:
    """Per traded symbol: its close-to-close return over the bars walked (first known close to last
    known close), what an equal share of the starting balance held that way would have made (no
    costs), and the strategies' trades and net PnL on it (open trades marked at the last close)."""
    symbols = list(dict.fromkeys(sym for syms in r.symbols.values() for sym in syms))
    share = r.options.balance_usd / len(symbols) if symbols else 0.0
    rows = []
    for sym in symbols:
        close = r.closes.get(sym, np.empty(0))
        known = close[np.isfinite(close)]
        first, last = (float(known[0]), float(known[-1])) if len(known) else (None, None)
        ret = (last / first - 1) if first and last is not None and first > 0 else None
        mine = [t for t in r.trades if t.symbol == sym]
        rows.append(
            {
                "symbol": sym,
                "first_close": first,
                "last_close": last,
                "hold_return_pct": None if ret is None else ret * 100,
                "hold_pnl_usd": None if ret is None else share * ret,
                "trades": len(mine),
                "net_pnl_usd": sum(t.net_pnl for t in mine),
            }
        )
    return rows


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
            *_protection_notes(r),
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
        f"Sharpe, Sortino and volatility: per-bar returns of the equity curve, risk-free rate 0, "
        f"annualised by sqrt({per_year:g}) bars per 365-day year; CAGR compounds the return over "
        "365-day years; Calmar = CAGR / max drawdown.",
        *_bust_note(r),
    ]


def _protection_notes(r: BacktestResult) -> list[str]:
    """What the paper account assumes of protective exits and margin (docs/trading.md)."""
    notes = []
    if any(s.has_exits for s in r.strategies):
        notes.append(
            "Protective exits: judged on each bar's open, high and low from the entry bar on, before the "
            "bar's signals; a stop fills at its level, or at the open when the bar gapped through it; a "
            "stop and a take-profit inside one bar take the stop; slippage and fees apply."
        )
    leverage = r.options.executor_options.get("leverage")
    if leverage is None:
        notes.append(
            "No margin model (leverage unset): positions need no free margin and are never liquidated."
        )
    else:
        mmr = r.options.executor_options.get("maintenance_margin_pct", 0.5)
        notes.append(
            f"Margin: leverage {leverage:g}, isolated per position, maintenance {mmr:g}% of the entry "
            "notional; no position opens without free margin; a bar reaching the liquidation price closes it there."
        )
    return notes


def _bust_note(r: BacktestResult) -> list[str]:
    bust = r.stats.get("bust_time")
    if not bust:
        return []
    return [
        f"BUST at {bust}: equity reached 0 or below; the account opened no position after it. Returns "
        "are undefined from there, so Sharpe, Sortino, volatility and CAGR cover the equity curve up to "
        "the bust only (CAGR -100 %); the max drawdown counts equity below 0 as 0 (100 %)."
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
