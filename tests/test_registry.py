"""The plugin manager, in-process: local plugins (--plugin, PERPWATCH_PLUGINS), broken plugins,
disabled plugins, name conflicts, and ``perpwatch plugins [--json]``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from helpers import invoke

from perpwatch.api.interfaces import Notifier, Source
from perpwatch.api.registry import load_registry
from perpwatch.cli import main as cli_module
from perpwatch.cli.main import cli
from perpwatch.common.errors import PerpwatchError
from perpwatch.evaluation.events import Event

SOURCE_PLUGIN = """
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Source
from perpwatch.language.metrics import Metric

__version__ = "{version}"


class Local(Source):
    name = "{source}"
    metrics = (Metric("{prefix}.thing", "count", "a local metric"),)

    @classmethod
    def provides(cls, options):
        return frozenset({{"price.close", "{prefix}.thing"}})

    async def fetch(self, request):
        raise NotImplementedError


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


def rows(result: Result, exit_code: int = 0) -> dict[str, dict]:
    assert result.exit_code == exit_code, result.output
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
    assert text.exit_code == 1  # listed in full, then a failure: a broken plugin is not a clean bill
    assert text.stderr == (
        "error: plugin 'broken' failed to load (the others work; perpwatch plugins -v shows where it went wrong)\n"
    )
    as_json = invoke("--plugin", str(broken), "--plugin", str(good), "plugins", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)[-1]["name"] == "good"
    assert invoke("--plugin", str(good), "plugins").exit_code == 0
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


def test_a_class_missing_abstract_methods_fails_at_registration(tmp_path: Path) -> None:
    path = plugin_file(
        tmp_path,
        "halfdone",
        """
        from perpwatch.api.hookspecs import hookimpl
        from perpwatch.api.interfaces import Executor, Notifier, Source

        class NoFetch(Source):
            name = "nofetch"

        class NoSend(Notifier):
            name = "nosend"

        class OnlySubmit(Executor):
            name = "onlysubmit"

            async def submit(self, strategy, symbol, intent, price, time):
                return []

        @hookimpl
        def register_sources(register):
            register(NoFetch)

        @hookimpl
        def register_notifiers(register):
            register(NoSend)

        @hookimpl
        def register_executors(register):
            register(OnlySubmit)
        """,
    )
    reg = load_registry([str(path)])
    info = next(p for p in reg.plugins if p.name == "halfdone")
    assert info.error == (
        "register_sources failed: TypeError: NoFetch (plugin 'halfdone') does not implement the abstract "
        "methods fetch, provides of sources; "
        "register_notifiers failed: TypeError: NoSend (plugin 'halfdone') does not implement the abstract "
        "method send of notifiers; "
        "register_executors failed: TypeError: OnlySubmit (plugin 'halfdone') does not implement the abstract "
        "method positions of executors"
    )
    assert not {"nofetch", "nosend", "onlysubmit"} & {*reg.sources, *reg.notifiers, *reg.executors}
    assert info.registers == {}


def test_a_source_whose_provides_is_not_a_classmethod_is_refused(tmp_path: Path) -> None:
    path = plugin_file(
        tmp_path,
        "oldstyle",
        """
        from perpwatch.api.hookspecs import hookimpl
        from perpwatch.api.interfaces import Source

        class OldStyle(Source):
            name = "oldstyle"

            def provides(self):
                return frozenset({"price.close"})

            async def fetch(self, request):
                raise NotImplementedError

        @hookimpl
        def register_sources(register):
            register(OldStyle)
        """,
    )
    reg = load_registry([str(path)])
    info = next(p for p in reg.plugins if p.name == "oldstyle")
    assert info.error == (
        "register_sources failed: TypeError: OldStyle (plugin 'oldstyle'): "
        "provides must be a classmethod, provides(cls, options)"
    )
    assert "oldstyle" not in reg.sources


def test_provides_is_asked_of_the_class_without_building_an_instance(tmp_path: Path) -> None:
    path = plugin_file(
        tmp_path,
        "costly",
        """
        from perpwatch.api.hookspecs import hookimpl
        from perpwatch.api.interfaces import Source

        class Costly(Source):
            name = "costly"
            options_schema = {"type": "object", "properties": {"extra": {"type": "boolean", "default": False}}}

            def __init__(self, options=None, ctx=None):
                raise RuntimeError("opened a client")

            @classmethod
            def provides(cls, options):
                return frozenset({"price.close", *(["oi.close"] if options.get("extra") else [])})

            async def fetch(self, request):
                raise NotImplementedError

        @hookimpl
        def register_sources(register):
            register(Costly)
        """,
    )
    reg = load_registry([str(path)])
    assert "costly" in reg.catalogue()["price.close"][1]
    assert "costly" not in reg.catalogue()["oi.close"][1]
    assert reg.sources["costly"].provides({"extra": True}) == {"price.close", "oi.close"}


def test_provides_on_an_instance_answers_for_its_own_options() -> None:
    class Configurable(Source):
        name = "configurable"

        @classmethod
        def provides(cls, options):
            return frozenset(options.get("metrics", ["price.close"]))

        async def fetch(self, request):
            raise NotImplementedError

    source = Configurable({"metrics": ["oi.close"]})
    assert source.provides() == {"oi.close"}
    assert source.provides({}) == {"price.close"}
    assert Configurable.provides({"metrics": ["liq.long_usd"]}) == {"liq.long_usd"}


def test_option_reads_the_default_from_the_options_schema() -> None:
    class WithDefaults(Source):
        name = "withdefaults"
        options_schema = {
            "type": "object",
            "properties": {"limits": {"type": "array", "default": [1, 2]}, "bare": {"type": "string"}},
        }

        @classmethod
        def provides(cls, options):
            return frozenset()

        async def fetch(self, request):
            raise NotImplementedError

    source = WithDefaults({"bare": "set"})
    assert source.option("bare") == "set" and source.option("limits") == [1, 2]
    source.option("limits").append(3)  # a copy: the schema's default stays as stated
    assert WithDefaults.option_default("limits") == [1, 2] and WithDefaults.option_default("bare") is None


def test_every_notifier_gets_min_severity_and_accepts_routes_by_it() -> None:
    class Plain(Notifier):
        name = "plain"
        options_schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {"x": {"type": "integer"}},
        }

        async def send(self, event):
            return None

    assert list(Plain.options_schema["properties"]) == ["min_severity", "x"]
    assert Plain.options_schema["properties"]["min_severity"]["default"] == "info"
    assert Plain.options_schema["additionalProperties"] is False

    def event(severity: str, kind: str = "fired") -> Event:
        return Event(kind=kind, strategy="s", rule="r", symbol="BTC", time=0, severity=severity)

    # the runner's routing so far: min_severity (default info), an unknown severity is accepted
    high = Plain({"min_severity": "high"})
    assert high.min_severity == "high" and Plain().min_severity == "info"
    assert [high.accepts(event(s)) for s in ("info", "low", "medium", "high", "critical")] == [
        False,
        False,
        False,
        True,
        True,
    ]
    assert high.accepts(event("weird")) and Plain({"min_severity": "weird"}).accepts(event("info"))
    assert high.accepts(event("critical", kind="resolved")) and Plain().accepts(event("info"))


def test_a_failed_import_keeps_its_traceback_for_plugins_verbose(tmp_path: Path) -> None:
    broken = plugin_file(
        tmp_path,
        "deep",
        """
        def helper():
            raise RuntimeError("config file unreadable")

        helper()
        """,
    )
    info = next(p for p in load_registry([str(broken)]).plugins if p.name == "deep")
    assert info.error == "failed to load: RuntimeError: config file unreadable"
    assert info.traceback is not None and info.traceback.startswith("Traceback (most recent call last):")
    assert f'File "{broken}", line 5, in <module>' in info.traceback
    assert "in helper" in info.traceback and info.traceback.rstrip().endswith(
        "RuntimeError: config file unreadable"
    )
    quiet = invoke("--plugin", str(broken), "plugins")
    assert "Traceback" not in quiet.stdout
    loud = invoke("--plugin", str(broken), "plugins", "-v")
    assert loud.exit_code == 1
    block = loud.stdout.split(f"deep local  [{broken}]  nothing\n", 1)[1]
    assert block.startswith(
        "  error: failed to load: RuntimeError: config file unreadable\n"
        "    Traceback (most recent call last):\n"
    )
    assert "    RuntimeError: config file unreadable\n" in block
    listed = rows(invoke("--plugin", str(broken), "plugins", "--json", "--verbose"), exit_code=1)
    assert listed["deep"]["traceback"] == info.traceback
    assert listed["coinglass"]["traceback"] is None
    assert "traceback" not in rows(invoke("--plugin", str(broken), "plugins", "--json"), exit_code=1)["deep"]
