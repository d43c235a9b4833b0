"""The dashboard page: rule states, recent events with filters, positions and PnL, mutes, the kill
switch, and a small inline-SVG chart of each strategy's key metrics; rendered on the server from
the Jinja2 template ``templates/dashboard.html`` (autoescaped), no script."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import escape

from perpwatch.common.timeutil import format_time
from perpwatch.web.backend import EVENT_KINDS, MAX_EVENTS, SEVERITIES, Backend

CHART_WIDTH, CHART_HEIGHT = 360, 80
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea")
DEFAULT_EVENTS = 50
FILTERS = ("strategy", "rule", "symbol", "kind", "severity")

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("perpwatch.web", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
)


class BadQuery(ValueError):
    """A query parameter that cannot be used; the message says which and what would do."""


@dataclass
class Chart:
    title: str
    svg: str  # inline SVG markup, built from numbers only
    legend: list[tuple[str, str, str]]  # (colour, metric, newest value)


def when(ms: int | None) -> str:
    return "" if ms is None else format_time(int(ms))


def shown(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def chart(title: str, series: dict[str, Any]) -> Chart:
    """Each metric scaled to its own range (its min and max are in the legend), one polyline each;
    unknown values break the line."""
    times = series.get("times") or []
    lines, legend = [], []
    n = len(times)
    for k, (metric, values) in enumerate(sorted(series.get("metrics", {}).items())):
        known = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
        colour = COLOURS[k % len(COLOURS)]
        newest = next((v for v in reversed(values) if v is not None), None)
        if not known or n < 2:
            legend.append((colour, metric, shown(newest)))
            continue
        lo, hi = min(known), max(known)
        span = (hi - lo) or 1.0
        segment: list[str] = []
        segments = [segment]
        for i, v in enumerate(values):
            if v is None:
                segment = []
                segments.append(segment)
                continue
            x = 4 + (CHART_WIDTH - 8) * i / (n - 1)
            y = 4 + (CHART_HEIGHT - 8) * (1 - (v - lo) / span)
            segment.append(f"{x:.1f},{y:.1f}")
        for points in segments:
            if len(points) > 1:
                lines.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(points)}"/>'
                )
        legend.append((colour, metric, f"{shown(newest)} (range {lo:.4g} .. {hi:.4g})"))
    svg = (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{CHART_WIDTH}" '
        f'height="{CHART_HEIGHT}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect width="{CHART_WIDTH}" height="{CHART_HEIGHT}" fill="#f8fafc" stroke="#cbd5e1"/>'
        + "".join(lines)
        + "</svg>"
    )
    span_text = f"{when(times[0])} .. {when(times[-1])}" if times else "no bars yet"
    return Chart(f"{title} ({span_text})", svg, legend)


def parse_filters(query: dict[str, str]) -> tuple[dict[str, str | None], int]:
    """The event filters and the limit from the page's query string (:class:`BadQuery` if bad)."""
    filters = {name: (query.get(name) or None) for name in FILTERS}
    raw = query.get("limit") or str(DEFAULT_EVENTS)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_EVENTS:
        raise BadQuery(f"limit={raw!r}: give a whole number from 1 to {MAX_EVENTS}")
    return filters, int(raw)


async def page(backend: Backend, query: dict[str, str], notice: str | None = None) -> str:
    filters, limit = parse_filters(query)
    rules = backend.rules()
    telemetry = backend.current_telemetry()
    healthy, health = backend.health()
    positions, pnl, unknown = await backend.positions()
    events = backend.events(limit, **filters)
    choices = {
        "strategy": sorted({r.strategy for r in rules}),
        "rule": sorted({r.rule for r in rules}),
        "symbol": sorted({r.symbol for r in rules}),
        "kind": sorted({*EVENT_KINDS, *(kind for _, _, kind in backend.event_counts())}),
        "severity": list(SEVERITIES),
    }
    charts = [chart(name, series) for name, series in sorted(telemetry.series.items())]
    return _ENV.get_template("dashboard.html").render(
        rules=rules,
        events=events,
        filters=filters,
        limit=limit,
        choices=choices,
        positions=positions,
        pnl=pnl,
        unknown_positions=unknown,
        mutes=backend.mutes(),
        halted=backend.halted(),
        charts=charts,
        healthy=healthy,
        health=health,
        telemetry=telemetry,
        read_only=backend.read_only,
        notice=notice,
        when=when,
        shown=shown,
        epoch_ms=lambda s: None if s is None else int(s * 1000),
    )


def message_page(title: str, text: str) -> str:
    return _ENV.get_template("message.html").render(title=title, text=text)
