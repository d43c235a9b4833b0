"""One ``perpwatch run`` per state database, and a run that notices its database going away.

The run-lock (``<db>.lock``, an ``flock`` held for the process's life) refuses a second run at
start-up, yet lets the short commands (``mute``, ``halt``, ``events``, …) work beside a run, and a
SIGKILLed holder leaves nothing stuck. A database deleted or replaced under a running process
stops it with an error; an empty or directory state path is refused before anything runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import H, invoke, perpwatch_command

from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.common.errors import ErrorList, LocatedError
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, Instance, load_config
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateBusy, StateError, StateLost, StateStore

START = 1_704_067_200_000  # 2024-01-01T00:00Z
BARS = 120
SIM_FROM = "2024-01-03T00:00:00Z"
SIM_TO = "2024-01-05T00:00:00Z"  # 49 cycles

STRATEGY = """
version: 1
name: churn
interval: 1h
symbols: [BTC, ETH]
rules:
  - name: up
    when: pct_change(price.close, 1) > 0
notify: [file]
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    for sym in ("BTC", "ETH"):
        price = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.01, BARS)))
        lines = ["time,price.close"] + [f"{START + i * H},{price[i]:.2f}" for i in range(BARS)]
        (data / f"{sym}_1h.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "churn.yaml").write_text(STRATEGY)
    cfg = tmp_path / "perpwatch.yaml"
    cfg.write_text(
        f"sources:\n  replay: {{path: '{data}'}}\n"
        "notifiers:\n  file: {plugin: jsonl, path: events.jsonl}\n"
        "state: state.db\n"
    )
    return tmp_path / "churn.yaml", cfg


def command(strategy: Path, cfg: Path, *, gated: bool = False) -> list[str]:
    return [
        *perpwatch_command(gated=gated),
        "run",
        str(strategy),
        "--config",
        str(cfg),
        "--simulate-from",
        SIM_FROM,
        "--simulate-to",
        SIM_TO,
        "-v",  # each simulated cycle's own line (at DEBUG; INFO has one line per batch)
    ]


class Gated:
    """A gated ``perpwatch run`` in a subprocess: :meth:`cycle` lets it do one more cycle."""

    def __init__(self, strategy: Path, cfg: Path):
        self.proc = subprocess.Popen(
            command(strategy, cfg, gated=True),
            cwd=cfg.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self.cycles = 0
        self.watchdog = threading.Timer(120, self.proc.kill)  # a hung run fails the test, not the suite
        self.watchdog.start()

    def cycle(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.cycles:
            self.proc.stdin.write(b"g")
        assert self.proc.stdout.read(1) == b".", "the run ended before its next cycle"
        self.cycles += 1

    def release(self) -> None:
        """Let it go on (it stops at no more gates)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"g" * 1000)
        self.proc.stdin.close()

    def finish(self) -> tuple[int, str]:
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode()
        code = self.proc.wait()
        self.watchdog.cancel()
        return code, err

    def close(self) -> None:
        self.watchdog.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


@contextmanager
def gated_run(strategy: Path, cfg: Path) -> Iterator[Gated]:
    run = Gated(strategy, cfg)
    try:
        yield run
    finally:
        run.close()


def perpwatch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*perpwatch_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# --- one run per database ----------------------------------------------------------------------------


def test_a_second_run_on_one_database_is_refused(files: tuple[Path, Path]) -> None:
    strategy, cfg = files
    folder = cfg.parent
    db = folder / "state.db"
    with gated_run(strategy, cfg) as first:
        first.cycle()
        first.cycle()  # two cycles committed; the run holds at its gate, the lock held

        second = subprocess.run(
            command(strategy, cfg), cwd=folder, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr  # one clear line, before any banner or cycle
        assert str(db) in lines[0] and f"pid {first.proc.pid}" in lines[0]
        assert lines[0].startswith("error: ")

        # the short commands keep working beside the run: SQLite serialises their transactions
        for args in (
            ("mute", "churn", "--for", "1h"),
            ("unmute", "churn"),
            ("halt", "--reason", "test"),
            ("resume",),
            ("events", "--limit", "3"),
        ):
            done = perpwatch(folder, *args, "--state", "state.db")
            assert done.returncode == 0, (args, done.stderr)

        first.cycle()  # the first run goes on unharmed
        first.proc.kill()  # SIGKILL: the kernel drops the lock with the process
        first.proc.wait()
        assert first.proc.returncode == -signal.SIGKILL

    third = subprocess.run(command(strategy, cfg), cwd=folder, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    lines = (folder / "events.jsonl").read_text().splitlines()
    assert lines and len(lines) == len(set(lines))  # nothing delivered twice
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0] == 0
    con.close()


def test_the_run_lock_in_one_process(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    first = StateStore(str(db), run_lock=True)
    assert (tmp_path / "state.db.lock").read_text().strip() == str(os.getpid())
    with pytest.raises(StateBusy, match=rf"{db}.*pid {os.getpid()}"):
        StateStore(str(db), run_lock=True)
    link = tmp_path / "link.db"
    link.symlink_to(db)
    with pytest.raises(StateBusy):  # another name for the same file is the same database
        StateStore(str(link), run_lock=True)
    with pytest.raises(StateBusy):
        StateStore(os.path.relpath(db), run_lock=True)
    other = StateStore(str(db))  # the short commands take no run-lock
    other.mute("s", None, 1e12)
    other.close()
    first.close()
    again = StateStore(str(db), run_lock=True)  # released with the store
    again.close()


def test_a_sigkilled_holder_leaves_no_stuck_lock(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    code = (
        "import sys, os\n"
        "from perpwatch.live.state import StateStore\n"
        f"s = StateStore({str(db)!r}, run_lock=True)\n"
        "os.write(1, b'.')\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.read(1) == b"."
        with pytest.raises(StateBusy, match=f"pid {holder.pid}"):
            StateStore(str(db), run_lock=True)
    finally:
        holder.kill()
        holder.wait()
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    store = StateStore(str(db), run_lock=True)  # the lock file stays; its lock died with the holder
    store.close()


# --- a database deleted or replaced under a run ------------------------------------------------------


def remove_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def replace_database(db: Path) -> None:
    fresh = db.with_name("fresh.db")
    StateStore(str(fresh)).close()
    os.replace(fresh, db)


@pytest.mark.parametrize("change", [remove_database, replace_database])
def test_a_run_stops_when_its_database_goes(files: tuple[Path, Path], change) -> None:
    strategy, cfg = files
    db = cfg.parent / "state.db"
    with gated_run(strategy, cfg) as run:
        run.cycle()
        change(db)
        run.release()
        code, err = run.finish()
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the state database ") and str(db) in last, err
    assert "stopping" in last
    assert err.count("DEBUG perpwatch.live.runner: cycle ") == 1  # no cycle after it went


def test_the_store_knows_its_file(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = StateStore(str(db))
    store.check_file()
    store.set_flag("x", "1")
    store.check_file()  # writes and the WAL leave the file the same file
    os.rename(db, tmp_path / "moved.db")
    with pytest.raises(StateLost, match="moved or deleted"):
        store.check_file()
    os.rename(tmp_path / "moved.db", db)
    store.check_file()  # back under its name: the same file
    replace_database(db)
    with pytest.raises(StateLost, match="replaced"):
        store.check_file()
    store.close()
    StateStore(":memory:").check_file()  # nothing to lose


def test_a_run_stops_when_its_lock_file_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its lock file a second run could start: the first one stops instead."""
    db = tmp_path / "state.db"
    store = StateStore(str(db), run_lock=True)
    monkeypatch.chdir(tmp_path.parent)  # checked by the absolute names, whatever the cwd
    store.check_file()
    Path(f"{db}.lock").unlink()
    with pytest.raises(StateLost, match="lock file .* was deleted"):
        store.check_file()
    second = StateStore(str(db), run_lock=True)  # what the missing lock file let happen
    with pytest.raises(StateLost, match="lock file .* was replaced"):
        store.check_file()
    second.check_file()  # the new holder's lock is sound
    second.close()
    store.close()


def test_run_cycle_refuses_a_lost_database(tmp_path: Path) -> None:
    """In process: the cycle checks before it writes; ``run_forever`` stops instead of retrying."""
    data = tmp_path / "data"
    data.mkdir()
    lines = ["time,price.close"] + [
        f"{START + i * H},{100 + i % 2}" for i in range(BARS)
    ]  # up every other bar
    (data / "BTC_1h.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "s.yaml").write_text(STRATEGY.replace("[BTC, ETH]", "[BTC]"))
    cfg = Config(
        symbols=["BTC"],
        sources={"replay": Instance("replay", "replay", {"path": str(data)})},
        notifiers={"file": Instance("file", "jsonl", {"path": str(tmp_path / "events.jsonl")})},
    )
    db = tmp_path / "state.db"
    store = StateStore(str(db), run_lock=True)
    clock = FakeClock((START + 48 * H) / 1000)
    runner = Runner.build(
        [load_strategy(str(tmp_path / "s.yaml"))],
        cfg,
        load_registry(),
        store,
        clock,
        options=RunnerOptions(settle_seconds=0),
    )
    jsonl = tmp_path / "events.jsonl"

    def lines() -> list[str]:
        return jsonl.read_text().splitlines() if jsonl.exists() else []

    async def go() -> None:
        try:
            for bar in range(48, 80):  # whole cycles, each delivered in full, until one leaves some queued
                clock.now = (START + bar * H) / 1000
                report = await runner.run_cycle()
                if report.queued and bar > 52:
                    break
                await runner.flush(10)
            else:
                raise AssertionError("no cycle queued a notification")
            sent = lines()
            assert sent and store.pending_count() >= report.queued > 0  # their delivery tasks not yet run
            remove_database(db)
            with pytest.raises(StateLost, match="moved or deleted"):
                await runner.run_cycle()  # checked before anything is fetched or written
            with pytest.raises(StateLost):  # stops instead of retrying the cycle
                await runner.run_forever(until=(START + 80 * H) / 1000, handle_signals=False)
            assert lines() == sent  # nothing delivered from the lost database: it could not be recorded
        finally:
            await runner.aclose()

    asyncio.run(go())
    store.close()


# --- the state path ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('""', "the state path is empty"),
        ('"   "', "the state path is empty"),
        ("${EMPTY_STATE}", "the state path is empty"),
        ("{dir}", "is a directory"),
        ("{dir}/", "is a directory"),
    ],
)
def test_config_state_path_is_checked(tmp_path: Path, monkeypatch, value: str, message: str) -> None:
    monkeypatch.setenv("EMPTY_STATE", "")
    (tmp_path / "folder").mkdir()
    path = tmp_path / "perpwatch.yaml"
    path.write_text("symbols: [BTC]\nstate: " + value.replace("{dir}", str(tmp_path / "folder")) + "\n")
    with pytest.raises((LocatedError, ErrorList)) as e:
        load_config(str(path))
    errors = e.value.errors if isinstance(e.value, ErrorList) else [e.value]
    assert len(errors) == 1
    assert re.match(rf"{re.escape(str(path))}:2:(8|9): error: ", errors[0].format())  # 9: inside quotes
    assert message in errors[0].format()


def test_the_store_refuses_bad_paths(tmp_path: Path) -> None:
    for bad, message in (("", "empty"), (" ", "empty"), (str(tmp_path), "directory"), ("a\x00b", "NUL")):
        with pytest.raises(StateError, match=message):
            StateStore(bad)
    with pytest.raises(StateError, match="no directory"):
        StateStore(str(tmp_path / "missing" / "state.db"))


@pytest.mark.parametrize(
    "command_args",
    [
        ("run", "s.yaml", "--once"),
        ("events",),
        ("halt",),
        ("mute", "s", "--for", "1h"),
        ("unmute", "s"),
        ("resume",),
    ],
)
@pytest.mark.parametrize("state", ["", "folder"])
def test_cli_refuses_a_bad_state_path(tmp_path: Path, monkeypatch, command_args, state: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "s.yaml").write_text(STRATEGY)
    result = invoke(*command_args, "--state", state)
    assert result.exit_code == 2, result.output
    assert "--state" in result.output
    assert ("empty" if state == "" else "is a directory") in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "perpwatch.db").exists()  # never a database somewhere else instead
