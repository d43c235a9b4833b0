"""Crash safety: SIGKILL at random points of a replayed history loses no event and repeats none.

``perpwatch run --simulate-from/--simulate-to`` replays CSV history (the replay source) as if live,
with a fake clock that jumps from bar close to bar close; a restart with the same state resumes
after the last bar processed. The events delivered to the jsonl notifier by a run killed again and
again must equal those of an uninterrupted run, line for line.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, Instance
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore

H = 3_600_000
START = 1_704_067_200_000  # 2024-01-01T00:00Z
BARS = 260
SIM_FROM = "2024-01-03T00:00:00Z"
SIM_TO = "2024-01-11T00:00:00Z"  # 193 cycles (both ends included)

STRATEGY = """
version: 1
name: churn
interval: 1h
symbols: [BTC, ETH]
let:
  fz: zscore(funding.close, 12)
rules:
  - name: hot
    when: fz > 0.5
    severity: high
    message: "{symbol} z {fz:.2f}"
    notify_resolved: true
  - name: cold
    when: fz < -0.5
    for: 1
    cooldown: 3h
  - name: up
    when: pct_change(price.close, 1) > 0
notify: [file]
"""


def write_files(tmp: Path) -> tuple[Path, Path]:
    data = tmp / "data"
    data.mkdir()
    rng = np.random.default_rng(7)
    for sym in ("BTC", "ETH"):
        price = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.01, BARS)))
        funding = 0.01 + np.cumsum(rng.normal(0, 0.003, BARS))
        lines = ["time,price.close,funding.close"]
        lines += [f"{START + i * H},{price[i]:.2f},{funding[i]:.6f}" for i in range(BARS)]
        (data / f"{sym}_1h.csv").write_text("\n".join(lines) + "\n")
    (tmp / "churn.yaml").write_text(STRATEGY)
    cfg = tmp / "perpwatch.yaml"
    cfg.write_text(
        f"sources:\n  replay: {{path: '{data}'}}\nnotifiers:\n  file: {{plugin: jsonl, path: events.jsonl}}\n"
    )
    return tmp / "churn.yaml", cfg


def command(strategy: Path, cfg: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from perpwatch.cli.main import main; main()",
        "run",
        str(strategy),
        "--config",
        str(cfg),
        "--state",
        "state.db",
        "--simulate-from",
        SIM_FROM,
        "--simulate-to",
        SIM_TO,
    ]


def progress(folder: Path) -> int | None:
    db = folder / "state.db"
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(db)
        row = con.execute("SELECT last_bar FROM progress WHERE strategy = 'churn'").fetchone()
        con.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def kill_at_random_point(proc: subprocess.Popen, folder: Path, rng: random.Random, run_time: float) -> bool:
    """SIGKILL ``proc`` at a random point: after 1-8 more bars (plus a few ms), or at a random time
    (often during start-up or the first cycle). False when it finished first."""
    base = progress(folder)
    if rng.random() < 0.2:
        deadline, bars = time.monotonic() + rng.uniform(0.05, run_time / 3), None
    else:
        deadline, bars = time.monotonic() + 60, rng.randint(1, 8)
    while proc.poll() is None:
        now = progress(folder)
        advanced = now is not None and (base is None or now - base >= (bars or 0) * H)
        if time.monotonic() >= deadline or (bars is not None and advanced):
            time.sleep(rng.uniform(0, 0.01))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def test_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir()
    killed.mkdir()
    strategy, cfg = write_files(tmp_path)
    started = time.monotonic()
    done = subprocess.run(command(strategy, cfg), cwd=ref, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run_time = time.monotonic() - started
    assert (
        done.stderr.count("INFO perpwatch.live.runner: cycle") == 193
    )  # closes from SIM_FROM to SIM_TO, both included
    expected = (ref / "events.jsonl").read_text().splitlines()
    assert len(expected) > 100

    rng = random.Random(20240103)
    kills = 0
    while kills < 30:  # then it runs to the end
        proc = subprocess.Popen(
            command(strategy, cfg), cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not kill_at_random_point(proc, killed, rng, run_time):
            break
        kills += 1
    if kills == 30:
        proc = subprocess.Popen(command(strategy, cfg), cwd=killed, stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=300) == 0
    assert kills >= 20, f"only {kills} kills"
    got = (killed / "events.jsonl").read_text().splitlines()
    assert len(got) == len(set(got)), "an event was delivered twice"
    assert got == expected
    con = sqlite3.connect(killed / "state.db")
    assert con.execute("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0] == 0
    assert (
        con.execute("SELECT last_bar FROM progress").fetchone()[0] == 1_704_927_600_000
    )  # 2024-01-10T23:00Z
    con.close()


def test_crash_between_sending_and_recording_the_delivery(tmp_path, monkeypatch):
    """The send-then-crash window: the resend after a restart adds no second jsonl line."""
    strategy, _ = write_files(tmp_path)
    strat = load_strategy(str(strategy))
    registry = load_registry()
    cfg = Config(
        symbols=["BTC", "ETH"],
        sources={"replay": Instance("replay", "replay", {"path": str(tmp_path / "data")})},
        notifiers={"file": Instance("file", "jsonl", {"path": str(tmp_path / "events.jsonl")})},
    )
    db = str(tmp_path / "state.db")

    async def run(cycles: int, crash: bool) -> None:
        store = StateStore(db)
        if crash:
            monkeypatch.setattr(store, "mark_delivered", lambda *a, **k: None)  # "killed" before marking
        clock = FakeClock((START + 48 * H) / 1000)
        runner = Runner.build([strat], cfg, registry, store, clock, options=RunnerOptions(settle_seconds=0))
        for n in range(cycles):
            clock.now = (START + (48 + n) * H) / 1000
            await runner.run_cycle()
            await runner.flush(10)
        await runner.aclose()
        store.close()

    asyncio.run(run(24, crash=True))
    first = (tmp_path / "events.jsonl").read_text().splitlines()
    assert first
    store = StateStore(db)
    assert store.pending_count() == len(first)  # all sent, none recorded as delivered
    store.close()
    monkeypatch.undo()
    asyncio.run(_flush_only(db, strat, cfg, registry))
    again = (tmp_path / "events.jsonl").read_text().splitlines()
    assert again == first
    store = StateStore(db)
    assert store.pending_count() == 0
    store.close()


async def _flush_only(db: str, strat, cfg: Config, registry) -> None:
    """A restarted process: a new runner (and a new jsonl notifier) delivers what is pending."""
    store = StateStore(db)
    runner = Runner.build([strat], cfg, registry, store, FakeClock((START + 80 * H) / 1000))
    await runner.flush(10)
    await runner.aclose()
    store.close()
