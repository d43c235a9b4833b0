"""The sweep's HTML report in headless Chromium (as tests/test_report_browser.py): it loads offline
and draws the parameter surface, in-sample against out-of-sample and the best trial's equity with
no console error, exception or network request; the table ranks the trials."""

from __future__ import annotations

import json
import os
import time

import pytest
from helpers import invoke
from test_report_browser import CHROMIUM, DevTools
from test_sweep import make_market

pytest.importorskip("optuna", reason="perpwatch sweep needs optuna (perpwatch[sweep])")
pytest.importorskip("plotly", reason="the HTML report needs plotly (perpwatch[report])")
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")

READY = """[...document.querySelectorAll('.js-plotly-plot')].filter(gd => gd._fullLayout).length"""
CONTENT = """(() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  return {plots: plots.map(gd => ({title: gd.layout.title.text,
                                   traces: gd.data.map(t => ({name: t.name, n: (t.x || []).length})),
                                   shapes: (gd.layout.shapes || []).length})),
          rows: document.querySelectorAll('#trials tr').length,
          first: [...document.querySelectorAll('#trials tr')[1].querySelectorAll('td')].map(td => td.textContent)};
})()"""


def test_sweep_report_renders_offline(tmp_path):
    strat, data = make_market(tmp_path)
    page, doc = tmp_path / "sweep.html", tmp_path / "sweep.json"
    r = invoke("sweep", strat, "--data", data, "--param", "fast=4:12:4", "--param", "slow=30,50", "--folds", "2",
               "--workers", 1, "--html", page, "--json", doc)  # fmt: skip
    assert r.exit_code == 0, r.output
    tools = DevTools(tmp_path / "profile")
    try:
        tools.open(page.as_uri())
        deadline = time.monotonic() + 60
        while tools.evaluate(READY) < 3 and time.monotonic() < deadline:  # the charts draw one by one
            time.sleep(0.2)
        content = tools.evaluate(CONTENT)
        points = tools.evaluate("document.querySelectorAll('path.point').length")
        problems = tools.problems()
    finally:
        tools.close()
    assert problems == []
    assert points >= 6
    titles = [p["title"] for p in content["plots"]]
    assert len(titles) == 3
    assert titles[0].startswith("sharpe in-sample over fast and slow")
    assert titles[1].startswith("sharpe: in-sample")
    assert titles[2].startswith("Best trial")
    surface, versus, equity = content["plots"]
    assert surface["traces"][0]["n"] == 6  # every grid point
    assert {t["name"] for t in versus["traces"]} == {"trials", "in = out", "best in-sample"}
    assert {t["name"] for t in equity["traces"]} == {"equity", "buy and hold (no costs)"}
    assert equity["shapes"] == 2  # the two test windows shaded
    trials = json.loads(doc.read_text())["trials"]
    assert content["rows"] == 1 + len(trials)
    best = trials[0]
    assert content["first"][:4] == [
        "1",
        str(best["trial"]),
        str(best["params"]["fast"]),
        str(best["params"]["slow"]),
    ]
