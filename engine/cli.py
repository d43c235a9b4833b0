"""The ``perpwatch`` command line. Exit codes: 0 success, 1 a test or check failed, 2 bad input."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .errors import ErrorList, LocatedError, PerpwatchError

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2

#: Modules that add commands to the group (each defines ``register(cli)``), imported lazily.
COMMAND_MODULES: list[str] = []


def report_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn perpwatch errors into ``file:line:col: error: ...`` lines and exit 2; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ErrorList as e:
            for err in e.errors:
                click.echo(err.format(), err=True)
        except LocatedError as e:
            click.echo(e.format(), err=True)
        except PerpwatchError as e:
            click.echo(f"error: {e}", err=True)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        except Exception as e:  # a bug, not bad input: still no traceback unless asked for
            if os.environ.get("PERPWATCH_DEBUG"):
                raise
            click.echo(
                f"internal error: {type(e).__name__}: {e} (set PERPWATCH_DEBUG=1 for a traceback)", err=True
            )
            raise SystemExit(3) from None
        raise SystemExit(EXIT_BAD_INPUT)

    return wrapper


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="--param")
        out[name.strip()] = value.strip()
    return out


param_option = click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="Override a strategy param (repeatable)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perpwatch")
def cli() -> None:
    """perpwatch: rules over funding, open interest, liquidations and flow."""


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-v", "--verbose", is_flag=True, help="Print the metrics each strategy needs and its warm-up.")
@param_option
@report_errors
def validate(files: tuple[str, ...], verbose: bool, params: tuple[str, ...]) -> None:
    """Check strategy files: schema, expressions, names, windows, templates."""
    from .compiler import load_strategy

    bad = 0
    overrides = parse_params(params)
    for path in files:
        try:
            s = load_strategy(path, overrides=overrides or None)
        except (ErrorList, LocatedError) as e:
            errors = e.errors if isinstance(e, ErrorList) else [e]
            for err in errors:
                click.echo(err.format(), err=True)
            bad += 1
            continue
        click.echo(f"{path}: ok ({len(s.rules)} rules, {len(s.lets)} lets)")
        if verbose:
            click.echo(
                f"  name:     {s.name}  interval: {s.interval}  symbols: {', '.join(s.symbols or ['(from config)'])}"
            )
            click.echo(f"  metrics:  {', '.join(sorted(s.metrics)) or '(none)'}")
            click.echo(
                f"  warm-up:  {s.warmup} bars before the newest (fetches {s.warmup + 1} bars per cycle)"
            )
            for rule in s.rules:
                extra = f", for {rule.for_bars} bars" if rule.for_bars else ""
                extra += f", cooldown {rule.cooldown_ms // 60000}m" if rule.cooldown_ms else ""
                click.echo(
                    f"  rule {rule.name}: severity {rule.severity}{extra}; uses {', '.join(rule.names)}"
                )
    if bad:
        raise SystemExit(EXIT_BAD_INPUT)


@cli.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@report_errors
def test_cmd(files: tuple[str, ...]) -> None:
    """Run strategy test files (input series, expected events at given bars)."""
    from .testing import run_test_file

    passed = failed = 0
    bad_input = False
    for path in files:
        try:
            result = run_test_file(path)
        except (ErrorList, LocatedError) as e:
            for err in e.errors if isinstance(e, ErrorList) else [e]:
                click.echo(err.format(), err=True)
            bad_input = True
            continue
        for failure in result.failures:
            click.echo(failure.format())
        status = "ok" if not result.failures else "FAILED"
        click.echo(f"{path}: {result.passed} passed, {result.failed_tests} failed  {status}")
        passed += result.passed
        failed += result.failed_tests
    click.echo(f"{passed} passed, {failed} failed")
    if bad_input:
        raise SystemExit(EXIT_BAD_INPUT)
    if failed:
        raise SystemExit(EXIT_FAILED)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--at", "at", required=True, help="Bar index, or a bar's open time (ISO 8601).")
@click.option("--test", "test_name", help="Which test of the file (default: the first).")
@report_errors
def explain(file: str, at: str, test_name: str | None) -> None:
    """Every name's value and each condition's truth at one bar of a test file's series."""
    from .explain import explain_test

    click.echo(explain_test(file, at, test_name))


@cli.command()
@click.argument("name", default="strategy", type=click.Choice(["strategy", "strategy-test", "config"]))
@report_errors
def schema(name: str) -> None:
    """Print a JSON Schema (strategy, strategy-test or config)."""
    from .schemas import load_schema

    click.echo(json.dumps(load_schema(name), indent=2))


def _load_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _load_command_modules()
    try:
        cli.main(args=argv, prog_name="perpwatch", standalone_mode=True)
    except SystemExit:
        raise
    sys.exit(0)
