"""Shell completion (click's): ``_PERPWATCH_COMPLETE=bash_source perpwatch`` prints the script, and
completing lists the commands of the lazy group (built-ins without importing their modules first,
and plugin commands), a command's options and choices."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import run_perpwatch

from perpwatch.cli.main import COMMANDS


def complete(words: str, *, shell: str = "bash", env: dict[str, str] | None = None) -> list[str]:
    """What the shell would offer for the command line ``words`` (the cursor on its last word)."""
    extra = {"COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = run_perpwatch(env={"_PERPWATCH_COMPLETE": f"{shell}_complete", **extra, **(env or {})})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    if shell == "zsh":  # type, value, help: three lines per item
        return lines[1::3]
    return [line.split(",", 1)[1] for line in lines]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_completion_script_is_printed(shell: str) -> None:
    result = run_perpwatch(env={"_PERPWATCH_COMPLETE": f"{shell}_source"})
    assert result.returncode == 0 and result.stderr == ""
    assert "_PERPWATCH_COMPLETE" in result.stdout and f"{shell}_complete" in result.stdout


def test_completion_lists_every_builtin_command() -> None:
    offered = complete("perpwatch ")
    assert set(COMMANDS) <= set(offered)
    assert {"fetch", "convert-coinglass"} <= set(offered)  # commands of the built-in plugins
    assert complete("perpwatch mu") == ["mute"]
    assert complete("perpwatch ba") == ["backtest"]


def test_completion_of_options_and_choices() -> None:
    assert complete("perpwatch run --sim") == ["--simulate-from", "--simulate-to"]
    assert complete("perpwatch schema ") == ["strategy", "strategy-test", "config"]
    assert {"1h", "4h", "1d"} <= set(complete("perpwatch backtest --interval "))


def test_completion_in_zsh() -> None:
    assert complete("perpwatch mu", shell="zsh") == ["mute"]


def test_completion_lists_plugin_commands(tmp_path: Path) -> None:
    plugin = tmp_path / "greeter.py"
    plugin.write_text(
        textwrap.dedent(
            """
            import click
            from perpwatch.api.hookspecs import hookimpl

            @click.command("greet-trader")
            def greet():
                click.echo("hello")

            @hookimpl
            def register_commands(cli):
                cli.add_command(greet)
            """
        )
    )
    assert complete("perpwatch gre", env={"PERPWATCH_PLUGINS": str(plugin)}) == ["greet-trader"]
    assert complete(f"perpwatch --plugin {plugin} gre") == ["greet-trader"]
