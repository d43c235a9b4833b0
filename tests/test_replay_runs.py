"""``perpwatch run`` over replay files: ``--interval``, missing files at start-up (exit 2), stale
data said once with both times and ``--simulate-from``, an absent column said once per file, and
one INFO line per batch of simulated cycles. Real subprocesses (the console script's code path)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import STRATEGIES, run_perpwatch

from perpwatch.api.interfaces import FetchRequest
from perpwatch.common.timeutil import HOUR, parse_time
from perpwatch.plugins.replay import ReplaySource

T0 = parse_time("2025-01-01T00:00:00Z")
H4 = 4 * HOUR

STRATEGY = """\
version: 1
name: replayed
interval: 1h
symbols: [BTC, ETH]
rules:
  - name: up
    when: price.close > 0
notify: [file]
"""


def rows(n: int, step: int = HOUR, start: int = T0) -> str:
    return "".join(f"{start + i * step},{100 + i},{101 + i}\n" for i in range(n))


def setup(tmp_path: Path, files: dict[str, str], path: str | None = None) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
    (tmp_path / "s.yaml").write_text(STRATEGY)
    (tmp_path / "perpwatch.yaml").write_text(
        f"sources:\n  replay: {{path: '{path or data}'}}\n"
        "notifiers:\n  file: {plugin: jsonl, path: events.jsonl}\n"
    )
    return data


def simulate(
    tmp_path: Path, *extra: str, frm: str = "2025-01-01T10:00:00Z", to: str = "2025-01-01T20:00:00Z"
):
    return run_perpwatch(
        "run", "s.yaml", "--state", "state.db", "--simulate-from", frm, "--simulate-to", to, *extra, cwd=tmp_path
    )  # fmt: skip


def clean(stderr: str) -> None:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr


# ------------------------------------------------------------------------------------------------
# Missing files: one error at start-up, exit 2


def test_a_replay_path_that_does_not_exist_is_one_error_at_start_up(tmp_path: Path) -> None:
    setup(tmp_path, {}, path=str(tmp_path / "nowhere"))
    result = simulate(tmp_path)
    clean(result.stderr)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(str(tmp_path / "nowhere") in line and "does not exist" in line for line in lines), lines
    assert len(lines) == 1, lines  # one line, not one per symbol and bar
    assert "WARNING" not in result.stderr and "cycle" not in result.stderr
    assert not (tmp_path / "events.jsonl").exists()


def test_a_missing_file_names_the_symbol_the_interval_and_the_files_there(tmp_path: Path) -> None:
    head = "time,price.open,price.close\n"
    data = setup(tmp_path, {"BTC_1h.csv": head + rows(30), "ETH_4h.csv": head + rows(8, H4)})
    result = simulate(tmp_path)
    clean(result.stderr)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "no file ETH_1h.csv" in lines[0] and f"in {data} for ETH 1h" in lines[0]
    assert "files there: BTC_1h.csv, ETH_4h.csv" in lines[0]


def test_run_once_with_a_missing_file_exits_2_too(tmp_path: Path) -> None:
    setup(tmp_path, {"BTC_1h.csv": "time,price.close\n" + f"{T0},1\n"})
    result = run_perpwatch("run", "s.yaml", "--state", "state.db", "--once", cwd=tmp_path)
    clean(result.stderr)
    assert result.returncode == 2 and "ETH 1h" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------------
# --interval: the bundled 1h strategies over 4h replay files


def test_run_interval_replays_a_1h_strategy_over_4h_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    head = "time,price.open,price.close,oi.close,funding.avg\n"
    for sym in ("BTC", "ETH"):
        text = "".join(
            f"{T0 + i * H4},{100 + i},{101 + i},{1e9 * (1 + (i % 5) * 0.1)},0.01\n" for i in range(12)
        )
        (data / f"{sym}_4h.csv").write_text(head + text)
    (tmp_path / "perpwatch.yaml").write_text(
        f"symbols: [BTC, ETH]\nsources:\n  replay: {{path: '{data}'}}\n"
        "notifiers:\n  console: {plugin: jsonl, path: events.jsonl}\n"
    )
    strategy = str(STRATEGIES / "derivatives-monitor.yaml")
    args = (
        "--state",
        "state.db",
        "--simulate-from",
        "2025-01-01T04:00:00Z",
        "--simulate-to",
        "2025-01-02T20:00:00Z",
    )
    without = run_perpwatch("run", strategy, *args, cwd=tmp_path)
    assert without.returncode == 2 and "no file BTC_1h.csv" in without.stderr, without.stderr

    result = run_perpwatch("run", strategy, "--interval", "4h", *args, cwd=tmp_path)
    clean(result.stderr)
    assert result.returncode == 0, result.stderr
    assert "4h bars" in result.stderr  # the banner: the strategy runs at 4h
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events and {e["symbol"] for e in events} == {"BTC", "ETH"}  # OI moves of 10 % fire
    assert {e["rule"] for e in events} == {"oi_high"}


def test_run_interval_refuses_an_unknown_interval(tmp_path: Path) -> None:
    setup(tmp_path, {})
    result = run_perpwatch("run", "s.yaml", "--interval", "3h", "--once", cwd=tmp_path)
    assert result.returncode == 2 and "--interval" in result.stderr and "'4h'" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------------
# Absent columns: said once per file


def test_an_absent_column_is_said_once_per_file_and_unknown(tmp_path: Path) -> None:
    head = "time,price.open,price.close\n"
    setup(tmp_path, {"BTC_1h.csv": head + rows(30), "ETH_1h.csv": "time,price.open,oi.close\n" + rows(30)})
    result = simulate(tmp_path)
    clean(result.stderr)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "has no column" in line]
    assert len(said) == 1, result.stderr  # ETH's file lacks price.close: once, not once per bar
    assert "ETH_1h.csv has no column price.close" in said[0] and "WARNING" in said[0]
    assert "source replay failed" not in result.stderr and "held" not in result.stderr  # unknown, no failure
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {e["symbol"] for e in events} == {"BTC"}


def test_the_replay_source_fills_an_absent_column_with_unknown_and_says_it_once(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "BTC_1h.csv").write_text(
        "time,price.close\n" + "".join(f"{T0 + i * HOUR},{i}\n" for i in range(5))
    )
    source = ReplaySource({"path": str(data)})
    wanted = frozenset({"price.close", "oi.close", "funding.max_exchange"})
    request = FetchRequest("BTC", "1h", wanted, T0, T0 + 4 * HOUR)
    first, second = (asyncio.run(source.fetch(request)) for _ in range(2))
    assert first.problems == [
        "replay BTC_1h.csv has no column funding.max_exchange, oi.close (unknown; said once per file)"
    ]
    assert second.problems == []
    for frame in (first, second):
        assert set(frame.columns) == wanted
        assert np.isnan(frame.columns["oi.close"]).all() and len(frame.columns["oi.close"]) == 5
        assert (frame.columns["funding.max_exchange"].codes == -1).all()


# ------------------------------------------------------------------------------------------------
# Stale data: said once, with both times and --simulate-from


def test_run_once_on_old_replay_data_says_why_nothing_happened(tmp_path: Path) -> None:
    head = "time,price.open,price.close\n"
    setup(tmp_path, {"BTC_1h.csv": head + rows(30), "ETH_1h.csv": head + rows(30)})
    now = (T0 + 100 * HOUR) / 1000 + 30  # 70 bars after the files end
    result = run_perpwatch("run", "s.yaml", "--state", "state.db", "--once", cwd=tmp_path, now=now)
    clean(result.stderr)
    stale = [line for line in result.stderr.splitlines() if "stale data" in line]
    assert len(stale) == 1, result.stderr
    line = stale[0]
    assert "WARNING" in line and "source replay 1h" in line
    assert "older than the bar being decided, 2025-01-05T03:00:00Z" in line  # the bar being decided
    assert "BTC no bar since 2025-01-05T03:00:00Z" in line
    assert (
        "--simulate-from 2025-01-01T00:00:00Z" in line and "2025-01-02T05:00:00Z" in line
    )  # the file's span


def test_a_simulation_past_the_data_says_stale_once(tmp_path: Path) -> None:
    head = "time,price.open,price.close\n"
    setup(tmp_path, {"BTC_1h.csv": head + rows(14), "ETH_1h.csv": head + rows(14)})
    result = simulate(tmp_path, frm="2025-01-01T06:00:00Z", to="2025-01-02T06:00:00Z")
    clean(result.stderr)
    assert result.returncode == 0, result.stderr
    stale = [line for line in result.stderr.splitlines() if "stale data" in line]
    assert len(stale) == 1, result.stderr  # once, not once per bar after 13:00
    assert "older than the bar being decided, 2025-01-01T14:00:00Z" in stale[0]
    assert "BTC no bar since 2025-01-01T14:00:00Z" in stale[0]  # the one bar this strategy fetches
    assert "replay file holds 2025-01-01T00:00:00Z .. 2025-01-01T13:00:00Z" in stale[0]


def test_fresh_data_says_nothing_about_staleness(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    head = "time,price.open,price.close\n"
    setup(tmp_path, {"BTC_1h.csv": head + rows(30), "ETH_1h.csv": head + rows(30)})
    result = simulate(tmp_path)
    assert result.returncode == 0 and "stale" not in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------------
# One INFO line per batch of simulated cycles


def test_a_simulation_logs_one_line_per_batch_of_cycles(tmp_path: Path) -> None:
    head = "time,price.open,price.close\n"
    setup(tmp_path, {"BTC_1h.csv": head + rows(300), "ETH_1h.csv": head + rows(300)})
    result = simulate(tmp_path, frm="2025-01-01T10:00:00Z", to="2025-01-10T10:00:00Z")  # 217 bars
    clean(result.stderr)
    assert result.returncode == 0, result.stderr
    info = [line for line in result.stderr.splitlines() if " INFO " in line]
    assert not [line for line in info if ": cycle " in line], info  # no line per bar
    batches = [line for line in info if "simulated " in line]
    assert len(batches) == 3, info  # 100 + 100 + 17 cycles
    assert "100 cycles" in batches[0] and "17 cycles" in batches[2]
    assert "simulated 2025-01-01T09:00:00Z .. " in batches[0]
    assert len(info) <= 4, info  # the batches (and at most one more) for 217 bars


def test_run_once_still_logs_its_cycle(tmp_path: Path) -> None:
    head = "time,price.open,price.close\n"
    setup(tmp_path, {"BTC_1h.csv": head + rows(30), "ETH_1h.csv": head + rows(30)})
    now = (T0 + 30 * HOUR) / 1000 + 30
    result = run_perpwatch("run", "s.yaml", "--state", "state.db", "--once", cwd=tmp_path, now=now)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stderr.splitlines() if ": cycle " in line]) == 1
    assert "stale" not in result.stderr
    logging.getLogger().handlers  # noqa: B018 (nothing left attached in this process)


def test_staleness_is_said_when_it_starts_and_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from perpwatch.evaluation.frame import Frame
    from perpwatch.live.fetching import Fetched
    from perpwatch.live.staleness import Staleness

    class Plain(SimpleNamespace):
        def stale_hint(self, symbol: str, interval: str) -> str | None:
            return None

    job = SimpleNamespace(source="src", strategy=SimpleNamespace(interval="1h"))
    staleness = Staleness({"src": Plain()})  # type: ignore[dict-item]

    def cycle(end: int, values: list[float]) -> None:
        grid = np.arange(end - (len(values) - 1) * HOUR, end + HOUR, HOUR, dtype=np.int64)
        frame = Frame(grid, {"price.close": np.array(values)})
        plan = SimpleNamespace(job=job, end=end, symbols=["BTC"])
        newest = int(grid[~np.isnan(frame.columns["price.close"])][-1])  # the bars the source sent
        staleness.observe([plan], {("src", "1h", "BTC"): Fetched(frame, newest=newest)})  # type: ignore[list-item]

    caplog.set_level(logging.DEBUG, logger="perpwatch.live.runner")
    cycle(T0 + 2 * HOUR, [1.0, 2.0, 3.0])  # fresh
    cycle(T0 + 3 * HOUR, [2.0, 3.0, np.nan])  # the newest bar is the one before
    cycle(T0 + 4 * HOUR, [3.0, np.nan, np.nan])  # still stale: DEBUG only
    cycle(T0 + 5 * HOUR, [np.nan, np.nan, 6.0])  # current again
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "WARNING",
            "source src 1h: stale data (BTC newest bar 2025-01-01T02:00:00Z), older than the bar being "
            "decided, 2025-01-01T03:00:00Z; its rules see unknown values and stay quiet",
        ),
        ("DEBUG", "source src 1h: still stale at 2025-01-01T04:00:00Z"),
        ("INFO", "source src 1h: data is current again"),
    ]
