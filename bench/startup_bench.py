"""Start-up benchmark: how long the ``perpwatch`` command takes to start, against a bare interpreter.

Run by hand (not part of the test suite), from the repository root::

    python bench/startup_bench.py [--runs 15]

Each command runs ``--runs`` times as a subprocess of this same interpreter (the way the console
script runs it: import ``perpwatch.cli.main`` and call ``main()``), after one untimed run to warm
the file cache. It prints the median and the min-max spread of the wall time of each, and the
median's ratio to ``python -c pass`` (target: ``perpwatch --version`` at most 5 x).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What the console script does (``perpwatch = "perpwatch.cli.main:main"``).
ENTRY = "import sys; from perpwatch.cli.main import main; sys.argv[0] = 'perpwatch'; sys.exit(main())"

COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass", ["-c", "pass"]),
    ("perpwatch --version", ["-c", ENTRY, "--version"]),
    (
        "perpwatch validate strategies/derivatives-monitor.yaml",
        ["-c", ENTRY, "validate", "strategies/derivatives-monitor.yaml"],
    ),
    ("perpwatch --help", ["-c", ENTRY, "--help"]),
]


def timings(args: list[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` runs of the interpreter with ``args`` (one warm-up run first)."""
    cmd = [sys.executable, *args]
    out = []
    for k in range(runs + 1):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr.decode()}")
        if k:
            out.append(elapsed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()

    print("perpwatch start-up benchmark")
    print(f"  {args.runs} runs each of {sys.executable}; median, min-max, median / python -c pass")
    base = None
    for label, argv in COMMANDS:
        runs = timings(argv, args.runs)
        med = statistics.median(runs)
        base = base or med
        print(
            f"  {label:<55} {med * 1000:8.1f} ms  ({min(runs) * 1000:6.1f}-{max(runs) * 1000:6.1f})"
            f"  {med / base:6.1f} x"
        )


if __name__ == "__main__":
    main()
