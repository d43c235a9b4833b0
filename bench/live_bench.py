"""Live-runner benchmark (by hand, not in CI): 200 symbols x 5 strategies against the local fake API.

    python bench/live_bench.py [--symbols 200] [--cycles 3] [--latency 0.05] [--rate 300]

The fake CoinGlass API (tests/fakes/market.py) answers each request after ``--latency`` seconds;
the source's rate limiter allows ``--rate`` requests a minute. The limiter runs on a fake clock
(its waits cost no real time): at 300/min a cycle of N requests cannot take less than N/300 min,
which is printed as the rate-limit floor, the real cycle time of such a deployment. The engine's
overhead is the time it spends evaluating, stepping rules and writing state (one transaction),
measured in wall time and in CPU time of the process (evaluations run in a thread of their own;
the fake server idles meanwhile), against the cycle's wall time and against the rate-limit floor. Peak memory: ru_maxrss of the process (the fake server included) and
the Python heap peak of one extra cycle under tracemalloc.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fakes.market import FakeMarket, generate_series  # noqa: E402

from perpwatch.api.registry import load_registry  # noqa: E402
from perpwatch.common.clock import FakeClock  # noqa: E402
from perpwatch.language.compiler import load_strategy  # noqa: E402
from perpwatch.live.config import Config, Instance  # noqa: E402
from perpwatch.live.runner import CycleReport, Runner, RunnerOptions  # noqa: E402
from perpwatch.live.state import StateStore  # noqa: E402

H = 3_600_000
HISTORY = 300

STRATEGIES = {
    "funding-heat": """
let:
  funding_z: zscore(funding.close, 24)
rules:
  - name: hot_funding
    when: funding_z > 2 and pct_change(oi.close, 1) > 0
    severity: high
    message: "{symbol}: funding z {funding_z:.1f}"
    cooldown: 4h
""",
    "oi-surge": """
rules:
  - name: oi_surge
    when: pct_change(oi.close, 4) > 1 and price.close > sma(price.close, 24)
    severity: medium
    message: "{symbol}: OI +{oi.close:.0f}"
""",
    "liq-cascade": """
let:
  liq_z: zscore(liq.total_usd, 48)
rules:
  - name: cascade
    when: liq_z > 3
    severity: critical
    notify_resolved: true
""",
    "squeeze": """
let:
  short_liq_z: zscore(liq.short_usd, 24)
rules:
  - name: squeeze_long
    when:
      all:
        - funding.close < 0.012
        - short_liq_z > 1.5
        - price.close > rolling_max(lag(price.high, 1), 24)
    for: 1
    severity: high
    signal: {side: long, size_usd: 1000}
""",
    "taker-flow": """
rules:
  - name: buyers
    when: taker.buy_pct > 58 and ls.global_long_pct < 50
    severity: low
  - name: sellers
    when: taker.buy_pct < 42
    severity: low
""",
}


def write_strategies(folder: Path) -> list:
    out = []
    for name, body in STRATEGIES.items():
        path = folder / f"{name}.yaml"
        path.write_text(f"version: 1\nname: {name}\ninterval: 1h\nnotify: [file]\n{body}")
        out.append(load_strategy(str(path)))
    return out


async def bench(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="perpwatch-bench-"))
    symbols = [f"C{i:03d}" for i in range(args.symbols)]
    t0 = (int(time.time() * 1000) // H - 10) * H
    start = t0 - HISTORY * H
    market_clock = FakeClock(t0 / 1000)
    market = FakeMarket(latency=args.latency, clock=market_clock, api_key="bench-key").start()
    for k, sym in enumerate(symbols):
        market.set_series(sym, "1h", generate_series(HISTORY + args.cycles + 2, seed=k), start)
    strategies = write_strategies(tmp)
    cfg = Config(
        symbols=symbols,
        sources={
            "coinglass": Instance(
                "coinglass",
                "coinglass",
                {"base_url": market.base_url, "api_key": "bench-key", "rate_limit_per_min": args.rate},
            )
        },
        notifiers={"file": Instance("file", "jsonl", {"path": str(tmp / "events.jsonl")})},
    )
    store = StateStore(str(tmp / "state.db"))
    clock = FakeClock(t0 / 1000)
    runner = Runner.build(
        strategies,
        cfg,
        load_registry(),
        store,
        clock,
        options=RunnerOptions(settle_seconds=5, source_timeout=600),
    )
    reports: list[CycleReport] = []
    requests: list[int] = []
    fake_elapsed: list[float] = []
    for n in range(args.cycles + 1):
        t = (t0 + n * H) / 1000 + 5
        market_clock.now = clock.now = t
        market.reset_requests()
        if n == args.cycles:
            tracemalloc.start()
        report = await runner.run_cycle(t)
        if n == args.cycles:
            heap_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        else:
            reports.append(report)
            requests.append(market.count())
            fake_elapsed.append(clock.now - t)
        await runner.flush(60)
        assert not report.failed, report.failures[:3]
    await runner.aclose()
    market.close()
    store.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(
        f"perpwatch live bench: {args.symbols} symbols x {len(strategies)} strategies (1h), "
        f"fake CoinGlass API, {args.latency * 1000:.0f} ms latency, {args.rate} requests/min "
        "(rate limiter on a fake clock)"
    )
    print(
        f"{'cycle':>5} {'requests':>8} {'wall s':>7} {'fetch s':>7} {'engine s':>8} {'engine cpu s':>12} "
        f"{'loop cpu s':>10} {'events':>6} {'floor s':>8} {'overhead/wall':>13} {'overhead/floor':>14}"
    )
    for i, (r, req) in enumerate(zip(reports, requests, strict=True)):
        floor = req / args.rate * 60
        print(
            f"{i + 1:>5} {req:>8} {r.wall:>7.2f} {r.fetch_wall:>7.2f} {r.process_wall:>8.3f} {r.process_cpu:>12.3f} "
            f"{r.cpu:>10.2f} {r.events:>6} {floor:>8.0f} {r.process_wall / r.wall:>12.1%} "
            f"{r.process_wall / floor:>13.2%}"
        )
    last = reports[-1]
    floor = requests[-1] / args.rate * 60
    print(
        f"steady cycle: {last.wall:.2f} s wall without rate-limit waits ({last.fetch_wall:.2f} s in fetches); "
        f"rate-limit floor {floor:.0f} s; fake-clock time the limiter consumed {fake_elapsed[-1]:.0f} s"
    )
    print(
        f"engine overhead (evaluate + rule steps + state writes, one transaction): {last.process_wall:.3f} s wall, "
        f"{last.process_cpu:.3f} s CPU ({last.commit_wall:.3f} s of the wall in the commit's fsync) = "
        f"{last.process_wall / last.wall:.1%} of the measured cycle, "
        f"{last.process_wall / floor:.2%} of the rate-limited cycle (target < 5 %)"
    )
    print(
        f"process CPU for the whole cycle (sources' JSON decoding, httpx, engine, and the in-process fake "
        f"server): {last.cpu:.2f} s "
        f"= {last.cpu / last.wall:.1%} of the measured cycle, {last.cpu / floor:.2%} of the rate-limited one"
    )
    print(f"per (strategy, symbol): {last.process_wall / (args.symbols * len(strategies)) * 1e6:.0f} us")
    print(
        f"peak memory: ru_maxrss {rss:.0f} MiB (process, fake server included); "
        f"Python heap peak during one cycle {heap_peak / 2**20:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rate", type=int, default=300)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
