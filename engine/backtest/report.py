"""Backtest reports: a terminal table, a JSON document and a self-contained HTML page.

The HTML page needs plotly (``pip install 'perpwatch[report]'``); its JavaScript is inlined, so
the file works offline: price with event and trade markers per symbol, the equity curve and the
drawdown, under the same figures and assumptions as the terminal report.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from perpwatch.backtest.run import BacktestResult, rule_counts
from perpwatch.common.errors import PerpwatchError
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import Event

MAX_PRICE_PANELS = 6
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
        dd += f"  {_t_iso(s['max_drawdown_start'])} -> {_t_iso(s['max_drawdown_end'])}"
    wl = f"{_usd(s['avg_win_usd'], True)} / {_usd(s['avg_loss_usd'], True)} USD"
    return [
        ("starting balance", f"{_usd(s['starting_balance_usd'])} USD"),
        ("final equity", f"{_usd(s['final_equity_usd'])} USD"),
        ("net PnL (after fees and funding)", f"{_usd(s['net_pnl_usd'], True)} USD"),
        ("total return", f"{_num(s['total_return_pct'], '+.2f')} %"),
        ("gross PnL (before fees, funding)", f"{_usd(s['gross_pnl_usd'], True)} USD"),
        ("fees paid", f"{_usd(-s['fees_usd'], True)} USD"),
        ("funding received (+) / paid (-)", f"{_usd(s['funding_usd'], True)} USD"),
        ("max drawdown", dd),
        ("Sharpe (annualised)", _num(s["sharpe"])),
        ("Sortino (annualised)", _num(s["sortino"])),
        ("trades", f"{s['trades']} ({s['closed_trades']} closed, {s['open_trades']} open at the end)"),
        ("win rate (closed trades)", f"{_num(s['win_rate_pct'], '.1f')} %"),
        ("average win / average loss", wl),
        ("exposure", f"{_num(s['exposure_pct'], '.1f')} % of bars with a position open"),
        ("orders rejected", str(s["rejected"])),
    ]


def _t_iso(text: str) -> str:
    return text[:16].replace("T", " ")


def format_text(r: BacktestResult, max_trades: int = 20) -> str:
    """The terminal report: setup, events per rule, figures, trades, assumptions."""
    lines = ["perpwatch backtest"]
    for s in r.strategies:
        lines.append(
            f"  strategy  {s.name} ({s.file}): {s.interval} bars, {len(s.rules)} rules, "
            f"symbols {', '.join(r.symbols[s.name])}"
        )
    lines.append(f"  data      {r.history.source}")
    lines.append(
        f"  period    {_t_iso(r.stats['start'])} .. {_t_iso(r.stats['end'])} UTC ({r.stats['bars']:,} bars)"
    )
    lines += [f"  note      {n}" for n in r.history.notes]
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
    lines += ["", "Performance"]
    lines += table(["figure", "value"], summary_rows(r))
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
        lines += [f"  {_t(e.time)} {e.strategy}/{e.rule} {e.symbol}: {e.message}" for e in rejected[:10]]
    lines += ["", "Assumptions"]
    lines += [f"  - {a}" for a in r.assumptions]
    return "\n".join(lines)


# --- JSON ------------------------------------------------------------------------------------------


def to_json(r: BacktestResult) -> dict[str, Any]:
    """Every figure of the terminal report, plus every trade, event and the equity curve."""

    def event(e: Event) -> dict[str, Any]:
        return {
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
        "options": vars(r.options),
        "assumptions": r.assumptions,
        "stats": r.stats,
        "events_per_rule": rule_counts(r),
        "trades": [t.to_dict() for t in r.trades],
        "events": [event(e) for e in r.events],
        "orders": [event(e) for e in r.trading],
        "equity": [
            {"time": int(t), "equity_usd": float(v)}
            for t, v in zip(r.equity_times, r.equity_curve, strict=True)
        ],
    }


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


# --- HTML ------------------------------------------------------------------------------------------


def write_html(r: BacktestResult, path: str) -> None:
    """One self-contained HTML file (plotly inlined): price + markers, equity, drawdown, figures."""
    try:
        import plotly.graph_objects as go
        import plotly.io as pio
        from plotly.subplots import make_subplots
    except ImportError:
        raise PerpwatchError(REPORT_HINT) from None
    symbols = list(dict.fromkeys(sym for syms in r.symbols.values() for sym in syms))
    shown = symbols[:MAX_PRICE_PANELS]
    titles = [f"{sym} price.close, events and trades" for sym in shown] + ["Equity (USD)", "Drawdown (%)"]
    rows = len(shown) + 2
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06 if rows <= 4 else 0.04,
        subplot_titles=titles,
        row_heights=[3] * len(shown) + [2, 1.4],
    )
    bar_x = r.times.astype("datetime64[ms]")
    for k, sym in enumerate(shown, start=1):
        close = r.closes[sym]
        fig.add_trace(
            go.Scatter(
                x=bar_x,
                y=close,
                mode="lines",
                name=f"{sym} close",
                showlegend=False,
                line={"width": 1.2, "color": "#4a5568"},
            ),
            row=k,
            col=1,
        )
        _event_markers(go, fig, r, sym, close, k)
        _trade_markers(go, fig, r, sym, k)
        fig.update_yaxes(title_text="USD", row=k, col=1)
    eq_x = r.equity_times.astype("datetime64[ms]")
    eq = r.equity_curve
    fig.add_trace(
        go.Scatter(x=eq_x, y=eq, mode="lines", name="equity", line={"color": "#2b6cb0"}), row=rows - 1, col=1
    )
    dd = (eq / np.maximum.accumulate(eq) - 1.0) * 100
    fig.add_trace(
        go.Scatter(
            x=eq_x, y=dd, mode="lines", name="drawdown", fill="tozeroy", line={"color": "#c53030", "width": 1}
        ),
        row=rows,
        col=1,
    )
    fig.update_yaxes(title_text="USD", row=rows - 1, col=1)
    fig.update_yaxes(title_text="%", row=rows, col=1)
    fig.update_layout(
        template="plotly_white",
        height=320 * len(shown) + 480,
        margin={"l": 70, "r": 30, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.04},
        hovermode="closest",
    )
    plot = pio.to_html(fig, include_plotlyjs=True, full_html=False, config={"displaylogo": False})
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(_page(r, plot, symbols, shown))


#: Event marker colours, one per (strategy, rule) in order; the same in every price panel.
_PALETTE = ("#3182ce", "#d69e2e", "#805ad5", "#dd6b20", "#319795", "#d53f8c", "#718096", "#38a169")


def _event_markers(go: Any, fig: Any, r: BacktestResult, sym: str, close: np.ndarray, row: int) -> None:
    """A small dot at the decision bar's close for every fired event, coloured by rule."""
    index = {int(t): i for i, t in enumerate(r.times)}
    rules = [(s.name, rule.name) for s in r.strategies for rule in s.rules]
    many = len(r.strategies) > 1
    for k, (strategy, rule) in enumerate(rules):
        evs = [
            e
            for e in r.events
            if e.symbol == sym and e.kind == "fired" and (e.strategy, e.rule) == (strategy, rule)
        ]
        name = f"{strategy}/{rule} fired" if many else f"{rule} fired"
        fig.add_trace(
            go.Scatter(
                x=np.asarray([e.time for e in evs], dtype="datetime64[ms]"),
                y=[close[index[e.time]] if e.time in index else None for e in evs],
                mode="markers",
                name=name,
                legendgroup=name,
                showlegend=row == 1,
                marker={"symbol": "circle", "size": 6, "color": _PALETTE[k % len(_PALETTE)], "opacity": 0.9},
                text=[e.message or e.rule for e in evs],
                hovertemplate="%{text}<extra>%{fullData.name}</extra>",
            ),
            row=row,
            col=1,
        )


def _trade_markers(go: Any, fig: Any, r: BacktestResult, sym: str, row: int) -> None:
    """Exits (small x) first, then entries (triangles) on top: at a reversal both share a point."""
    trades = [t for t in r.trades if t.symbol == sym]
    exits = [t for t in trades if t.status == "closed"]
    fig.add_trace(
        go.Scatter(
            x=np.asarray([t.exit_time for t in exits], dtype="datetime64[ms]"),
            y=[t.exit_price for t in exits],
            mode="markers",
            name="exit",
            legendgroup="exit",
            showlegend=row == 1,
            marker={"symbol": "x-thin-open", "size": 9, "color": "#1a202c", "line": {"width": 2}},
            text=[f"exit {t.side} @ {t.exit_price:,.2f}: net {t.net_pnl:+,.2f} USD" for t in exits],
            hovertemplate="%{text}<extra></extra>",
        ),
        row=row,
        col=1,
    )
    for side, symbol, color in (("long", "triangle-up", "#2f855a"), ("short", "triangle-down", "#c53030")):
        mine = [t for t in trades if t.side == side]
        fig.add_trace(
            go.Scatter(
                x=np.asarray([t.entry_time for t in mine], dtype="datetime64[ms]"),
                y=[t.entry_price for t in mine],
                mode="markers",
                name=f"{side} entry",
                legendgroup=f"{side} entry",
                showlegend=row == 1,
                marker={
                    "symbol": symbol,
                    "size": 10,
                    "color": color,
                    "line": {"width": 1, "color": "#1a202c"},
                },
                text=[f"{t.strategy} {t.side} {t.size_usd:,.0f} USD @ {t.entry_price:,.2f}" for t in mine],
                hovertemplate="%{text}<extra></extra>",
            ),
            row=row,
            col=1,
        )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1a202c;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px}
.meta{color:#4a5568;font-size:13px;margin:2px 0}
.grid{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #e2e8f0;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f7fafc}
ul{font-size:12.5px;color:#2d3748;max-width:1100px}li{margin:3px 0}
"""


def _page(r: BacktestResult, plot: str, symbols: list[str], shown: list[str]) -> str:
    esc = html.escape
    names = ", ".join(s.name for s in r.strategies)
    stats = "".join(f"<tr><td>{esc(k)}</td><td class=n>{esc(v)}</td></tr>" for k, v in summary_rows(r))
    counts = "".join(
        f"<tr><td>{esc(c['strategy'])}</td><td>{esc(c['rule'])}</td>"
        + "".join(
            f"<td class=n>{c[k]}</td>"
            for k in ("fired", "suppressed", "resolved", "order", "no_order", "rejected")
        )
        + "</tr>"
        for c in rule_counts(r)
    )
    left_out = (
        f"<p class=meta>Price panels for {', '.join(shown)} only; {len(symbols) - len(shown)} more "
        "symbols are in the figures and the JSON.</p>"
        if len(shown) < len(symbols)
        else ""
    )
    notes = "".join(f"<p class=meta>note: {esc(n)}</p>" for n in r.history.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>perpwatch backtest: {esc(names)}</title>
<style>{_CSS}</style></head><body>
<h1>perpwatch backtest: {esc(names)}</h1>
<p class=meta>{esc(r.history.source)} &middot; {esc(", ".join(symbols))} &middot; {esc(r.strategies[0].interval)} bars
&middot; {esc(_t_iso(r.stats["start"]))} .. {esc(_t_iso(r.stats["end"]))} UTC ({r.stats["bars"]:,} bars)</p>{notes}
<div class=grid><div><h2>Performance</h2><table>{stats}</table></div>
<div><h2>Events per rule</h2><table><tr><th>strategy</th><th>rule</th><th>fired</th><th>suppressed</th>
<th>resolved</th><th>orders</th><th>no order</th><th>rejected</th></tr>{counts}</table></div></div>
<h2>Charts</h2>{left_out}{plot}
<h2>Assumptions</h2><ul>{"".join(f"<li>{esc(a)}</li>" for a in r.assumptions)}</ul>
</body></html>
"""
