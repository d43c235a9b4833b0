"""``perpwatch backtest`` (history through the live plan, with a report) and the kill switch,
``perpwatch halt`` / ``perpwatch resume`` (no new positions while halted; closing stays allowed)."""

from __future__ import annotations

import sys
import time

import click

from perpwatch.cli.main import (
    EXIT_BAD_INPUT,
    get_registry,
    load_strategies,
    param_option,
    parse_params,
    report_errors,
    time_option,
)
from perpwatch.common.errors import PerpwatchError
from perpwatch.common.timeutil import INTERVALS, format_time

PROGRESS_MIN_STEPS = 100_000  # (bars x symbols x strategies) from which a progress bar is shown


def register(cli: click.Group) -> None:
    for command in (backtest, halt, resume):
        cli.add_command(command)


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@click.command("backtest")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    metavar="PATH",
    help="Replay folder or file (<SYMBOL>_<interval>.csv|.parquet), or CoinGlass snapshot "
    "folder(s); repeat --data to join several snapshots.",
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
    "--balance",
    default=10_000.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Starting balance, USD.",
)
@click.option("--fee-bps", default=5.0, show_default=True, type=click.FloatRange(min=0), help="Fee per fill.")
@click.option(
    "--slippage-bps",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Slippage against every fill.",
)
@click.option(
    "--funding-interval-hours",
    default=8,
    show_default=True,
    type=click.IntRange(1, 24),
    help="Hours between funding settlements (on UTC boundaries).",
)
@click.option(
    "--trades",
    "max_trades",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
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
    balance: float,
    fee_bps: float,
    slippage_bps: float,
    funding_interval_hours: int,
    max_trades: int,
) -> None:
    """Run strategies over history with the live plan and a paper account; print the report."""
    from perpwatch.backtest.report import REPORT_HINT, format_text, write_html, write_json
    from perpwatch.backtest.run import BacktestOptions, load_history, run_backtest, symbols_for

    if html_path:
        try:
            import plotly  # noqa: F401
        except ImportError:
            raise PerpwatchError(REPORT_HINT) from None
    get_registry()
    options = BacktestOptions(
        balance_usd=balance,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
        funding_interval_hours=funding_interval_hours,
        start=time_option(start, "--from"),
        end=time_option(end, "--to"),
    )
    strategies = load_strategies(files, parse_params(params), interval)
    iv = strategies[0].interval
    if any(s.interval != iv for s in strategies):
        raise PerpwatchError("strategies backtested together must share one interval (or pass --interval)")
    wanted = _split(symbols) or None
    if wanted is None and all(s.symbols for s in strategies):
        wanted = list(dict.fromkeys(x for s in strategies for x in s.symbols or ()))
    history = load_history(list(data), iv, wanted)
    chosen = symbols_for(strategies, history, _split(symbols) or None)
    if interval is not None:
        history.notes.append(f"interval set to {interval} by --interval (windows count bars of {interval})")
    steps = sum(len(v) for v in chosen.values()) * max(len(f) for f in history.frames.values())
    if steps >= PROGRESS_MIN_STEPS:
        bars = max(len(f) for f in history.frames.values())
        with click.progressbar(length=bars, label="backtest", file=sys.stderr) as bar:
            result = run_backtest(strategies, history, chosen, options, progress=bar.update)
    else:
        result = run_backtest(strategies, history, chosen, options)
    click.echo(format_text(result, max_trades))
    if json_path:
        write_json(result, json_path)
        click.echo(f"\nwrote {json_path}")
    if html_path:
        write_html(result, html_path)
        click.echo(f"wrote {html_path}")


@click.command("halt")
@click.option("--reason", default="", help="Why (kept with the flag, shown in every rejection).")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (for its state path)."
)
@click.option("--state", "state_opt", type=click.Path(dir_okay=False), help="State database.")
@report_errors
def halt(reason: str, config_path: str | None, state_opt: str | None) -> None:
    """Kill switch: open no new positions (closing stays allowed) until `perpwatch resume`."""
    from perpwatch.live.config import find_config, load_config
    from perpwatch.live.risk import halt as set_halt
    from perpwatch.live.state import StateStore

    path = state_opt or load_config(find_config(config_path)).state
    store = StateStore(path)  # created when absent: halting before the first run must work
    try:
        set_halt(store, reason)
        note = store.get_flag("trading.halted")
    finally:
        store.close()
    click.echo(f"trading halted ({note}) in {path}; closing positions is still allowed")


@click.command("resume")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (for its state path)."
)
@click.option("--state", "state_opt", type=click.Path(dir_okay=False), help="State database.")
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
