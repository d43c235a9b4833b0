"""``perpwatch sweep``: a strategy's params searched (grid, random, TPE) over backtests, with
walk-forward validation, an Optuna study that resumes, and trials on local processes or Dask."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from typing import Any

import click

from perpwatch.cli.common import NumberType, get_registry, load_strategies, report_errors, time_option
from perpwatch.common.errors import ErrorList, LocatedError, PerpwatchError, did_you_mean
from perpwatch.common.symbols import symbols_option
from perpwatch.common.timeutil import INTERVALS

DEFAULT_TRIALS = 50  # random and TPE search, unless --trials


def register(cli: click.Group) -> None:
    cli.add_command(sweep)


@click.command("sweep")
@click.argument("strategy_path", metavar="STRATEGY", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--data", "data", multiple=True, required=True, metavar="PATH", help="History, as for backtest."
)
@click.option(
    "--param",
    "params",
    multiple=True,
    required=True,
    metavar="NAME=SPEC",
    help="A param and its values: a list 1.5,2,2.5, a range LOW:HIGH:STEP (HIGH included when on the "
    "grid), or uniform:LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH[:STEP] (repeatable).",
)
@click.option(
    "--search",
    type=click.Choice(["grid", "random", "tpe"]),
    default="grid",
    show_default=True,
    help="Every combination of lists and ranges, random draws, or Optuna's TPE.",
)
@click.option(
    "--trials",
    type=NumberType(integer=True, minimum=1),
    help=f"Finished trials the study should hold.  [default: the grid's size; {DEFAULT_TRIALS} for random/tpe]",
)
@click.option(
    "--objective",
    default="sharpe",
    show_default=True,
    metavar="FIGURE",
    help="A numeric figure of the backtest report: sharpe, net_pnl_usd, total_return_pct, sortino, ...",
)
@click.option(
    "--direction",
    type=click.Choice(["maximize", "minimize"]),
    help="[default: minimize for drawdowns, fees and rejections, else maximize]",
)
@click.option(
    "--min-trades",
    default=1,
    show_default=True,
    type=NumberType(integer=True, minimum=0),
    help="Trials with fewer in-sample trades are not ranked.",
)
@click.option(
    "--folds",
    default=0,
    show_default=True,
    type=NumberType(integer=True, minimum=0, maximum=100),
    help="Walk-forward: K consecutive segments, each a train then a test window (0: no test windows).",
)
@click.option(
    "--test-fraction",
    default=0.3,
    show_default=True,
    type=NumberType(minimum=0, min_open=True, maximum=0.9),
    help="Share of each fold's bars in its test window (the last bars of the fold).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=NumberType(integer=True, minimum=0),
    help="Seed of random and TPE search and of the grid's order.",
)
@click.option(
    "--study",
    "study_path",
    type=click.Path(dir_okay=False),
    help="SQLite file of the Optuna study (resumable).",
)
@click.option("--study-name", help="[default: the strategy's name and a digest of the sweep's settings]")
@click.option(
    "--workers",
    type=NumberType(integer=True, minimum=1, maximum=1024),
    help="Local worker processes (1: in this process).  [default: the CPU count; with --dask, its threads]",
)
@click.option(
    "--dask", "dask_address", metavar="ADDRESS", help="Run trials on a Dask scheduler (tcp://host:8786)."
)
@click.option(
    "--dask-timeout",
    default=30.0,
    show_default=True,
    type=NumberType(minimum=0, min_open=True),
    help="Seconds to wait for the Dask scheduler.",
)
@click.option("--from", "start", metavar="TIME", help="First bar traded (earlier bars only warm up).")
@click.option("--to", "end", metavar="TIME", help="Last bar traded.")
@click.option("--symbols", "symbols", multiple=True, metavar="SYM[,SYM]", help="Symbols (as for backtest).")
@click.option(
    "--interval", type=click.Choice(list(INTERVALS)), help="Run at this interval (windows stay in bars)."
)
@click.option(
    "--balance", type=NumberType(minimum=0, min_open=True), help="Starting balance, USD.  [default: 10000]"
)
@click.option("--fee-bps", type=NumberType(minimum=0), help="Fee per fill.  [default: 5]")
@click.option("--slippage-bps", type=NumberType(minimum=0), help="Slippage against every fill.  [default: 2]")
@click.option(
    "--top", default=20, show_default=True, type=NumberType(integer=True, minimum=1), help="Rows shown."
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write every trial as JSON.")
@click.option(
    "--html", "html_path", type=click.Path(dir_okay=False), help="Write an HTML report (needs plotly)."
)
@report_errors
def sweep(
    strategy_path: str,
    data: tuple[str, ...],
    params: tuple[str, ...],
    search: str,
    trials: int | None,
    objective: str,
    direction: str | None,
    min_trades: int,
    folds: int,
    test_fraction: float,
    seed: int,
    study_path: str | None,
    study_name: str | None,
    workers: int | None,
    dask_address: str | None,
    dask_timeout: float,
    start: str | None,
    end: str | None,
    symbols: tuple[str, ...],
    interval: str | None,
    balance: float | None,
    fee_bps: float | None,
    slippage_bps: float | None,
    top: int,
    json_path: str | None,
    html_path: str | None,
) -> None:
    """Search STRATEGY's params over backtests of --data; print the trials ranked in-sample, with
    their out-of-sample figures (--folds). See docs/sweep.md."""
    from perpwatch.backtest.result import BacktestOptions
    from perpwatch.research import folds as walk
    from perpwatch.research import trial as trials_mod
    from perpwatch.research.objective import check_objective, default_direction
    from perpwatch.research.pool import make_pool
    from perpwatch.research.ranking import best_line, format_table, ranked, to_json, write_json
    from perpwatch.research.specs import parse_specs
    from perpwatch.research.study import SweepPlan, grid_size, optuna_module, run_sweep

    optuna_module()  # MissingExtra naming perpwatch[sweep] before any work
    if html_path:
        from perpwatch.common.extras import require

        require("plotly", extra="report", purpose="--html")
    specs = parse_specs(params)
    get_registry()  # plugin name conflicts end the command here
    strategy = load_strategies((strategy_path,), {}, interval)[0]
    _check_params(strategy_path, strategy.params, specs)
    if search == "grid":
        loose = [f"{s.name}={s.text}" for s in specs.values() if not s.gridded]
        if loose:
            raise PerpwatchError(
                f"--search grid walks lists and ranges; {', '.join(loose)} is a distribution "
                "(use --search random or tpe, or a range LOW:HIGH:STEP)"
            )
    _probe(strategy_path, specs, interval)
    options = BacktestOptions()
    for key, value in (("balance_usd", balance), ("fee_bps", fee_bps), ("slippage_bps", slippage_bps)):
        if value is not None:
            setattr(options, key, value)
    options.start, options.end = time_option(start, "--from"), time_option(end, "--to")
    chosen = symbols_option(symbols, "--symbols") or None
    root = click.get_current_context().find_root()
    plugin_paths = tuple(root.params.get("plugin_paths") or ())
    setup = trials_mod.Setup(
        os.path.abspath(strategy_path),
        tuple(os.path.abspath(p) for p in data),
        interval,
        tuple(chosen) if chosen else None,
        plugin_paths,
        options,
        (),
    )
    got, _ = trials_mod.loaded(
        setup
    )  # the history, read here first: bad data is said before any worker starts
    bars = walk.traded_bars(got.history, strategy.step_ms, options.start, options.end)
    fold_list = walk.split(bars, folds, test_fraction)
    setup = dataclasses.replace(setup, folds=tuple(fold_list))
    baseline = trials_mod.backtest(setup, {}, fold_list[0].train)
    check_objective(objective, baseline.stats)
    direction = direction or default_direction(objective)
    if search == "grid":
        size = grid_size(specs)
        if trials is not None and trials > size:
            click.echo(
                f"note: --trials {trials} is more than the grid's {size} points; {size} trials", err=True
            )
        trials = min(trials or size, size)
    trials = trials or DEFAULT_TRIALS
    config = _config(setup, specs, search, objective, direction, min_trades, folds, test_fraction, seed)
    digest = hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()[:10]
    name = study_name or f"{strategy.name}-{digest}"
    plan = SweepPlan(
        setup, specs, search, trials, objective, direction, min_trades, seed, study_path, name, config
    )
    pool = make_pool(workers, dask_address, dask_timeout)
    click.echo(_header(plan, strategy.name, fold_list, pool.where))
    try:
        if sys.stderr.isatty():
            with click.progressbar(length=trials, label="sweep", file=sys.stderr) as bar:
                study, progress = run_sweep(plan, pool, lambda number, result: bar.update(1))
        else:
            study, progress = run_sweep(plan, pool)
    except KeyboardInterrupt:
        kept = (
            f"the finished trials are in {study_path}; run the same command to resume"
            if study_path
            else "nothing is kept without --study"
        )
        click.echo(f"sweep: interrupted; {kept}", err=True)
        raise SystemExit(130) from None
    finally:
        pool.close()
    rows = ranked(study, plan)
    done = f"{progress.ran + progress.failed} trials run now"
    if progress.resumed:
        done += f" ({progress.resumed} of them interrupted before, run again)"
    if progress.failed:
        done += f", {progress.failed} failed"
    if progress.already:
        done += f", {progress.already} finished before"
    click.echo(f"{done}; {len(rows)} in the study\n")
    click.echo(format_table(rows, plan, top))
    click.echo("\n" + best_line(rows, plan))
    if json_path:
        write_json(to_json(rows, plan), json_path)
        click.echo(f"wrote {json_path}")
    if html_path:
        from perpwatch.research.html_report import write_html

        write_html(rows, plan, html_path)
        click.echo(f"wrote {html_path}")


def _check_params(path: str, declared: dict[str, Any], specs: dict[str, Any]) -> None:
    """Every swept param must be one the strategy declares."""
    for name in specs:
        if name not in declared:
            listing = ", ".join(declared) or "none"
            hint = did_you_mean(name, declared) or f" (its params: {listing})"
            raise click.BadParameter(f"{path} has no param {name!r}{hint}", param_hint="--param")


def _probe(path: str, specs: dict[str, Any], interval: str | None) -> None:
    """Compile the strategy with each end of every spec (and each listed value), so that a value the
    strategy cannot take is said now, not by a failed trial; a param that needs whole numbers is
    named when a distribution would give it fractions."""
    from perpwatch.research.specs import format_value

    for spec in specs.values():
        for value in spec.probes():
            _compile(path, spec, format_value(value), interval)
        if spec.kind in ("uniform", "log") and spec.high - spec.low > 1:
            mid = round((spec.low + spec.high) / 2) + 0.5
            try:
                _compile(path, spec, format_value(mid), interval)
            except PerpwatchError:
                raise PerpwatchError(
                    f"--param {spec.name}={spec.text}: {spec.name} takes whole numbers only "
                    f"({format_value(mid)} fails); use int:{int(spec.low)}:{int(spec.high)}"
                ) from None


def _compile(path: str, spec: Any, text: str, interval: str | None) -> None:
    try:
        load_strategies((path,), {spec.name: text}, interval)
    except (ErrorList, LocatedError) as e:
        first = e.errors[0] if isinstance(e, ErrorList) else e
        raise PerpwatchError(
            f"--param {spec.name}={spec.text}: the strategy cannot take {spec.name}={text}: {first.format()}"
        ) from None


def _config(setup: Any, specs: dict[str, Any], *rest: Any) -> dict[str, Any]:
    """What the study name is derived from (and what a study is checked against when resumed)."""
    with open(setup.strategy_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    search, objective, direction, min_trades, folds, test_fraction, seed = rest
    o = setup.options
    return {
        "strategy": setup.strategy_path,
        "strategy_sha256": digest,
        "data": list(setup.data),
        "interval": setup.interval,
        "symbols": list(setup.symbols or ()),
        "from": o.start,
        "to": o.end,
        "account": {**o.account(), "executor": o.executor},
        "params": {name: s.text for name, s in specs.items()},
        "search": search,
        "objective": objective,
        "direction": direction,
        "min_trades": min_trades,
        "folds": folds,
        "test_fraction": test_fraction,
        "seed": seed,
    }


def _header(plan: Any, name: str, folds: list[Any], where: str) -> str:
    lines = [
        f"sweep {name}: {plan.search} search, {plan.trials} trials on {where}",
        f"  objective  {plan.objective} ({plan.direction}), at least {plan.min_trades} in-sample trades",
        f"  study      {plan.study_name} in {plan.study_path or 'memory (no --study: not resumable)'}",
    ]
    for spec in plan.specs.values():
        lines.append(f"  param      {spec.name}: {spec.describe()}")
    for k, f in enumerate(folds, start=1):
        if f.test is None:
            lines.append(f"  in-sample  {f.train.label()} (no --folds: no out-of-sample window)")
        else:
            lines.append(f"  fold {k:<5} train {f.train.label()}; test {f.test.label()}")
    return "\n".join(lines) + "\n"
