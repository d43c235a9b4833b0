"""What the telemetry costs a cycle (by hand, not in CI): a simulated run with it and without it.

    python bench/telemetry_bench.py [--symbols 20] [--rules 10] [--cycles 100] [--repeats 5]

One strategy of ``--rules`` rules over ``--symbols`` symbols, an in-memory source (the test
pipeline's), a FakeClock: ``--cycles`` hourly cycles, each in one transaction. The baseline run
replaces ``Telemetry.cycle_recorded`` and ``Telemetry.save`` with no-ops (nothing recorded, no
snapshot written); the other is the runner as shipped. Both are measured in the same process, in
CPU seconds (``time.process_time``), as the median of ``--repeats`` runs with the spread, alternating
the two. Also printed: the size of the JSON snapshot written each cycle. The machine is shared:
prefer the CPU numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fakes.pipeline import Pipeline  # noqa: E402

from perpwatch.live.telemetry import Telemetry  # noqa: E402


def strategy_text(rules: int) -> str:
    lines = ["version: 1", "name: bench", "interval: 1h", "rules:"]
    for k in range(rules):
        lines += [f"  - name: r{k}", f"    when: funding.close > {0.01 + k * 0.005}", "    severity: low"]
    return "\n".join(lines) + "\nnotify: []\n"


def one_run(symbols: int, rules: int, cycles: int, telemetry: bool) -> tuple[float, int]:
    funding = {f"S{i}": [0.01 + 0.002 * ((j + i) % 20) for j in range(cycles)] for i in range(symbols)}
    saved = (Telemetry.cycle_recorded, Telemetry.save)
    if not telemetry:
        Telemetry.cycle_recorded = lambda self, report, stepped, seconds: None  # type: ignore[method-assign]
        Telemetry.save = lambda self, store: None  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pipe = Pipeline(Path(tmp), funding)
            runner = pipe.runner([pipe.strategy(strategy_text(rules))], pipe.config(()))
            cpu = time.process_time()
            pipe.cycles(runner, range(cycles))
            cpu = time.process_time() - cpu
            size = len(runner.telemetry.to_json())
            pipe.store.close()
    finally:
        Telemetry.cycle_recorded, Telemetry.save = saved  # type: ignore[method-assign]
    return cpu, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--rules", type=int, default=10)
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    base, with_t, size = [], [], 0
    for _ in range(args.repeats):
        base.append(one_run(args.symbols, args.rules, args.cycles, False)[0])
        cpu, size = one_run(args.symbols, args.rules, args.cycles, True)
        with_t.append(cpu)
    for name, xs in (("without telemetry", base), ("with telemetry", with_t)):
        med = statistics.median(xs)
        print(
            f"{name:18} {med / args.cycles * 1000:7.2f} ms CPU per cycle "
            f"(median of {len(xs)}, spread {min(xs) / args.cycles * 1000:.2f}..{max(xs) / args.cycles * 1000:.2f})"
        )
    extra = (statistics.median(with_t) - statistics.median(base)) / args.cycles * 1000
    print(f"telemetry adds {extra:.2f} ms CPU per cycle; snapshot {size} bytes of JSON")
    print(f"({args.symbols} symbols x {args.rules} rules, {args.cycles} cycles; a shared 2-core machine)")


if __name__ == "__main__":
    main()
