"""A stop interrupts a long cycle (issue 12, item 9): SIGTERM or SIGINT during an evaluation that
would take minutes ends ``perpwatch run`` within the stop's grace, exit 0, with the cycle rolled
back (nothing of it recorded) and its bar processed again at the next start.

Evaluations run off the event loop, so the loop sees the signal while one runs; a cycle that
finishes within the grace (``loop.STOP_GRACE_SECONDS``) is still committed, as before. The long
evaluation is a plugin function that works for up to two minutes and says so on stderr when it
starts; the tests synchronise on that line, never on a sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import H, perpwatch_command

from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.language.compiler import load_strategy
from perpwatch.live import stepping
from perpwatch.live.config import Config, Instance
from perpwatch.live.loop import STOP_GRACE_SECONDS
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore

START = 1_704_067_200_000  # 2024-01-01T00:00Z
BARS = 48
SIM_FROM = "2024-01-02T00:00:00Z"  # the close of bar 23
SIM_TO = "2024-01-02T02:00:00Z"

#: A plugin function that computes for up to ``SLOW_SECONDS`` (default 120) of wall time, bounded.
SLOW_PLUGIN = """
import os, sys, time

import numpy as np

from perpwatch.api.hookspecs import hookimpl


def slow(x):
    '''slow(x) -> number: x, after a long computation (a test of interruptions).'''
    print("slow: evaluating", file=sys.stderr, flush=True)
    end = time.monotonic() + float(os.environ.get("SLOW_SECONDS", "120"))
    while time.monotonic() < end:
        np.sort(np.random.default_rng(1).random(20_000))
    print("slow: finished", file=sys.stderr, flush=True)
    return x


@hookimpl
def register_functions(register):
    register("slow", slow)
"""

STRATEGY = """\
version: 1
name: interrupt
interval: 1h
symbols: [BTC]
rules:
  - name: up
    when: slow(price.close) > 0
notify: [file]
"""


def write_files(tmp: Path) -> tuple[Path, Path, Path]:
    data = tmp / "data"
    data.mkdir()
    lines = ["time,price.close"] + [f"{START + i * H},{40_000 + i}" for i in range(BARS)]
    (data / "BTC_1h.csv").write_text("\n".join(lines) + "\n")
    (tmp / "slow.py").write_text(SLOW_PLUGIN)
    (tmp / "interrupt.yaml").write_text(STRATEGY)
    cfg = tmp / "perpwatch.yaml"
    cfg.write_text(
        f"sources:\n  replay: {{path: '{data}'}}\nnotifiers:\n  file: {{plugin: jsonl, path: events.jsonl}}\n"
    )
    return tmp / "slow.py", tmp / "interrupt.yaml", cfg


def run_command(plugin: Path, strategy: Path, cfg: Path, *extra: str) -> list[str]:
    return [
        *perpwatch_command(),
        "--plugin",
        str(plugin),
        "run",
        str(strategy),
        "--config",
        str(cfg),
        "--state",
        "state.db",
        *extra,
    ]


def read_until(stream, text: str) -> str:
    lines = []
    for line in iter(stream.readline, ""):
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def recorded(db: Path) -> tuple[int | None, int]:
    """The strategy's last processed bar and how many events the database holds."""
    store = StateStore(str(db))
    try:
        return store.last_processed("interrupt"), len(store.events())
    finally:
        store.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_long_evaluation_rolls_the_cycle_back_and_exits_0(tmp_path, sig):
    plugin, strategy, cfg = write_files(tmp_path)
    proc = subprocess.Popen(
        run_command(plugin, strategy, cfg, "--simulate-from", SIM_FROM, "--simulate-to", SIM_TO),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SLOW_SECONDS": "120"},
    )
    # the evaluation would take 120 s: a run that does not stop within the grace hangs until
    # this watchdog kills it, and fails the test
    watchdog = threading.Timer(STOP_GRACE_SECONDS + 45, proc.kill)
    watchdog.start()
    try:
        taken = read_until(proc.stderr, "slow: evaluating")  # inside the first cycle's evaluation
        assert "slow: evaluating" in taken, taken
        proc.send_signal(sig)
        _, rest = proc.communicate()
    finally:
        watchdog.cancel()
    output = taken + rest
    assert proc.returncode == 0, output
    assert f"{sig.name}: finishing the cycle" in output
    assert "stopping: the cycle at 2024-01-02T00:00:00Z was not finished within" in output
    assert "rolled back" in output
    assert "slow: finished" not in output  # abandoned, not waited for
    assert "Traceback" not in output
    assert recorded(tmp_path / "state.db") == (None, 0)  # nothing of the cycle was committed

    # the next start processes the bar (a quick evaluation this time): nothing was lost
    again = subprocess.run(
        run_command(plugin, strategy, cfg, "--simulate-from", SIM_FROM, "--simulate-to", SIM_FROM),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "SLOW_SECONDS": "0"},
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert recorded(tmp_path / "state.db") == (START + 23 * H, 1)  # the bar closed at SIM_FROM
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 1


# --- in process: the grace decides ----------------------------------------------------------------


class Blocked:
    """``evaluate_last`` that signals when it starts and waits for ``release`` (bounded)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.real = stepping.evaluate_last

    def __call__(self, strategy, frame, symbol):
        self.started.set()
        assert self.release.wait(60), "never released"
        return self.real(strategy, frame, symbol)


def _runner(tmp_path: Path, store: StateStore) -> Runner:
    _, strategy, _ = write_files(tmp_path)
    text = strategy.read_text().replace("slow(price.close)", "price.close")
    strat = load_strategy("interrupt.yaml", text=text)
    cfg = Config(
        symbols=["BTC"],
        sources={"replay": Instance("replay", "replay", {"path": str(tmp_path / "data")})},
        notifiers={"file": Instance("file", "jsonl", {"path": str(tmp_path / "events.jsonl")})},
    )
    clock = FakeClock((START + 25 * H) / 1000)  # bar 24 has closed
    return Runner.build([strat], cfg, load_registry(), store, clock, options=RunnerOptions(settle_seconds=0))


def _stop_during_evaluation(
    tmp_path: Path, monkeypatch, grace: float, release_after_stop: bool
) -> StateStore:
    blocked = Blocked()
    monkeypatch.setattr(stepping, "evaluate_last", blocked)
    store = StateStore(str(tmp_path / "state.db"))

    async def main() -> None:
        runner = _runner(tmp_path, store)
        runner.wakeup.grace = grace
        task = asyncio.create_task(runner.run_forever(max_cycles=1, handle_signals=False))
        # the loop is free while the evaluation runs: this wait and the stop happen during it
        assert await asyncio.to_thread(blocked.started.wait, 60)
        runner.stop()
        if release_after_stop:
            blocked.release.set()
        await asyncio.wait_for(task, 60)
        blocked.release.set()
        await runner.aclose()

    asyncio.run(main())
    return store


def test_a_stop_past_the_grace_abandons_the_evaluation_and_rolls_back(tmp_path, monkeypatch, caplog):
    store = _stop_during_evaluation(tmp_path, monkeypatch, grace=0.0, release_after_stop=False)
    assert store.last_processed("interrupt") is None and store.events() == []
    assert "was not finished within 0s of the stop and is rolled back" in caplog.text
    store.close()


def test_a_cycle_that_finishes_within_the_grace_is_committed(tmp_path, monkeypatch, caplog):
    store = _stop_during_evaluation(tmp_path, monkeypatch, grace=60.0, release_after_stop=True)
    assert store.last_processed("interrupt") == START + 24 * H
    assert len(store.events()) == 1
    assert "rolled back" not in caplog.text
    store.close()


def test_a_failing_evaluation_in_the_thread_still_holds_only_its_symbol(tmp_path, monkeypatch):
    def broken(strategy, frame, symbol):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(stepping, "evaluate_last", broken)
    store = StateStore(str(tmp_path / "state.db"))

    async def main():
        runner = _runner(tmp_path, store)
        report = await runner.run_cycle()
        await runner.aclose()
        return report

    report = asyncio.run(main())
    assert report.failures == ["interrupt BTC: evaluation failed"]
    # nothing of the strategy's; the engine's own cycle_failed meta-alert says the cycle failed
    assert [(e.strategy, e.rule) for e in store.events()] == [("perpwatch", "cycle_failed")]
    store.close()
