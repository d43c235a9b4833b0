"""``perpwatch demo``: the bundled monitor and classifier over the SYNTHETIC scenario, offline.

The demo goes through the real ``run --simulate-from`` path (replay source, console notifier,
paper executor, a temporary state database) and must show the monitor's alerts and at least
one paper trade, label the scenario SYNTHETIC, use no network and leave no file anywhere.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import STRATEGIES, invoke

from perpwatch.evaluation.frame import Cat
from perpwatch.language.compiler import load_strategy
from perpwatch.plugins import demo_scenario as sc


def columns_equal(a: np.ndarray | Cat, b: np.ndarray | Cat) -> bool:
    if isinstance(a, Cat) or isinstance(b, Cat):
        return isinstance(a, Cat) and isinstance(b, Cat) and a.to_list() == b.to_list()
    return bool(np.array_equal(a, b, equal_nan=True))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any HTTP request fails the test."""

    async def no_network(self: object, request: httpx.Request, **kwargs: object) -> httpx.Response:
        raise AssertionError(f"the demo made an HTTP request: {request.url}")

    monkeypatch.setattr(httpx.AsyncClient, "send", no_network)


def test_demo_shows_alerts_and_paper_trades_offline_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    cwd, temp = tmp_path / "cwd", tmp_path / "temp"
    cwd.mkdir()
    temp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where the demo's temporary folder goes
    result = invoke("demo")
    out = result.output
    assert result.exit_code == 0, out
    head, _, summary = out.partition("Summary of the SYNTHETIC scenario")
    assert "SYNTHETIC" in head.splitlines()[0] and summary, out
    assert "source synthetic" in out  # the replay instance, not an HTTP source
    # the monitor's alerts, as the console notifier prints them
    alerts = re.findall(r"^\S+Z (?:HIGH|MEDIUM)\s+derivatives-monitor/(\w+) SYNTHBTC 1h: ", out, re.M)
    assert {"liq_high", "oi_high", "funding_high", "ls_high"} <= set(alerts), out
    assert re.search(r"^\S+Z MEDIUM\s+derivatives-state/(buy|sell) SYNTHBTC 1h: .*\| signal: ", out, re.M)
    # the paper trades in the summary
    trades = re.search(r"paper orders: (\d+); paper trades: (\d+)", summary)
    assert trades and int(trades[1]) >= 1 and int(trades[2]) >= 1, summary
    assert re.search(r"^    (long|short) +SYNTHBTC \$1,000 from \S+ at [\d,]+, ", summary, re.M), summary
    assert re.search(r"paper PnL \(after fees and funding\): [+-][\d,]+\.\d\d USD", summary), summary
    for rule in ("derivatives-monitor/liq_high", "derivatives-state/sell"):
        assert re.search(rf"^ +\d+  {rule}$", summary, re.M), summary
    assert "perpwatch backtest" in summary and "perpwatch validate" in summary  # the next steps
    assert list(cwd.iterdir()) == [] and list(temp.iterdir()) == []


def test_scenario_is_deterministic_for_a_seed() -> None:
    a, b, other = sc.scenario(7), sc.scenario(7), sc.scenario(8)
    assert np.array_equal(a.times, b.times) and a.columns.keys() == b.columns.keys()
    assert all(columns_equal(a.columns[k], b.columns[k]) for k in a.columns)
    assert not all(columns_equal(a.columns[k], other.columns[k]) for k in a.columns)
    assert len(a) == sc.BARS and np.all(np.diff(a.times) == 3_600_000)


def test_scenario_has_every_metric_the_two_strategies_read_with_the_crash_magnitudes() -> None:
    frame = sc.scenario()
    for name in ("derivatives-monitor.yaml", "derivatives-state.yaml"):
        strategy = load_strategy(str(STRATEGIES / name))
        assert strategy.interval == sc.INTERVAL
        assert strategy.metrics <= frame.columns.keys(), strategy.metrics - frame.columns.keys()
    numbers = {k: v for k, v in frame.columns.items() if not isinstance(v, Cat)}
    assert all(np.isfinite(v).all() for v in numbers.values())  # nothing unknown in the scenario
    cascade = slice(sc.WARMUP + sc.CALM + sc.CROWDED, sc.WARMUP + sc.CALM + sc.CROWDED + sc.CASCADE)
    assert frame.times[cascade.start] == sc.CASCADE_START
    assert numbers["price.low"][cascade].min() == 101_500
    assert numbers["oi.close"][cascade.start - 1] > 85e9 and numbers["oi.close"][cascade.stop - 1] < 71e9
    assert numbers["liq.long_usd"][cascade].sum() > 5 * numbers["liq.short_usd"][cascade].sum()


def test_a_seed_that_numpy_cannot_take_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("demo", "--seed", "-1")
    assert result.exit_code == 2 and "Invalid value for '--seed'" in result.output, result.output
    assert "internal error" not in result.output and list(tmp_path.iterdir()) == []


def test_another_seed_tells_the_same_story(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("demo", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "seed 3; not market data" in result.output
    assert re.search(r"^\S+Z HIGH\s+derivatives-monitor/liq_high SYNTHBTC 1h: ", result.output, re.M)
    trades = re.search(r"paper trades: (\d+)", result.output)
    assert trades and int(trades[1]) >= 1, result.output
