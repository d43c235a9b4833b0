"""The backtest's self-contained HTML page.

It needs plotly (``pip install 'perpwatch[report]'``); its JavaScript is inlined, so the file works
offline: price with event and trade markers per symbol, the equity curve and the drawdown, under
the same figures and assumptions as the terminal report (``report.py``).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from perpwatch.backtest.report import REPORT_HINT, summary_rows, t_iso
from perpwatch.backtest.result import BacktestResult
from perpwatch.backtest.stats import rule_counts
from perpwatch.common.errors import PerpwatchError

MAX_PRICE_PANELS = 6


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
&middot; {esc(t_iso(r.stats["start"]))} .. {esc(t_iso(r.stats["end"]))} UTC ({r.stats["bars"]:,} bars)</p>{notes}
<div class=grid><div><h2>Performance</h2><table>{stats}</table></div>
<div><h2>Events per rule</h2><table><tr><th>strategy</th><th>rule</th><th>fired</th><th>suppressed</th>
<th>resolved</th><th>orders</th><th>no order</th><th>rejected</th></tr>{counts}</table></div></div>
<h2>Charts</h2>{left_out}{plot}
<h2>Assumptions</h2><ul>{"".join(f"<li>{esc(a)}</li>" for a in r.assumptions)}</ul>
</body></html>
"""
