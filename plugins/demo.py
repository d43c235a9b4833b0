"""``perpwatch demo``: the bundled strategies over a SYNTHETIC scenario, offline, in seconds.

The demo writes the scenario of ``demo_scenario.py`` as replay files into a temporary folder,
with a config naming a ``replay`` source, the ``console`` notifier and a ``paper`` executor, and
then runs ``perpwatch run --simulate-from … --simulate-to …`` itself (the very command, parsed
like the command line) with ``derivatives-monitor`` and ``derivatives-state`` (given
``execute: paper``) and a state database in that folder. Afterwards it reads the state database
for a summary (events per rule, paper trades, paper PnL), prints the commands to go further and
removes the folder: nothing is left behind and no network is used.

It is a plugin (registered with ``register_commands``) because it is made of plugins: the
replay file format, the console notifier and the paper executor; the engine knows none of them.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

import click

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.plugin import PluginContext
from perpwatch.cli.common import EXIT_FAILED, report_errors
from perpwatch.common.timeutil import format_time
from perpwatch.language.schemas import resource_dir

from . import demo_scenario as sc
from .paper import PaperExecutor
from .replay import replay_file_name, write_replay_csv

MONITOR = "derivatives-monitor.yaml"
CLASSIFIER = "derivatives-state.yaml"
BALANCE_USD = 10_000


def config_text(data: Path) -> str:
    """The demo's config: the scenario folder as a replay source, the console, a paper account."""
    return f"""\
# perpwatch demo: a SYNTHETIC scenario (not market data), replayed from files
symbols: [{sc.SYMBOL}]
sources:
  synthetic: {{plugin: replay, path: {json.dumps(str(data))}}}
notifiers:
  console: {{}}
executors:
  paper: {{balance_usd: {BALANCE_USD}, fee_bps: 4, slippage_bps: 2}}
"""


NEXT_STEPS = """\
Next steps (the strategies/ folder of a checkout; the installed copy is {strategies}):
  perpwatch validate strategies/*.yaml          check strategy files (errors name file:line:col)
  perpwatch test strategies/tests/*.yaml        run the strategies' own test files
  perpwatch fetch --source coinglass --symbols BTC --interval 1h --from 2025-09-01 --out data/
                                                your history as replay files (needs COINGLASS_API_KEY;
                                                --source binance is keyless, without liquidations)
  perpwatch backtest strategies/derivatives-state.yaml --data data/    the classifier over it
  perpwatch run strategies/derivatives-monitor.yaml                    live (needs the network)
  perpwatch functions; perpwatch metrics        the language's functions and metric names
  docs: docs/demo.md (this scenario), docs/language.md, docs/running.md, docs/backtest.md"""


def _bundled(name: str) -> str:
    return (resource_dir("strategies") / name).read_text(encoding="utf-8")


def prepare(folder: Path, seed: int) -> list[Path]:
    """The scenario's replay file, the config and the two strategy files in ``folder``."""
    data = folder / "data"
    data.mkdir()
    write_replay_csv(data / replay_file_name(sc.SYMBOL, sc.INTERVAL, ".csv"), sc.scenario(seed))
    (folder / "perpwatch.yaml").write_text(config_text(data), encoding="utf-8")  # JSON strings are YAML
    monitor = folder / MONITOR
    monitor.write_text(_bundled(MONITOR), encoding="utf-8")
    classifier = folder / CLASSIFIER
    classifier.write_text(
        _bundled(CLASSIFIER) + "execute: paper    # added by perpwatch demo\n", encoding="utf-8"
    )
    return [monitor, classifier]


def summary(state: Path) -> list[str]:
    """Events per rule, the paper trades and the paper PnL, from the demo's state database."""
    from perpwatch.live.state import StateStore

    store = StateStore(str(state))
    try:
        events = store.events()
        paper = PaperExecutor({"balance_usd": BALANCE_USD}, PluginContext(store=store, state_path=str(state)))
        trades = paper.trades()
        equity = paper.account_equity()
    finally:
        store.close()
    fired = Counter(f"{e.strategy}/{e.rule}" for e in events if e.kind == "fired")
    orders = sum(1 for e in events if e.kind == "order")
    lines = ["Summary of the SYNTHETIC scenario (not market data):", "  alerts per rule:"]
    lines += [f"    {n:3d}  {rule}" for rule, n in sorted(fired.items())] or ["    none"]
    lines.append(f"  paper orders: {orders}; paper trades: {len(trades)}")
    for t in trades:
        until = "open" if t.exit_time is None else f"closed {format_time(t.exit_time)} at {t.exit_price:,.0f}"
        lines.append(
            f"    {t.side:<5} {t.symbol} ${t.size_usd:,.0f} from {format_time(t.entry_time)} at "
            f"{t.entry_price:,.0f}, {until}: net {t.net_pnl:+,.2f} USD"
        )
    lines.append(
        f"  paper PnL (after fees and funding): {equity - BALANCE_USD:+,.2f} USD "
        f"on ${BALANCE_USD:,} (equity {equity:,.2f})"
    )
    return lines


@click.command("demo")
@click.option(
    "--seed",
    default=sc.SEED,
    show_default=True,
    type=click.IntRange(0, 2**63 - 1),
    help="Seed of the synthetic scenario.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the runner's log lines too.")
@report_errors
def demo(seed: int, verbose: bool) -> None:
    """Replay a SYNTHETIC crash scenario through the bundled strategies, offline (a first look).

    A crowded long, a long-squeeze cascade, risk-off and a recovery (hourly, shaped on the
    October 2025 crash, made up from a seed) go through the real `run --simulate-from` path:
    the replay source, the console notifier and a paper account, in a temporary folder.
    """
    from perpwatch.cli.run import run

    click.echo(
        f"perpwatch demo: a SYNTHETIC scenario (seed {seed}; not market data): {sc.SYMBOL} 1h, "
        f"{sc.SIMULATE_FROM} .. {sc.SIMULATE_TO}\n"
        "  crowded long -> long-squeeze cascade -> risk-off -> recovery, shaped on the October 2025 crash\n"
        f"  strategies: derivatives-monitor (alerts) and derivatives-state (paper trades, ${BALANCE_USD:,})\n"
    )
    started, cpu = time.monotonic(), time.process_time()
    runner_log = logging.getLogger("perpwatch")
    level = runner_log.level
    if not verbose:  # the alerts are the point; warnings still show
        runner_log.setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="perpwatch-demo-") as tmp:
        folder = Path(tmp)
        files = prepare(folder, seed)
        args = [
            *map(str, files),
            "--config",
            str(folder / "perpwatch.yaml"),
            "--state",
            str(folder / "demo.db"),
            "--simulate-from",
            sc.SIMULATE_FROM,
            "--simulate-to",
            sc.SIMULATE_TO,
        ]
        try:
            ctx = click.get_current_context()
            with run.make_context("run", args, parent=ctx) as sub:  # parsed like the command line
                run.invoke(sub)
        except SystemExit as e:
            if e.code:
                raise SystemExit(EXIT_FAILED if e.code is True else e.code) from None
        finally:
            runner_log.setLevel(level)
        lines = summary(folder / "demo.db")
    wall, used = time.monotonic() - started, time.process_time() - cpu
    click.echo("")
    click.echo("\n".join(lines))
    click.echo(f"  replayed {sc.BARS - sc.WARMUP} hourly bars in {wall:.1f}s ({used:.1f}s CPU)\n")
    click.echo(NEXT_STEPS.format(strategies=resource_dir("strategies")))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(demo)
