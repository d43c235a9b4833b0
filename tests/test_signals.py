"""Stopping ``perpwatch run`` (issue 13, item 2): a second Ctrl-C exits at once, even with a request
in flight; Ctrl-C during the start-up is one line and exit 130, never a traceback; ``run --once``
handles SIGINT and SIGTERM like the loop (the cycle finishes within the grace or is rolled back).

Every test runs the real command in a subprocess against a local fake market whose "hold" fault
keeps the requests in flight for as long as the test wants; the test synchronises on the requests
arriving and on log lines, never on a sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.market import FakeMarket
from helpers import H, perpwatch_command

from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.language.compiler import load_strategy
from perpwatch.live.config import Config, Instance
from perpwatch.live.loop import STOP_GRACE_SECONDS
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore

T0 = 1_722_470_400_000  # 2024-08-01T00:00Z: the close of the bar processed
NOW = T0 / 1000 + 60  # the subprocess's frozen wall clock
STRATEGY = """\
version: 1
name: sig
interval: 1h
symbols: [BTC]
source: binance
rules:
  - name: up
    when: price.close > 0
notify: [file]
"""

#: A plugin that says it is loading, then blocks for up to a minute (a slow start-up).
BLOCKING_IMPORT = """
import sys, time
sys.stderr.write("block: loading\\n")
sys.stderr.flush()
time.sleep(60)
"""

#: A source whose instance takes up to a minute to build (inside the event loop, before the cycle).
SLOW_SOURCE = """
import sys, time

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Source


class Slow(Source):
    name = "slow"

    def __init__(self, options=None, ctx=None):
        super().__init__(options, ctx)
        sys.stderr.write("slow: building\\n")
        sys.stderr.flush()
        time.sleep(60)

    @classmethod
    def provides(cls, options):
        return frozenset({"price.close"})

    async def fetch(self, request):
        raise NotImplementedError


@hookimpl
def register_sources(register):
    register(Slow)
"""


@pytest.fixture
def market() -> Iterator[FakeMarket]:
    """A fake market that holds every request until released (or closed at the end)."""
    with FakeMarket(clock=FakeClock(NOW)) as m:
        m.generate("BTC", "1h", T0 - 400 * H, bars=450, seed=3)
        m.fail("/", "hold", times=None)
        yield m


def write_files(tmp: Path, base_url: str, source: str = "binance") -> None:
    (tmp / "sig.yaml").write_text(STRATEGY.replace("source: binance", f"source: {source}"))
    (tmp / "perpwatch.yaml").write_text(
        f"sources:\n  {source}: {{base_url: '{base_url}', timeout: 120, retries: 0}}\n"
        if source == "binance"
        else f"sources:\n  {source}: {{}}\n"
    )
    with (tmp / "perpwatch.yaml").open("a") as f:
        f.write("notifiers:\n  file: {plugin: jsonl, path: events.jsonl}\n")


def start(tmp: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERPWATCH_", "COINGLASS_"))}
    return subprocess.Popen(
        [*perpwatch_command(NOW), *args],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], text: str) -> str:
    assert proc.stderr is not None
    lines = []
    for line in iter(proc.stderr.readline, ""):
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def finish(proc: subprocess.Popen[str], taken: str) -> str:
    """The rest of the output once the process ends (killed by a watchdog if it hangs: a failure)."""
    watchdog = threading.Timer(STOP_GRACE_SECONDS + 60, proc.kill)
    watchdog.start()
    try:
        _, rest = proc.communicate()
    finally:
        watchdog.cancel()
    return taken + rest


def processed(tmp: Path) -> int | None:
    store = StateStore(str(tmp / "state.db"))
    try:
        return store.last_processed("sig")
    finally:
        store.close()


@pytest.mark.parametrize("once", [True, False], ids=["once", "loop"])
def test_a_second_ctrl_c_exits_at_once_mid_request(tmp_path, market, once):
    write_files(tmp_path, market.base_url)
    proc = start(tmp_path, "run", "sig.yaml", "--state", "state.db", *(["--once"] if once else []))
    try:
        market.wait_for("/fapi/")  # a request is in flight, and stays so
        proc.send_signal(signal.SIGINT)
        taken = read_until(proc, "SIGINT: finishing the cycle")
        proc.send_signal(signal.SIGINT)
        output = finish(proc, taken)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    assert "another Ctrl-C exits at once" in output
    assert "SIGINT again: exiting at once" in output
    assert "was not finished within" not in output  # it did not wait for the stop's grace
    assert "Traceback" not in output
    assert processed(tmp_path) is None  # the cycle was rolled back


def test_sigterm_lets_run_once_finish_its_cycle_within_the_grace(tmp_path, market):
    write_files(tmp_path, market.base_url)
    proc = start(tmp_path, "run", "sig.yaml", "--state", "state.db", "--once")
    try:
        market.wait_for("/fapi/")
        proc.send_signal(signal.SIGTERM)
        taken = read_until(proc, "SIGTERM: finishing the cycle")
        market.release()  # the answers come within the grace: the cycle completes
        output = finish(proc, taken)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert processed(tmp_path) == T0 - H  # the bar that closed at T0 was recorded


def test_sigterm_rolls_run_once_back_when_the_cycle_outlasts_the_grace(tmp_path, market):
    write_files(tmp_path, market.base_url)
    proc = start(tmp_path, "run", "sig.yaml", "--state", "state.db", "--once")
    try:
        market.wait_for("/fapi/")
        proc.send_signal(signal.SIGTERM)
        output = finish(proc, "")
    finally:
        proc.kill()
    assert proc.returncode == 1, output
    assert f"was not finished within {STOP_GRACE_SECONDS:g}s of the stop and is rolled back" in output
    assert "Traceback" not in output
    assert processed(tmp_path) is None


@pytest.mark.parametrize("where", ["plugin import", "source instance"])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path, where):
    if where == "plugin import":
        (tmp_path / "plugin.py").write_text(BLOCKING_IMPORT)
        write_files(tmp_path, "http://127.0.0.1:9")
        said = "block: loading"
    else:
        (tmp_path / "plugin.py").write_text(SLOW_SOURCE)
        write_files(tmp_path, "", source="slow")
        said = "slow: building"
    proc = start(tmp_path, "--plugin", "plugin.py", "run", "sig.yaml", "--state", "state.db", "--once")
    try:
        taken = read_until(proc, said)
        assert said in taken, taken
        proc.send_signal(signal.SIGINT)
        output = finish(proc, taken)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    assert output.rstrip().splitlines()[-1] == "perpwatch run: interrupted"
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "perpwatch run: sig (" not in output  # interrupted where it was, not after the start-up


# --- in process: a second signal never cuts the trading layer short ---------------------------------

TRADING = """\
version: 1
name: sig
interval: 1h
symbols: [BTC]
rules:
  - name: up
    when: price.close > 0
    signal: {side: long, size_usd: 100}
notify: []
execute: paper
"""


class BlockedTrading:
    """A trading layer whose ``on_bar`` says it started and waits for ``release`` (an executor
    that has sent its orders and awaits their fills)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False

    async def on_bar(self, strategy, symbol, end, ev, i, events, exit_bars=1):
        self.started.set()
        await self.release.wait()
        self.finished = True
        return []


def test_a_second_signal_during_trading_lets_the_cycle_commit_then_exits(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [f"{T0 - (30 - i) * H},{40_000 + i}" for i in range(30)]
    (data / "BTC_1h.csv").write_text("time,price.close\n" + "\n".join(rows) + "\n")
    (tmp_path / "sig.yaml").write_text(TRADING)
    cfg = Config(symbols=["BTC"], sources={"replay": Instance("replay", "replay", {"path": str(data)})})
    store = StateStore(str(tmp_path / "state.db"))
    trading = BlockedTrading()

    async def main() -> None:
        runner = Runner.build(
            [load_strategy(str(tmp_path / "sig.yaml"))],
            cfg,
            load_registry(),
            store,
            FakeClock(T0 / 1000 + 1),
            options=RunnerOptions(settle_seconds=0),
        )
        runner.trading = trading
        task = asyncio.create_task(runner.run_forever(max_cycles=1, handle_signals=False))
        await asyncio.wait_for(trading.started.wait(), 60)
        runner.wakeup.abort(signal.SIGINT, task)  # what a second Ctrl-C does
        await asyncio.sleep(0)
        assert not task.done()  # the trading layer is not interrupted
        trading.release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 60)  # then the run ends at once
        await runner.aclose()

    try:
        asyncio.run(main())
        assert trading.finished
        assert store.last_processed("sig") == T0 - H  # the cycle was committed
    finally:
        store.close()
