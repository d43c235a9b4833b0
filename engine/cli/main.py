"""The ``perpwatch`` command line. Exit codes: 0 success, 1 a test or check failed, 2 bad input.

This module holds the click group and the console-script entry point, and imports nothing heavy:
a built-in command's module is imported when that command runs or the help lists it, and the
plugin registry is loaded when a command asks for it (``perpwatch.cli.common.get_registry``), when
the help lists every command, or to find a command that is not built in (plugins add commands).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from perpwatch import __version__

if TYPE_CHECKING:
    from perpwatch.api.registry import Registry

#: ``--log-level`` values (``-q`` is ``warning``); ``perpwatch.cli.common`` reads the choice.
LOG_LEVELS = ("debug", "info", "warning", "error")

#: Every built-in command and the module of ``perpwatch.cli`` that defines it; each of those
#: modules has ``register(cli)``, which adds all of its commands to the group. ``fetch`` and
#: ``convert-coinglass`` are plugin commands (the replay and coinglass plugins: they write replay files).
COMMANDS: dict[str, str] = {
    "validate": "language",
    "test": "language",
    "explain": "language",
    "schema": "language",
    "plugins": "plugins",
    "metrics": "plugins",
    "functions": "functions",
    "run": "run",
    "events": "run",
    "mute": "mute",
    "unmute": "mute",
    "backtest": "backtest",
    "halt": "backtest",
    "resume": "backtest",
    "serve": "serve",
    "sweep": "sweep",
}


class LazyGroup(click.Group):
    """A click group that imports a built-in command's module on first use, and loads the plugin
    registry (whose plugins may add commands, but not replace a built-in one) only when needed."""

    def __init__(self, *args: Any, builtins: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.builtins = dict(builtins)
        self._plugins_adding = False

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if self._plugins_adding and name in self.builtins:
            raise ValueError(f"{name!r} is a built-in command")
        super().add_command(cmd, name)

    def builtin(self, name: str) -> click.Command:
        """The built-in command ``name``, importing its module (which registers its siblings) once."""
        if name not in self.commands:
            importlib.import_module(f"{__package__}.{self.builtins[name]}").register(self)
        return self.commands[name]

    def registry(self, ctx: click.Context) -> Registry:
        """The plugin registry of this invocation, loaded on first use; plugin commands join then."""
        root = ctx.find_root()
        obj = root.ensure_object(dict)
        if "registry" not in obj:
            from perpwatch.api.registry import load_registry

            # the group's --plugin values once parsed; before that (--help is eager), main()'s reading
            paths = (
                root.params["plugin_paths"] if "plugin_paths" in root.params else obj.get("plugin_paths", ())
            )
            obj["registry"] = load_registry(paths)
            self._plugins_adding = True
            try:
                obj["registry"].add_commands(self)
            finally:
                self._plugins_adding = False
        return obj["registry"]

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.registry(ctx)
        return sorted(set(self.builtins) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.builtins:
            return self.builtin(cmd_name)
        registry = self.registry(ctx)  # plugins add their commands
        command = self.commands.get(cmd_name)
        if command is not None and registry.conflicts:
            from perpwatch.cli.common import get_registry

            get_registry(ctx)  # a plugin command fails on a plugin name conflict like any other
        return command


@click.group(cls=LazyGroup, builtins=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perpwatch")
@click.option(
    "--plugin",
    "plugin_paths",
    multiple=True,
    metavar="PATH",
    help="Load a local plugin module (repeatable; also PERPWATCH_PLUGINS).",
)
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only (as --log-level warning).")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Log at this level and above, for every command (run logs at info by default, others at warning).",
)
@click.pass_context
def cli(ctx: click.Context, plugin_paths: tuple[str, ...], quiet: bool, log_level: str | None) -> None:
    """perpwatch: rules over funding, open interest, liquidations and flow."""
    obj = ctx.ensure_object(dict)
    if quiet and log_level is not None and log_level.lower() != "warning":
        raise click.BadParameter(f"-q means --log-level warning, not {log_level}; give one of them")
    chosen = "warning" if quiet else log_level
    if chosen is not None:
        import logging

        from perpwatch.cli.common import install_default_log_handler

        obj["log_level"] = logging.getLevelName(chosen.upper())
        install_default_log_handler(ctx, obj["log_level"])


def _plugin_paths(argv: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            paths.append(arg.split("=", 1)[1])
    return paths


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. The ``--plugin`` paths are read from ``argv`` before click parses
    it, so that ``--help`` (handled first) lists the commands of those plugins too."""
    argv = sys.argv[1:] if argv is None else argv
    cli.main(
        args=argv, prog_name="perpwatch", standalone_mode=True, obj={"plugin_paths": _plugin_paths(argv)}
    )
