"""The HTML report in a real browser: headless Chromium loads it offline, the charts draw, and no
console error, uncaught exception or network request happens; a screenshot is saved.

The checks use the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages on fds 3/4,
no extra dependency): console messages come typed (``error`` vs ``log``, which ``--enable-logging``
does not tell apart), exceptions and network requests are reported as events. The screenshot is
taken by ``--screenshot`` at the page's full height. Set ``PERPWATCH_REPORT_SCREENSHOT=1`` to also
copy it to ``out/report.png`` (for looking at by hand).

Chromium: ``/usr/bin/chromium`` (or ``PERPWATCH_CHROMIUM``); the test is skipped when it is absent.
CI installs Debian's ``chromium`` package.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, H

from perpwatch.backtest.history import History
from perpwatch.backtest.html_report import write_html
from perpwatch.backtest.result import BacktestOptions
from perpwatch.backtest.walk import run_backtest
from perpwatch.evaluation.frame import Frame
from perpwatch.language.compiler import load_strategy

pytest.importorskip("plotly", reason="the HTML report needs plotly (perpwatch[report])")

CHROMIUM = os.environ.get("PERPWATCH_CHROMIUM", "/usr/bin/chromium")
T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PERPWATCH_CHROMIUM)",
)

STRATEGY = """
version: 1
name: swing
interval: 1h
params: {fast: 12, slow: 48}
let:
  trend:
    cases:
      - when: sma(price.close, fast) > sma(price.close, slow)
        then: UP
      - when: sma(price.close, fast) < sma(price.close, slow)
        then: DOWN
    else: FLAT
rules:
  - name: up
    when: trend == "UP"
    message: "{symbol} trend up"
    signal: {side: long, size_usd: 2000}
  - name: down
    when: trend == "DOWN"
    signal: {side: short, size_usd: 2000}
"""


class DevTools:
    """A minimal DevTools-protocol client over Chromium's ``--remote-debugging-pipe``."""

    def __init__(self, user_dir: Path):
        cmd_r, cmd_w = os.pipe()  # we write commands; Chromium reads fd 3
        out_r, out_w = os.pipe()  # Chromium writes fd 4; we read
        # the child's ends moved above 100 first, so the redirections to 3 and 4 cannot clash
        hi_r, hi_w = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 100), fcntl.fcntl(out_w, fcntl.F_DUPFD, 100)
        for fd in (cmd_r, out_w):
            os.close(fd)
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{hi_r} 4>&{hi_w} {hi_r}<&- {hi_w}>&-', CHROMIUM, *FLAGS,
             f"--user-data-dir={user_dir}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(hi_r, hi_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(hi_r)
        os.close(hi_w)
        self.w, self.r = cmd_w, out_r
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read(timeout)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def open(self, url: str) -> None:
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"][
            "value"
        ]

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries, requests leaving the file."""
        out = []
        for e in self.events:
            p, m = e.get("params", {}), e.get("method")
            if m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append(
                    "console." + p["type"] + ": " + " ".join(str(a.get("value", a)) for a in p["args"])
                )
            elif m == "Runtime.exceptionThrown":
                details = p["exceptionDetails"]
                described = details.get("exception", {}).get("description", "")
                out.append(f"exception: {details.get('text', '')} {described}".strip())
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append("log: " + p["entry"]["text"])
            elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith(("file:", "data:")):
                out.append("network request: " + p["request"]["url"])
        return out

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.w)
        os.close(self.r)


def build_report(path: Path) -> int:
    rng = np.random.default_rng(3)
    frames = {}
    for k, sym in enumerate(("BTC", "ETH")):
        n = 24 * 60
        close = (60_000 if k == 0 else 3_000) * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
        opens = np.concatenate([[close[0]], close[:-1]])
        funding = 0.01 + np.cumsum(rng.normal(0, 0.001, n)) * 0.1
        cols = {"price.open": opens, "price.close": close, "funding.close": funding}
        frames[sym] = Frame(T0 + H * np.arange(n, dtype=np.int64), cols)
    s = load_strategy("swing.yaml", text=STRATEGY)
    r = run_backtest(
        [s], History(frames, "1h", "synthetic test data"), {s.name: ["BTC", "ETH"]}, BacktestOptions()
    )
    assert r.trades, "the report should show trades"
    write_html(r, str(path))
    return len(r.trades)


ALERTS = """
version: 1
name: watch
interval: 1h
rules:
  - name: funding_hot
    when: funding.close > 0.012
    severity: high
    message: "{symbol} funding {funding.close:.4f}%"
  - name: oi_jump
    when: pct_change(oi.close, 1) > 1
    message: "{symbol} OI up"
  - name: price_drop
    when: pct_change(price.close, 1) < -1
"""


def build_alert_report(path: Path) -> None:
    """An alert-only strategy (no ``execute:``) reading funding and OI, over one symbol."""
    rng = np.random.default_rng(5)
    n = 24 * 40
    close = 60_000 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    cols = {
        "price.open": np.concatenate([[close[0]], close[:-1]]),
        "price.close": close,
        "funding.close": 0.01 + np.cumsum(rng.normal(0, 0.0005, n)) * 0.2,
        "oi.close": 1e9 * np.exp(np.cumsum(rng.normal(0, 0.006, n))),
    }
    frames = {"BTC": Frame(T0 + H * np.arange(n, dtype=np.int64), cols)}
    s = load_strategy("watch.yaml", text=ALERTS)
    r = run_backtest([s], History(frames, "1h", "synthetic test data"), {s.name: ["BTC"]}, BacktestOptions())
    assert not r.trades and sum(e.kind == "fired" for e in r.events) > 10
    write_html(r, str(path))


#: What the page holds, read in the browser: subplot titles, traces (name, y axis, points, mode)
#: and the rows of the tables.
CONTENT = """(() => {
  const gd = document.querySelector('.js-plotly-plot');
  const rows = (id) => { const t = document.getElementById(id);
    return t === null ? null : (t.tagName === 'TABLE' ? t.querySelectorAll('tr').length : 0); };
  return {titles: gd.layout.annotations.map(a => a.text),
          traces: gd.data.map(t => ({name: t.name, yaxis: t.yaxis || 'y', n: t.x.length, mode: t.mode})),
          forward: rows('forward'), trades: rows('trades'), events: rows('events'),
          per_symbol: rows('per_symbol'),
          bust: (document.getElementById('bust') || {}).textContent || '',
          drawdown_min: Math.min(...Array.from(gd._fullData.find(t => t.name === 'drawdown').y)),
          trades_text: (document.getElementById('trades') || {}).textContent || ''};
})()"""


def inspect(
    page: Path, user_dir: Path, wait: float = 30, content: dict | None = None
) -> tuple[list[str], dict]:
    """Load ``page``; the problems seen and what was drawn (waiting up to ``wait`` s for the charts).
    ``content``, when given, is filled with what :data:`CONTENT` reads once the charts are drawn."""
    tools = DevTools(user_dir)
    try:
        tools.open(page.as_uri())
        drawn: dict = {}
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            drawn = tools.evaluate(
                "({svgs: document.querySelectorAll('svg.main-svg').length,"
                " plots: document.querySelectorAll('.js-plotly-plot').length,"
                " traces: document.querySelectorAll('g.trace').length,"
                " points: document.querySelectorAll('path.point').length,"
                " lines: document.querySelectorAll('g.trace.scatter path.js-line').length,"
                " height: document.documentElement.scrollHeight})"
            )
            if (drawn["svgs"] and drawn["points"]) or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if content is not None:
            content.update(tools.evaluate(CONTENT))
        return tools.problems(), drawn
    finally:
        tools.close()


def test_console_errors_are_detected(tmp_path):
    """The detector itself: a page with a console.error and an exception is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('deliberate'); missingFn();</script></body></html>")
    problems, _ = inspect(page, tmp_path / "profile", wait=0)
    assert any("console.error: deliberate" in p for p in problems)
    assert any("missingFn" in p for p in problems)


def test_report_renders_offline_without_errors_and_is_screenshotted(tmp_path):
    page = tmp_path / "report.html"
    trades = build_report(page)
    content: dict = {}
    problems, drawn = inspect(page, tmp_path / "profile", content=content)
    assert problems == []
    assert drawn["plots"] == 1 and drawn["svgs"] >= 2  # plotly draws its main-svg layers
    assert drawn["lines"] >= 4  # BTC and ETH prices, equity, drawdown
    assert drawn["points"] >= 20  # event and trade markers
    assert content["trades"] == trades + 1  # the trade table: a header and a row per trade
    assert content["forward"] == 3  # a header and the two rules
    assert content["per_symbol"] == 3  # buy and hold per symbol: a header, BTC and ETH
    assert content["bust"] == "" and content["drawdown_min"] > -100
    assert not [t for t in content["traces"] if t["name"] == "bust"]
    assert content["events"] > 1  # no execute: in the file, so its events are listed too
    hold = [t for t in content["traces"] if t["name"] == "buy and hold (no costs)"]
    equity = next(t for t in content["traces"] if t["name"] == "equity")
    assert len(hold) == 1 and hold[0]["yaxis"] == equity["yaxis"] and hold[0]["n"] == equity["n"]

    shot = tmp_path / "report.png"
    height = min(int(drawn["height"]) + 40, 6000)
    subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--window-size=1400,{height}",
         "--virtual-time-budget=15000", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=180, check=True,
    )  # fmt: skip
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    width, png_height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, png_height) == (1400, height)
    if os.environ.get("PERPWATCH_REPORT_SCREENSHOT"):
        out = ROOT / "out"
        out.mkdir(exist_ok=True)
        shutil.copyfile(shot, out / "report.png")
        shutil.copyfile(page, out / "report.html")


def test_alert_only_report_has_metric_panels_event_markers_and_tables(tmp_path):
    page = tmp_path / "alerts.html"
    build_alert_report(page)
    content: dict = {}
    problems, drawn = inspect(page, tmp_path / "profile", content=content)
    assert problems == []
    assert drawn["plots"] == 1 and drawn["points"] >= 20
    titles = content["titles"]
    assert titles[:3] == [
        "BTC price.close, events and trades",
        "BTC funding.*: funding.close",
        "BTC oi.*: oi.close",
    ]
    assert "Equity (USD) and buy and hold" in titles
    traces = content["traces"]
    axis = {t["name"]: t["yaxis"] for t in traces if t["mode"] == "lines"}
    price_axis = next(t["yaxis"] for t in traces if t["name"] == "BTC close")
    assert len({price_axis, axis["funding.close"], axis["oi.close"]}) == 3  # a panel each
    # each rule's markers: on the price, and on the panel of the metric it reads (only there)
    markers: dict[str, set[str]] = {}
    for t in traces:
        if t["mode"] == "markers" and t["name"].endswith(" fired") and t["n"]:
            markers.setdefault(t["name"], set()).add(t["yaxis"])
    assert markers["funding_hot fired"] == {price_axis, axis["funding.close"]}
    assert markers["oi_jump fired"] == {price_axis, axis["oi.close"]}
    assert markers["price_drop fired"] == {price_axis}
    assert any(t["name"] == "buy and hold (no costs)" for t in traces)
    assert content["forward"] == 4  # a header and one row per rule
    assert content["events"] > 10  # the alert-only strategy's events, listed
    assert content["trades"] == 0 and content["trades_text"] == "No trades."


BUSTS = """
version: 1
name: busts
interval: 1h
rules:
  - name: enter
    when: price.close > 90
    signal: {side: long, size_usd: 5000}
"""


def test_a_bust_report_says_so_and_its_drawdown_stops_at_100_percent(tmp_path):
    """1,000 USD holding a 5,000 USD long through a 40 % fall: equity goes below 0."""
    n = 200
    close = np.concatenate([np.full(50, 100.0), np.linspace(100, 60, 50), np.full(n - 100, 60.0)])
    frames = {
        "BTC": Frame(T0 + H * np.arange(n, dtype=np.int64), {"price.open": close, "price.close": close})
    }
    s = load_strategy("busts.yaml", text=BUSTS)
    r = run_backtest(
        [s], History(frames, "1h", "synthetic test data"), None, BacktestOptions(balance_usd=1000)
    )
    assert r.stats["bust_time"] is not None and r.equity_curve.min() < 0
    page = tmp_path / "bust.html"
    write_html(r, str(page))
    content: dict = {}
    problems, drawn = inspect(page, tmp_path / "profile", content=content)
    assert problems == [] and drawn["plots"] == 1
    assert content["bust"].startswith(f"bust at {r.stats['bust_time'][:16].replace('T', ' ')} UTC")
    assert content["drawdown_min"] == -100  # not below: equity under 0 counts as 0
    equity = next(t for t in content["traces"] if t["name"] == "equity")
    (bust,) = [t for t in content["traces"] if t["name"] == "bust"]
    assert bust["n"] == 1 and bust["yaxis"] == equity["yaxis"]  # marked on the equity curve
    assert content["per_symbol"] == 2
