"""Crash safety: SIGKILL at random points of a replayed history loses no event and repeats none.

``perpwatch run --simulate-from/--simulate-to`` replays CSV history (the replay source) as if live,
with a fake clock that jumps from bar close to bar close; a restart with the same state resumes
after the last bar processed. The events delivered to the jsonl notifier by a run killed again and
again must equal those of an uninterrupted run, line for line.

The killed runs go in lock step with the test (see ``helpers.GATE``), so each one dies at its chosen
cycle, however fast or slow the machine: the number of kills is always the same.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import numpy as np
from helpers import H, perpwatch_command

from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, Instance
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore

START = 1_704_067_200_000  # 2024-01-01T00:00Z
BARS = 260
SIM_FROM = "2024-01-03T00:00:00Z"
SIM_TO = "2024-01-11T00:00:00Z"  # 193 cycles (both ends included)
KILLS = 30

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


def command(strategy: Path, cfg: Path, gated: bool = False) -> list[str]:
    return [
        *perpwatch_command(gated=gated),
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
        "-v",  # each simulated cycle's own line (at DEBUG; INFO has one line per batch)
    ]


def kill_points(rng: random.Random) -> list[tuple[int, str]]:
    """Where each killed run dies: ``(0, "start")`` at once, in interpreter start-up; ``(n, "gate")``
    waiting at the gate after its n-th cycle (committed, deliveries maybe not); ``(n, "released")``
    just after leaving that gate (early in the next cycle or its deliveries). A run does at most 6
    cycles, so 30 runs cannot reach the end of the 193."""
    points = []
    for _ in range(KILLS):
        if rng.random() < 0.15:
            points.append((0, "start"))
        else:
            points.append((rng.randint(1, 5), rng.choice(["gate", "released"])))
    return points


def run_and_kill(strategy: Path, cfg: Path, folder: Path, cycles: int, how: str) -> None:
    """Start a gated run in ``folder``, let it do ``cycles`` cycles, SIGKILL it (see kill_points)."""
    proc = subprocess.Popen(
        command(strategy, cfg, gated=True),
        cwd=folder,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    watchdog = threading.Timer(120, proc.kill)  # a run that hangs fails the test rather than blocking it
    watchdog.start()
    try:
        for n in range(cycles):
            if n:
                proc.stdin.write(b"g")
            assert proc.stdout.read(1) == b".", f"the run ended before its cycle {n + 1}"
        if how == "released":
            proc.stdin.write(b"g")
        proc.kill()
        proc.wait()
    finally:
        watchdog.cancel()
        proc.stdin.close()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not killed"


def test_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir()
    killed.mkdir()
    strategy, cfg = write_files(tmp_path)
    done = subprocess.run(command(strategy, cfg), cwd=ref, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (
        done.stderr.count("DEBUG perpwatch.live.runner: cycle") == 193
    )  # closes from SIM_FROM to SIM_TO, both included
    expected = (ref / "events.jsonl").read_text().splitlines()
    assert len(expected) > 100

    points = kill_points(random.Random(20240103))
    assert len(points) == KILLS and len({how for _, how in points}) == 3  # every kind of kill point
    for cycles, how in points:
        run_and_kill(strategy, cfg, killed, cycles, how)  # asserts the run was killed, not finished
    proc = subprocess.Popen(command(strategy, cfg), cwd=killed, stdout=subprocess.DEVNULL)  # to the end
    assert proc.wait(timeout=300) == 0
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
