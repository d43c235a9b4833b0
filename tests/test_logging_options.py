"""``-q`` and ``--log-level`` are options of the ``perpwatch`` group, so every command takes them:
``run`` logs at INFO by default (``-q``: warnings only), the other commands at WARNING; each line
is redacted and printable; ``-v`` of ``run`` stays DEBUG."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import invoke, run_perpwatch

from perpwatch.cli.main import COMMANDS
from perpwatch.common.timeutil import HOUR, parse_time

T0 = parse_time("2025-01-01T00:00:00Z")

STRATEGY = """\
version: 1
name: logged
interval: 1h
symbols: [BTC]
rules:
  - name: up
    when: price.close > 0
notify: [file]
"""

#: A local plugin that logs at every level when it is loaded (with the registry, by any command).
CHATTY = """\
import logging
log = logging.getLogger("chatty")
log.debug("chatty debug")
log.info("chatty info")
log.warning("chatty warning, key sekrit-123")
log.error("chatty error")
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"{T0 + i * HOUR},{100 + i}\n" for i in range(20))
    (data / "BTC_1h.csv").write_text("time,price.close\n" + rows)
    (tmp_path / "s.yaml").write_text(STRATEGY)
    (tmp_path / "chatty.py").write_text(CHATTY)
    (tmp_path / "perpwatch.yaml").write_text(
        f"sources:\n  replay: {{path: '{data}'}}\nnotifiers:\n  file: {{plugin: jsonl, path: events.jsonl}}\n"
    )
    return tmp_path


def levels(stderr: str) -> set[str]:
    return {w for line in stderr.splitlines() for w in line.split()[:3] if w in ("DEBUG", "INFO", "WARNING")}


SIM = ("--simulate-from", "2025-01-01T05:00:00Z", "--simulate-to", "2025-01-01T10:00:00Z")


def test_run_logs_info_by_default_and_warnings_only_with_q(folder: Path) -> None:
    default = run_perpwatch("run", "s.yaml", "--state", "a.db", *SIM, cwd=folder)
    assert default.returncode == 0 and "INFO perpwatch.live.runner: simulated" in default.stderr, (
        default.stderr
    )
    for quiet in (("-q",), ("--quiet",), ("--log-level", "warning"), ("--log-level", "WARNING")):
        result = run_perpwatch(*quiet, "run", "s.yaml", "--state", f"{quiet[-1]}.db", *SIM, cwd=folder)
        assert result.returncode == 0, result.stderr
        assert " INFO " not in result.stderr and " DEBUG " not in result.stderr, (quiet, result.stderr)
        assert "perpwatch run: logged" in result.stderr  # the banner is not a log line
    debug = run_perpwatch("--log-level", "debug", "run", "s.yaml", "--state", "d.db", *SIM, cwd=folder)
    assert debug.returncode == 0 and "DEBUG perpwatch.live.runner: cycle " in debug.stderr, debug.stderr


def test_q_keeps_the_warnings_of_run(folder: Path) -> None:
    now = T0 / 1000 + 30 * 3600  # ten bars after the file ends: stale data
    result = run_perpwatch("-q", "run", "s.yaml", "--state", "q.db", "--once", cwd=folder, now=now)
    assert levels(result.stderr) == {"WARNING"}, result.stderr  # the stale data, not the cycle line
    assert "stale data" in result.stderr and ": cycle " not in result.stderr


def test_every_command_takes_the_logging_options() -> None:
    levels_before = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore")}
    for name in COMMANDS:
        for option in (("-q",), ("--log-level", "error"), ("--log-level", "DEBUG")):
            result = invoke(*option, name, "--help")
            assert result.exit_code == 0, (name, option, result.output)
            assert logging.getLogger().handlers == [] or all(
                not getattr(h, "perpwatch_default", False) for h in logging.getLogger().handlers
            ), "the command-wide handler is removed when the command ends"
    assert {name: logging.getLogger(name).level for name in levels_before} == levels_before  # restored


def test_the_levels_apply_to_any_command(folder: Path) -> None:
    env = {"COINGLASS_API_KEY": "sekrit-123"}

    def validate(*options: str) -> str:
        result = run_perpwatch(*options, "--plugin", "chatty.py", "validate", "s.yaml", cwd=folder, env=env)
        assert result.returncode == 0, result.stderr
        return result.stderr

    assert "chatty info" not in validate() and "chatty warning" in validate()  # the default: warnings
    info = validate("--log-level", "info")
    assert "INFO chatty: chatty info" in info and "chatty debug" not in info
    assert "WARNING chatty: chatty warning, key ***" in info and "sekrit" not in info  # redacted
    assert "DEBUG chatty: chatty debug" in validate("--log-level", "debug")
    quiet = validate("-q")
    assert "chatty info" not in quiet and "WARNING chatty: chatty warning" in quiet
    error = validate("--log-level", "error")
    assert "chatty warning" not in error and "ERROR chatty: chatty error" in error


def test_bad_logging_options_are_usage_errors() -> None:
    result = invoke("--log-level", "loud", "validate", "--help")
    assert result.exit_code == 2 and "'loud' is not one of" in result.output and "'warning'" in result.output
    both = invoke("-q", "--log-level", "debug", "validate", "--help")
    assert both.exit_code == 2 and "-q means --log-level warning, not debug" in both.output
