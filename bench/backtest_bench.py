"""Backtest benchmark: the fast path against the walk and against the code as it was before it.

Run by hand (not part of the test suite)::

    python bench/backtest_bench.py [--runs 5] [--format csv|parquet] [--baseline-rev ecbe373]
                                   [--sizes 20x8760,200x876] [--seed 1]

Synthetic market-like 1h data (a fat-tailed random walk for the price, OI drifting with it, sticky
funding, bursty liquidations) is written as replay files, then each size is backtested with the
three bundled strategies that trade (derivatives-state, short-squeeze, trend-confirmation) by
three codes, each ``--runs`` times, interleaved (so a change in the machine's load hits all
three alike), every run in a fresh process:

``today``  the tree at ``--baseline-rev`` (the commit before the fast path), exported with
           ``git archive`` and imported ahead of the installed package;
``walk``   the tree at ``--rev`` (default HEAD: the committed code, so edits in progress do not
           leak into a long run; ``--rev worktree`` imports the working tree),
           ``BacktestOptions(engine="walk")``: bar by bar, as today but with the trading layer's
           lighter position lookups;
``fast``   the same tree, the default (``engine="auto"``: the fast path for these strategies).

End to end is what ``perpwatch backtest`` does without ``--json``: load the files, backtest,
compute the figures, format the text report; writing the JSON document is timed apart. Reported:
the median and the spread (min..max) of wall and CPU seconds, the parts (load, backtest, report),
each process's peak memory (max RSS, from ``getrusage``), and the results compared (fast and walk
must agree exactly; today differs in the last bits of the equity, whose sum order changed).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ["derivatives-state", "short-squeeze", "trend-confirmation"]
HOUR = 3_600_000
START = 1_704_067_200_000  # 2024-01-01T00:00Z
CODES = ("today", "walk", "fast")


# --- data -----------------------------------------------------------------------------------------


def synthetic(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ret = rng.standard_t(4, n) * 0.004
    close = (20 + 60_000 * rng.random()) * np.exp(np.cumsum(ret))
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.normal(0, 0.003, (2, n)))
    oi = 1.5e10 * np.exp(np.cumsum(rng.normal(0, 0.002, n) + 0.3 * ret))
    level, funding = 0.01, np.empty(n)
    for i, shock in enumerate(rng.normal(0, 0.003, n)):
        level = 0.01 + 0.97 * (level - 0.01) + shock - 0.2 * ret[i]
        funding[i] = level
    long_liq = np.exp(rng.normal(13, 0.8, n)) * (1 + 200 * np.maximum(-ret, 0))
    short_liq = np.exp(rng.normal(13, 0.8, n)) * (1 + 200 * np.maximum(ret, 0))
    return {
        "price.open": open_,
        "price.high": np.maximum(open_, close) * (1 + wick[0]),
        "price.low": np.minimum(open_, close) * (1 - wick[1]),
        "price.close": close,
        "oi.close": oi,
        "funding.close": np.round(funding, 5),
        "liq.long_usd": long_liq,
        "liq.short_usd": short_liq,
        "liq.total_usd": long_liq + short_liq,
    }


def write_data(folder: Path, symbols: int, n: int, seed: int, fmt: str = "csv") -> None:
    times = START + HOUR * np.arange(n, dtype=np.int64)
    for k in range(symbols):
        sym = f"C{k:03d}"
        cols = synthetic(n, seed + k)
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({"time": times, **{name: np.round(v, 10) for name, v in cols.items()}})
            pq.write_table(table, folder / f"{sym}_1h.parquet")
            continue
        with open(folder / f"{sym}_1h.csv", "w") as fh:
            fh.write("time," + ",".join(cols) + "\n")
            body = np.column_stack([np.asarray(c) for c in cols.values()])
            for t, row in zip(times.tolist(), body.tolist(), strict=True):
                fh.write(f"{t}," + ",".join(f"{v:.10g}" for v in row) + "\n")


def export_tree(rev: str, into: Path) -> Path:
    """The package as it was at ``rev``: ``perpwatch/`` (engine), ``perpwatch/plugins``, schemas."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "engine", "plugins", "schemas"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "engine").rename(into / "perpwatch")
    (into / "plugins").rename(into / "perpwatch" / "plugins")
    (into / "schemas").rename(into / "perpwatch" / "schemas")
    return into


# --- one run, in a fresh process -------------------------------------------------------------------


def one_run(tree: str | None, folder: str, engine: str | None, balance: float, queue) -> None:
    try:
        if tree is not None:
            sys.path.insert(0, tree)  # ahead of the editable install's finder
        queue.put(_run(folder, engine, balance))
    except BaseException as e:  # the parent waits on the queue: always answer
        queue.put({"error": f"{type(e).__name__}: {e}"})
        raise


def _run(folder: str, engine: str | None, balance: float) -> dict:
    import perpwatch
    from perpwatch.backtest.history import load_history, symbols_for
    from perpwatch.backtest.report import format_text, to_json
    from perpwatch.backtest.result import BacktestOptions
    from perpwatch.backtest.walk import run_backtest
    from perpwatch.language.compiler import load_strategy

    c0, t0 = time.process_time(), time.perf_counter()
    ss = [load_strategy(str(REPO / "strategies" / f"{name}.yaml")) for name in STRATEGIES]
    history = load_history([folder], "1h", None)
    t1 = time.perf_counter()
    opts = BacktestOptions(balance_usd=balance)
    if engine is not None:
        opts.engine = engine  # today's options have no engine: its one path
    result = run_backtest(ss, history, symbols_for(ss, history, None), opts)
    t2 = time.perf_counter()
    text = format_text(result)
    t3, c3 = time.perf_counter(), time.process_time()
    to_json(result)
    t4 = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "package": str(Path(perpwatch.__file__).parent),
        "load": t1 - t0,
        "run": t2 - t1,
        "report": t3 - t2,
        "total": t3 - t0,
        "cpu": c3 - c0,
        "json": t4 - t3,
        "peak_mb": usage.ru_maxrss / 1024,  # KB on Linux
        "events": len(result.events),
        "orders": sum(e.kind == "order" for e in result.trading),
        "trades": len(result.trades),
        "net": float(result.stats["net_pnl_usd"]),
        "equity": hashlib.sha256(result.equity.tobytes()).hexdigest(),
        "lines": len(text.splitlines()),
    }


def in_child(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=one_run, args=(*args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    if "error" in out:
        raise SystemExit(f"the benchmark process failed: {out['error']}")
    return out


# --- report ----------------------------------------------------------------------------------------


def median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} s ({min(values):.2f}..{max(values):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="20x8760,200x876", help="SYMBOLSxBARS, comma-separated")
    ap.add_argument("--format", choices=("csv", "parquet"), default="csv")
    ap.add_argument("--baseline-rev", default="ecbe373", help="the commit 'today' is measured at")
    ap.add_argument("--rev", default="HEAD", help="the commit walk and fast are measured at (or 'worktree')")
    ap.add_argument("--codes", default=",".join(CODES), help="which of today, walk, fast to run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--balance",
        type=float,
        default=1_000_000,
        help="starting balance: large enough that no account goes bust, so every code does the same trades",
    )
    args = ap.parse_args()
    codes = [c for c in args.codes.split(",") if c]
    sizes = [tuple(int(x) for x in size.split("x")) for size in args.sizes.split(",")]
    print("perpwatch backtest benchmark: today (the walk before the fast path) vs walk vs fast")
    print(
        f"  strategies:  {', '.join(STRATEGIES)}; synthetic 1h bars (seed {args.seed}), {args.format} files; "
        f"balance {args.balance:,.0f} USD"
    )
    print(
        f"  machine:     {os.cpu_count()} CPUs, shared with other work while measured "
        f"(load average now {os.getloadavg()[0]:.1f}); one process per run, {args.runs} runs each, interleaved"
    )
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.rev], capture_output=True, text=True
    )
    print(f"  today:       the tree at {args.baseline_rev}; walk and fast: {args.rev} ({rev.stdout.strip()})")
    print(
        "               each exported with git archive and imported ahead of the installed package",
        flush=True,
    )
    medians: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tree = str(export_tree(args.baseline_rev, Path(tmp) / "today")) if "today" in codes else None
        current = None if args.rev == "worktree" else str(export_tree(args.rev, Path(tmp) / "current"))
        for symbols, bars in sizes:
            folder = Path(tmp) / f"{symbols}x{bars}"
            folder.mkdir()
            write_data(folder, symbols, bars, args.seed, args.format)
            if (symbols, bars) == sizes[0] and any(c != "today" for c in codes):
                in_child(
                    current, str(folder), None, args.balance
                )  # untimed: numba's kernels compiled and cached once
            runs: dict[str, list[dict]] = {c: [] for c in codes}
            for _ in range(args.runs):
                for code in codes:
                    where = tree if code == "today" else current
                    engine = None if code in ("today", "fast") else "walk"
                    runs[code].append(in_child(where, str(folder), engine, args.balance))
            label = f"{symbols} symbols x {bars:,} bars x {len(STRATEGIES)} strategies"
            print(f"\n{label} ({symbols * bars * len(STRATEGIES):,} strategy-bars)")
            for code in codes:
                rs = runs[code]
                first = rs[0]
                med = statistics.median(r["total"] for r in rs)
                medians[(code, f"{symbols}x{bars}")] = med
                print(f"  {code:5s} end to end {median_spread([r['total'] for r in rs])}, "
                      f"CPU {median_spread([r['cpu'] for r in rs])}")  # fmt: skip
                print(
                    f"        load {statistics.median(r['load'] for r in rs):.2f} s, backtest "
                    f"{statistics.median(r['run'] for r in rs):.2f} s, report {statistics.median(r['report'] for r in rs):.2f} s; "
                    f"JSON apart {statistics.median(r['json'] for r in rs):.2f} s; "
                    f"peak memory {max(r['peak_mb'] for r in rs):,.0f} MB"
                )
                print(
                    f"        {first['events']:,} rule events, {first['orders']:,} orders, {first['trades']:,} trades, "
                    f"net PnL {first['net']:+,.2f} USD"
                )
            if "walk" in runs and "fast" in runs:
                w, f = runs["walk"][0], runs["fast"][0]
                same = all(w[k] == f[k] for k in ("events", "orders", "trades", "net", "equity"))
                print(f"  fast == walk (events, orders, trades, net PnL, equity bits): {same}")
            if "today" in runs and "fast" in runs:
                d, f = runs["today"][0], runs["fast"][0]
                same = all(d[k] == f[k] for k in ("events", "orders", "trades"))
                print(
                    f"  fast vs today: same events, orders and trades: {same}; "
                    f"net PnL differs by {abs(d['net'] - f['net']):.2e} USD"
                )
            for base in ("today", "walk"):
                if base in runs and "fast" in runs:
                    key = f"{symbols}x{bars}"
                    ratio = medians[(base, key)] / medians[("fast", key)]
                    cpu = statistics.median(r["cpu"] for r in runs[base]) / statistics.median(
                        r["cpu"] for r in runs["fast"]
                    )
                    inner = statistics.median(r["run"] for r in runs[base]) / statistics.median(
                        r["run"] for r in runs["fast"]
                    )
                    print(
                        f"  speed-up of fast over {base} (medians): end to end {ratio:.1f}x wall, {cpu:.1f}x CPU; "
                        f"the backtest call alone {inner:.1f}x wall"
                    )
    if "fast" in codes and len(sizes) >= 2:
        a, b = (f"{s}x{n}" for s, n in sizes[:2])
        print(
            f"\nlinear in symbols: fast {b} / {a} end to end = "
            f"{medians[('fast', b)] / medians[('fast', a)]:.2f} (target <= 1.5)"
        )
        if "today" in codes:
            print(f"                   today {b} / {a} = {medians[('today', b)] / medians[('today', a)]:.2f}")


if __name__ == "__main__":
    main()
