"""The dashboard in a real browser (issue 16 #4): headless Chromium opens the page served by uvicorn
over a state database a simulated run filled; the rule states, events, charts and positions are
there, no console error or exception happens, a halt without the token is refused (403, the kill
switch stays off) and one with the token works (the kill switch set in the database).

The server runs in a thread of its own (its event loop, its own connection to the database), as a
``perpwatch run --http`` serves beside the runner; the browser is driven over the DevTools pipe of
``test_report_browser``. Set ``PERPWATCH_DASHBOARD_SCREENSHOT=PATH`` to keep a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes.pipeline import Pipeline
from test_report_browser import CHROMIUM, DevTools

from perpwatch.api.interfaces import PluginContext
from perpwatch.common.clock import FakeClock
from perpwatch.live.risk import HALT_FLAG
from perpwatch.live.state import StateStore
from perpwatch.live.telemetry import Telemetry

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from perpwatch.web import server  # noqa: E402
from perpwatch.web.backend import Backend  # noqa: E402

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")

TOKEN = "browser-test-token-0123456789abcdef"

WATCH = """
version: 1
name: watch
interval: 1h
rules:
  - name: hot
    when: funding.close > 0.05
    severity: high
    message: "{symbol} funding {funding.close:.3f}"
    notify_resolved: true
  - name: warm
    when: funding.close > 0.02
    for: 3
    severity: low
  - name: buy
    when: funding.close > 0.05
    signal: {side: long, size_usd: 1000}
execute: paper
"""

FUNDING = {
    "BTC": [0.01, 0.012, 0.015, 0.1, 0.12, 0.09, 0.03, 0.01, 0.06, 0.08],
    "ETH": [0.01, 0.011, 0.009, 0.01, 0.03, 0.032, 0.028, 0.031, 0.029, 0.03],
}


class ServerThread:
    """uvicorn over ``backend`` in a thread with its own event loop; ``url`` once it listens."""

    def __init__(self, make_backend: Any):
        self.make_backend = make_backend
        self.ready = threading.Event()
        self.url = ""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.http: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.http = server.make_server(self.make_backend(), "127.0.0.1", 0)
            task = await server.start(self.http)
            host, port = server.bound(self.http)
            self.url = f"http://{host}:{port}"
            self.ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as e:  # handed to the test
            self.error = e
            self.ready.set()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(60), "the server did not start"
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self.http is not None:
            self.loop.call_soon_threadsafe(setattr, self.http, "should_exit", True)
        self.thread.join(30)


#: What the page shows, read in the browser.
CONTENT = """(() => {
  const rows = (id) => Array.from(document.querySelectorAll('#' + id + ' tr')).slice(1)
      .map(tr => Array.from(tr.cells).map(td => td.textContent.trim()));
  return {rules: rows('rules'), events: rows('events'), positions: rows('positions'), pnl: rows('pnl'),
          mutes: rows('mutes'), firing: document.querySelectorAll('#rules tr.firing').length,
          pending: document.querySelectorAll('#rules tr.pending').length,
          charts: document.querySelectorAll('#charts svg').length,
          lines: document.querySelectorAll('#charts svg polyline').length,
          health: document.getElementById('health').textContent.replace(/\\s+/g, ' ').trim(),
          killswitch: document.getElementById('killswitch').textContent.replace(/\\s+/g, ' ').trim(),
          notice: (document.getElementById('notice') || {}).textContent || '',
          title: document.title, height: document.documentElement.scrollHeight};
})()"""


def navigate_by(tools: DevTools, script: str) -> None:
    """Run ``script`` (a click that submits a form) and wait for the page it leads to."""
    tools.events = [e for e in tools.events if e.get("method") != "Page.loadEventFired"]
    tools.send("Runtime.evaluate", {"expression": f"setTimeout(() => {{ {script}; }}, 0); true"})
    tools.wait_for("Page.loadEventFired")


def statuses(tools: DevTools, path: str) -> list[int]:
    return [
        e["params"]["response"]["status"]
        for e in tools.events
        if e.get("method") == "Network.responseReceived" and e["params"]["response"]["url"].endswith(path)
    ]


def problems(tools: DevTools, base: str) -> list[str]:
    """The DevTools problems, requests to the server itself allowed (the page and its forms)."""
    return [p for p in tools.problems() if not p.startswith(f"network request: {base}/")]


def test_dashboard_in_chromium(tmp_path: Path):
    pipe = Pipeline(tmp_path, FUNDING)
    runner = pipe.runner([pipe.strategy(WATCH)], pipe.config(("a",)))
    pipe.cycles(runner, range(len(FUNDING["BTC"])))
    clock = pipe.clock
    db = str(tmp_path / "state.db")
    assert Telemetry.load(pipe.store) is not None
    pipe.store.close()

    def make_backend() -> Backend:
        # as `perpwatch run --http` would, but from the database: rule states, events, telemetry
        store = StateStore(db)
        paper = pipe.registry.executors["paper"]({}, PluginContext(clock=clock, store=store, state_path=db))
        return Backend(store, clock, token=TOKEN, executors={"paper": paper})

    with ServerThread(make_backend) as srv:
        tools = DevTools(tmp_path / "profile")
        try:
            tools.open(srv.url + "/")
            page = tools.evaluate(CONTENT)
            assert problems(tools, srv.url) == []
            assert statuses(tools, "/") == [200]
            # every (strategy, rule, symbol), with its state
            assert {(r[0], r[1], r[2]) for r in page["rules"]} == {
                ("watch", rule, sym) for rule in ("hot", "warm", "buy") for sym in ("BTC", "ETH")
            }
            states = {(r[1], r[2]): r[3] for r in page["rules"]}
            assert states[("hot", "BTC")] == "firing" and states[("warm", "ETH")] == "firing"
            assert page["firing"] == sum(s == "firing" for s in states.values())
            assert any(r[6] == "BTC funding 0.100" and r[1] == "fired" for r in page["events"])
            assert any(r[1] == "resolved" for r in page["events"])
            assert page["charts"] == 2 and page["lines"] >= 2  # watch/BTC, watch/ETH: funding.close
            assert page["positions"] and page["positions"][0][:4] == ["paper", "watch", "BTC", "long"]
            assert page["pnl"][0][0] == "watch"
            assert page["killswitch"].startswith("trading allowed")
            assert page["health"].startswith("healthy")
            shot = _screenshot(tools, page["height"])

            # /metrics and /healthz, fetched by the page (same origin)
            got = tools.send(
                "Runtime.evaluate",
                {
                    "expression": "Promise.all(['/metrics', '/healthz'].map(u => fetch(u).then(r => r.text())))",
                    "awaitPromise": True,
                    "returnByValue": True,
                },
            )["result"]["value"]
            metrics, health = got[0], json.loads(got[1])
            assert (
                "# TYPE perpwatch_cycles_total counter" in metrics
                and "perpwatch_cycles_total 10.0" in metrics
            )
            assert health["status"] == "ok" and health["cycles"] == 10 and health["halted"] is False

            # a halt without the token: refused, the kill switch stays off
            navigate_by(tools, "document.querySelector('#halt-form input[name=reason]').value = 'no token';"
                               "document.getElementById('halt').click()")  # fmt: skip
            refused = tools.evaluate("({title: document.title, text: document.body.textContent})")
            assert statuses(tools, "/halt") == [403]
            assert "Forbidden" in refused["title"] and "valid token" in refused["text"]
            assert _flag(db) is None

            # with the token: the kill switch is set in the database, the page says so
            navigate_by(tools, f"location.href = '{srv.url}/'")
            navigate_by(
                tools,
                "document.querySelector('#halt-form input[name=reason]').value = 'from the browser';"
                f"document.querySelector('#halt-form input[name=token]').value = '{TOKEN}';"
                "document.getElementById('halt').click()",
            )
            after = tools.evaluate(CONTENT)
            flag = _flag(db)
            assert flag is not None and flag.endswith(": from the browser")
            assert (
                after["killswitch"].startswith("trading halted") and "from the browser" in after["killswitch"]
            )
            assert after["notice"] == "trading halted"
            # the refused halt is a 403 the browser logs; nothing else went wrong
            assert [p for p in problems(tools, srv.url) if "403" not in p] == []
        finally:
            tools.close()
    keep = os.environ.get("PERPWATCH_DASHBOARD_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(shot)


def _screenshot(tools: DevTools, height: int) -> bytes:
    tools.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1400, "height": min(int(height) + 20, 4000), "deviceScaleFactor": 1, "mobile": False},
    )
    data = base64.b64decode(tools.send("Page.captureScreenshot", {"format": "png"})["data"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    return data


def _flag(db: str) -> str | None:
    store = StateStore(db)
    try:
        return store.get_flag(HALT_FLAG)
    finally:
        store.close()


def test_the_server_thread_stops(tmp_path: Path):
    """The helper itself: the thread ends once told to (no server left behind)."""
    db = str(tmp_path / "s.db")
    StateStore(db).close()
    with ServerThread(lambda: Backend(StateStore(db), FakeClock(0))) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
    assert not srv.thread.is_alive()
