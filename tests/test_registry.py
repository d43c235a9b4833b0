"""The plugin manager, in-process: local plugins (--plugin, PERPWATCH_PLUGINS), broken plugins,
disabled plugins, name conflicts, and ``perpwatch plugins [--json]``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from perpwatch.api.registry import load_registry
from perpwatch.cli import main as cli_module
from perpwatch.cli.main import cli
from perpwatch.common.errors import PerpwatchError

SOURCE_PLUGIN = """
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Source
from perpwatch.language.metrics import Metric

__version__ = "{version}"


class Local(Source):
    name = "{source}"
    metrics = (Metric("{prefix}.thing", "count", "a local metric"),)

    def provides(self):
        return frozenset({{"price.close", "{prefix}.thing"}})


@hookimpl
def register_sources(register):
    register(Local)
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PERPWATCH_PLUGINS", "PERPWATCH_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


def plugin_file(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def source_plugin(folder: Path, name: str, source: str, version: str = "1.0") -> Path:
    return plugin_file(folder, name, SOURCE_PLUGIN.format(version=version, source=source, prefix=name))


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), obj={}, env=env)


def rows(result: Result) -> dict[str, dict]:
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_plugin_option_loads_a_local_module(tmp_path: Path) -> None:
    path = source_plugin(tmp_path, "mysrc", "mysrc", version="0.3")
    listed = rows(invoke("--plugin", str(path), "plugins", "--json"))
    assert listed["mysrc"] == {
        "name": "mysrc",
        "version": "0.3",
        "origin": str(path),
        "registers": {"sources": ["mysrc"]},
        "error": None,
    }
    assert listed["coinglass"]["origin"] == "entry point (perpwatch)"  # built-ins still load
    reg = load_registry([str(path)])
    assert reg.sources["mysrc"].name == "mysrc"
    assert reg.catalogue()["mysrc.thing"][1] == ["mysrc"]
    assert reg.metric_kinds()["mysrc.thing"] == "num"


def test_perpwatch_plugins_env_takes_several_paths(tmp_path: Path) -> None:
    a = source_plugin(tmp_path, "alpha", "alpha")
    b = source_plugin(tmp_path, "beta", "beta")
    c = source_plugin(tmp_path, "gamma", "gamma")
    env = {"PERPWATCH_PLUGINS": f"{a},{b}:{c}"}
    listed = rows(invoke("plugins", "--json", env=env))
    for name, path in (("alpha", a), ("beta", b), ("gamma", c)):
        assert listed[name]["origin"] == str(path) and listed[name]["error"] is None


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_load(tmp_path: Path) -> None:
    broken = plugin_file(tmp_path, "broken", "import perpwatch_no_such_dependency\n")
    syntax = plugin_file(tmp_path, "typo", "def oops(:\n")
    good = source_plugin(tmp_path, "good", "good")
    missing = tmp_path / "missing.py"
    reg = load_registry([str(broken), str(syntax), str(missing), str(good)])
    info = {p.name: p for p in reg.plugins}
    assert info["broken"].error == (
        "failed to load: ModuleNotFoundError: No module named 'perpwatch_no_such_dependency'"
    )
    assert info["typo"].error.startswith("failed to load: SyntaxError:")
    assert info["missing"].error == f"failed to load: FileNotFoundError: no such file: {missing}"
    assert info["good"].error is None and "good" in reg.sources and "coinglass" in reg.sources
    text = invoke("--plugin", str(broken), "--plugin", str(good), "plugins")
    assert text.exit_code == 0
    assert (
        f"broken local  [{broken}]  nothing\n"
        "  error: failed to load: ModuleNotFoundError: No module named 'perpwatch_no_such_dependency'\n"
    ) in text.stdout
    assert f"good 1.0  [{good}]  sources: good\n" in text.stdout


def test_a_hook_that_raises_is_reported(tmp_path: Path) -> None:
    path = plugin_file(
        tmp_path,
        "flaky",
        """
        import numpy as np
        from perpwatch.api.hookspecs import hookimpl

        @hookimpl
        def register_sources(register):
            raise RuntimeError("cannot reach the licence server")

        @hookimpl
        def register_functions(register):
            register("double", lambda x: np.asarray(x) * 2)
            register("sma", lambda x, n: x, windows=(1,))
        """,
    )
    reg = load_registry([str(path)])
    info = next(p for p in reg.plugins if p.name == "flaky")
    assert info.error == (
        "register_sources failed: RuntimeError: cannot reach the licence server; "
        "register_functions failed: ValueError: function 'sma' is a built-in and cannot be replaced"
    )
    assert reg.functions["double"].func(np.array([1.0]))[0] == 2.0  # what it registered before failing
    assert "sma" not in reg.functions  # the built-in stays


def test_wrong_things_registered_are_reported(tmp_path: Path) -> None:
    path = plugin_file(
        tmp_path,
        "confused",
        """
        from perpwatch.api.hookspecs import hookimpl
        from perpwatch.api.interfaces import Notifier

        class Quiet(Notifier):
            name = "quiet"

        @hookimpl
        def register_sources(register):
            register(Quiet)
        """,
    )
    info = next(p for p in load_registry([str(path)]).plugins if p.name == "confused")
    assert info.error.startswith("register_sources failed: TypeError: register() takes a Source subclass")


def test_disable_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = source_plugin(tmp_path, "mysrc", "mysrc")
    monkeypatch.setenv("PERPWATCH_DISABLE_PLUGINS", "binance, mysrc")
    reg = load_registry([str(path)])
    names = {p.name for p in reg.plugins}
    assert "binance" not in names and "mysrc" not in names and "coinglass" in names
    assert "binance" not in reg.sources and "mysrc" not in reg.sources
    listed = rows(
        invoke("--plugin", str(path), "plugins", "--json", env={"PERPWATCH_DISABLE_PLUGINS": "binance,mysrc"})
    )
    assert "binance" not in listed and "mysrc" not in listed


def test_two_plugins_registering_the_same_source_name(tmp_path: Path) -> None:
    first = source_plugin(tmp_path, "first", "shared")
    second = source_plugin(tmp_path, "second", "shared")
    reg = load_registry([str(first), str(second)])
    assert reg.conflicts == ["source 'shared' is registered by both plugin 'first' and plugin 'second'"]
    with pytest.raises(
        PerpwatchError, match="source 'shared' is registered by both plugin 'first' and plugin 'second'"
    ):
        reg.check()
    second_info = next(p for p in reg.plugins if p.name == "second")
    assert second_info.error == "source 'shared' is already registered by plugin 'first'"
    result = invoke("--plugin", str(first), "--plugin", str(second), "plugins")
    assert "error: source 'shared' is registered by both plugin 'first' and plugin 'second'" in result.stderr
    clash = source_plugin(tmp_path, "shadow", "coinglass")  # a local plugin cannot replace a built-in quietly
    reg = load_registry([str(clash)])
    assert reg.conflicts == [
        "source 'coinglass' is registered by both plugin 'coinglass' and plugin 'shadow'"
    ]
    assert reg.sources["coinglass"].__module__ == "perpwatch.plugins.coinglass"


def test_plugins_json_lists_every_builtin() -> None:
    listed = rows(invoke("plugins", "--json"))
    for name, kind in (
        ("coinglass", "sources"),
        ("binance", "sources"),
        ("replay", "sources"),
        ("console", "notifiers"),
    ):
        assert listed[name]["registers"][kind] == [name]
        assert listed[name]["version"] and listed[name]["origin"] == "entry point (perpwatch)"
    assert all(set(row) == {"name", "version", "origin", "registers", "error"} for row in listed.values())


def test_plugin_commands_through_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = plugin_file(
        tmp_path,
        "greeter",
        """
        import click
        from perpwatch.api.hookspecs import hookimpl

        @click.command("hello")
        @click.argument("who")
        def hello(who):
            click.echo(f"hello {who}")

        @hookimpl
        def register_commands(cli):
            cli.add_command(hello)
        """,
    )
    broken = plugin_file(
        tmp_path,
        "badcmd",
        """
        from perpwatch.api.hookspecs import hookimpl

        @hookimpl
        def register_commands(cli):
            raise KeyError("no")
        """,
    )
    try:
        with pytest.raises(SystemExit) as done:
            cli_module.main(["--plugin", str(path), "--plugin", str(broken), "hello", "trader"])
        assert done.value.code == 0
        assert capsys.readouterr().out == "hello trader\n"
        with pytest.raises(SystemExit):
            cli_module.main(["--plugin", str(path), f"--plugin={broken}", "plugins"])
        out = capsys.readouterr().out
        assert f"greeter local  [{path}]  commands: (yes)" in out
        assert "  error: register_commands failed: KeyError: 'no'" in out
    finally:
        cli.commands.pop("hello", None)
