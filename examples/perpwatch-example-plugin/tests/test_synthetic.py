"""The example plugin's own tests: the source, the function, and the plugin as perpwatch loads it."""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
from perpwatch.api.interfaces import FetchRequest, PluginContext
from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.common.timeutil import HOUR, parse_time
from perpwatch.language.compiler import load_strategy

from perpwatch_example import SyntheticSource, midrange

STRATEGY = Path(__file__).resolve().parents[1] / "strategies" / "synthetic-midrange.yaml"
H4 = 4 * HOUR
T0 = parse_time("2024-03-01T00:00:00Z")
ALL = frozenset({"price.open", "price.high", "price.low", "price.close", "oi.close", "synthetic.noise"})


def fetch(source: SyntheticSource, start: int, end: int, symbol: str = "BTC") -> dict:
    frame = asyncio.run(source.fetch(FetchRequest(symbol, "4h", ALL, start, end)))
    return {"times": frame.times, **frame.columns}


def test_bars_do_not_depend_on_the_range_asked_for() -> None:
    source = SyntheticSource({"seed": 7}, PluginContext(clock=FakeClock(parse_time("2024-06-01") / 1000)))
    whole = fetch(source, T0, T0 + 99 * H4)
    tail = fetch(source, T0 + 90 * H4, T0 + 99 * H4)
    assert len(whole["times"]) == 100
    for name in ALL:
        assert np.array_equal(whole[name][90:], tail[name]), name
    assert not np.array_equal(fetch(source, T0, T0 + 9 * H4, "ETH")["price.close"], whole["price.close"][:10])
    ohlc = np.array([whole[f"price.{f}"] for f in ("open", "high", "low", "close")])
    assert (ohlc[1] >= ohlc.max(axis=0)).all() and (ohlc[2] <= ohlc.min(axis=0)).all()


def test_only_closed_bars_after_the_origin() -> None:
    now = T0 + 10 * H4 + HOUR  # the bar that opened at T0 + 10 bars is still open
    source = SyntheticSource({"origin": "2024-03-01T08:00:00Z"}, PluginContext(clock=FakeClock(now / 1000)))
    times = fetch(source, T0, T0 + 100 * H4)["times"]
    assert times[0] == T0 + 2 * H4 and times[-1] == T0 + 9 * H4


def test_midrange_is_causal_and_unknown_aware() -> None:
    x = np.array([1.0, 5.0, 3.0, np.nan, 2.0, 4.0, 0.0])
    out = midrange(x, 2)
    assert np.isnan(out[0]) and out[1] == 3.0 and out[2] == 4.0
    assert np.isnan(out[3]) and np.isnan(out[4])  # a window holding an unknown value
    assert out[5] == 3.0 and out[6] == 2.0
    for t in range(len(x)):  # the value at bar t only uses bars <= t
        assert np.array_equal(midrange(x[: t + 1], 2)[-1], out[t], equal_nan=True)
    assert np.isnan(midrange(x[:1], 3)).all()


def test_perpwatch_loads_the_installed_plugin() -> None:
    try:
        importlib.metadata.distribution("perpwatch-example-plugin")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("install the plugin (pip install .) to test its entry point")
    reg = load_registry()
    info = next(p for p in reg.plugins if p.name == "synthetic")
    assert info.error is None
    assert info.registers["sources"] == ["synthetic"] and info.registers["functions"] == ["midrange"]
    assert reg.functions["midrange"].windows == (1,)
    strategy = load_strategy(str(STRATEGY), functions=reg.functions, extra_metrics=reg.metric_kinds())
    assert "synthetic.noise" in strategy.metrics
