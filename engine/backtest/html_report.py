"""The backtest's self-contained HTML page.

It needs plotly (``pip install 'perpwatch[report]'``); its JavaScript is inlined, so the file works
offline: price with event and trade markers per symbol, under it one panel per group of metrics
the strategies read (funding, OI, liquidations…) with the events of the rules that read them,
the equity curve beside buy and hold, and the drawdown; then the same figures, forward moves and
assumptions as the terminal report (``report.py``), the trades and the events of alert-only
strategies as tables.
"""

from __future__ import annotations

import html
from collections.abc import Collection
from typing import Any

import numpy as np

from perpwatch.backtest.forward import EventMove, event_moves
from perpwatch.backtest.report import (
    FORWARD_NOTE,
    PER_SYMBOL_NOTE,
    alert_only,
    bust_line,
    forward_rows,
    per_symbol_rows,
    summary_rows,
    t_iso,
)
from perpwatch.backtest.result import HORIZONS, BacktestResult
from perpwatch.backtest.stats import bust_index, buy_and_hold, rule_counts
from perpwatch.common.collector import without_collection
from perpwatch.common.extras import require
from perpwatch.common.timeutil import format_time
from perpwatch.language.compiler import Rule, Strategy

MAX_PRICE_PANELS = 6  # symbols with a price panel
MAX_METRIC_SYMBOLS = 2  # of those, the first ones with metric panels under their price
MAX_METRIC_PANELS = 6  # metric groups drawn per symbol
MAX_TABLE_ROWS = 500  # trades / events listed in the page's tables (the JSON has every one)

_METRIC_COLOURS = ("#2c7a7b", "#b7791f", "#6b46c1", "#c05621", "#2b6cb0")


@without_collection
def write_html(r: BacktestResult, path: str) -> None:
    """One self-contained HTML file (plotly inlined): price + markers and the metric panels under it,
    equity beside buy and hold, drawdown; the figures, forward moves, trades and events as tables."""
    require("plotly", extra="report", purpose="--html")  # else an error naming the extra to install
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.subplots import make_subplots

    symbols = list(dict.fromkeys(sym for syms in r.symbols.values() for sym in syms))
    shown = symbols[:MAX_PRICE_PANELS]
    panels: list[tuple[str, str | None]] = []  # (symbol, metric group or None for the price)
    for k, sym in enumerate(shown):
        panels.append((sym, None))
        if k < MAX_METRIC_SYMBOLS:
            panels += [(sym, group) for group in metric_groups(r, sym)]
    titles = [_title(r, sym, group) for sym, group in panels] + [
        "Equity (USD) and buy and hold",
        "Drawdown (%)",
    ]
    rows = len(panels) + 2
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=min(0.06, 0.3 / rows),
        subplot_titles=titles,
        row_heights=[3 if group is None else 1.3 for _, group in panels] + [2, 1.4],
    )
    bar_x = r.times.astype("datetime64[ms]")
    legend_done: set[str] = set()
    for row, (sym, group) in enumerate(panels, start=1):
        if group is None:
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
                row=row,
                col=1,
            )
            _event_markers(go, fig, r, sym, {None: close}, row, legend_done)
            _trade_markers(go, fig, r, sym, row, legend_done)
            fig.update_yaxes(title_text="USD", row=row, col=1)
        else:
            series: dict[str | None, np.ndarray] = {
                name: r.metrics[sym][name] for name in metric_groups(r, sym)[group]
            }
            for j, (name, values) in enumerate(series.items()):
                fig.add_trace(
                    go.Scatter(
                        x=bar_x,
                        y=values,
                        mode="lines",
                        name=str(name),
                        legendgroup=str(name),
                        showlegend=name not in legend_done,
                        line={"width": 1, "color": _METRIC_COLOURS[j % len(_METRIC_COLOURS)]},
                        hovertemplate=f"{name} %{{y:.6g}}<extra>{sym}</extra>",
                    ),
                    row=row,
                    col=1,
                )
                legend_done.add(str(name))
            _event_markers(go, fig, r, sym, series, row, legend_done)
            fig.update_yaxes(title_text=group, row=row, col=1)
    eq_x = r.equity_times.astype("datetime64[ms]")
    eq = r.equity_curve
    fig.add_trace(
        go.Scatter(x=eq_x, y=eq, mode="lines", name="equity", line={"color": "#2b6cb0"}), row=rows - 1, col=1
    )
    hold = buy_and_hold(r)
    if hold is not None:
        fig.add_trace(
            go.Scatter(
                x=eq_x,
                y=hold,
                mode="lines",
                name="buy and hold (no costs)",
                line={"color": "#a0aec0", "dash": "dot", "width": 1.4},
            ),
            row=rows - 1,
            col=1,
        )
    b = bust_index(r)
    if b is not None:
        fig.add_trace(
            go.Scatter(
                x=eq_x[b : b + 1],
                y=eq[b : b + 1],
                mode="markers+text",
                name="bust",
                text=["bust"],
                textposition="top center",
                marker={"symbol": "x", "size": 12, "color": "#c53030"},
                hovertemplate=f"{bust_line(r)}<extra></extra>",
            ),
            row=rows - 1,
            col=1,
        )
    floored = np.maximum(eq, 0.0)  # below 0 the account is bust: 100 % down, no more
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = (floored / np.maximum.accumulate(floored) - 1.0) * 100
    fig.add_trace(
        go.Scatter(
            x=eq_x, y=dd, mode="lines", name="drawdown", fill="tozeroy", line={"color": "#c53030", "width": 1}
        ),
        row=rows,
        col=1,
    )
    fig.update_yaxes(title_text="USD", row=rows - 1, col=1)
    fig.update_yaxes(title_text="%", row=rows, col=1)
    metric_panels = sum(group is not None for _, group in panels)
    fig.update_layout(
        template="plotly_white",
        height=320 * len(shown) + 170 * metric_panels + 480,
        margin={"l": 70, "r": 30, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.04},
        hovermode="closest",
    )
    plot = pio.to_html(fig, include_plotlyjs=True, full_html=False, config={"displaylogo": False})
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(_page(r, plot, symbols, shown))


def _title(r: BacktestResult, sym: str, group: str | None) -> str:
    if group is None:
        return f"{sym} price.close, events and trades"
    members = metric_groups(r, sym)[group]
    lacking = [name for name in members if not np.isfinite(r.metrics[sym][name]).any()]
    title = f"{sym} {group}.*: {', '.join(members)}"
    return title + (f" (not in the data: {', '.join(lacking)})" if lacking else "")


def metric_groups(r: BacktestResult, sym: str) -> dict[str, list[str]]:
    """The metrics the strategies read for ``sym`` (numeric, ``price.*`` aside) by group: the part
    of the name before the first dot (``funding``, ``oi``, ``liq``…), at most ``MAX_METRIC_PANELS``."""
    groups: dict[str, list[str]] = {}
    for name in sorted(r.metrics.get(sym, {})):
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    return dict(list(groups.items())[:MAX_METRIC_PANELS])


def rule_metrics(s: Strategy, rule: Rule) -> set[str]:
    """The metrics a rule's condition reads, through every let it uses."""
    seen: set[int] = set()
    todo = [rule.cond]
    out = set()
    while todo:
        k = todo.pop()
        if k in seen:
            continue
        seen.add(k)
        node = s.plan.nodes[k]
        if node.op == "metric":
            out.add(node.data)
        todo.extend(node.args)
    return out


#: Event marker colours, one per (strategy, rule) in order; the same in every price panel.
_PALETTE = ("#3182ce", "#d69e2e", "#805ad5", "#dd6b20", "#319795", "#d53f8c", "#718096", "#38a169")


def _event_markers(
    go: Any,
    fig: Any,
    r: BacktestResult,
    sym: str,
    series: dict[str | None, np.ndarray],
    row: int,
    legend_done: set[str],
) -> None:
    """A small dot for every fired event, coloured by rule: on the price panel (``series`` is
    ``{None: close}``) at the decision bar's close for every rule; on a metric panel at the value of
    the first of its metrics the rule reads, for the rules that read one."""
    index = {int(t): i for i, t in enumerate(r.times)}
    rules = [(s, rule) for s in r.strategies for rule in s.rules]
    many = len(r.strategies) > 1
    for k, (s, rule) in enumerate(rules):
        if None in series:
            values = series[None]
        else:
            read = [name for name in series if name is not None and name in rule_metrics(s, rule)]
            if not read:
                continue
            values = series[read[0]]
        evs = [
            e
            for e in r.events
            if e.symbol == sym and e.kind == "fired" and (e.strategy, e.rule) == (s.name, rule.name)
        ]
        if not evs and None not in series:
            continue
        name = f"{s.name}/{rule.name} fired" if many else f"{rule.name} fired"
        fig.add_trace(
            go.Scatter(
                x=np.asarray([e.time for e in evs], dtype="datetime64[ms]"),
                y=[_value(values, index.get(e.time)) for e in evs],
                mode="markers",
                name=name,
                legendgroup=name,
                showlegend=name not in legend_done,
                marker={"symbol": "circle", "size": 6, "color": _PALETTE[k % len(_PALETTE)], "opacity": 0.9},
                text=[e.message or e.rule for e in evs],
                hovertemplate="%{text}<extra>%{fullData.name}</extra>",
            ),
            row=row,
            col=1,
        )
        legend_done.add(name)


def _value(values: np.ndarray, i: int | None) -> float | None:
    if i is None:
        return None
    x = float(values[i])
    return x if np.isfinite(x) else None


def _trade_markers(go: Any, fig: Any, r: BacktestResult, sym: str, row: int, legend_done: set[str]) -> None:
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
            showlegend="exit" not in legend_done,
            marker={"symbol": "x-thin-open", "size": 9, "color": "#1a202c", "line": {"width": 2}},
            text=[f"exit {t.side} @ {t.exit_price:,.2f}: net {t.net_pnl:+,.2f} USD" for t in exits],
            hovertemplate="%{text}<extra></extra>",
        ),
        row=row,
        col=1,
    )
    legend_done.add("exit")
    for side, symbol, color in (("long", "triangle-up", "#2f855a"), ("short", "triangle-down", "#c53030")):
        mine = [t for t in trades if t.side == side]
        fig.add_trace(
            go.Scatter(
                x=np.asarray([t.entry_time for t in mine], dtype="datetime64[ms]"),
                y=[t.entry_price for t in mine],
                mode="markers",
                name=f"{side} entry",
                legendgroup=f"{side} entry",
                showlegend=f"{side} entry" not in legend_done,
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
        legend_done.add(f"{side} entry")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1a202c;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px}
.meta{color:#4a5568;font-size:13px;margin:2px 0}
.grid{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #e2e8f0;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f7fafc}
.bust{background:#fff5f5;border:2px solid #c53030;color:#9b2c2c;font-weight:600;padding:8px 12px;margin:10px 0;max-width:1100px}
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
    if len(shown) > MAX_METRIC_SYMBOLS:
        left_out += f"<p class=meta>Metric panels for {', '.join(shown[:MAX_METRIC_SYMBOLS])} only.</p>"
    notes = "".join(f"<p class=meta>note: {esc(n)}</p>" for n in r.history.notes)
    moves = event_moves(r)
    headers, rows = forward_rows(r, moves)
    forward = _table("forward", headers, rows, range(2, len(headers)))
    headers, rows = per_symbol_rows(r)
    hold = _table("per_symbol", headers, rows, range(1, len(headers)))
    bust = f"<p class=bust id=bust>{esc(bust_line(r))}</p>" if bust_line(r) else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>perpwatch backtest: {esc(names)}</title>
<style>{_CSS}</style></head><body>
<h1>perpwatch backtest: {esc(names)}</h1>
<p class=meta>{esc(r.history.source)} &middot; {esc(", ".join(symbols))} &middot; {esc(r.strategies[0].interval)} bars
&middot; {esc(t_iso(r.stats["start"]))} .. {esc(t_iso(r.stats["end"]))} UTC ({r.stats["bars"]:,} bars)</p>{notes}{bust}
<div class=grid><div><h2>Performance</h2><table>{stats}</table></div>
<div><h2>Events per rule</h2><table><tr><th>strategy</th><th>rule</th><th>fired</th><th>suppressed</th>
<th>resolved</th><th>orders</th><th>no order</th><th>rejected</th></tr>{counts}</table></div></div>
<h2>Buy and hold per symbol (same bars)</h2>{hold}
<p class=meta>{esc(PER_SYMBOL_NOTE)}</p>
<h2>Forward price move after each rule's fired events ({", ".join(map(str, HORIZONS))} bars)</h2>{forward}
<p class=meta>{esc(FORWARD_NOTE)}</p>
<h2>Charts</h2>{left_out}{plot}
{_trades_table(r)}{_events_table(r, moves)}
<h2>Assumptions</h2><ul>{"".join(f"<li>{esc(a)}</li>" for a in r.assumptions)}</ul>
</body></html>
"""


def _table(id_: str, headers: list[str], rows: list[list[str]], numeric: Collection[int]) -> str:
    """An HTML table; the columns ``numeric`` lists right-aligned (numbers)."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{esc(c)}</td>" if j not in numeric else f"<td class=n>{esc(c)}</td>"
            for j, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table id={id_}><tr>{head}</tr>{body}</table>"


def _more(shown: int, total: int, what: str) -> str:
    return f" (first {shown} of {total}; the JSON has every {what})" if shown < total else ""


def _trades_table(r: BacktestResult) -> str:
    trades = r.trades[:MAX_TABLE_ROWS]
    title = f"<h2>Trades{_more(len(trades), len(r.trades), 'trade')}</h2>"
    if not trades:
        return title + "<p class=meta id=trades>No trades.</p>"
    headers = ["#", "strategy", "symbol", "side", "entry rule", "entry (UTC)", "price", "exit (UTC)",
               "price", "exit rule", "size USD", "fees", "funding", "net PnL"]  # fmt: skip
    rows = [
        [
            str(k + 1),
            t.strategy,
            t.symbol,
            t.side,
            t.entry_rule or "-",
            _when(t.entry_time),
            f"{t.entry_price:,.2f}",
            _when(t.exit_time) if t.status == "closed" else "(open)",
            "-" if t.exit_price is None else f"{t.exit_price:,.2f}",
            t.exit_rule or "-",
            f"{t.size_usd:,.2f}",
            f"{t.fees:,.2f}",
            f"{t.funding:+,.2f}",
            f"{t.net_pnl:+,.2f}",
        ]  # fmt: skip
        for k, t in enumerate(trades)
    ]
    return title + _table("trades", headers, rows, {0, 6, 8, 10, 11, 12, 13})


def _events_table(r: BacktestResult, moves: list[EventMove]) -> str:
    quiet = set(alert_only(r))
    if not quiet:
        return ""
    listed = [m for m in moves if m.event.strategy in quiet]
    shown = listed[:MAX_TABLE_ROWS]
    title = f"<h2>Events of alert-only strategies{_more(len(shown), len(listed), 'event')}</h2>"
    headers = [
        "time (UTC)",
        "symbol",
        "strategy",
        "rule",
        "severity",
        "message",
        *(f"{h}b %" for h in HORIZONS),
    ]
    rows = [
        [
            _when(m.event.time),
            m.event.symbol,
            m.event.strategy,
            m.event.rule,
            m.event.severity,
            m.event.message,
            *("-" if v is None else f"{v:+.2f}" for v in m.moves),
        ]  # fmt: skip
        for m in shown
    ]
    return title + _table("events", headers, rows, range(6, len(headers)))


def _when(ms: int | None) -> str:
    return "-" if ms is None else format_time(int(ms))[:16].replace("T", " ")
