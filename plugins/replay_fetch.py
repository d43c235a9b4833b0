"""``perpwatch fetch``: history from any source into replay files, for offline backtests.

``fetch`` asks a source (``coinglass``, ``binance``, a config instance, ...) for history in chunks
and writes ``<SYMBOL>_<interval>.csv`` in the replay layout (``replay.py``). The replay plugin adds
the command (``register_commands``): the file format and the command that writes it live together.
Each request to the source has an overall deadline (``--timeout``, by default the config's
``runner.source_timeout``): a chunk that takes longer fails like a source error.
Exit codes: 0 success, 1 a source failed (files are still written with what arrived), 2 bad input.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import numpy as np

from perpwatch.api.interfaces import FetchRequest, PluginContext, Source, SourceError
from perpwatch.cli.common import EXIT_FAILED, config_option, get_registry, report_errors, time_option
from perpwatch.common.errors import PerpwatchError, did_you_mean
from perpwatch.common.numbers import parse_number
from perpwatch.common.symbols import symbols_option
from perpwatch.common.text import printable
from perpwatch.common.timeutil import INTERVALS, format_time, interval_ms
from perpwatch.evaluation.frame import Frame, join_frames

from .replay import metric_order, replay_file_name, write_replay_csv

DEFAULT_CHUNK_BARS = 1000


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def bar_chunks(start: int, end: int, step: int, bars: int) -> list[tuple[int, int]]:
    """(first open, last open) of consecutive windows of at most ``bars`` bars covering [start, end]."""
    first = -(-start // step) * step
    out = []
    while first <= end:
        last = min(first + (bars - 1) * step, end - end % step)
        out.append((first, last))
        first = last + step
    return out


@dataclass
class SymbolResult:
    """What arrived for one symbol: the chunks' frames, failures and notes."""

    frames: list[Frame] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def frame(self) -> Frame:
        return join_frames(self.frames)


def build_source(name: str, config_path: str | None) -> tuple[Source, Any]:
    """The source instance ``name`` from the config (or the plugin of that name with defaults)."""
    from perpwatch.live.config import find_config, load_config

    reg = get_registry()
    cfg = load_config(find_config(config_path), reg)
    inst = cfg.source(name)
    cls = reg.sources.get(inst.plugin)
    if cls is None:
        installed = ", ".join(sorted(set(reg.sources) | set(cfg.sources))) or "none"
        hint = did_you_mean(name, set(reg.sources) | set(cfg.sources)) or f" (available: {installed})"
        raise click.BadParameter(f"no source {name!r}{hint}", param_hint="--source")
    clash = [c for c in reg.conflicts if c.startswith(f"source {inst.plugin!r}")]
    if clash:
        raise PerpwatchError("; ".join(clash))
    try:
        source = cls(inst.options, PluginContext(secrets=cfg.secrets))
    except (ValueError, TypeError, SourceError) as e:
        raise PerpwatchError(cfg.redact(f"source {name!r}: {e}")) from None
    return source, cfg


@click.command()
@click.option(
    "--source",
    "source_name",
    required=True,
    help="A source: a config instance or a plugin (coinglass, binance).",
)
@click.option("--symbols", help="Comma-separated coins, e.g. BTC,ETH (default: the config's symbols).")
@click.option("--interval", required=True, type=click.Choice(list(INTERVALS)), help="Bar interval.")
@click.option("--from", "start", required=True, help="First bar: ISO 8601 (2025-01-01) or epoch ms.")
@click.option("--to", "end", help="End, exclusive: bars that open before it (default: now).")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files."
)
@click.option(
    "--metrics",
    help="Comma-separated subset of the source's metrics (default: all it provides that have a history; "
    "current snapshots such as funding.max, options.* and liqmap.* only on request).",
)
@config_option("Config file (default ./perpwatch.yaml).")
@click.option(
    "--chunk-bars",
    default=DEFAULT_CHUNK_BARS,
    show_default=True,
    type=click.IntRange(1),
    help="Bars per request to the source.",
)
@click.option(
    "--timeout",
    callback=lambda ctx, param, value: None if value is None else _seconds(value),
    metavar="SECONDS",
    help="Seconds one request to the source may take, its retries included "
    "(default: the config's runner.source_timeout, 60).",
)
@report_errors
def fetch(
    source_name: str,
    symbols: str | None,
    interval: str,
    start: str,
    end: str | None,
    out_dir: str,
    metrics: str | None,
    config_path: str | None,
    chunk_bars: int,
    timeout: float | None,
) -> None:
    """Fetch history from a source into <SYMBOL>_<interval>.csv replay files, for offline backtests.

    Bars that open in [--from, --to) are fetched in chunks of --chunk-bars, each within --timeout;
    each symbol's file holds the metrics the source provides with a history (or --metrics), empty
    cells where a value is unknown.
    """
    first = time_option(start, "--from")
    stop = time_option(end, "--to") if end else int(time.time() * 1000)
    assert first is not None and stop is not None  # --from is required; --to is given or now
    if stop <= first:
        raise click.BadParameter(f"--to must be after --from ({format_time(first)})", param_hint="--to")
    step = interval_ms(interval)
    source, cfg = build_source(source_name, config_path)
    provided = source.provides(source.options)
    wanted = _split(metrics)
    for name in wanted:
        if name not in provided:
            hint = did_you_mean(name, provided, n=1) or f" (it provides: {', '.join(metric_order(provided))})"
            raise click.BadParameter(
                f"source {source_name!r} does not provide {name!r}{hint}", param_hint="--metrics"
            )
    snapshots = frozenset(getattr(source, "snapshot_metrics", frozenset()))  # current values, no history
    names = metric_order(set(wanted) if wanted else provided - snapshots)
    coins = symbols_option([symbols or ""], "--symbols") or list(cfg.symbols)
    windows = bar_chunks(first, stop - 1, step, chunk_bars)
    if not windows:
        raise click.BadParameter("no bar opens in that range", param_hint="--from/--to")
    os.makedirs(out_dir, exist_ok=True)

    if timeout is None:
        from perpwatch.live.jobs import RunnerOptions

        timeout = RunnerOptions.from_config(cfg.runner).source_timeout
    results = asyncio.run(
        _fetch_all(source, coins, interval, frozenset(names), windows, cfg.redact, float(timeout))
    )
    failed = False
    for coin in coins:
        res = results[coin]
        for note in dict.fromkeys(res.notes):
            click.echo(printable(f"note: {coin}: {note}"), err=True)
        for failure in dict.fromkeys(res.failures):
            click.echo(printable(f"error: {coin}: {failure}"), err=True)
        failed |= bool(res.failures)
        if not res.frames:
            continue
        frame = res.frame()
        cols = names if wanted else [n for n in names if _has_values(frame, n)]
        empty = [n for n in names if not _has_values(frame, n)]
        if empty:
            click.echo(f"warning: {coin}: no data for {', '.join(empty)}", err=True)
        path = os.path.join(out_dir, replay_file_name(coin, interval))
        write_replay_csv(path, frame, cols)
        span = (
            f"{format_time(int(frame.times[0]))} .. {format_time(int(frame.times[-1]))}"
            if len(frame)
            else "no bars"
        )
        gaps = " (with gaps: see the errors above)" if res.failures else ""
        click.echo(f"wrote {path}: {len(frame)} bars {span}, {len(cols)} metrics{gaps}")
    if failed:
        raise SystemExit(EXIT_FAILED)


def _seconds(text: str) -> float:
    """``--timeout``: a positive, finite number of seconds, as a trader types it."""
    try:
        seconds = float(parse_number(text))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--timeout") from None
    if seconds <= 0:
        raise click.BadParameter(f"{text} is not a positive number of seconds", param_hint="--timeout")
    return seconds


def _has_values(frame: Frame, name: str) -> bool:
    col = frame.columns.get(name)
    if col is None:
        return False
    if isinstance(col, np.ndarray):
        return bool((~np.isnan(col)).any())
    return bool((col.codes >= 0).any())


async def _fetch_all(
    source: Source,
    coins: list[str],
    interval: str,
    metrics: frozenset[str],
    windows: list[tuple[int, int]],
    redact: Callable[[str], str],
    deadline: float,
) -> dict[str, SymbolResult]:
    """Every (symbol, window) in turn, with a progress bar; a chunk that fails outright (or takes
    longer than ``deadline`` seconds) stops that symbol."""
    results = {coin: SymbolResult() for coin in coins}
    expected = metrics & source.provides(source.options)
    try:
        with click.progressbar(
            length=len(coins) * len(windows),
            label=f"fetching {source.name}",
            file=sys.stderr,
        ) as bar:
            for coin in coins:
                res = results[coin]
                for done, (lo, hi) in enumerate(windows):
                    request = FetchRequest(coin, interval, metrics, lo, hi)
                    try:
                        frame = await asyncio.wait_for(source.fetch(request), deadline)
                        failure = None
                    except SourceError as e:
                        failure = str(e)
                    except TimeoutError:
                        failure = f"timed out after {deadline:g} s (--timeout)"
                    if failure is not None:
                        res.failures.append(redact(f"{format_time(lo)} .. {format_time(hi)}: {failure}"))
                        bar.update(len(windows) - done)  # the rest of this symbol's chunks
                        break
                    bar.update(1)
                    absent = sorted(expected - frame.columns.keys()) if len(frame) else []
                    why = [p for p in frame.problems if any(m in p for m in absent)]
                    res.notes.extend(redact(p) for p in frame.problems if p not in why)
                    if absent:
                        what = "; ".join(why) or f"{', '.join(absent)} missing"
                        res.failures.append(redact(f"{format_time(lo)} .. {format_time(hi)}: {what}"))
                    res.frames.append(frame)
    finally:
        await source.aclose()
    return results
