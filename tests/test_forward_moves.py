"""What an alert-only strategy's backtest shows: the forward price move after each rule's fired
events (1, 4, 24 bars: mean, median, hit rate), the events listed, buy and hold, the metrics the
strategies read, and ISO 8601 beside every time in the JSON.

The history: 1h bars from 2025-01-01T00:00Z, 30 bars. Closes rise by 1 each bar from 100, and
every bar opens 0.5 above the previous close (a gap), so a move from the open of bar i+1 to the
close of bar i+h is (100 + i + h) / (100 + i + 0.5) - 1: distinguishable from close-to-close.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import H

from perpwatch.backtest.forward import event_moves, forward_table
from perpwatch.backtest.history import History
from perpwatch.backtest.report import format_text, to_json
from perpwatch.backtest.result import BacktestOptions
from perpwatch.backtest.stats import buy_and_hold
from perpwatch.backtest.walk import run_backtest
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.frame import Frame
from perpwatch.language.compiler import load_strategy

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
N = 30

ALERTS = """
version: 1
name: watch
interval: 1h
rules:
  - name: spike
    when: oi.close == 1
    severity: high
    message: "{symbol} oi spike {oi.close}"
  - name: never
    when: oi.close > 100
"""

TRADES = """
version: 1
name: trade
interval: 1h
execute: paper
rules:
  - name: up
    when: oi.close == 1
    signal: {side: long, size_usd: 1000}
  - name: down
    when: oi.close == 2
    signal: {side: short, size_usd: 1000}
"""


def history(oi: list[float], close: np.ndarray | None = None) -> History:
    close = np.arange(N, dtype=float) + 100 if close is None else close
    opens = np.concatenate([[close[0]], close[:-1] + 0.5])
    cols = {"price.open": opens, "price.close": close, "oi.close": np.asarray(oi, dtype=float)}
    return History({"BTC": Frame(T0 + H * np.arange(N, dtype=np.int64), cols)}, "1h", "test data")


def oi_at(*bars: int, value: float = 1.0, base: list[float] | None = None) -> list[float]:
    oi = list(base) if base is not None else [0.0] * N
    for b in bars:
        oi[b] = value
    return oi


def run(text: str, oi: list[float], close: np.ndarray | None = None, **options):
    s = load_strategy(f"{text.split('name: ')[1].split()[0]}.yaml", text=text)
    return run_backtest([s], history(oi, close), {s.name: ["BTC"]}, BacktestOptions(**options))


def move(i: int, h: int) -> float:
    return ((100 + i + h) / (100 + i + 0.5) - 1) * 100


def test_moves_run_from_the_next_open_to_the_close_h_bars_on_and_are_unknown_past_the_data():
    r = run(ALERTS, oi_at(2, 10))  # fires at bars 2 and 10 (each resolves the bar after)
    moves = event_moves(r)
    assert [(m.event.rule, m.event.time) for m in moves] == [("spike", T0 + 2 * H), ("spike", T0 + 10 * H)]
    assert moves[0].moves == pytest.approx((move(2, 1), move(2, 4), move(2, 24)))
    # bar 10 + 24 = 34 is past the 30 bars: unknown (None), never 0
    assert moves[1].moves[:2] == pytest.approx((move(10, 1), move(10, 4)))
    assert moves[1].moves[2] is None
    assert not moves[0].by_signal and moves[0].sign == 1  # a plain alert: up is a hit

    row = next(x for x in forward_table(r, moves) if x["rule"] == "spike")
    assert row["events"] == 2 and row["direction"] == "up"
    one, four, day = row["horizons"]
    assert (one["bars"], four["bars"], day["bars"]) == (1, 4, 24)
    assert one["mean_pct"] == pytest.approx((move(2, 1) + move(10, 1)) / 2)
    assert one["median_pct"] == pytest.approx((move(2, 1) + move(10, 1)) / 2)
    assert one["hit_rate_pct"] == 100 and one["known"] == 2 and one["unknown"] == 0
    assert day["known"] == 1 and day["unknown"] == 1 and day["mean_pct"] == pytest.approx(move(2, 24))

    never = next(x for x in forward_table(r, moves) if x["rule"] == "never")
    assert never["events"] == 0
    assert all(f["mean_pct"] is None and f["hit_rate_pct"] is None for f in never["horizons"])


def test_a_missing_price_is_unknown_not_zero():
    close = np.arange(N, dtype=float) + 100
    close[3] = np.nan  # the close one bar after the event at bar 2
    r = run(ALERTS, oi_at(2), close)
    (m,) = event_moves(r)
    assert m.moves[0] is None and m.moves[1] == pytest.approx(move(2, 4))
    row = forward_table(r)[0]
    assert row["horizons"][0]["known"] == 0 and row["horizons"][0]["mean_pct"] is None


def test_an_event_on_the_last_bar_has_no_move():
    r = run(ALERTS, oi_at(N - 1))
    (m,) = event_moves(r)
    assert m.moves == (None, None, None)


def test_hit_rate_follows_the_signal_side():
    # prices rise every bar: the long's moves are hits, the short's are misses
    r = run(TRADES, oi_at(12, value=2, base=oi_at(2)))
    rows = {x["rule"]: x for x in forward_table(r)}
    assert rows["up"]["direction"] == "signal side" and rows["down"]["direction"] == "signal side"
    assert [f["hit_rate_pct"] for f in rows["up"]["horizons"]] == [100, 100, 100]
    assert [f["hit_rate_pct"] for f in rows["down"]["horizons"][:2]] == [0, 0]
    # falling prices: the short hits
    r = run(TRADES, oi_at(12, value=2, base=oi_at(2)), np.arange(N, dtype=float)[::-1] + 100)
    rows = {x["rule"]: x for x in forward_table(r)}
    assert rows["down"]["horizons"][0]["hit_rate_pct"] == 100
    assert rows["up"]["horizons"][0]["hit_rate_pct"] == 0


def test_medians_and_hit_rates_over_mixed_moves():
    # zig-zag closes: up after even bars, down after odd ones
    close = np.asarray([100.0 + (k % 2) * 10 for k in range(N)])
    r = run(ALERTS, oi_at(2, 5, 8), close)  # next-open to next-close: bar 3 opens 100.5 closes 110...
    moves = [m.moves[0] for m in event_moves(r)]
    expected = [(110 / 100.5 - 1) * 100, (100 / 110.5 - 1) * 100, (110 / 100.5 - 1) * 100]
    assert moves == pytest.approx(expected)
    one = forward_table(r)[0]["horizons"][0]
    assert one["hit_rate_pct"] == pytest.approx(200 / 3)
    assert one["median_pct"] == pytest.approx(expected[0])
    assert one["mean_pct"] == pytest.approx(sum(expected) / 3)


def test_the_text_report_lists_an_alert_only_strategys_events_and_the_forward_table():
    r = run(ALERTS, oi_at(2, 10))
    text = format_text(r)
    assert "Forward price move after each rule's fired events (1, 4, 24 bars)" in text
    assert "Events of alert-only strategies" in text
    line = next(x for x in text.splitlines() if "BTC oi spike" in x)
    assert line.split()[:6] == ["2025-01-01", "02:00", "BTC", "watch", "spike", "high"]
    assert f"{move(2, 1):+.2f}" in line and f"{move(2, 24):+.2f}" in line
    later = next(x for x in text.splitlines() if "10:00" in x and "spike" in x)
    assert f"{move(10, 4):+.2f}" in later and "  -  " in later  # 24 bars on: unknown
    forward = text.split("Forward price move")[1].split("Forward move:")[0]
    spike = next(x for x in forward.splitlines() if x.split()[1:3] == ["spike", "2"])
    assert spike.split()[3:6] == [
        "up",
        f"{(move(2, 1) + move(10, 1)) / 2:+.2f}",
        f"{(move(2, 1) + move(10, 1)) / 2:+.2f}",
    ]
    assert spike.split()[6] == "100" and spike.endswith("100 (1 unk.)")
    assert len(format_text(r, max_events=1).split("first 1 of 2; --json has every event")) == 2


def test_a_trading_strategy_gets_the_forward_table_but_no_event_list():
    text = format_text(run(TRADES, oi_at(2)))
    assert "Forward price move" in text and "Events of alert-only strategies" not in text


def test_buy_and_hold_is_the_close_over_the_first_open():
    r = run(ALERTS, oi_at(2))
    hold = buy_and_hold(r)
    assert hold is not None and len(hold) == len(r.equity_curve)
    assert hold[0] == 10_000 and hold[-1] == pytest.approx(10_000 * (100 + N - 1) / 100)
    assert r.stats["buy_and_hold_return_pct"] == pytest.approx((N - 1) / 100 * 100)
    close = np.arange(N, dtype=float) + 100
    close[5:8] = np.nan  # unknown closes carry the last known one
    hold = buy_and_hold(run(ALERTS, oi_at(2), close))
    assert hold is not None and list(hold[6:9]) == pytest.approx([10_000 * 104 / 100] * 3)


def test_the_metrics_the_strategy_reads_are_kept_and_a_missing_one_is_unknown():
    text = ALERTS.replace("oi.close > 100", "funding.close > 100")
    r = run(text, oi_at(2))
    assert set(r.metrics["BTC"]) == {"oi.close", "funding.close"}
    assert list(r.metrics["BTC"]["oi.close"][:3]) == [0, 0, 1]
    assert np.isnan(r.metrics["BTC"]["funding.close"]).all()  # not in the data: unknown, not 0


def _times_without_iso(x, path="") -> list[str]:
    """Every integer time field (ms) of the JSON without an ISO 8601 sibling of the same instant."""
    bad = []
    if isinstance(x, dict):
        for k, v in x.items():
            if isinstance(v, int) and not isinstance(v, bool) and v > 10**11:
                iso = x.get(f"{k}_iso", x.get("time_iso") if k == "time" else None)
                if iso != format_time(v):
                    bad.append(f"{path}.{k}")
            bad += _times_without_iso(v, f"{path}.{k}")
    elif isinstance(x, list):
        for k, v in enumerate(x):
            bad += _times_without_iso(v, f"{path}[{k}]")
    return bad


def test_json_has_iso_times_everywhere_and_the_forward_moves():
    r = run(TRADES, oi_at(12, value=2, base=oi_at(2)), start=T0 + H, end=T0 + 28 * H)
    doc = to_json(r)
    assert doc["trades"] and doc["orders"] and doc["events"]
    assert _times_without_iso(doc) == []
    assert doc["options"]["start_iso"] == "2025-01-01T01:00:00Z"
    assert doc["equity"][1]["time_iso"] == format_time(doc["equity"][1]["time"])
    fired = [e for e in doc["events"] if e["kind"] == "fired"]
    assert fired[0]["forward_pct"]["1"] == pytest.approx(move(2, 1))
    assert all("forward_pct" not in e for e in doc["events"] if e["kind"] != "fired")
    assert {x["rule"] for x in doc["forward_moves"]} == {"up", "down"}
    # past --to the data goes on: the move after bar 12 reaches bar 12 + 24 only where data exists
    down = next(e for e in fired if e["rule"] == "down")
    assert down["forward_pct"]["4"] == pytest.approx(move(12, 4)) and down["forward_pct"]["24"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for e in fired for v in e["forward_pct"].values())
