"""``perpwatch backtest`` (history through the live plan, with a report) and the kill switch,
``perpwatch halt`` / ``perpwatch resume`` (no new positions while halted; closing stays allowed)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from perpwatch.cli.common import (
    EXIT_BAD_INPUT,
    NumberType,
    get_registry,
    load_strategies,
    param_option,
    parse_params,
    report_errors,
    time_option,
    with_state_options,
)
from perpwatch.common.errors import PerpwatchError, did_you_mean
from perpwatch.common.symbols import symbols_option
from perpwatch.common.timeutil import INTERVALS, format_time

if TYPE_CHECKING:
    from perpwatch.api.registry import Registry
    from perpwatch.backtest.result import BacktestOptions

PROGRESS_MIN_STEPS = 100_000  # (bars x symbols x strategies) from which a progress bar is shown


def register(cli: click.Group) -> None:
    for command in (backtest, halt, resume):
        cli.add_command(command)


@click.command("backtest")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    metavar="PATH",
    help="Replay folder or file (<SYMBOL>_<interval>.csv|.parquet), or CoinGlass snapshot "
    "folder(s); repeat --data to join several snapshots. Read by the plugins' history readers.",
)
@click.option("--from", "start", metavar="TIME", help="First bar traded (earlier bars only warm up).")
@click.option("--to", "end", metavar="TIME", help="Last bar traded.")
@param_option
@click.option(
    "--symbols",
    "symbols",
    multiple=True,
    metavar="SYM[,SYM]",
    help="Symbols (default: the strategy's, else every symbol in the data).",
)
@click.option(
    "--interval",
    type=click.Choice(list(INTERVALS)),
    help="Run the strategy at this interval instead of its own (windows stay in bars).",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), help="Write figures, trades and events."
)
@click.option(
    "--html", "html_path", type=click.Path(dir_okay=False), help="Write an HTML report (needs plotly)."
)
@click.option(
    "--executor",
    "executor_name",
    default="paper",
    show_default=True,
    metavar="NAME",
    help="The executor every strategy trades on: a plugin, or an executors: instance of --config.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    help="Config file whose executors: instance --executor names (read only when given).",
)
@click.option(
    "--balance",
    type=NumberType(minimum=0, min_open=True),
    help="Starting balance, USD.  [default: 10000, or the executor instance's balance_usd]",
)
@click.option(
    "--fee-bps",
    type=NumberType(minimum=0),
    help="Fee per fill.  [default: 5, or the instance's fee_bps]",
)
@click.option(
    "--slippage-bps",
    type=NumberType(minimum=0),
    help="Slippage against every fill.  [default: 2, or the instance's slippage_bps]",
)
@click.option(
    "--funding-interval-hours",
    type=NumberType(integer=True, minimum=1, maximum=24),
    help="Hours between funding settlements (on UTC boundaries).  [default: 8, or the instance's]",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "fast", "walk"]),
    default="auto",
    show_default=True,
    help="auto: the fast path where it gives the walk's result (docs/backtest.md), else the walk; "
    "fast: insist on it (an error says why not); walk: bar by bar through the trading layer.",
)
@click.option(
    "--trades",
    "max_trades",
    default=20,
    show_default=True,
    type=NumberType(integer=True, minimum=0),
    help="Trades listed in the terminal report.",
)
@report_errors
def backtest(
    files: tuple[str, ...],
    data: tuple[str, ...],
    start: str | None,
    end: str | None,
    params: tuple[str, ...],
    symbols: tuple[str, ...],
    interval: str | None,
    json_path: str | None,
    html_path: str | None,
    executor_name: str,
    config_path: str | None,
    balance: float | None,
    fee_bps: float | None,
    slippage_bps: float | None,
    funding_interval_hours: int | None,
    engine: str,
    max_trades: int,
) -> None:
    """Run strategies over history with the live plan and an executor's account (paper unless
    --executor names another); print the report."""
    from perpwatch.backtest.history import load_history, symbols_for
    from perpwatch.backtest.html_report import write_html
    from perpwatch.backtest.report import REPORT_HINT, format_text, write_json
    from perpwatch.backtest.walk import run_backtest

    if html_path:
        try:
            import plotly  # noqa: F401
        except ImportError:
            raise PerpwatchError(REPORT_HINT) from None
    reg = get_registry()
    given = {
        "balance_usd": balance,
        "fee_bps": fee_bps,
        "slippage_bps": slippage_bps,
        "funding_interval_hours": funding_interval_hours,
    }
    options = _options(reg, executor_name, config_path, given)
    options.start = time_option(start, "--from")
    options.end = time_option(end, "--to")
    options.engine = engine
    strategies = load_strategies(files, parse_params(params), interval)
    iv = strategies[0].interval
    if any(s.interval != iv for s in strategies):
        raise PerpwatchError("strategies backtested together must share one interval (or pass --interval)")
    given_symbols = symbols_option(symbols, "--symbols") or None
    wanted = given_symbols
    if wanted is None and all(s.symbols for s in strategies):
        wanted = list(dict.fromkeys(x for s in strategies for x in s.symbols or ()))
    history = load_history(list(data), iv, wanted, reg)
    chosen = symbols_for(strategies, history, given_symbols)
    if interval is not None:
        history.notes.append(f"interval set to {interval} by --interval (windows count bars of {interval})")
    steps = sum(len(v) for v in chosen.values()) * max(len(f) for f in history.frames.values())
    if steps >= PROGRESS_MIN_STEPS:
        bars = max(len(f) for f in history.frames.values())
        with click.progressbar(length=bars, label="backtest", file=sys.stderr) as bar:
            result = run_backtest(strategies, history, chosen, options, bar.update, reg)
    else:
        result = run_backtest(strategies, history, chosen, options, registry=reg)
    click.echo(format_text(result, max_trades))
    if json_path:
        write_json(result, json_path)
        click.echo(f"\nwrote {json_path}")
    if html_path:
        write_html(result, html_path)
        click.echo(f"wrote {html_path}")


def _options(
    reg: Registry, name: str, config_path: str | None, given: dict[str, float | int | None]
) -> BacktestOptions:
    """The executor ``name`` (a --config instance, else a plugin) with its options; each account
    option is the flag when given, else the instance's, else the default."""
    from perpwatch.backtest.result import ACCOUNT_OPTIONS, BacktestOptions
    from perpwatch.live.config import Instance, load_config

    instance = load_config(config_path, reg).executor(name) if config_path else Instance(name, name, {})
    cls = reg.executors.get(instance.plugin)
    if cls is None:
        installed = ", ".join(sorted(reg.executors)) or "none"
        hint = did_you_mean(instance.plugin, reg.executors) or f" (installed: {installed})"
        raise click.BadParameter(
            f"no executor plugin named {instance.plugin!r}{hint}", param_hint="--executor"
        )
    declared = cls.options_schema.get("properties", {})
    flags = {k: v for k, v in given.items() if v is not None}
    for key in flags:
        if key not in declared:
            flag = "--balance" if key == "balance_usd" else "--" + key.replace("_", "-")
            raise click.BadParameter(f"the {instance.plugin} executor has no {key} option", param_hint=flag)
    account = {k: v for k, v in instance.options.items() if k in ACCOUNT_OPTIONS}
    rest = {k: v for k, v in instance.options.items() if k not in ACCOUNT_OPTIONS}
    return BacktestOptions(**{**account, **flags}, executor=instance.plugin, executor_options=rest)


@click.command("halt")
@click.option("--reason", default="", help="Why (kept with the flag, shown in every rejection).")
@with_state_options
@report_errors
def halt(reason: str, config_path: str | None, state_opt: str | None) -> None:
    """Kill switch: open no new positions (closing stays allowed) until `perpwatch resume`."""
    from perpwatch.live.config import find_config, load_config
    from perpwatch.live.risk import halt as set_halt
    from perpwatch.live.state import StateStore

    path = load_config(find_config(config_path)).state if state_opt is None else state_opt
    store = StateStore(path)  # created when absent: halting before the first run must work
    try:
        set_halt(store, reason)
        note = store.get_flag("trading.halted")
    finally:
        store.close()
    click.echo(f"trading halted ({note}) in {path}; closing positions is still allowed")


@click.command("resume")
@with_state_options
@report_errors
def resume(config_path: str | None, state_opt: str | None) -> None:
    """Lift the kill switch: new positions may open again."""
    from perpwatch.cli.run import open_state
    from perpwatch.live.risk import resume as lift

    store = open_state(config_path, state_opt)
    try:
        was = lift(store)
    finally:
        store.close()
    if not was:
        click.echo("trading was not halted", err=True)
        raise SystemExit(EXIT_BAD_INPUT)
    click.echo(f"trading resumed at {format_time(int(time.time() * 1000))}")
