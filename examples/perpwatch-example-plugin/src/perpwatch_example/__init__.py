"""perpwatch-example-plugin: the hook implementations perpwatch calls.

The package is registered under the ``perpwatch`` entry-point group (see ``pyproject.toml``), so
perpwatch imports it at start-up and calls each ``@hookimpl`` function below once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import click
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Executor, FetchRequest, Notifier, Source, SourceError
from perpwatch.common.timeutil import INTERVALS, format_time, interval_ms

from .executor import FixedFeeExecutor
from .functions import midrange
from .notifier import EventFileNotifier
from .source import NOISE, SyntheticSource

__version__ = "0.2.0"
__all__ = ["EventFileNotifier", "FixedFeeExecutor", "SyntheticSource", "midrange"]


@hookimpl
def register_sources(register: Callable[[type[Source]], None]) -> None:
    register(SyntheticSource)


@hookimpl
def register_notifiers(register: Callable[[type[Notifier]], None]) -> None:
    register(EventFileNotifier)


@hookimpl
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    register(FixedFeeExecutor)


@hookimpl
def register_functions(register: Callable[..., None]) -> None:
    register("midrange", midrange, windows=(1,))  # argument 1 (n) is a window in bars


@click.command("synthetic-sample")
@click.option("--symbol", default="BTC", show_default=True, help="Coin.")
@click.option("--interval", default="4h", show_default=True, type=click.Choice(list(INTERVALS)))
@click.option("--bars", default=5, show_default=True, type=click.IntRange(1, 1000), help="How many bars.")
@click.option("--seed", default=0, show_default=True, help="The source's seed option.")
def synthetic_sample(symbol: str, interval: str, bars: int, seed: int) -> None:
    """Print the newest closed bars of the synthetic source."""
    source = SyntheticSource({"seed": seed})
    step = interval_ms(interval)
    now = int(source.ctx.clock.time() * 1000)
    metrics = frozenset({"price.close", "oi.close", NOISE})
    request = FetchRequest(symbol, interval, metrics, now - (bars + 1) * step, now)
    try:
        frame = asyncio.run(source.fetch(request))
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{'time':<21} {'price.close':>12} {'oi.close':>16} {NOISE:>16}")
    for i in range(max(0, len(frame) - bars), len(frame)):
        price, oi, noise = (float(frame.columns[m][i]) for m in ("price.close", "oi.close", NOISE))
        click.echo(f"{format_time(int(frame.times[i])):<21} {price:>12,.1f} {oi:>16,.0f} {noise:>16.3f}")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(synthetic_sample)
