"""Backtests: a history through the same plan, rule state machine and trading layer as ``run``.

Each (strategy, symbol) is evaluated once over the whole history, column-wise (``evaluate``);
then the bars are walked in time order and, at every bar, exactly what the live runner does
happens: every rule of every strategy steps (``rules.step`` / ``build_event``), then
:meth:`Trading.on_bar` runs for each (strategy, symbol) with a ``paper`` executor on an in-memory
state store. The one difference is the fill: a market order decided on bar *i*'s close fills at
bar *i + 1*'s open (``price.open``; live fills at the latest price, bar *i*'s close). A signal on
the last bar has no next bar and does not fill.

Bars are put on a regular grid of the interval; a bar the data lacks is unknown (as live).
Every strategy is traded on the paper account whatever its ``execute:`` names.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from perpwatch.api.interfaces import PluginContext
from perpwatch.common.clock import FakeClock
from perpwatch.common.errors import PerpwatchError
from perpwatch.common.timeutil import DAY, INTERVALS, format_time
from perpwatch.evaluation.evaluate import Evaluation, evaluate
from perpwatch.evaluation.events import Event
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.evaluation.rules import RuleState, build_event, step
from perpwatch.language.compiler import Strategy
from perpwatch.live.state import StateStore
from perpwatch.live.trading import Trading
from perpwatch.plugins.paper import PaperExecutor

#: Columns a backtest cannot do without: fills at the next open, marks at the close.
PRICE_COLUMNS = ("price.open", "price.close")


@dataclass
class BacktestOptions:
    balance_usd: float = 10_000.0
    fee_bps: float = 5.0
    slippage_bps: float = 2.0
    funding_interval_hours: int = 8
    start: int | None = None  # first bar traded (open time, ms); earlier bars only warm up
    end: int | None = None  # last bar traded


@dataclass
class History:
    """Per-symbol frames at one interval, where they came from, and notes worth showing."""

    frames: dict[str, Frame]
    interval: str
    source: str
    notes: list[str] = field(default_factory=list)


@dataclass
class TradeRecord:
    strategy: str
    symbol: str
    side: str
    size_usd: float
    qty: float
    entry_time: int  # fill time (ms)
    entry_price: float
    exit_time: int | None
    exit_price: float | None
    fees: float
    funding: float
    pnl: float  # gross: realised, or unrealised at the last mark for an open trade
    net_pnl: float  # after fees and funding
    status: str  # closed | open
    entry_rule: str | None = None
    exit_rule: str | None = None
    entry_bar: int | None = None  # the bar whose signal opened it
    exit_bar: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        for key in ("entry_time", "exit_time", "entry_bar", "exit_bar"):
            d[f"{key}_iso"] = format_time(d[key]) if d[key] is not None else None
        return d


@dataclass
class BacktestResult:
    strategies: list[Strategy]
    symbols: dict[str, list[str]]  # strategy -> symbols traded
    history: History
    options: BacktestOptions
    step_ms: int
    times: np.ndarray  # bar open times walked
    equity: np.ndarray  # account equity after each bar (its close, after its orders filled)
    exposed: np.ndarray  # a position was open after the bar
    closes: dict[str, np.ndarray]  # symbol -> price.close over ``times``
    events: list[Event]  # fired / suppressed / resolved, in bar order
    trading: list[Event]  # order / rejected, in bar order
    trades: list[TradeRecord]
    funding_settlements: int
    funding_skipped: int
    assumptions: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def equity_times(self) -> np.ndarray:
        """The time of each equity point: the start, then each bar's close."""
        return np.concatenate([self.times[:1], self.times + self.step_ms])

    @property
    def equity_curve(self) -> np.ndarray:
        """The starting balance, then the equity after each bar."""
        return np.concatenate([[self.options.balance_usd], self.equity])


# --- data ------------------------------------------------------------------------------------------


def load_history(paths: Sequence[str], interval: str, symbols: Sequence[str] | None) -> History:
    """Replay files (a folder or one file) or CoinGlass snapshot folders (joined) -> frames per symbol."""
    from perpwatch.plugins.replay import _NAME, load_replay_file, parse_file_name

    for p in paths:
        if not os.path.exists(p):
            raise PerpwatchError(f"--data {p}: no such file or folder")
    wanted = [s.upper() for s in symbols] if symbols else None
    if len(paths) == 1 and os.path.isfile(paths[0]):
        held = parse_file_name(paths[0])
        if held is None:
            raise PerpwatchError(
                f"--data {paths[0]}: a replay file is named <SYMBOL>_<interval>.csv or .parquet"
            )
        sym, iv = held[0].upper(), held[1]
        if iv != interval:
            raise PerpwatchError(
                f"--data {paths[0]} holds {iv} bars but the strategy runs on {interval} (use --interval {iv})"
            )
        if wanted and wanted != [sym]:
            raise PerpwatchError(f"--data {paths[0]} holds only {sym}")
        return _checked(History({sym: load_replay_file(paths[0])}, interval, f"replay file {paths[0]}"))
    replay = [] if len(paths) > 1 else [n for n in sorted(os.listdir(paths[0])) if _NAME.match(n)]
    if replay:
        return _replay_folder(paths[0], replay, interval, wanted, load_replay_file, parse_file_name)
    return _snapshots(paths, interval, wanted)


def _replay_folder(folder, names, interval, wanted, load, parse) -> History:
    files: dict[str, list[str]] = {}
    intervals: set[str] = set()
    for name in names:
        sym, iv = parse(name)
        intervals.add(iv)
        if iv == interval:
            files.setdefault(sym.upper(), []).append(os.path.join(folder, name))
    if not files:
        raise PerpwatchError(
            f"--data {folder}: no {interval} files (<SYMBOL>_{interval}.csv); it has "
            f"{', '.join(sorted(intervals))} bars (use --interval)"
        )
    for sym, found in files.items():
        if len(found) > 1:
            raise PerpwatchError(f"--data: both {' and '.join(found)} hold {sym} {interval}; keep one")
    missing = [s for s in wanted or () if s not in files]
    if missing:
        raise PerpwatchError(
            f"--data {folder}: no {interval} file for {', '.join(missing)} (it has {', '.join(sorted(files))})"
        )
    chosen = wanted or sorted(files)
    frames = {sym: load(files[sym][0]) for sym in chosen}
    return _checked(History(frames, interval, f"replay folder {folder}"))


def _snapshots(paths: Sequence[str], interval: str, wanted: list[str] | None) -> History:
    from perpwatch.plugins.coinglass_files import describe_gaps, find_files, load_snapshots

    for p in paths:
        if not os.path.isdir(p) or not any(Path(p).rglob("*.parquet")):
            raise PerpwatchError(
                f"--data {p}: neither replay files (<SYMBOL>_<interval>.csv) nor a CoinGlass snapshot folder"
            )
    frames: dict[str, Frame] = {}
    notes: list[str] = []
    for sym in wanted or ["BTC", "ETH"]:
        if not any(find_files(p, sym) for p in paths):
            if wanted:
                raise PerpwatchError(f"--data: no CoinGlass responses for {sym} in {', '.join(paths)}")
            continue
        frame = load_snapshots(paths, sym, interval)
        has_price = all(c in frame.columns and not np.isnan(frame.columns[c]).all() for c in PRICE_COLUMNS)
        if not has_price:
            if wanted:
                raise PerpwatchError(f"--data: the snapshots hold no {interval} price bars for {sym}")
            notes.append(f"{sym}: skipped, the snapshots hold no {interval} price bars for it")
            continue
        notes += [f"{sym}: {p}" for p in dict.fromkeys(frame.problems)]
        notes += [f"{sym}: {line}" for line in describe_gaps(frame.times, INTERVALS[interval])]
        frames[sym] = frame
    if not frames:
        raise PerpwatchError(f"--data: no {interval} price history in {', '.join(paths)}")
    source = "CoinGlass snapshot" + ("s " if len(paths) > 1 else " ") + " + ".join(paths)
    return _checked(History(frames, interval, source, notes))


def _checked(history: History) -> History:
    for sym, frame in history.frames.items():
        absent = [c for c in PRICE_COLUMNS if c not in frame.columns]
        if absent:
            raise PerpwatchError(
                f"{sym}: the data has no {', '.join(absent)} column; a backtest marks at price.close and "
                "fills at the next bar's price.open"
            )
        if not len(frame):
            raise PerpwatchError(f"{sym}: the data holds no bars")
    return history


def symbols_for(
    strategies: Sequence[Strategy], history: History, given: Sequence[str] | None
) -> dict[str, list[str]]:
    """Which symbols each strategy trades: ``--symbols``, else its own ``symbols:``, else all loaded."""
    out = {}
    loaded = list(history.frames)
    for s in strategies:
        if given:
            syms = [g.upper() for g in given]
        elif s.symbols:
            syms = [x.upper() for x in s.symbols]
            missing = [x for x in syms if x not in history.frames]
            if missing:
                raise PerpwatchError(f"{s.name}: no data for {', '.join(missing)} ({history.source})")
        else:
            syms = loaded
        out[s.name] = syms
    return out


# --- the run ---------------------------------------------------------------------------------------


def run_backtest(
    strategies: Sequence[Strategy],
    history: History,
    symbols: dict[str, list[str]] | None = None,
    options: BacktestOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Backtest ``strategies`` over ``history`` (see the module doc); ``progress(bars)`` as it goes."""
    return asyncio.run(run_backtest_async(strategies, history, symbols, options, progress))


async def run_backtest_async(
    strategies: Sequence[Strategy],
    history: History,
    symbols: dict[str, list[str]] | None = None,
    options: BacktestOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    opts = options or BacktestOptions()
    steps = {s.step_ms for s in strategies}
    if len(steps) != 1:
        raise PerpwatchError("strategies backtested together must share one interval")
    step_ms = steps.pop()
    symbols = symbols or symbols_for(strategies, history, None)
    _check_inhibitors(strategies)
    grid, frames = _grid(history, step_ms)
    i0, i1 = _range(grid, opts, step_ms)

    store = StateStore(":memory:")
    clock = FakeClock(int(grid[i0]) / 1000)
    paper = PaperExecutor(
        {
            "balance_usd": opts.balance_usd,
            "fee_bps": opts.fee_bps,
            "slippage_bps": opts.slippage_bps,
            "funding_interval_hours": opts.funding_interval_hours,
        },
        PluginContext(clock=clock, store=store),
    )
    trading = Trading(store, {"paper": paper}, clock)
    runs = [replace(s, execute="paper") for s in strategies]
    watched = {tuple(ref.split("/", 1)) for s in strategies for ref in s.risk.inhibited_by}

    jobs = []
    for s in runs:
        for sym in symbols[s.name]:
            ev = _slim(evaluate(s, frames[sym], sym), s)
            truths = [ev.series(rule.cond) for rule in s.rules]
            states = [RuleState() for _ in s.rules]
            keep = [(s.name, rule.name) in watched for rule in s.rules]
            jobs.append((s, sym, ev, truths, states, keep))
    opens = {sym: np.asarray(f.columns["price.open"], dtype=float) for sym, f in frames.items()}
    n = len(grid)
    walked = i1 - i0 + 1
    equity = np.empty(walked)
    exposed = np.zeros(walked, dtype=bool)
    events: list[Event] = []
    trading_events: list[Event] = []
    holding: set[tuple[str, str]] = set()  # (strategy, symbol) with an open position
    every = max(1, walked // 200)
    with store.transaction():
        for k, i in enumerate(range(i0, i1 + 1)):
            t = int(grid[i])
            clock.now = (t + step_ms) / 1000
            bar = []
            for s, sym, ev, truths, states, keep in jobs:
                new = []
                for rule, truth, st, watch in zip(s.rules, truths, states, keep, strict=True):
                    x = truth[i]
                    before = st.status
                    kind = step(st, None if x != x else float(x), t, rule.for_bars, rule.cooldown_ms)
                    if kind is not None:
                        new.append(build_event(s, rule, ev, i, kind))
                    if watch and st.status != before:
                        store.save_rule_state(s.name, rule.name, sym, st)
                events.extend(new)
                bar.append((s, sym, ev, new))
            for s, sym, ev, new in bar:
                if (s.name, sym) not in holding and s.risk.max_daily_loss_pct is None and not _signals(new):
                    continue  # on_bar would do nothing: no signal, no position to fund or mark, no day to note
                nxt = float(opens[sym][i + 1]) if i + 1 < n else math.nan
                got = await trading.on_bar(s, sym, t, ev, i, new, fill_price=nxt, fill_time=t + step_ms)
                _track(holding, got)
                trading_events += got
            equity[k], open_now = paper.snapshot()
            exposed[k] = open_now > 0
            if progress is not None and (k + 1) % every == 0:
                progress(every)
    times = grid[i0 : i1 + 1]
    payments = paper.funding_payments()
    result = BacktestResult(
        strategies=list(strategies),
        symbols=symbols,
        history=history,
        options=opts,
        step_ms=step_ms,
        times=times,
        equity=equity,
        exposed=exposed,
        closes={
            sym: np.asarray(f.columns["price.close"], dtype=float)[i0 : i1 + 1] for sym, f in frames.items()
        },
        events=events,
        trading=trading_events,
        trades=_trades(paper, trading_events, step_ms),
        funding_settlements=sum(p.rate is not None for p in payments),
        funding_skipped=sum(p.rate is None for p in payments),
    )
    store.close()
    result.stats = compute_stats(result)
    result.assumptions = assumptions(result)
    return result


def _signals(events: list[Event]) -> bool:
    return any(e.kind == "fired" and e.signal is not None for e in events)


def _track(holding: set[tuple[str, str]], events: list[Event]) -> None:
    """Follow which (strategy, symbol) hold a position, from the fills of order events."""
    for e in events:
        for fill in e.values.get("fills", ()) if e.kind == "order" else ():
            if fill["action"] == "open":
                holding.add((e.strategy, e.symbol))
            else:
                holding.discard((e.strategy, e.symbol))


def _slim(ev: Evaluation, s: Strategy) -> Evaluation:
    """Drop the series no event or check reads again (intermediate nodes), to bound memory.

    Kept: every metric, each rule's condition, signal side and size, and the nodes of the names
    its condition and message use (what ``build_event`` and the trading layer read).
    """
    keep = {k for k, node in enumerate(s.plan.nodes) if node.op == "metric"}
    for rule in s.rules:
        keep.update(x for x in (rule.cond, rule.side, rule.size) if x is not None)
        names = [*rule.names, *(rule.message.names if rule.message is not None else ())]
        keep.update(x for x in map(s.node_of, names) if x is not None)
    for k, value in enumerate(ev.values):
        if k not in keep and isinstance(value, np.ndarray | Cat):
            ev.values[k] = None
    return ev


def _check_inhibitors(strategies: Sequence[Strategy]) -> None:
    by_name = {s.name: s for s in strategies}
    for s in strategies:
        for ref in s.risk.inhibited_by:
            other, _, rule = ref.partition("/")
            if other not in by_name:
                raise PerpwatchError(
                    f"{s.name}: inhibited_by {ref}: backtest strategy {other!r} alongside it (pass its file too)"
                )
            if rule not in {r.name for r in by_name[other].rules}:
                raise PerpwatchError(f"{s.name}: inhibited_by {ref}: {other} has no rule {rule!r}")


def _grid(history: History, step_ms: int) -> tuple[np.ndarray, dict[str, Frame]]:
    """A regular bar grid over all symbols' data; each frame reindexed onto it (gaps are unknown)."""
    lo = min(int(f.times[0]) for f in history.frames.values())
    hi = max(int(f.times[-1]) for f in history.frames.values())
    lo -= lo % step_ms
    grid = np.arange(lo, hi + 1, step_ms, dtype=np.int64)
    return grid, {sym: f.reindex(grid) for sym, f in history.frames.items()}


def _range(grid: np.ndarray, opts: BacktestOptions, step_ms: int) -> tuple[int, int]:
    i0 = 0 if opts.start is None else int(np.searchsorted(grid, opts.start, side="left"))
    i1 = len(grid) - 1 if opts.end is None else int(np.searchsorted(grid, opts.end, side="right")) - 1
    if i0 > i1 or i0 >= len(grid) or i1 < 0:
        span = f"{format_time(int(grid[0]))} .. {format_time(int(grid[-1]))}"
        raise PerpwatchError(f"--from/--to select no bars; the data spans {span}")
    return i0, i1


def _trades(paper: PaperExecutor, trading_events: list[Event], step_ms: int) -> list[TradeRecord]:
    """The paper account's positions, with the rule and bar that opened and closed each."""
    opened: dict[int, Event] = {}
    closed: dict[int, Event] = {}
    for e in trading_events:
        for fill in e.values.get("fills", ()) if e.kind == "order" else ():
            (opened if fill["action"] == "open" else closed)[fill["trade_id"]] = e
    out = []
    for t in paper.trades():
        o, c = opened.get(t.id), closed.get(t.id)
        out.append(
            TradeRecord(
                strategy=t.strategy,
                symbol=t.symbol,
                side=t.side,
                size_usd=t.size_usd,
                qty=t.qty,
                entry_time=t.entry_time,
                entry_price=t.entry_price,
                exit_time=t.exit_time,
                exit_price=t.exit_price,
                fees=t.entry_fee + t.exit_fee,
                funding=t.funding,
                pnl=t.pnl + t.unrealized,
                net_pnl=t.net_pnl,
                status=t.status,
                entry_rule=o.rule if o else None,
                exit_rule=c.rule if c else None,
                entry_bar=o.time if o else None,
                exit_bar=c.time if c else None,
            )
        )
    return out


# --- figures ---------------------------------------------------------------------------------------


def compute_stats(r: BacktestResult) -> dict[str, Any]:
    """PnL, return, drawdown, Sharpe/Sortino (annualised by the bar interval), trade statistics."""
    balance = r.options.balance_usd
    eq = r.equity_curve
    times = r.equity_times
    net = float(eq[-1] - balance)
    peak = np.maximum.accumulate(eq)
    dd = eq / peak - 1.0
    j = int(np.argmin(dd))
    p = int(np.flatnonzero(eq[: j + 1] == peak[j])[-1])
    rets = np.diff(eq) / eq[:-1]
    per_year = 365 * DAY / r.step_ms
    sd = float(np.std(rets, ddof=1)) if len(rets) > 1 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2))) if len(rets) else 0.0
    mean = float(np.mean(rets)) if len(rets) else 0.0
    closed = [t for t in r.trades if t.status == "closed"]
    wins = [t.net_pnl for t in closed if t.net_pnl > 0]
    losses = [t.net_pnl for t in closed if t.net_pnl <= 0]
    fees = sum(t.fees for t in r.trades)
    funding = sum(t.funding for t in r.trades)
    return {
        "start": format_time(int(r.times[0])),
        "end": format_time(int(r.times[-1] + r.step_ms)),
        "bars": len(r.times),
        "starting_balance_usd": balance,
        "final_equity_usd": float(eq[-1]),
        "net_pnl_usd": net,
        "total_return_pct": net / balance * 100,
        "gross_pnl_usd": sum(t.pnl for t in r.trades),
        "fees_usd": fees,
        "funding_usd": funding,
        "max_drawdown_pct": float(-dd[j] * 100),
        "max_drawdown_usd": float(peak[j] - eq[j]),
        "max_drawdown_start": format_time(int(times[p])) if j else None,
        "max_drawdown_end": format_time(int(times[j])) if j else None,
        "sharpe": mean / sd * math.sqrt(per_year) if sd > 0 else None,
        "sortino": mean / downside * math.sqrt(per_year) if downside > 0 else None,
        "bars_per_year": per_year,
        "trades": len(r.trades),
        "closed_trades": len(closed),
        "open_trades": len(r.trades) - len(closed),
        "win_rate_pct": len(wins) / len(closed) * 100 if closed else None,
        "avg_win_usd": sum(wins) / len(wins) if wins else None,
        "avg_loss_usd": sum(losses) / len(losses) if losses else None,
        "exposure_pct": float(np.mean(r.exposed) * 100) if len(r.exposed) else 0.0,
        "funding_settlements": r.funding_settlements,
        "funding_settlements_skipped": r.funding_skipped,
        "rejected": sum(e.kind == "rejected" for e in r.trading),
    }


def assumptions(r: BacktestResult) -> list[str]:
    o = r.options
    per_year = r.stats.get("bars_per_year", 365 * DAY / r.step_ms)
    return [
        "Signals are decided at each bar's close; market orders fill at the NEXT bar's open (price.open). "
        "A signal on the last bar has no next bar and does not fill. Live fills at the bar's close instead.",
        f"Slippage: {o.slippage_bps:g} bps against every fill (buys higher, sells lower).",
        f"Fees: {o.fee_bps:g} bps of notional (qty x fill price) on every fill, opening and closing.",
        f"Funding: settled every {o.funding_interval_hours} h on UTC boundaries, at funding.close of the bar "
        "in which the settlement falls (percent per interval), on qty x price.close; longs pay when it is "
        f"positive, shorts receive. {r.funding_skipped} settlement(s) skipped because funding.close was unknown.",
        "Sizing: qty = size_usd / fill reference price; one position per strategy and symbol; a signal for the "
        "side already held does nothing; the opposite side reverses (close, then open); flat closes.",
        f"One paper account of {o.balance_usd:,.2f} USD for all strategies; fixed USD sizes (no compounding).",
        "Risk limits of each strategy's risk: block apply as live (max_position_usd clips); the kill switch "
        "is never set in a backtest.",
        "Missing or stale values are unknown: no rule fires on them and no order is placed; bars the data "
        "lacks are unknown bars on the interval's grid.",
        f"Sharpe and Sortino: per-bar returns of the equity curve, risk-free rate 0, annualised by "
        f"sqrt({per_year:g}) bars per 365-day year.",
    ]


def rule_counts(r: BacktestResult) -> list[dict[str, Any]]:
    """Per (strategy, rule): fired, suppressed, resolved, orders, no-ops and rejections."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for s in r.strategies:
        for rule in s.rules:
            rows[(s.name, rule.name)] = {
                "strategy": s.name,
                "rule": rule.name,
                **dict.fromkeys(("fired", "suppressed", "resolved", "order", "no_order", "rejected"), 0),
            }
    for e in [*r.events, *r.trading]:
        row = rows.get((e.strategy, e.rule))
        if row is not None and e.kind in row:
            row[e.kind] += 1
    return list(rows.values())
