"""``perpwatch validate``, ``test``, ``explain`` and ``schema``: the strategy language's commands."""

from __future__ import annotations

import json

import click

from perpwatch.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    get_registry,
    param_option,
    parse_params,
    report_errors,
    strategy_kwargs,
)
from perpwatch.common.errors import ErrorList, LocatedError
from perpwatch.common.symbols import symbol_option
from perpwatch.common.text import printable
from perpwatch.common.timeutil import INTERVALS


def register(cli: click.Group) -> None:
    for command in (validate, test_cmd, explain, schema):
        cli.add_command(command)


@click.command()
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
                click.echo(printable(err.format(), multiline=True), err=True)
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


@click.command("test")
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
                click.echo(printable(err.format(), multiline=True), err=True)
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


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--at", "at", required=True, help="Bar index (test files) or a bar's open time (ISO 8601).")
@click.option("--test", "test_name", help="Which test of a test file (default: the first).")
@click.option(
    "--data",
    "data",
    multiple=True,
    metavar="PATH",
    help="With a strategy file: history, as backtest --data reads it (a replay folder or file, "
    "CoinGlass snapshot folders; repeat --data to join several snapshots).",
)
@click.option("--symbol", "symbol", help="With --data: the symbol (default: the strategy's first).")
@click.option(
    "--interval",
    type=click.Choice(list(INTERVALS)),
    help="With --data: run the strategy at this interval instead of its own, as backtest --interval.",
)
@param_option
@report_errors
def explain(
    file: str,
    at: str,
    test_name: str | None,
    data: tuple[str, ...],
    symbol: str | None,
    interval: str | None,
    params: tuple[str, ...],
) -> None:
    """Every name's value and each condition's truth at one bar.

    FILE is a strategy test file (its series), or a strategy file with --data (history files).
    """
    from perpwatch.backtest.explain import explain_data
    from perpwatch.testing.explain import explain_test, is_test_file

    if is_test_file(file):
        click.echo(explain_test(file, at, test_name, **strategy_kwargs()))
    elif not data:
        raise click.UsageError(
            "FILE is a strategy: give --data PATH (replay files), or pass a strategy test file"
        )
    else:
        overrides = parse_params(params) or None
        reg = get_registry()
        sym = symbol_option(symbol, "--symbol")
        click.echo(
            explain_data(file, data, at, sym, overrides, **strategy_kwargs(), registry=reg, interval=interval)
        )


@click.command()
@click.argument("name", default="strategy", type=click.Choice(["strategy", "strategy-test", "config"]))
@report_errors
def schema(name: str) -> None:
    """Print a JSON Schema (strategy, strategy-test or config)."""
    from perpwatch.language.schemas import load_schema

    click.echo(json.dumps(load_schema(name), indent=2))
