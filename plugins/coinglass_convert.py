"""``perpwatch convert-coinglass``: saved CoinGlass V4 responses -> replay files, and the hooks of
the CoinGlass plugin's offline side.

``coinglass.py`` (the plugin's entry point) imports this module's hook implementations: the
command (``register_commands``) and the snapshot history reader of ``perpwatch backtest --data
SNAPSHOT`` (``register_history_readers``; the reader is :class:`.coinglass_files.SnapshotReader`).
``coinglass_files`` imports ``coinglass``, so it is imported here only when it is used.
Exit codes: 0 success, 2 bad input.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from perpwatch.api.history import HistoryReader
from perpwatch.api.hookspecs import hookimpl
from perpwatch.cli.common import report_errors
from perpwatch.common.errors import PerpwatchError
from perpwatch.common.symbols import symbol_option, symbols_option
from perpwatch.common.text import printable
from perpwatch.common.timeutil import INTERVALS, format_time, interval_ms

from .replay import metric_order, replay_file_name, write_replay_csv


@click.command("convert-coinglass")
@click.argument("snapshots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--symbol", "symbols", required=True, help="Coin(s), comma-separated: BTC or BTC,ETH.")
@click.option(
    "--interval", default="4h", show_default=True, type=click.Choice(list(INTERVALS)), help="Bar interval."
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files."
)
@click.option(
    "--bare-symbol",
    default="BTC",
    show_default=True,
    help="The coin of responses saved without a _<SYMBOL> suffix (price, long/short, taker).",
)
@click.option(
    "--depth-range",
    type=click.Choice(["0.25", "0.5", "0.75", "1", "2", "3", "5", "10"]),
    default=None,
    help="The range (percent) the saved order-book responses were asked with (they do not record it); "
    "without it they are skipped. 1 and 2 fill depth.*_1pct / _2pct, others depth.bid_usd/ask_usd/imbalance.",
)
@click.option(
    "--funding-interval",
    "funding_intervals",
    multiple=True,
    metavar="EXCHANGE=HOURS",
    callback=lambda ctx, param, value: parse_intervals(value),
    help="The funding interval of an exchange's saved per-exchange funding history (repeat: "
    "--funding-interval binance=8 --funding-interval hyperliquid=1); the responses do not record it, "
    "and without it those files are skipped.",
)
@report_errors
def convert_coinglass(
    snapshots: tuple[str, ...],
    symbols: str,
    interval: str,
    out_dir: str,
    bare_symbol: str,
    depth_range: str | None,
    funding_intervals: dict[str, float],
) -> None:
    """Convert saved CoinGlass V4 responses (snapshot folders of Parquet files) into replay files.

    Several snapshots are joined; where they overlap, the newer one wins. The last (still open)
    bar of every response is dropped. ETF daily flows and net assets are put on the bars causally
    (a day counts once it is over); the order book needs --depth-range.
    """
    from .coinglass_files import describe_gaps, load_snapshots  # imports coinglass.py: not at the top

    coins = symbols_option([symbols], "--symbol")
    bare_symbol = symbol_option(bare_symbol, "--bare-symbol") or "BTC"
    if not coins:
        raise click.BadParameter("name at least one coin", param_hint="--symbol")
    frames = {
        coin: load_snapshots(snapshots, coin, interval, bare_symbol, depth_range, funding_intervals)
        for coin in coins
    }
    empty = [coin for coin, frame in frames.items() if not len(frame)]
    if empty:
        raise PerpwatchError(
            f"no {interval} data for {', '.join(empty)} in {', '.join(snapshots)}"
            + "".join(f"\n  {p}" for coin in empty for p in frames[coin].problems)
        )
    os.makedirs(out_dir, exist_ok=True)
    step = interval_ms(interval)
    for coin, frame in frames.items():
        for note in dict.fromkeys(frame.problems):
            click.echo(printable(f"note: {coin}: {note}"), err=True)
        for line in describe_gaps(frame.times, step):
            click.echo(f"warning: {coin}: {line}", err=True)
        path = os.path.join(out_dir, replay_file_name(coin, interval))
        cols = write_replay_csv(path, frame, metric_order(set(frame.columns)))
        click.echo(
            f"wrote {path}: {len(frame)} bars {format_time(int(frame.times[0]))} .. "
            f"{format_time(int(frame.times[-1]))}, {len(cols)} metrics"
        )


def parse_intervals(values: tuple[str, ...]) -> dict[str, float]:
    """``("binance=8", "Crypto.com=1")`` -> ``{"binance": 8.0, "crypto_com": 1.0}``; a bad one is a
    BadParameter naming it and the form expected."""
    from perpwatch.language.metrics import exchange_slug

    out: dict[str, float] = {}
    for text in values:
        name, sep, hours = text.partition("=")
        try:
            value = float(hours) if sep and name.strip() else float("nan")
        except ValueError:
            value = float("nan")
        if not 0 < value <= 24 * 7:
            raise click.BadParameter(
                f"{text!r}: expected EXCHANGE=HOURS with HOURS above 0 and at most 168, e.g. binance=8",
                param_hint="--funding-interval",
            )
        out[exchange_slug(name)] = value
    return out


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(convert_coinglass)


@hookimpl
def register_history_readers(register: Callable[[type[HistoryReader]], None]) -> None:
    from .coinglass_files import SnapshotReader

    register(SnapshotReader)
