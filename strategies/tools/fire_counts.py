"""How often each bundled strategy fires on a year of real BTC 4h history (CoinGlass V4 snapshots).

Run from the repository root::

    python strategies/tools/fire_counts.py            # print the tables
    python strategies/tools/fire_counts.py --write    # also put them into strategies/README.md

The data is not part of the repository: it is read from ``--data`` (default
``../shared/data/coinglass-v4-liquidity-report`` beside the repository; see its ``SOURCES.md``).
Two snapshots are joined, ``20250529`` (2024-11-30 → 2025-05-29) and ``20251114`` (2025-05-18 →
2025-11-14), by the CoinGlass plugin's snapshot conversion (``plugins/coinglass_files.py``, the
one ``perpwatch convert-coinglass`` and ``perpwatch backtest --data SNAPSHOT`` use): each saved
response is mapped onto the metric namespace with the live source's own endpoint table (BTC;
CoinGlass units are the namespace's units), the last row of every file is dropped (it is the bar
that was still open when the snapshot was taken) and where both snapshots hold a bar the newer
one wins. The bars are those from the first to the last that open interest covers (the shortest
of the core series); anything a file lacks on a bar is missing. Note that the liquidation files
are **Binance only**: the absolute dollar thresholds see Binance's (throttled) share of the
market, not all exchanges.

``funding.avg/max/min/spread`` and ``funding.max_exchange/min_exchange`` are derived here from the
per-exchange funding files (``…_fundingRate_ohlc_history_BTC_<EXCHANGE>``, 8 h bars, percent):
the close of the 8 h bar opening at T is the rate known at T + 8 h, so it is put on the 4 h bars
opening at T + 4 h and T + 8 h (the bars that close at or after T + 8 h: never a look-ahead) and
forward-filled no further (a value older than that is missing). Hyperliquid's rate is per hour
and is scaled × 8 to the 8 h basis the others use, as the coinglass source does with
``funding_basis_hours: 8``. Exchanges without data yet (Hyperliquid before 2024-12-24, MEXC
before 2025-03-20) are left out of that bar's figures; fewer than two exchanges → missing.
The live coinglass source reads the *current* rates (``exchange-list``); history uses settled
rates, so live and this table can differ slightly.

Metrics the shared data has no history of (ETF flows, order-book depth: issue 17) are unknown, so
a rule that needs them never fires here; such a rule is listed with "–" and the metric it lacks.
funding-arbitrage's depth check ("liquidity sufficient") is one of them: it is listed twice, as
it is (never fires) and with that one check taken out (``DEPTH_OFF``), which is the spread, OI and
liquidation conditions alone.

Every strategy is run at ``interval: 4h`` (the only intraday interval in the data): the text of
the file is loaded with its ``interval:`` line replaced, so windows count 4 h bars here (a
24-bar window is four days instead of one) and durations (``for: 2h``, ``cooldown: 1h``) are
rounded up to 4 h bars.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from perpwatch.common.timeutil import HOUR, format_time, parse_time
from perpwatch.evaluation.evaluate import evaluate
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.evaluation.rules import walk
from perpwatch.language.compiler import load_strategy
from perpwatch.plugins.coinglass_files import load_snapshots

HERE = Path(__file__).resolve().parent.parent  # strategies/
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coinglass-v4-liquidity-report"
SNAPSHOTS = ("20250529", "20251114")  # oldest first: a newer snapshot overwrites an older one
STEP = 4 * HOUR
CRASH = ("2025-10-09T00:00:00Z", "2025-10-13T00:00:00Z")  # 2025-10-09 → 2025-10-12, whole days
BEGIN, END = "<!-- fire-counts:begin -->", "<!-- fire-counts:end -->"

#: exchange → hours its funding rate covers (scaled to 8 h)
EXCHANGES = {
    "BINANCE": 8,
    "OKX": 8,
    "BYBIT": 8,
    "BITGET": 8,
    "GATE": 8,
    "HTX": 8,
    "MEXC": 8,
    "HYPERLIQUID": 1,
}
FUNDING_BASIS_HOURS = 8


def read_joined(data: Path, rel: str, columns: list[str]) -> dict[int, dict[str, float]]:
    """time → {column: value} over both snapshots, each without its last (open) row; newer wins."""
    rows: dict[int, dict[str, float]] = {}
    for snap in SNAPSHOTS:
        path = data / snap / "futures" / f"{rel}.parquet"
        table = pq.read_table(path).to_pydict()
        times = table["time"][:-1]  # the last row is the bar still open at fetch time
        for k, t in enumerate(times):
            rows[int(t)] = {c: _num(table[c][k]) for c in columns}
    return rows


def _num(v: object) -> float:
    try:
        f = float(v)  # some CoinGlass fields are strings
    except (TypeError, ValueError):
        return float("nan")
    return f if np.isfinite(f) else float("nan")


def load_frame(data: Path) -> Frame:
    """The joined BTC 4h history on the bars open interest covers, with the cross-exchange funding."""
    joined = load_snapshots([data / snap for snap in SNAPSHOTS], "BTC", "4h")
    covered = joined.times[~np.isnan(joined.columns["oi.close"])]
    frame = joined.reindex(np.arange(covered[0], covered[-1] + STEP, STEP, dtype=np.int64))
    _cross_exchange_funding(data, frame)
    return frame


def _cross_exchange_funding(data: Path, frame: Frame) -> None:
    """funding.avg/max/min/spread/max_exchange/min_exchange from the per-exchange 8h files."""
    times = frame.times
    names = list(EXCHANGES)
    rates = np.full((len(names), len(times)), np.nan)
    for j, ex in enumerate(names):
        rows = read_joined(data, f"funding_rate/api_futures_fundingRate_ohlc_history_BTC_{ex}", ["close"])
        t8 = np.asarray(sorted(rows), dtype=np.int64)
        v8 = np.asarray([rows[int(t)]["close"] for t in t8]) * (FUNDING_BASIS_HOURS / EXCHANGES[ex])
        # the newest 8h bar T with T + 4h <= t (its close, at T + 8h, is known when bar t closes)
        k = np.searchsorted(t8, times - STEP, side="right") - 1
        ok = k >= 0
        kk = np.where(ok, k, 0)
        fresh = ok & (times - t8[kk] <= 8 * HOUR)  # used on the bars at T + 4h and T + 8h only
        rates[j] = np.where(fresh, v8[kk], np.nan)
    have = ~np.isnan(rates)
    enough = have.sum(axis=0) >= 2
    with np.errstate(all="ignore"):
        hi = np.where(have, rates, -np.inf)
        lo = np.where(have, rates, np.inf)
        imax, imin = hi.argmax(axis=0), lo.argmin(axis=0)
        vmax, vmin = hi.max(axis=0), lo.min(axis=0)
        avg = np.nansum(rates, axis=0) / have.sum(axis=0)
    c = frame.columns
    c["funding.avg"] = np.where(enough, avg, np.nan)
    c["funding.max"] = np.where(enough, vmax, np.nan)
    c["funding.min"] = np.where(enough, vmin, np.nan)
    c["funding.spread"] = np.where(enough, vmax - vmin, np.nan)
    labels = tuple(n.title() if n not in ("OKX", "HTX", "MEXC") else n for n in names)
    c["funding.max_exchange"] = Cat(np.where(enough, imax, -1).astype(np.int32), labels)
    c["funding.min_exchange"] = Cat(np.where(enough, imin, -1).astype(np.int32), labels)


def strategy_files() -> list[Path]:
    return sorted(HERE.glob("*.yaml"))


#: funding-arbitrage without its depth check: the line that checks it, taken out.
DEPTH_OFF = ("funding-arbitrage", "        - book_usd >= min_depth_usd")


def run_strategy(path: Path, frame: Frame, without: str | None = None):
    """Load ``path`` with ``interval: 4h`` (and the line ``without`` taken out) and walk its rules
    over the whole frame."""
    text = path.read_text()
    text, n = re.subn(r"(?m)^interval:.*$", "interval: 4h", text)
    if not n:
        text = "interval: 4h\n" + text
    if without is not None:
        lines = text.split("\n")
        kept = [line for line in lines if not line.startswith(without)]
        if len(kept) != len(lines) - 1:
            raise SystemExit(f"{path}: the line {without.strip()!r} is not there once")
        text = "\n".join(kept)
    strategy = load_strategy(str(path), text=text)
    ev = evaluate(strategy, frame, "BTC")
    return strategy, ev, walk(strategy, ev, {})


def report(data: Path) -> str:
    frame = load_frame(data)
    first, last = format_time(int(frame.times[0])), format_time(int(frame.times[-1]))
    lo, hi = parse_time(CRASH[0]), parse_time(CRASH[1])
    counts: list[tuple[str, str, str, int, int, float]] = []
    lacking: list[str] = []
    crash: list[str] = []
    runs = [(path, None) for path in strategy_files()]
    runs += [(HERE / f"{DEPTH_OFF[0]}.yaml", DEPTH_OFF[1])]
    for path, without in runs:
        strategy, ev, events = run_strategy(path, frame, without)
        name = strategy.name + (" (depth check off)" if without else "")
        missing = sorted(m for m in strategy.metrics if m not in frame.columns)
        if missing and not without:  # (without the depth check, only the message names the book)
            for rule in strategy.rules:
                lacking.append(
                    f"| {name} | {rule.name} | {rule.severity} | – | – | – | needs {', '.join(missing)} |"
                )
            continue
        kinds = Counter((e.rule, e.kind) for e in events)
        for rule in strategy.rules:
            counts.append(
                (
                    name,
                    rule.name,
                    rule.severity,
                    kinds[(rule.name, "fired")],
                    kinds[(rule.name, "suppressed")],
                    100.0 * float(np.mean(ev.series(rule.cond) == 1)),
                )
            )
        if without:
            continue
        for e in events:
            if lo <= e.time < hi:
                sig = ""
                if e.kind == "resolved":
                    crash.append(f"| {format_time(e.time)} | {strategy.name} | {e.rule} | resolved | |")
                    continue
                if e.signal is not None:
                    size = "?" if e.signal.size_usd is None else f"{e.signal.size_usd:.0f}"
                    sig = f" → {e.signal.side} {size} USD"
                crash.append(
                    f"| {format_time(e.time)} | {strategy.name} | {e.rule} | {e.kind} | {_cell(e.message)}{sig} |"
                )
    bars = len(frame)
    lines = [
        f"BTC, {bars} bars of 4 h, {first} → {last} (CoinGlass V4 snapshots 20250529 + 20251114;",
        "generated by `python strategies/tools/fire_counts.py --write`, do not edit by hand).",
        "",
        "| strategy | rule | severity | fired | suppressed | fired per 30 days | bars true |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    days = bars * STEP / (24 * HOUR)
    for name, rule, sev, fired, supp, share in counts:
        lines.append(
            f"| {name} | {rule} | {sev} | {fired} | {supp} | {fired / days * 30:.1f} | {share:.1f} % |"
        )
    lines += lacking
    lines += [
        "",
        "Events in the 2025-10-10 crash window (2025-10-09 00:00 → 2025-10-12 24:00 UTC; bar open",
        "times; the crash bar is 2025-10-10T20:00Z):",
        "",
        "| bar | strategy | rule | event | message |",
        "|---|---|---|---|---|",
        *(crash or ["| – | – | – | none | |"]),
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_readme(table: str) -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: markers {BEGIN} … {END} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="the coinglass-v4-liquidity-report folder"
    )
    ap.add_argument("--write", action="store_true", help="replace the table in strategies/README.md")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"data folder not found: {args.data} (pass --data)", file=sys.stderr)
        return 2
    table = report(args.data)
    print(table)
    if args.write:
        write_readme(table)
        print(f"\nwritten to {HERE / 'README.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
