"""Plain constants and functions shared by the tests (the fixtures are in ``conftest.py``).

``conftest.py`` puts ``tests/`` on ``sys.path``, so a test file writes ``from helpers import ROOT,
invoke`` (and ``from fakes.market import FakeMarket`` for the local fake servers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from click.testing import CliRunner, Result

from perpwatch.common.timeutil import HOUR

#: The repository checkout these tests belong to (``conftest.py`` checks perpwatch is imported from it).
ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ROOT / "strategies"
#: The real data sets next to the checkout (``../shared/data``, described in its SOURCES.md).
SHARED_DATA = ROOT.parent / "shared" / "data"
#: Saved CoinGlass V4 responses, one folder per snapshot date (``PERPWATCH_COINGLASS_DATA`` overrides).
COINGLASS_REPORT = Path(
    os.environ.get("PERPWATCH_COINGLASS_DATA", SHARED_DATA / "coinglass-v4-liquidity-report")
)

H = HOUR  # one hour in milliseconds, the unit of bar times


def invoke(*args: object, env: Mapping[str, str] | None = None, input: str | None = None) -> Result:
    """``perpwatch ARGS`` in-process through click's test runner (commands and plugins load as in
    the console script); arguments may be paths or numbers. An exception the command does not turn
    into an exit code propagates (a traceback, not a bare exit code 1)."""
    from perpwatch.cli.main import cli

    return CliRunner().invoke(
        cli, [str(a) for a in args], obj={}, env=env, input=input, catch_exceptions=False
    )


#: Run before ``perpwatch`` (``perpwatch_command(gated=True)``): after each cycle's log line the
#: run writes "." to stdout and waits for a byte on stdin, so a test knows which cycle the run is at
#: and the run holds still while the test acts (kills it, starts another, ...).
GATE = """
import logging, os
class Gate(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("cycle "):
            os.write(1, b".")
            os.read(0, 1)
logging.getLogger().addHandler(Gate())
"""


def perpwatch_command(now: float | None = None, *, gated: bool = False) -> list[str]:
    """``perpwatch`` as a subprocess of this interpreter (the checkout's code, whatever is on PATH).
    With ``now`` (seconds since the epoch) its wall clock, ``time.time()``, stands still there: the
    bar it runs at is known, wherever the real clock is. ``gated``: in lock step with the test
    (:data:`GATE`)."""
    freeze = "" if now is None else f"import time; time.time = lambda: {float(now)!r}; "
    gate = GATE if gated else ""
    return [sys.executable, "-c", gate + freeze + "from perpwatch.cli.main import main; main()"]


def run_perpwatch(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    now: float | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``perpwatch ARGS`` in a subprocess (see ``perpwatch_command``); ``env`` adds to this
    environment."""
    return subprocess.run(
        [*perpwatch_command(now), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


def console_script() -> list[str]:
    """The installed ``perpwatch`` console script of this interpreter's environment (or
    ``perpwatch_command()`` when there is none): for the tests of the command as users run it."""
    beside = Path(sys.executable).with_name("perpwatch")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("perpwatch")
    return [found] if found else perpwatch_command()


def write_csv(path: Path, rows: Mapping[str, Sequence[float | None]], start: int, step: int) -> Path:
    """A replay CSV: a ``time`` column (bar open times ``start + i * step``, in ms) and one column
    per metric; ``None`` is an empty (unknown) cell, numbers are written exactly (``repr``)."""
    names = list(rows)
    n = len(rows[names[0]])
    lines = ["time," + ",".join(names)]
    for i in range(n):
        cells = ["" if rows[c][i] is None else repr(float(rows[c][i])) for c in names]
        lines.append(f"{start + i * step}," + ",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path
