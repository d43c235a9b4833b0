"""The ``perpwatch`` command line. Exit codes: 0 success, 1 a test or check failed, 2 bad input."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from perpwatch import __version__
from perpwatch.common.errors import ErrorList, LocatedError, PerpwatchError

if TYPE_CHECKING:
    from perpwatch.language.compiler import Strategy

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2

#: Modules that add commands to the group (each defines ``register(cli)``), imported lazily.
COMMAND_MODULES: list[str] = ["fetch", "run", "backtest"]


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
@click.option(
    "--plugin",
    "plugin_paths",
    multiple=True,
    metavar="PATH",
    help="Load a local plugin module (repeatable; also PERPWATCH_PLUGINS).",
)
@click.pass_context
def cli(ctx: click.Context, plugin_paths: tuple[str, ...]) -> None:
    """perpwatch: rules over funding, open interest, liquidations and flow."""
    ctx.ensure_object(dict)
    if "registry" not in ctx.obj:
        from perpwatch.api.registry import load_registry

        ctx.obj["registry"] = load_registry(plugin_paths)


def get_registry():
    """The plugin registry of this invocation (loaded once, before the command runs)."""
    ctx = click.get_current_context()
    return ctx.find_root().obj["registry"]


def strategy_kwargs() -> dict[str, Any]:
    """What plugins add to the language: functions and metric names."""
    reg = get_registry()
    return {"functions": reg.functions, "extra_metrics": reg.metric_kinds()}


def load_strategies(
    files: tuple[str, ...], params: dict[str, str], interval: str | None = None
) -> list[Strategy]:
    """Compile each file with the ``--param`` overrides it declares (every one for a single file),
    at ``interval`` when given (windows stay in bars); a param no file declares is an error."""
    from perpwatch.language.compiler import compile_strategy
    from perpwatch.language.yamlsrc import LDict, load_yaml_file

    kwargs = strategy_kwargs()
    used: set[str] = set()
    out = []
    for path in files:
        doc = load_yaml_file(path)
        declared = doc.get("params") if isinstance(doc, LDict) else None
        own = params
        if len(files) > 1:
            own = {k: v for k, v in params.items() if isinstance(declared, dict) and k in declared}
        used.update(own)
        if interval is not None and isinstance(doc, LDict):
            doc["interval"] = interval
        out.append(compile_strategy(doc, path, overrides=own or None, **kwargs))
    unknown = sorted(set(params) - used)
    if unknown:
        raise PerpwatchError(f"--param {', '.join(unknown)}: no strategy given declares it")
    return out


def time_option(value: str | None, hint: str) -> int | None:
    """A time option (ISO 8601 or epoch ms) in epoch ms; None stays None; a bad value is a usage error."""
    if value is None:
        return None
    from perpwatch.common.timeutil import parse_time

    try:
        return parse_time(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=hint) from None


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-v", "--verbose", is_flag=True, help="Print the metrics each strategy needs and its warm-up.")
@click.option("--source", "source", help="Warn about metrics this source plugin does not provide.")
@param_option
@report_errors
def validate(files: tuple[str, ...], verbose: bool, source: str | None, params: tuple[str, ...]) -> None:
    """Check strategy files: schema, expressions, names, windows, templates."""
    from perpwatch.api.registry import provided_by
    from perpwatch.language.compiler import load_strategy

    bad = 0
    overrides = parse_params(params)
    reg = get_registry()
    if source is not None and source not in reg.sources:
        raise click.BadParameter(
            f"no source plugin {source!r} (installed: {', '.join(sorted(reg.sources))})",
            param_hint="--source",
        )
    for path in files:
        try:
            s = load_strategy(path, overrides=overrides or None, **strategy_kwargs())
        except (ErrorList, LocatedError) as e:
            errors = e.errors if isinstance(e, ErrorList) else [e]
            for err in errors:
                click.echo(err.format(), err=True)
            bad += 1
            continue
        click.echo(f"{path}: ok ({len(s.rules)} rules, {len(s.lets)} lets)")
        src = source or s.source
        if src is not None and src in reg.sources:
            missing = sorted(s.metrics - provided_by(reg.sources[src]))
            if missing:
                click.echo(
                    f"{path}: warning: source {src!r} does not provide {', '.join(missing)}; "
                    "conditions that need them stay unknown and never fire",
                    err=True,
                )
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
    from perpwatch.testing.testfile import run_test_file

    passed = failed = 0
    bad_input = False
    for path in files:
        try:
            result = run_test_file(path, **strategy_kwargs())
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
@click.option("--at", "at", required=True, help="Bar index (test files) or a bar's open time (ISO 8601).")
@click.option("--test", "test_name", help="Which test of a test file (default: the first).")
@click.option(
    "--data", "data", type=click.Path(), help="With a strategy file: replay files (folder or file)."
)
@click.option("--symbol", "symbol", help="With --data: the symbol (default: the strategy's first).")
@param_option
@report_errors
def explain(
    file: str, at: str, test_name: str | None, data: str | None, symbol: str | None, params: tuple[str, ...]
) -> None:
    """Every name's value and each condition's truth at one bar.

    FILE is a strategy test file (its series), or a strategy file with --data (history files).
    """
    from perpwatch.testing.explain import explain_data, explain_test, is_test_file

    if is_test_file(file):
        click.echo(explain_test(file, at, test_name, **strategy_kwargs()))
    elif data is None:
        raise click.UsageError(
            "FILE is a strategy: give --data PATH (replay files), or pass a strategy test file"
        )
    else:
        click.echo(explain_data(file, data, at, symbol, parse_params(params) or None, **strategy_kwargs()))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@report_errors
def plugins(as_json: bool) -> None:
    """List every plugin found, where it came from and what it registers."""
    reg = get_registry()
    rows = [
        {"name": p.name, "version": p.version, "origin": p.origin, "registers": p.registers, "error": p.error}
        for p in reg.plugins
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        what = (
            "; ".join(f"{k}: {', '.join(v) if v else '(yes)'}" for k, v in row["registers"].items())
            or "nothing"
        )
        click.echo(f"{row['name']} {row['version']}  [{row['origin']}]  {what}")
        if row["error"]:
            click.echo(f"  error: {row['error']}")
    for conflict in reg.conflicts:
        click.echo(f"error: {conflict}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@report_errors
def metrics(as_json: bool) -> None:
    """The metric namespace: names, units and which sources provide each."""
    cat = get_registry().catalogue()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"name": n, "unit": m.unit, "kind": m.kind, "meaning": m.meaning, "sources": src}
                    for n, (m, src) in cat.items()
                ],
                indent=2,
            )
        )
        return
    width = max(len(n) for n in cat)
    for name, (m, src) in cat.items():
        click.echo(
            f"{name:<{width}}  {m.unit:<28} {', '.join(src) or '(no installed source)':<22} {m.meaning}"
        )


@cli.command()
@click.argument("name", default="strategy", type=click.Choice(["strategy", "strategy-test", "config"]))
@report_errors
def schema(name: str) -> None:
    """Print a JSON Schema (strategy, strategy-test or config)."""
    from perpwatch.language.schemas import load_schema

    click.echo(json.dumps(load_schema(name), indent=2))


def _load_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(cli)


def _plugin_paths(argv: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            paths.append(arg.split("=", 1)[1])
    return paths


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: load plugins (they may add commands), then run the command."""
    from perpwatch.api.registry import load_registry

    argv = sys.argv[1:] if argv is None else argv
    _load_command_modules()
    registry = load_registry(_plugin_paths(argv))
    registry.add_commands(cli)
    cli.main(args=argv, prog_name="perpwatch", standalone_mode=True, obj={"registry": registry})
