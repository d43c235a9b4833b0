"""Sweep benchmark: trials per second of ``perpwatch sweep`` on the real BTC 4h year.

Run by hand (not part of the test suite)::

    python bench/sweep_bench.py [--trials 16] [--repeats 5] [--folds 2]

Data: the CoinGlass snapshots 20250529 + 20251114 joined (Nov 2024 -> Nov 2025, 2,099 4h bars of
BTC; ``../shared/data``, see its SOURCES.md), ``strategies/derivatives-state.yaml`` at 4h. Each
trial is a random draw of ``fast=int:5:40`` and ``slow=int:40:120`` (seeded: every run sweeps the
same trials) scored on ``--folds`` walk-forward folds, i.e. 2 x folds backtests per trial, recorded
in a fresh SQLite study per run, exactly as ``perpwatch sweep --study`` does (``run_sweep``).

Measured, each ``--repeats`` times (median and min..max):

* the baseline: the same trials' backtests alone, in this process, on a strategy compiled once per
  trial and the data already loaded (``run_backtest`` per window): the work a sweep cannot avoid;
* the sweep on 1 worker (in this process), on 2 and on N (= the CPU count) local processes, and on
  a 2-worker Dask ``LocalCluster`` (processes, one thread each); each pool is started and warmed up
  (every worker has loaded the data) before the timed runs, and its start-up is reported apart;
* trials/s, scaling efficiency (trials/s over workers x the 1-worker trials/s), and the overhead per
  trial beyond its backtests: workers x wall / trials - the baseline's backtest time per trial
  (compiling the strategy, the study's ask/tell in SQLite, shipping params and figures).

The machine is shared: the wall times are of a 2-core machine other work was running on; compare
the columns of one run, not runs of different days, and prefer the CPU columns.

Measured 2026-11-26 on an idle 2-core machine (load average < 1 before the run), 24 trials x 5
runs, 2 folds::

    baseline: backtests alone 25 ms wall per trial (22..29), 25 ms CPU (22..29); 40.78 trials/s on one core
    creating a study (SQLite file, Optuna's tables): 73 ms CPU (66..472), once per sweep
    where                         trials/s  min..max      efficiency  overhead (wall)  overhead (CPU)     sweep CPU/trial  start-up
    1 worker (this process)          22.34  21.35..23.98     100 %           +20 ms  +20 ms (+17..+22)            44 ms     0.1 s
    2 local processes                34.36  25.54..35.86      77 %           +34 ms  +23 ms (+22..+32)            16 ms     1.3 s
    Dask LocalCluster, 2 workers     26.94  23.90..30.56      60 %           +50 ms  +34 ms (+29..+42)            22 ms     2.7 s

(N local workers = the CPU count = 2 here, so the "N" row is the 2-process row.) The CPU a trial
costs beyond its four backtests is ~20 ms locally: the study's ask/suggest/tell in SQLite (15-22 ms
CPU per trial, measured apart with a stub pool over 64 trials; WAL mode: without it each commit
syncs the file and a trial's study writes took 226 ms of wall time on this disk) and compiling the
strategy with the trial's params (~6 ms). On Dask the client's own work in the sweep process adds
~10-15 ms per trial. The sweep process does 16-22 ms of CPU per trial with a pool, so it keeps
about 50 trials/s in flight before it becomes the bottleneck: on this strategy (4 backtests of
~6 ms) the study, not the cores, is the limit; on a strategy whose backtests take seconds (many
symbols, long histories) the overhead is negligible and the workers scale with the cores. An
earlier run while other work held both cores (load ~9) gave 5.2 / 5.3 / 3.7 trials/s: compare
the rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "coinglass-v4-liquidity-report"
STRATEGY = REPO / "strategies" / "derivatives-state.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--no-dask", action="store_true")
    args = ap.parse_args()

    from perpwatch.backtest.result import BacktestOptions
    from perpwatch.backtest.walk import run_backtest
    from perpwatch.research import trial
    from perpwatch.research.folds import split, traded_bars
    from perpwatch.research.pool import DaskPool, Pool, ProcessPool
    from perpwatch.research.specs import parse_specs
    from perpwatch.research.study import SweepPlan, open_study, params_text, run_sweep

    paths = (str(DATA / "20250529"), str(DATA / "20251114"))
    setup = trial.Setup(str(STRATEGY), paths, "4h", None, (), BacktestOptions(), ())
    got, _ = trial.loaded(setup)
    strategy = got.compile(setup, {})
    bars = traded_bars(got.history, strategy.step_ms, None, None)
    setup = dataclasses.replace(setup, folds=tuple(split(bars, args.folds, 0.3)))
    specs = parse_specs(("fast=int:5:40", "slow=int:40:120"))
    windows = [w for f in setup.folds for w in (f.train, f.test) if w is not None]
    cpus = os.cpu_count() or 1
    print(f"sweep bench: {len(bars)} bars of BTC 4h, {args.folds} folds ({len(windows)} backtests per trial), "
          f"{args.trials} trials per run, {args.repeats} runs each; {cpus} CPUs (shared machine)")  # fmt: skip

    creation: list[float] = []

    def sweep_once(pool: Pool, k: int) -> tuple[float, float, float, list[dict[str, str]]]:
        """Wall seconds, this process's CPU seconds, the workers' CPU seconds in the trials, params."""
        with tempfile.TemporaryDirectory() as tmp:
            plan = SweepPlan(setup, specs, "random", args.trials, "sharpe", "maximize", 0, 1,
                             str(Path(tmp) / "s.db"), f"bench-{k}", {})  # fmt: skip
            c = time.process_time()
            open_study(plan)  # created apart: a one-time cost of a sweep (Optuna's schema), not a trial's
            creation.append(time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            study, progress = run_sweep(plan, pool)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            assert progress.ran == args.trials and not progress.failed
            trials = study.get_trials(deepcopy=False)
            worker_cpu = sum(x.user_attrs["result"]["cpu_seconds"] for x in trials)
            return wall, cpu, worker_cpu, [params_text(x.params) for x in trials]

    # the baseline: the backtests of the same trials, nothing else
    trial_params = sweep_once(Pool(), -1)[3]
    base, base_cpu = [], []
    for _ in range(args.repeats):
        compiled = [got.compile(setup, p) for p in trial_params]
        t, c = time.perf_counter(), time.process_time()
        for s in compiled:
            for w in windows:
                opts = dataclasses.replace(setup.options, start=w.start, end=w.end)
                run_backtest([s], got.history, got.symbols, opts, registry=got.registry)
        base.append((time.perf_counter() - t) / args.trials)
        base_cpu.append((time.process_time() - c) / args.trials)
    per_trial, per_trial_cpu = statistics.median(base), statistics.median(base_cpu)
    print(f"\nbaseline: backtests alone {per_trial * 1000:.0f} ms wall per trial "
          f"({min(base) * 1000:.0f}..{max(base) * 1000:.0f}), {per_trial_cpu * 1000:.0f} ms CPU "
          f"({min(base_cpu) * 1000:.0f}..{max(base_cpu) * 1000:.0f}); {1 / per_trial:.2f} trials/s on one core")  # fmt: skip

    configs: list[tuple[str, int, object]] = [("1 worker (this process)", 1, lambda: Pool())]
    for w in sorted({2, cpus}):
        configs.append((f"{w} local processes", w, lambda w=w: ProcessPool(w)))
    if not args.no_dask:
        configs.append(("Dask LocalCluster, 2 workers", 2, None))

    rows = []
    one = None
    for label, workers, make in configs:
        cluster = None
        t = time.perf_counter()
        if make is None:
            from distributed import LocalCluster

            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
            pool = DaskPool(cluster.scheduler_address)
        else:
            pool = make()  # type: ignore[operator]
        warm = [pool.submit(setup, p) for p in trial_params[: 2 * workers]]  # every worker loads the data
        for f in warm:
            pool.result(f)
        startup = time.perf_counter() - t
        runs = [sweep_once(pool, k) for k in range(args.repeats)]
        pool.close()
        if cluster is not None:
            cluster.close()
        walls = [r[0] for r in runs]
        med = statistics.median(walls)
        rate = args.trials / med
        one = one or rate
        overhead = workers * med / args.trials - per_trial
        # CPU: this process's (the study, and the trials themselves with one worker) plus the workers'
        inline = isinstance(pool, Pool) and type(pool) is Pool
        cpu = [(r[1] + (0 if inline else r[2])) / args.trials - per_trial_cpu for r in runs]
        parent = statistics.median(r[1] for r in runs) / args.trials
        rows.append((label, f"{rate:.2f}", f"{args.trials / max(walls):.2f}..{args.trials / min(walls):.2f}",
                     f"{rate / (workers * one) * 100:.0f} %", f"{overhead * 1000:+.0f} ms",
                     f"{statistics.median(cpu) * 1000:+.0f} ms ({min(cpu) * 1000:+.0f}..{max(cpu) * 1000:+.0f})",
                     f"{parent * 1000:.0f} ms", f"{startup:.1f} s"))  # fmt: skip
        print(f"  {label}: {rate:.2f} trials/s", file=sys.stderr)

    print(f"\ncreating a study (SQLite file, Optuna's tables): {statistics.median(creation) * 1000:.0f} ms CPU"
          f" ({min(creation) * 1000:.0f}..{max(creation) * 1000:.0f}), once per sweep, left out of the rows below")  # fmt: skip
    head = ("where", "trials/s (median)", "min..max", "efficiency", "overhead/trial (wall)",
            "overhead/trial (CPU)", "sweep process CPU/trial", "pool start-up")  # fmt: skip
    widths = [max(len(str(r[j])) for r in [head, *rows]) for j in range(len(head))]
    print()
    for k, r in enumerate([head, *rows]):
        print(
            "  "
            + "  ".join(
                str(c).ljust(w) if j == 0 else str(c).rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=False))
            )
        )
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print(
        "\nefficiency: trials/s / (workers x the 1-worker trials/s). overhead/trial (wall): workers x wall /"
        " trials - the baseline's wall per trial; (CPU): CPU seconds of the sweep process and of the workers'"
        " trials, per trial, - the baseline's CPU per trial (compiling, the study's ask/tell in SQLite,"
        " figures; not counted: workers' IPC outside trials). sweep process CPU/trial: the study and the"
        " scheduling (with 1 worker, the trials too)."
    )


if __name__ == "__main__":
    main()
