"""The sweep's self-contained HTML page (plotly inlined; ``pip install 'perpwatch[report]'``).

Three charts and a table: the parameter surface (the objective over the first one or two swept
params, in-sample and, with --folds, out-of-sample), each trial's in-sample against its
out-of-sample objective (points under the diagonal did worse on bars they were not chosen on), and
the best trial's equity over the whole range beside buy and hold, with the test windows shaded;
then the ranked trials.
"""

from __future__ import annotations

import html
from typing import Any

from perpwatch.backtest.stats import buy_and_hold
from perpwatch.common.extras import require
from perpwatch.research.objective import Summary
from perpwatch.research.ranking import Row, best_line
from perpwatch.research.specs import format_value
from perpwatch.research.study import SweepPlan, params_text
from perpwatch.research.trial import backtest

MAX_TABLE_ROWS = 200


def write_html(rows: list[Row], plan: SweepPlan, path: str) -> None:
    require("plotly", extra="report", purpose="--html")
    import plotly.graph_objects as go
    import plotly.io as pio

    scored = [(r, r.summary) for r in rows if r.summary is not None]
    figures = [_surface(go, scored, plan)]
    if any(s.out_value is not None for _, s in scored):
        figures.append(_in_vs_out(go, scored, plan))
    best = next((r for r in rows if r.rank == 1), None)
    if best is not None:
        figures.append(_equity(go, best, plan))
    parts = []
    for k, fig in enumerate(figures):
        fig.update_layout(template="plotly_white", height=460, margin={"l": 60, "r": 30, "t": 60, "b": 50})
        parts.append(
            pio.to_html(fig, include_plotlyjs=k == 0, full_html=False, config={"displaylogo": False})
        )
    page = _page(rows, plan, parts)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def _surface(go: Any, rows: list[tuple[Row, Summary]], plan: SweepPlan) -> Any:
    names = list(plan.specs)
    obj = plan.objective
    fig = go.Figure()
    has_out = any(s.out_value is not None for _, s in rows)
    if len(names) == 1:
        ordered = sorted(rows, key=lambda rs: float(rs[0].params[names[0]]))
        x = [r.params[names[0]] for r, _ in ordered]
        fig.add_trace(
            go.Scatter(x=x, y=[s.in_value for _, s in ordered], mode="lines+markers", name="in-sample")
        )
        if has_out:
            fig.add_trace(
                go.Scatter(
                    x=x, y=[s.out_value for _, s in ordered], mode="lines+markers", name="out-of-sample"
                )
            )
        fig.update_layout(title=f"{obj} by {names[0]}", xaxis_title=names[0], yaxis_title=obj)
        return fig
    a, b = names[0], names[1]
    text = [" ".join(f"{k}={format_value(v)}" for k, v in r.params.items()) for r, _ in rows]
    fig.add_trace(
        go.Scatter(
            x=[r.params[a] for r, _ in rows],
            y=[r.params[b] for r, _ in rows],
            mode="markers",
            name=f"{obj} in-sample",
            text=text,
            marker={
                "size": 14,
                "color": [s.in_value for _, s in rows],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": obj},
            },
        )
    )
    more = f" (colour; {len(names) - 2} more params in the table)" if len(names) > 2 else " (colour)"
    fig.update_layout(title=f"{obj} in-sample over {a} and {b}{more}", xaxis_title=a, yaxis_title=b)
    return fig


def _in_vs_out(go: Any, rows: list[tuple[Row, Summary]], plan: SweepPlan) -> Any:
    obj = plan.objective
    pts = [
        (r, s.in_value, s.out_value) for r, s in rows if s.in_value is not None and s.out_value is not None
    ]
    xs = [x for _, x, _ in pts]
    ys = [y for _, _, y in pts]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            name="trials",
            text=[
                f"trial {r.number}: " + " ".join(f"{k}={format_value(v)}" for k, v in r.params.items())
                for r, _, _ in pts
            ],
        )
    )
    if xs:
        lo, hi = min(xs + ys), max(xs + ys)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="in = out", line={"dash": "dot"}))
    best = next((p for p in pts if p[0].rank == 1), None)
    if best is not None:
        fig.add_trace(
            go.Scatter(
                x=[best[1]],
                y=[best[2]],
                mode="markers",
                name="best in-sample",
                marker={"size": 16, "symbol": "star", "color": "#c53030"},
            )
        )
    fig.update_layout(
        title=f"{obj}: in-sample (mean of the train windows) against out-of-sample (test windows)",
        xaxis_title=f"{obj} in-sample",
        yaxis_title=f"{obj} out-of-sample",
    )
    return fig


def _equity(go: Any, best: Row, plan: SweepPlan) -> Any:
    r = backtest(plan.setup, params_text(best.params), None)
    x = r.equity_times.astype("datetime64[ms]")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=r.equity_curve, mode="lines", name="equity"))
    hold = buy_and_hold(r)
    if hold is not None:
        fig.add_trace(
            go.Scatter(x=x, y=hold, mode="lines", name="buy and hold (no costs)", line={"dash": "dot"})
        )
    for k, fold in enumerate(plan.setup.folds, start=1):
        if fold.test is None:
            continue
        fig.add_vrect(
            x0=_ms(fold.test.start),
            x1=_ms(fold.test.end + r.step_ms),
            fillcolor="#f6ad55",
            opacity=0.18,
            line_width=0,
            annotation_text=f"test {k}",
            annotation_position="top left",
        )
    params = " ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
    fig.update_layout(
        title=f"Best trial {best.number} ({params}): equity over the whole range, one account; test windows shaded",
        yaxis_title="USD",
    )
    return fig


def _ms(ms: int) -> str:
    from perpwatch.common.timeutil import format_time

    return format_time(ms)


def _page(rows: list[Row], plan: SweepPlan, charts: list[str]) -> str:
    names = list(plan.specs)
    head = ["rank", "trial", *names, "in-sample", "out-of-sample", "trades in", "trades out", "status"]
    body = []
    for r in rows[:MAX_TABLE_ROWS]:
        s = r.summary
        cells = [
            "" if r.rank is None else str(r.rank),
            str(r.number),
            *[format_value(r.params[n]) if n in r.params else "" for n in names],
            _num(s.in_value if s else None),
            _num(s.out_value if s else None),
            str(s.in_trades) if s else "",
            "" if s is None or s.out_trades is None else str(s.out_trades),
            r.status if s else f"failed: {r.error or ''}",
        ]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    more = f"<p>{len(rows) - MAX_TABLE_ROWS} more trials in --json.</p>" if len(rows) > MAX_TABLE_ROWS else ""
    folds = "".join(
        f"<li>fold {k}: train {html.escape(f.train.label())}"
        + ("" if f.test is None else f"; test {html.escape(f.test.label())}")
        + "</li>"
        for k, f in enumerate(plan.setup.folds, start=1)
    )
    specs = "".join(f"<li>{html.escape(n)} = {html.escape(s.text)}</li>" for n, s in plan.specs.items())
    title = f"perpwatch sweep: {plan.study_name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#1a202c}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border-bottom:1px solid #e2e8f0;padding:3px 8px;text-align:right}}
th{{background:#f7fafc}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(plan.search)} search; objective <b>{html.escape(plan.objective)}</b> ({html.escape(plan.direction)}),
at least {plan.min_trades} in-sample trades; the winner is chosen on the in-sample figure only.</p>
<p><b>{html.escape(best_line(rows, plan))}</b></p>
<ul>{specs}</ul><ul>{folds}</ul>
{"".join(f'<div class="chart">{c}</div>' for c in charts)}
<h2>Trials</h2><table id="trials">{header}{"".join(body)}</table>{more}
</body></html>
"""


def _num(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.4g}"
