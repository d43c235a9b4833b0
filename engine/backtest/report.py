"""Backtest reports: a terminal table and a JSON document (the HTML page: ``html_report.py``)."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from perpwatch.backtest.forward import EventMove, event_moves, forward_table
from perpwatch.backtest.result import EXIT_KINDS, HORIZONS, BacktestResult
from perpwatch.backtest.stats import bust_index, per_symbol, rule_counts
from perpwatch.common.collector import without_collection
from perpwatch.common.text import printable
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event

REPORT_HINT = "--html needs plotly: pip install 'perpwatch[report]'"


# --- numbers ---------------------------------------------------------------------------------------


def _usd(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+,.2f}" if sign else f"{x:,.2f}"


def _num(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _t(ms: int | None) -> str:
    return "-" if ms is None else format_time(int(ms))[:16].replace("T", " ")


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None
) -> list[str]:
    """Aligned plain-text columns (numbers right-aligned where ``right`` says)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]
    right = right or [False] * len(headers)
    out = []
    for k, row in enumerate(cells):
        parts = [
            c.rjust(w) if right[j] else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  " + "  ".join(parts).rstrip())
        if k == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out


# --- the terminal report ---------------------------------------------------------------------------


def summary_rows(r: BacktestResult) -> list[tuple[str, str]]:
    s = r.stats
    dd = f"{_num(s['max_drawdown_pct'])} %  ({_usd(s['max_drawdown_usd'])} USD)"
    if s["max_drawdown_start"]:
        dd += f"  {t_iso(s['max_drawdown_start'])} -> {t_iso(s['max_drawdown_end'])}"
    wl = f"{_usd(s['avg_win_usd'], True)} / {_usd(s['avg_loss_usd'], True)} USD"
    bust = s.get("bust_time")
    upto = f", up to the bust {t_iso(bust)}" if bust else ""
    rows = (
        [("BUST", f"at {t_iso(bust)} UTC: equity reached 0 or below; no position opened after it")]
        if bust
        else []
    )
    return rows + [
        ("starting balance", f"{_usd(s['starting_balance_usd'])} USD"),
        ("final equity", f"{_usd(s['final_equity_usd'])} USD"),
        ("net PnL (after fees and funding)", f"{_usd(s['net_pnl_usd'], True)} USD"),
        ("total return", f"{_num(s['total_return_pct'], '+.2f')} %"),
        ("gross PnL (before fees, funding)", f"{_usd(s['gross_pnl_usd'], True)} USD"),
        ("fees paid", f"{_usd(-s['fees_usd'], True)} USD"),
        ("funding received (+) / paid (-)", f"{_usd(s['funding_usd'], True)} USD"),
        ("max drawdown", dd),
        (f"CAGR{f' ({upto[2:]})' if upto else ''}", f"{_num(s['cagr_pct'], '+.2f')} %"),
        ("Calmar (CAGR / max drawdown)", _num(s["calmar"])),
        (f"Sharpe (annualised{upto})", _num(s["sharpe"])),
        (f"Sortino (annualised{upto})", _num(s["sortino"])),
        (f"volatility (annualised{upto})", f"{_num(s['volatility_pct'])} %"),
        ("trades", f"{s['trades']} ({s['closed_trades']} closed, {s['open_trades']} open at the end)"),
        ("win rate (closed trades)", f"{_num(s['win_rate_pct'], '.1f')} %"),
        ("average win / average loss", wl),
        ("profit factor (gross profit / gross loss)", profit_factor_text(s)),
        ("largest single loss", largest_loss_text(r)),
        ("average trade duration (closed trades)", duration_text(s["avg_trade_duration_hours"])),
        ("exposure", f"{_num(s['exposure_pct'], '.1f')} % of bars with a position open"),
        ("orders rejected", str(s["rejected"])),
        ("closed by", exits_text(s)),
        ("buy and hold (equal shares, no costs)", f"{_num(s.get('buy_and_hold_return_pct'), '+.2f')} %"),
    ]


def exits_text(s: dict[str, Any]) -> str:
    """How the closed trades ended: by a signal, a protective exit or a liquidation."""
    counts = [(why.replace("_", " "), s.get(f"exits_{why}", 0)) for why in EXIT_KINDS]
    return ", ".join(f"{what} {n}" for what, n in counts if n) or "-"


def bust_line(r: BacktestResult) -> str:
    """The bust warning of every report ("" when the account never went bust)."""
    bust = r.stats.get("bust_time")
    if not bust:
        return ""
    return (
        f"bust at {t_iso(bust)} UTC: equity reached 0 or below and the account opened no position after; "
        "Sharpe, Sortino, volatility and CAGR are computed up to the bust only"
    )


def profit_factor_text(s: dict[str, Any]) -> str:
    if s["profit_factor"] is not None:
        return _num(s["profit_factor"])
    return "n/a (no losing trade)" if s["closed_trades"] else "n/a (no closed trade)"


def largest_loss_text(r: BacktestResult) -> str:
    k = r.stats["largest_loss_trade"]
    if k is None:
        return "n/a (no losing trade)" if r.stats["closed_trades"] else "n/a (no closed trade)"
    t = r.trades[k - 1]
    return f"{_usd(t.net_pnl, True)} USD: trade #{k}, {t.strategy} {t.symbol} {t.side}, entered {_t(t.entry_time)}"


def duration_text(hours: float | None) -> str:
    if hours is None:
        return "-"
    return f"{hours:,.1f} h" + (f" ({hours / 24:,.1f} days)" if hours >= 48 else "")


def per_symbol_rows(r: BacktestResult) -> tuple[list[str], list[list[str]]]:
    """The buy-and-hold comparison per symbol, as table cells."""
    headers = ["symbol", "first close", "last close", "hold %", "hold USD", "trades", "strategy net PnL USD"]
    rows = [
        [
            p["symbol"],
            _num(p["first_close"], ",.2f"),
            _num(p["last_close"], ",.2f"),
            _pct(p["hold_return_pct"]),
            _usd(p["hold_pnl_usd"], True),
            str(p["trades"]),
            _usd(p["net_pnl_usd"], True),
        ]
        for p in per_symbol(r)
    ]
    return headers, rows


PER_SYMBOL_NOTE = (
    "Buy and hold: the symbol's return from its first to its last close over the bars walked, and what "
    "an equal share of the starting balance held that way would have made (no fees, slippage or funding); "
    "beside it the strategies' net PnL on the symbol (open trades marked at the last close)."
)


def t_iso(text: str) -> str:
    return text[:16].replace("T", " ")


def _pct(x: float | None, spec: str = "+.2f") -> str:
    return "-" if x is None else format(x, spec)


def forward_rows(r: BacktestResult, moves: list[EventMove]) -> tuple[list[str], list[list[str]]]:
    """The forward-move table: per rule, events and direction, then mean / median / hit per horizon."""
    headers = ["strategy", "rule", "events", "hit ="]
    for h in HORIZONS:
        headers += [f"{h}b mean %", f"{h}b median %", f"{h}b hit %"]
    rows = []
    for row in forward_table(r, moves):
        cells = [row["strategy"], row["rule"], str(row["events"]), row["direction"] if row["events"] else "-"]
        for f in row["horizons"]:
            known = f"{_pct(f['hit_rate_pct'], '.0f')}" + (f" ({f['unknown']} unk.)" if f["unknown"] else "")
            cells += [_pct(f["mean_pct"]), _pct(f["median_pct"]), known]
        rows.append(cells)
    return headers, rows


FORWARD_NOTE = (
    "Forward move: from the open of the bar after the event (where an order would fill) to the close "
    "h bars after the event, in %; hit = share of known moves in the expected direction: the signal's "
    "side (long up, short down), 'up' for a plain alert. Unknown moves (missing bars) are left out "
    "and counted."
)


def alert_only(r: BacktestResult) -> list[str]:
    """The strategies without ``execute:`` (alerts only), whose events the report lists."""
    return [s.name for s in r.strategies if s.execute is None]


@without_collection
def format_text(r: BacktestResult, max_trades: int = 20, max_events: int = 50) -> str:
    """The terminal report: setup, events per rule, forward moves, the events of alert-only
    strategies, figures, trades, assumptions."""
    lines = ["perpwatch backtest"]
    for s in r.strategies:
        lines.append(
            f"  strategy  {s.name} ({s.file}): {s.interval} bars, {len(s.rules)} rules, "
            f"symbols {', '.join(r.symbols[s.name])}"
        )
    lines.append(f"  data      {r.history.source}")
    lines.append(
        f"  period    {t_iso(r.stats['start'])} .. {t_iso(r.stats['end'])} UTC ({r.stats['bars']:,} bars)"
    )
    lines += [f"  note      {n}" for n in r.history.notes]
    if r.stats.get("bust_time"):
        lines += ["", f"  *** {bust_line(r)} ***"]
    lines += ["", "Events per rule"]
    counts = rule_counts(r)
    lines += table(
        ["strategy", "rule", "fired", "suppressed", "resolved", "orders", "no order", "rejected"],
        [
            [
                c["strategy"],
                c["rule"],
                c["fired"],
                c["suppressed"],
                c["resolved"],
                c["order"],
                c["no_order"],
                c["rejected"],
            ]
            for c in counts
        ],
        [False, False, True, True, True, True, True, True],
    )
    moves = event_moves(r)
    lines += ["", f"Forward price move after each rule's fired events ({', '.join(map(str, HORIZONS))} bars)"]
    headers, rows = forward_rows(r, moves)
    lines += table(headers, rows, [False, False, True, False] + [True] * (len(headers) - 4))
    lines += textwrap.wrap(FORWARD_NOTE, 110, initial_indent="  ", subsequent_indent="  ")
    quiet = set(alert_only(r))
    if quiet:
        listed = [m for m in moves if m.event.strategy in quiet]
        shown_events = listed[:max_events]
        more = (
            f" (first {len(shown_events)} of {len(listed)}; --json has every event)"
            if len(shown_events) < len(listed)
            else ""
        )
        lines += ["", f"Events of alert-only strategies (no execute:){more}"]
        if shown_events:
            lines += table(
                [
                    "time (UTC)",
                    "symbol",
                    "strategy",
                    "rule",
                    "severity",
                    *(f"{h}b %" for h in HORIZONS),
                    "message",
                ],
                [
                    [
                        _t(m.event.time),
                        m.event.symbol,
                        m.event.strategy,
                        m.event.rule,
                        m.event.severity,
                        *(_pct(v) for v in m.moves),
                        printable(m.event.message),
                    ]
                    for m in shown_events
                ],
                [False, False, False, False, False, *([True] * len(HORIZONS)), False],
            )
        else:
            lines.append("  (no events fired)")
    lines += ["", "Performance"]
    lines += table(["figure", "value"], summary_rows(r))
    lines += ["", "Buy and hold per symbol (same bars)"]
    headers, rows = per_symbol_rows(r)
    lines += table(headers, rows, [False, True, True, True, True, True, True])
    lines += textwrap.wrap(PER_SYMBOL_NOTE, 110, initial_indent="  ", subsequent_indent="  ")
    shown = r.trades[:max_trades]
    more = (
        f" (first {len(shown)} of {len(r.trades)}; --json has every trade)"
        if len(shown) < len(r.trades)
        else ""
    )
    lines += ["", f"Trades{more}"]
    if shown:
        lines += table(
            [
                "#",
                "strategy",
                "symbol",
                "side",
                "size USD",
                "entry",
                "price",
                "exit",
                "price",
                "fees",
                "funding",
                "net PnL",
            ],
            [
                [
                    k + 1,
                    t.strategy,
                    t.symbol,
                    t.side,
                    _usd(t.size_usd),
                    _t(t.entry_time),
                    _num(t.entry_price),
                    _t(t.exit_time) if t.status == "closed" else "(open)",
                    _num(t.exit_price),
                    _usd(t.fees),
                    _usd(t.funding, True),
                    _usd(t.net_pnl, True),
                ]
                for k, t in enumerate(shown)
            ],
            [True, False, False, False, True, False, True, False, True, True, True, True],
        )
    else:
        lines.append("  (no trades)")
    rejected = [e for e in r.trading if e.kind == "rejected"]
    if rejected:
        lines += ["", f"Rejected orders ({len(rejected)}; the first 10)"]
        lines += [
            printable(f"  {_t(e.time)} {e.strategy}/{e.rule} {e.symbol}: {e.message}") for e in rejected[:10]
        ]
    lines += ["", "Assumptions"]
    lines += [f"  - {a}" for a in r.assumptions]
    return "\n".join(lines)


# --- JSON ------------------------------------------------------------------------------------------


@without_collection
def to_json(r: BacktestResult) -> dict[str, Any]:
    """Every figure of the terminal report, plus every trade, event and the equity curve."""

    moves = event_moves(r)
    ahead = {id(m.event): m.moves for m in moves}

    def event(e: Event) -> dict[str, Any]:
        d = {
            "kind": e.kind,
            "strategy": e.strategy,
            "rule": e.rule,
            "symbol": e.symbol,
            "time": e.time,
            "time_iso": format_time(e.time),
            "severity": e.severity,
            "message": e.message,
            "values": e.values,
            "signal": None if e.signal is None else {"side": e.signal.side, "size_usd": e.signal.size_usd},
            "interval": e.interval,
        }
        if isinstance(e.values.get("fill_time"), int):
            d["values"] = {**e.values, "fill_time_iso": format_time(e.values["fill_time"])}
        if id(e) in ahead:
            d["forward_pct"] = {str(h): v for h, v in zip(HORIZONS, ahead[id(e)], strict=True)}
        return d

    options = vars(r.options)
    return {
        "strategies": [
            {
                "name": s.name,
                "file": s.file,
                "interval": s.interval,
                "params": s.params,
                "symbols": r.symbols[s.name],
                "rules": [rule.name for rule in s.rules],
            }
            for s in r.strategies
        ],
        "data": {"source": r.history.source, "notes": r.history.notes},
        "options": {
            **options,
            "start_iso": _iso(options["start"]),
            "end_iso": _iso(options["end"]),
        },
        "assumptions": r.assumptions,
        "bust": _bust(r),
        "stats": r.stats,
        "per_symbol": per_symbol(r),
        "events_per_rule": rule_counts(r),
        "forward_moves": forward_table(r, moves),
        "trades": [t.to_dict() for t in r.trades],
        "events": [event(e) for e in r.events],
        "orders": [event(e) for e in r.trading],
        "equity": [
            {"time": int(t), "time_iso": format_time(int(t)), "equity_usd": float(v)}
            for t, v in zip(r.equity_times, r.equity_curve, strict=True)
        ],
    }


def _bust(r: BacktestResult) -> dict[str, Any] | None:
    """When the account went bust (the equity point at or below 0), or None."""
    b = bust_index(r)
    if b is None:
        return None
    t = int(r.equity_times[b])
    return {
        "time": t,
        "time_iso": format_time(t),
        "equity_usd": float(r.equity_curve[b]),
        "note": bust_line(r),
    }


def _iso(ms: int | None) -> str | None:
    return None if ms is None else format_time(int(ms))


@without_collection
def write_json(r: BacktestResult, path: str) -> None:
    """Compact JSON (one line; the C encoder: fast on 100k events); NaN written as null."""
    doc = to_json(r)
    try:
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):  # a NaN, an infinity or a numpy scalar: the careful pass
        text = json.dumps(_plain(doc), separators=(",", ":"), allow_nan=False)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
