"""The example plugin's own tests: the source, the function, the executor, the notifier, and the
plugin as perpwatch loads it. They use perpwatch's helpers for plugin authors
(``perpwatch.testing.plugins``, docs/plugins.md section 12)."""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
from perpwatch.api.interfaces import Accounting, Event, Ledger, OrderIntent
from perpwatch.common.timeutil import HOUR, parse_time
from perpwatch.language.compiler import load_strategy
from perpwatch.testing.plugins import (
    check_causal,
    check_plugin_class,
    deliver,
    fetch,
    load_plugin,
    make_context,
    sample_event,
)

from perpwatch_example import EventFileNotifier, FixedFeeExecutor, SyntheticSource, midrange

STRATEGY = Path(__file__).resolve().parents[1] / "strategies" / "synthetic-midrange.yaml"
H4 = 4 * HOUR
T0 = parse_time("2024-03-01T00:00:00Z")
ALL = frozenset({"price.open", "price.high", "price.low", "price.close", "oi.close", "synthetic.noise"})


def bars(source: SyntheticSource, start: int, end: int, symbol: str = "BTC") -> dict:
    frame = fetch(source, symbol, "4h", ALL, start, end)
    return {"times": frame.times, **frame.columns}


def test_every_class_passes_the_contract_checks() -> None:
    for cls in (SyntheticSource, EventFileNotifier, FixedFeeExecutor):
        check_plugin_class(cls)  # abstract methods, name, provides, a valid options schema and defaults


def test_bars_do_not_depend_on_the_range_asked_for() -> None:
    source = SyntheticSource({"seed": 7}, make_context("2024-06-01T00:00:00Z"))  # no network: none is used
    whole = bars(source, T0, T0 + 99 * H4)
    tail = bars(source, T0 + 90 * H4, T0 + 99 * H4)
    assert len(whole["times"]) == 100
    for name in ALL:
        assert np.array_equal(whole[name][90:], tail[name]), name
    assert not np.array_equal(bars(source, T0, T0 + 9 * H4, "ETH")["price.close"], whole["price.close"][:10])
    ohlc = np.array([whole[f"price.{f}"] for f in ("open", "high", "low", "close")])
    assert (ohlc[1] >= ohlc.max(axis=0)).all() and (ohlc[2] <= ohlc.min(axis=0)).all()


def test_only_closed_bars_after_the_origin() -> None:
    now = T0 + 10 * H4 + HOUR  # the bar that opened at T0 + 10 bars is still open
    source = SyntheticSource({"origin": "2024-03-01T08:00:00Z"}, make_context(now))
    times = bars(source, T0, T0 + 100 * H4)["times"]
    assert times[0] == T0 + 2 * H4 and times[-1] == T0 + 9 * H4


def test_midrange_is_causal_and_unknown_aware() -> None:
    x = np.array([1.0, 5.0, 3.0, np.nan, 2.0, 4.0, 0.0])
    out = midrange(x, 2)
    assert np.isnan(out[0]) and out[1] == 3.0 and out[2] == 4.0
    assert np.isnan(out[3]) and np.isnan(out[4])  # a window holding an unknown value
    assert out[5] == 3.0 and out[6] == 2.0
    check_causal(midrange, x, 2)  # the value at bar t only uses bars <= t
    check_causal(midrange, np.random.default_rng(1).normal(size=50), 7)
    assert np.isnan(midrange(x[:1], 3)).all()


def test_fixedfee_fills_at_the_price_for_a_fixed_fee_and_keeps_the_books() -> None:
    ex = FixedFeeExecutor({"balance_usd": 1000, "fee_usd": 2})
    assert isinstance(ex, Accounting) and isinstance(ex, Ledger)  # what the trading layer and backtests read

    def submit(side: str, size: float | None, price: float, time: int) -> list:
        return asyncio.run(ex.submit("s", "BTC", OrderIntent(side, size), price, time))

    (fill,) = submit("long", 500, 100, T0)
    assert (fill.side, fill.qty, fill.price, fill.fee_usd) == ("buy", 5.0, 100, 2)
    assert fill.info == {"action": "open", "trade_id": 1, "strategy": "s"}
    assert submit("long", 500, 101, T0 + H4) == []  # a signal is a target: long already held
    asyncio.run(ex.update("s", "BTC", 110, None, T0 + 2 * H4))
    assert asyncio.run(ex.equity()) == 1000 - 2 + 5 * 10
    close, reopen = submit("short", 220, 110, T0 + 2 * H4)  # a reversal: close, then open
    assert (close.info["action"], close.info["pnl"], reopen.side, reopen.qty) == ("close", 50.0, "sell", 2.0)
    (flat,) = submit("flat", None, 120, T0 + 3 * H4)
    assert flat.info["pnl"] == -20.0 and asyncio.run(ex.positions()) == []
    assert asyncio.run(ex.pnl("s")) == 50 - 20 - 4 * 2 == asyncio.run(ex.equity()) - 1000
    long_trade, short_trade = ex.trade_summaries()
    assert (long_trade.net_pnl, long_trade.fees, short_trade.exit_price) == (46.0, 4.0, 120)
    assert ex.funding_counts() == (0, 0)


def test_eventfile_appends_one_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "events.txt"
    notifier = EventFileNotifier({"path": str(path)})
    event = Event("fired", "s", "enter", "BTC", T0, "medium", "BTC: above the midrange")
    assert deliver(notifier, event) and deliver(notifier, event)
    line = "2024-03-01T00:00:00Z medium s/enter BTC fired: BTC: above the midrange\n"
    assert path.read_text() == line * 2
    picky = EventFileNotifier({"path": str(path), "min_severity": "high"})
    assert not deliver(picky, event)  # routed away by min_severity: nothing written
    assert deliver(picky, sample_event(kind="resolved", message="calm again"))  # a high one is
    assert path.read_text().splitlines()[-1] == "2024-03-01T00:00:00Z high demo/hot BTC resolved: calm again"


def test_perpwatch_loads_the_installed_plugin() -> None:
    try:
        importlib.metadata.distribution("perpwatch-example-plugin")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("install the plugin (pip install .) to test its entry point")
    reg, info = load_plugin(name="synthetic")  # raises when it failed to load or a name clashes
    assert info.registers["sources"] == ["synthetic"] and info.registers["functions"] == ["midrange"]
    assert info.registers["notifiers"] == ["eventfile"] and info.registers["executors"] == ["fixedfee"]
    assert reg.functions["midrange"].windows == (1,)
    strategy = load_strategy(str(STRATEGY), functions=reg.functions, extra_metrics=reg.metric_kinds())
    assert "synthetic.noise" in strategy.metrics
