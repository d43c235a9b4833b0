"""A lazy start-up: which modules ``perpwatch --version``, ``validate`` and ``schema`` import.

Each runs ``main()`` in a fresh interpreter and prints the modules loaded afterwards; no timings
(``bench/startup_bench.py`` measures those).
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from helpers import ROOT

from perpwatch.cli import main as cli_main

STRATEGY = "strategies/derivatives-monitor.yaml"

PROBE = """\
import json, sys
from perpwatch.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

#: Heavy third-party libraries no command needs before it runs.
HEAVY = ("httpx", "numpy", "jsonschema", "plotly", "pyarrow", "sqlite3", "asyncio", "pluggy", "yaml")


def imported_by(*args: str) -> set[str]:
    """The modules loaded once ``perpwatch ARGS`` has run in a fresh interpreter (which must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] in (0, None), done.stdout + done.stderr
    return set(result["modules"])


def ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "perpwatch" or m.startswith("perpwatch.")}


def test_version_imports_nothing_but_the_entry_point() -> None:
    modules = imported_by("--version")
    assert ours(modules) == {"perpwatch", "perpwatch.cli", "perpwatch.cli.main"}
    assert not modules & set(HEAVY)


def test_validate_loads_the_registry_but_not_the_live_engine() -> None:
    modules = imported_by("validate", STRATEGY)
    assert "perpwatch.api.registry" in modules  # plugins may add functions and metrics
    assert "perpwatch.cli.language" in modules
    assert {m for m in ours(modules) if m.startswith("perpwatch.cli.")} == {
        "perpwatch.cli.main",
        "perpwatch.cli.common",
        "perpwatch.cli.language",
    }
    assert not {m for m in ours(modules) if m.startswith(("perpwatch.live", "perpwatch.backtest"))}
    assert not modules & {"sqlite3", "plotly", "pyarrow"}


def test_schema_loads_no_plugin_and_no_validator() -> None:
    modules = imported_by("schema")
    assert not {m for m in ours(modules) if m.startswith(("perpwatch.api", "perpwatch.plugins"))}
    assert not modules & set(HEAVY) - {"yaml"}


def test_each_command_module_registers_exactly_its_commands() -> None:
    import importlib

    for module_name in sorted(set(cli_main.COMMANDS.values())):
        group = click.Group()
        importlib.import_module(f"perpwatch.cli.{module_name}").register(group)
        expected = {name for name, module in cli_main.COMMANDS.items() if module == module_name}
        assert set(group.commands) == expected, module_name


@pytest.mark.parametrize("name", sorted(cli_main.COMMANDS))
def test_help_of_a_builtin_command_needs_no_registry(name: str) -> None:
    ctx = click.Context(cli_main.cli, obj={})
    assert cli_main.cli.get_command(ctx, name) is not None
    assert "registry" not in ctx.obj
