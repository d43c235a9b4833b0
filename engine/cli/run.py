"""``perpwatch run``, ``events``, ``mute`` and ``unmute``: the live loop and its state.

``run FILE…`` runs strategies until SIGINT/SIGTERM (``--once``: one cycle, exit 1 if a source
failed). ``--simulate-from TIME [--simulate-to TIME]`` replays history as if live: a fake clock
jumps from bar close to bar close instead of sleeping, and a restart with the same state resumes
after the last bar processed. ``events`` lists recent events with their delivery status; ``mute``
and ``unmute`` silence a strategy or one of its rules (optionally for one symbol) for a while.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from perpwatch.cli.common import (
    EXIT_FAILED,
    NumberType,
    config_option,
    get_registry,
    load_strategies,
    log_level,
    param_option,
    parse_params,
    report_errors,
    state_option,
    time_option,
    with_state_options,
)
from perpwatch.common.errors import LocatedError, PerpwatchError
from perpwatch.common.redact import redact
from perpwatch.common.text import printable
from perpwatch.common.timeutil import INTERVALS, format_time

if TYPE_CHECKING:  # the live engine (asyncio, sqlite3, the runner) is imported when a command runs
    from perpwatch.common.clock import Clock
    from perpwatch.language.compiler import Strategy
    from perpwatch.live.config import Config
    from perpwatch.live.runner import CycleReport, Runner, RunnerOptions
    from perpwatch.live.state import StateStore

#: In a simulation, one INFO line sums up this many cycles (warnings are still said as they come).
SIMULATION_LOG_BATCH = 100

#: Environment variables whose values are secrets even when no config names them.
SECRET_ENV = ("COINGLASS_API_KEY", "TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID")


def register(cli: click.Group) -> None:
    for command in (run, events):
        cli.add_command(command)


class RedactFilter(logging.Filter):
    """Replaces every secret in a log record's final message with ***, and makes it printable: one
    line (a message or error body cannot forge the next log line or drive the terminal), followed
    by the traceback's lines when there is one."""

    def __init__(self, secrets: frozenset[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "perpwatch_clean", False):  # the record passed another handler's filter
            return True
        clean = printable(redact(record.getMessage(), self.secrets))
        traces = []
        if record.exc_info:
            import traceback

            traces.append("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:  # formatted by a handler that saw the record first
            traces.append(record.exc_text)
        if record.stack_info:
            traces.append(record.stack_info)
        for trace in traces:
            clean += "\n" + printable(redact(trace, self.secrets).rstrip("\n"), multiline=True)
        record.msg, record.args = clean, None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.perpwatch_clean = True
        return True


def setup_logging(secrets: frozenset[str], log_file: str | None, level: int) -> list[logging.Handler]:
    """Log lines at ``level`` and above to stderr (and ``log_file``), every one passed through the
    redaction filter (these replace the command-wide handler of ``-q``/``--log-level``)."""
    from perpwatch.cli.common import drop_default_log_handler

    drop_default_log_handler()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    redact = RedactFilter(secrets)
    root = logging.getLogger()
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(redact)
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    return handlers


def env_secrets() -> frozenset[str]:
    return frozenset(v for k in SECRET_ENV if (v := os.environ.get(k)))


def state_path(cli_state: str | None, cfg: Config) -> str:
    """``--state`` when given (even an empty one is not "not given"), else the config's."""
    return cfg.state if cli_state is None else cli_state


def banner(runner: Runner, cfg: Config, state: str, simulate: str | None) -> str:
    from perpwatch.live.jobs import EXIT_METRICS
    from perpwatch.live.runner import TRADING_METRICS

    lines = []
    for job in runner.jobs:
        s = job.strategy
        src = job.source
        if src == "binance" and src not in cfg.sources:
            src += " (keyless; set COINGLASS_API_KEY for coinglass)"
        lines.append(
            f"perpwatch run: {s.name} ({s.file}): {s.interval} bars, {len(s.rules)} rules, "
            f"symbols {', '.join(job.symbols)}, source {src}, notify {', '.join(job.notify)}"
            + (f", execute {s.execute}" if s.execute else "")
        )
        missing = sorted(s.metrics - runner.provides[job.source])
        if missing:
            lines.append(
                f"  warning: source {job.source} does not provide {', '.join(missing)}; "
                "rules needing them stay unknown and never fire"
            )
        if s.execute:
            absent = sorted(TRADING_METRICS - runner.provides[job.source] - set(missing))
            if absent:
                lines.append(
                    f"  warning: source {job.source} does not provide {', '.join(absent)}, which "
                    f"execute: {s.execute} needs (no price: every order rejected; no funding rate: "
                    "funding settlements skipped)"
                )
            lacking = sorted(EXIT_METRICS - runner.provides[job.source] - set(missing)) if s.has_exits else []
            if lacking:
                lines.append(
                    f"  warning: source {job.source} does not provide {', '.join(lacking)}, which its "
                    "protective exits are judged on; each bar is judged by the prices it has (the close)"
                )
    lines.append(f"  state: {os.path.abspath(state) if state != ':memory:' else state}")
    if simulate:
        lines.append(f"  {simulate}")
    return "\n".join(lines)


def simulated_start(runner: Runner, start: float) -> float:
    """Where a simulation starts: ``start``, or after the last bar processed when resuming."""
    resume = []
    for job in runner.jobs:
        last = runner.store.last_processed(job.strategy.name)
        resume.append(start if last is None else (last + 2 * job.strategy.step_ms) / 1000)
    return max(start, min(resume))


@click.command("run")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--once", is_flag=True, help="Run one cycle and exit (1 if a source failed).")
@config_option("Config file (default ./perpwatch.yaml).")
@state_option("State database (default from config).")
@param_option
@click.option(
    "--interval",
    type=click.Choice(list(INTERVALS)),
    help="Run the strategies at this interval instead of their own (windows stay in bars), as backtest does.",
)
@click.option("--simulate-from", "sim_from", metavar="TIME", help="Replay history as if live, from TIME.")
@click.option(
    "--simulate-to", "sim_to", metavar="TIME", help="With --simulate-from: stop after TIME (default now)."
)
@click.option("--log-file", type=click.Path(dir_okay=False), help="Also write the log to this file.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (as perpwatch --log-level debug run).")
@click.option(
    "--http",
    "http_opt",
    metavar="HOST:PORT",
    help="Serve /metrics, /healthz and the dashboard from this process (default: the config's "
    "http.listen, if any; perpwatch[http]).",
)
@report_errors
def run(
    files: tuple[str, ...],
    once: bool,
    config_path: str | None,
    state_opt: str | None,
    params: tuple[str, ...],
    interval: str | None,
    sim_from: str | None,
    sim_to: str | None,
    log_file: str | None,
    verbose: bool,
    http_opt: str | None = None,
) -> None:
    """Run strategies live: poll the sources every bar, evaluate, deliver what fires."""
    from perpwatch.common.clock import Clock, FakeClock
    from perpwatch.live.config import find_config, load_config
    from perpwatch.live.runner import RunnerOptions
    from perpwatch.live.state import StateLost

    start_ms = time_option(sim_from, "--simulate-from")
    stop_ms = time_option(sim_to, "--simulate-to")
    start = None if start_ms is None else start_ms / 1000
    stop_at = None if stop_ms is None else stop_ms / 1000
    if stop_at is not None and start is None:
        raise click.BadParameter("needs --simulate-from", param_hint="--simulate-to")
    registry = get_registry()
    cfg = load_config(find_config(config_path), registry)
    secrets = cfg.secrets | env_secrets()
    strategies = load_strategies(files, parse_params(params), interval)
    http = _http_address(http_opt, cfg)
    options = RunnerOptions.from_config(cfg.runner)
    clock: Clock = Clock()
    if start is not None:
        options.settle_seconds = 0.0
        clock = FakeClock(start)
    state = state_path(state_opt, cfg)
    chosen = log_level()
    level = logging.DEBUG if verbose else (chosen if chosen is not None else logging.INFO)
    saved = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore")}
    handlers = setup_logging(secrets, log_file, level)
    try:
        code = _run(strategies, cfg, registry, state, clock, options, secrets, once, start, stop_at, http)
    except StateLost as e:  # the run stopped, having failed (not bad input): one line, exit 1
        click.echo(printable(f"error: {redact(str(e), secrets)}"), err=True)
        code = EXIT_FAILED
    except LocatedError as e:  # still file:line:col: error: ... (once), redacted
        raise LocatedError(e.loc, redact(e.message, secrets)) from None
    except PerpwatchError as e:
        raise PerpwatchError(redact(str(e), secrets)) from None
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
        for name, was in saved.items():  # as before the command (demo runs run in-process)
            logging.getLogger(name).setLevel(was)
    if code:
        raise SystemExit(code)


def _run(
    strategies: list[Strategy],
    cfg: Config,
    registry: Any,
    state: str,
    clock: Clock,
    options: RunnerOptions,
    secrets: frozenset[str],
    once: bool,
    start: float | None,
    stop_at: float | None,
    http: tuple[str, int] | None = None,
) -> int:
    import asyncio

    from perpwatch.live.state import StateStore

    store = StateStore(state, run_lock=True)  # one run per database: a second one stops here
    # Until the loop's own handlers are in place, Ctrl-C interrupts the start-up at once (asyncio's
    # default handler would only cancel at the next await, after building every plugin instance).
    previous = signal.getsignal(signal.SIGINT)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGINT, _interrupt)
    try:
        return asyncio.run(
            _main(strategies, cfg, registry, store, clock, options, secrets, once, start, stop_at, http)
        )
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
        store.close()


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT during the start-up of ``run``: KeyboardInterrupt where it is (exit 130, one line)."""
    raise KeyboardInterrupt


async def _main(
    strategies: list[Strategy],
    cfg: Config,
    registry: Any,
    store: StateStore,
    clock: Clock,
    options: RunnerOptions,
    secrets: frozenset[str],
    once: bool,
    start: float | None,
    stop_at: float | None,
    http: tuple[str, int] | None = None,
) -> int:
    import asyncio
    import contextlib

    from perpwatch.common.clock import FakeClock
    from perpwatch.live import loop
    from perpwatch.live.runner import Runner

    runner = Runner.build(strategies, cfg, registry, store, clock, options=options, secrets=secrets)
    served = None
    try:
        simulate = None
        if start is not None and isinstance(clock, FakeClock):
            clock.now = simulated_start(runner, start)
            end = stop_at if stop_at is not None else time.time()
            simulate = (
                f"simulating from {format_time(int(clock.now * 1000))} to {format_time(int(end * 1000))}"
            )
            stop_at = end
        runner.check_sources()  # a replay file that does not exist: one error now (exit 2)
        click.echo(banner(runner, cfg, store.path, simulate), err=True)
        if http is not None:  # uvicorn in this event loop, beside the runner
            served = await _serve_http(runner, cfg, http)
        if once:  # under the loop's signals: a stop finishes or rolls back the cycle
            report = await loop.run_once(runner, runner.wakeup)
            if report is None:
                return EXIT_FAILED
            _log_cycle(report)
            return EXIT_FAILED if report.failed else 0
        if simulate is None:
            await runner.run_forever(until=stop_at, on_cycle=_log_cycle)
            return 0
        batch = CycleBatch()  # simulated cycles come bar after bar: one line per batch of them
        try:
            await runner.run_forever(until=stop_at, on_cycle=batch.add)
        finally:
            batch.flush()
        return 0
    except asyncio.CancelledError:
        if runner.wakeup.aborted is None:
            raise
        return 128 + runner.wakeup.aborted.value  # a second signal: exit at once (130 for SIGINT)
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # an abort deferred past the last wait
            if served is not None:
                from perpwatch.web.server import stop

                await stop(*served)
            await runner.aclose()


def _http_address(option: str | None, cfg: Config) -> tuple[str, int] | None:
    """``--http`` or the config's ``http.listen`` (then the HTTP extra must be installed), or None."""
    from perpwatch.cli.serve import http_address

    if option is None and not cfg.http.get("listen"):
        return None
    from perpwatch.web.server import require_http

    require_http("perpwatch run --http")
    return http_address(option, cfg)


async def _serve_http(runner: Runner, cfg: Config, address: tuple[str, int]) -> tuple[Any, Any]:
    """The HTTP server over the running process (its store, telemetry, executors, database lock)."""
    from perpwatch.cli.serve import http_settings
    from perpwatch.web import server
    from perpwatch.web.backend import Backend

    backend = Backend(
        runner.store,
        runner.clock,
        telemetry=runner.telemetry,
        executors=runner.executors,
        strategies=[(job.strategy, job.symbols) for job in runner.jobs],
        lock=runner.db_lock,
        **http_settings(cfg),
    )
    http = server.make_server(backend, *address)
    return http, await server.start(http)


def _log_cycle(report: CycleReport, level: int = logging.INFO) -> None:
    bars = ", ".join(f"{name} {format_time(t)}" for name, t in report.bars.items())
    logging.getLogger("perpwatch.live.runner").log(
        level,
        "cycle %s: %d fetches, %d failed, %d events, %d notifications queued, %.2fs",
        bars or "(nothing new)",
        report.fetches,
        len(report.failures),
        report.events,
        report.queued,
        report.wall,
    )


class CycleBatch:
    """The cycle lines of a simulation: one INFO line per ``size`` cycles (and one for the rest);
    each cycle's own line at DEBUG."""

    def __init__(self, size: int = SIMULATION_LOG_BATCH):
        self.size = size
        self.reports: list[CycleReport] = []

    def add(self, report: CycleReport) -> None:
        _log_cycle(report, logging.DEBUG)  # each cycle still has its line with -v
        self.reports.append(report)
        if len(self.reports) >= self.size:
            self.flush()

    def flush(self) -> None:
        reports, self.reports = self.reports, []
        bars = [t for r in reports for t in r.bars.values()]
        if not reports:
            return
        span = f"{format_time(min(bars))} .. {format_time(max(bars))}" if bars else "(nothing new)"
        logging.getLogger("perpwatch.live.runner").info(
            "simulated %s: %d cycles, %d fetches, %d failed, %d events, %d notifications queued, %.2fs",
            span,
            len(reports),
            sum(r.fetches for r in reports),
            sum(len(r.failures) for r in reports),
            sum(r.events for r in reports),
            sum(r.queued for r in reports),
            sum(r.wall for r in reports),
        )


# --- events, mute, unmute -------------------------------------------------------------------------


def open_state(config_path: str | None, state_opt: str | None) -> StateStore:
    """The existing state database (never a new, empty one)."""
    from perpwatch.live.config import find_config, load_config
    from perpwatch.live.state import StateStore

    path = load_config(find_config(config_path)).state if state_opt is None else state_opt
    if path != ":memory:" and not os.path.exists(path):
        raise PerpwatchError(f"no state database at {path} (perpwatch run creates it; or pass --state)")
    return StateStore(path)


@click.command("events")
@click.option(
    "--limit", default=20, show_default=True, type=NumberType(integer=True, minimum=1), help="How many."
)
@click.option("--strategy", help="Only this strategy's events.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_state_options
@report_errors
def events(
    limit: int, strategy: str | None, as_json: bool, config_path: str | None, state_opt: str | None
) -> None:
    """Recent events, newest first, with their delivery status per notifier."""
    store = open_state(config_path, state_opt)
    try:
        rows = store.recent_events(limit, strategy)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no events")
        return
    for row in rows:
        kind = row["kind"].upper()
        text = f"{format_time(row['time'])} {kind:<10} {row['severity']:<8} {row['strategy']}/{row['rule']} {row['symbol']}"
        if row["message"]:
            text += f": {row['message']}"
        click.echo(printable(text))  # messages and errors hold data and server text: one line each
        for d in row["deliveries"]:
            status = d["status"]
            if status == "retrying":
                status += f" ({d['attempts']} tries, next {format_time(int(d['next_try'] * 1000))}): {d['last_error']}"
            click.echo(printable(f"    {d['notifier']}: {status}"))
