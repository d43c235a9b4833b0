"""Backtests: a history through the same plan, rule state machine and trading layer as ``run``.

Each (strategy, symbol) is evaluated once over the whole history, column-wise (``evaluate``);
then the bars are walked in time order and, at every bar, exactly what the live runner does
happens: every rule of every strategy steps (``rules.step`` / ``build_event``), then
:meth:`Trading.on_bar` runs for each (strategy, symbol) with one executor on an in-memory state
store. The one difference is the fill: a market order decided on bar *i*'s close fills at
bar *i + 1*'s open (``price.open``; live fills at the latest price, bar *i*'s close). A signal on
the last bar has no next bar and does not fill.

Bars are put on a regular grid of the interval; a bar the data lacks is unknown (as live).
Every strategy trades on the executor :attr:`BacktestOptions.executor` names (``paper`` unless
told otherwise; built through the plugin registry) whatever its ``execute:`` names. That executor
must keep accounts (:class:`~perpwatch.api.interfaces.Accounting`) and a
:class:`~perpwatch.api.ledger.Ledger`, from which the equity curve and the trades are read.

That walk is one of two paths (:attr:`BacktestOptions.engine`): where
:func:`~perpwatch.backtest.fastloop.why_not_fast` finds nothing path-dependent, ``fastloop``
computes the identical result from the fired signals alone. Either way the account is bust once
its equity after a bar is at or below zero: no entry from the next bar on
(:attr:`BacktestResult.bust_time`). Rule events are :class:`LazyEvent` (messages rendered on use).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import cast

import numpy as np

from perpwatch.api.interfaces import Accounting, Executor, PluginContext
from perpwatch.api.ledger import Ledger
from perpwatch.api.registry import Registry, load_registry
from perpwatch.backtest.fastloop import Job, Outcome, bust_reason, run_fast, why_not_fast
from perpwatch.backtest.history import History, symbols_for
from perpwatch.backtest.lazyevent import LazyEvent
from perpwatch.backtest.result import (
    ACCOUNT_OPTIONS,
    AHEAD_BARS,
    ENGINES,
    BacktestOptions,
    BacktestResult,
    TradeRecord,
)
from perpwatch.backtest.stats import assumptions, compute_stats
from perpwatch.common.clock import FakeClock
from perpwatch.common.collector import no_collection
from perpwatch.common.errors import PerpwatchError, did_you_mean
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.evaluate import Evaluation, evaluate
from perpwatch.evaluation.events import Event
from perpwatch.evaluation.frame import Cat, Frame
from perpwatch.evaluation.rules import RuleState, step
from perpwatch.language.compiler import Strategy
from perpwatch.live.state import StateStore
from perpwatch.live.trading import Trading, position_of

#: Bars the backtest grid (first to last bar of every symbol) may hold: 10 million, 19 years of 1m bars.
MAX_GRID_BARS = 10_000_000


def run_backtest(
    strategies: Sequence[Strategy],
    history: History,
    symbols: dict[str, list[str]] | None = None,
    options: BacktestOptions | None = None,
    progress: Callable[[int], None] | None = None,
    registry: Registry | None = None,
) -> BacktestResult:
    """Backtest ``strategies`` over ``history`` (see the module doc); ``progress(bars)`` as it goes.

    ``registry`` holds the executor plugins (default: every installed plugin)."""
    done: list[BacktestResult] = []

    async def main() -> None:  # returns None: asyncio.run would repr a returned result at teardown
        done.append(await run_backtest_async(strategies, history, symbols, options, progress, registry))

    asyncio.run(main())
    return done[0]


async def run_backtest_async(
    strategies: Sequence[Strategy],
    history: History,
    symbols: dict[str, list[str]] | None = None,
    options: BacktestOptions | None = None,
    progress: Callable[[int], None] | None = None,
    registry: Registry | None = None,
) -> BacktestResult:
    opts = options or BacktestOptions()
    if opts.engine not in ENGINES:
        raise PerpwatchError(f"engine {opts.engine!r}: expected one of {', '.join(ENGINES)}")
    steps = {s.step_ms for s in strategies}
    if len(steps) != 1:
        raise PerpwatchError("strategies backtested together must share one interval")
    step_ms = steps.pop()
    symbols = symbols or symbols_for(strategies, history, None)
    _check_inhibitors(strategies)
    _check_exit_data(strategies, history)
    grid, frames = _grid(history, step_ms)
    i0, i1 = _range(grid, opts, step_ms)

    store = StateStore(":memory:")
    clock = FakeClock(int(grid[i0]) / 1000)
    executor = build_executor(opts, PluginContext(clock=clock, store=store), registry)
    account, ledger = _books(executor, opts.executor)
    opts = _as_built(opts, executor, await account.equity())
    trading = Trading(store, {opts.executor: executor}, clock)
    runs = [replace(s, execute=opts.executor) for s in strategies]
    slow = why_not_fast(strategies, opts)
    if opts.engine == "fast" and slow is not None:
        raise PerpwatchError(f"the fast path cannot run this backtest: {slow} (use engine auto or walk)")
    opens = {sym: np.asarray(f.columns["price.open"], dtype=float) for sym, f in frames.items()}
    n = len(grid)
    bust_time: int | None = None
    try:
        if slow is None:
            with no_collection():  # many small acyclic objects: no full collection over the evaluations
                jobs = [
                    Job(s, sym, _slim(evaluate(s, frames[sym], sym), s))
                    for s in runs
                    for sym in symbols[s.name]
                ]
                got = run_fast(jobs, grid, opens, i0, i1, step_ms, opts, trading.risk)
                trades = _fast_trades(got, jobs)
            events, trading_events = got.events, got.trading
            equity, exposed, bust_time = got.equity, got.exposed, got.bust_time
            settled, skipped = got.funding_settled, got.funding_skipped
            if progress is not None:
                progress(i1 - i0 + 1)
        else:
            walked = await _walk(
                runs, symbols, frames, grid, opens, i0, i1, step_ms, store, clock, trading, executor, progress
            )
            events, trading_events, equity, exposed, bust_time = walked
            trades = _trades(ledger, trading_events)
            settled, skipped = ledger.funding_counts()
    finally:
        await executor.aclose()
    times = grid[i0 : i1 + 1]
    ahead = slice(i0, min(n, i1 + 1 + AHEAD_BARS))
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
        trades=trades,
        funding_settlements=settled,
        funding_skipped=skipped,
        metrics=_metrics_used(strategies, symbols, frames, slice(i0, i1 + 1)),
        ahead_opens={sym: opens[sym][ahead] for sym in frames},
        ahead_closes={
            sym: np.asarray(f.columns["price.close"], dtype=float)[ahead] for sym, f in frames.items()
        },
        bust_time=bust_time,
    )
    store.close()
    result.stats = compute_stats(result)
    result.assumptions = assumptions(result)
    if slow is not None:
        result.assumptions.append(f"traded bar by bar (the walk), not on the fast path: {slow}")
    return result


async def _walk(
    runs: list[Strategy],
    symbols: dict[str, list[str]],
    frames: dict[str, Frame],
    grid: np.ndarray,
    opens: dict[str, np.ndarray],
    i0: int,
    i1: int,
    step_ms: int,
    store: StateStore,
    clock: FakeClock,
    trading: Trading,
    executor: Executor,
    progress: Callable[[int], None] | None,
) -> tuple[list[Event], list[Event], np.ndarray, np.ndarray, int | None]:
    """Bar by bar: every rule steps, then the trading layer runs for each (strategy, symbol); the
    rule events, the trading events, the equity and exposure after each bar, and the bust time."""
    account = cast(Accounting, executor)
    watched = {tuple(ref.split("/", 1)) for s in runs for ref in s.risk.inhibited_by}
    jobs = []
    for s in runs:
        for sym in symbols[s.name]:
            ev = _slim(evaluate(s, frames[sym], sym), s)
            truths = [cast(np.ndarray, ev.series(rule.cond)) for rule in s.rules]  # conditions: numbers
            states = [RuleState() for _ in s.rules]
            keep = [(s.name, rule.name) in watched for rule in s.rules]
            jobs.append((s, sym, ev, truths, states, keep))
    n = len(grid)
    walked = i1 - i0 + 1
    equity = np.empty(walked)
    exposed = np.zeros(walked, dtype=bool)
    events: list[Event] = []
    trading_events: list[Event] = []
    holding: set[tuple[str, str]] = set()  # (strategy, symbol) with an open position
    bust_time: int | None = None
    every = max(1, walked // 200)
    with store.transaction():
        for k, i in enumerate(range(i0, i1 + 1)):
            t = int(grid[i])
            clock.now = (t + step_ms) / 1000
            bar = []
            for s, sym, ev, truths, states, keep in jobs:
                new: list[Event] = []
                for rule, truth, st, watch in zip(s.rules, truths, states, keep, strict=True):
                    x = truth[i]
                    before = st.status
                    kind = step(st, None if x != x else float(x), t, rule.for_bars, rule.cooldown_ms)
                    if kind is not None:
                        new.append(LazyEvent(s, rule, ev, i, kind))
                    if watch and st.status != before:
                        store.save_rule_state(s.name, rule.name, sym, st)
                events.extend(new)
                bar.append((s, sym, ev, new))
            for s, sym, ev, new in bar:
                if (s.name, sym) not in holding and s.risk.max_daily_loss_pct is None and not _signals(new):
                    continue  # on_bar would do nothing: no signal, no position to fund or mark, no day to note
                nxt = float(opens[sym][i + 1]) if i + 1 < n else math.nan
                got = await trading.on_bar(s, sym, t, ev, i, new, fill_price=nxt, fill_time=t + step_ms)
                if any(e.kind == "order" for e in got):  # look up this pair's position only
                    if await position_of(executor, s.name, sym) is None:
                        holding.discard((s.name, sym))
                    else:
                        holding.add((s.name, sym))
                trading_events += got
            equity[k] = await account.equity()
            exposed[k] = bool(holding)
            if bust_time is None and equity[k] <= 0:
                bust_time = t + step_ms
                trading.bust = bust_reason(bust_time, float(equity[k]))
            if progress is not None and (k + 1) % every == 0:
                progress(every)
    return events, trading_events, equity, exposed, bust_time


def _fast_trades(got: Outcome, jobs: list[Job]) -> list[TradeRecord]:
    """The fast path's positions as the walk reports them (``PaperExecutor.trade_summaries``)."""
    out = []
    for t in got.trades:
        job = jobs[t.job]
        unrealized = got.unrealized.get(t.id, 0.0)
        closed = t.close_bar is not None
        o, c = t.entry_event, t.exit_event
        out.append(
            TradeRecord(
                strategy=job.strategy.name,
                symbol=job.symbol,
                side=t.side,
                size_usd=t.size_usd,
                qty=t.qty,
                entry_time=t.entry_time,
                entry_price=t.entry_price,
                exit_time=t.exit_time,
                exit_price=t.exit_price,
                fees=t.entry_fee + t.exit_fee,
                funding=t.funding,
                pnl=t.pnl + unrealized,
                net_pnl=t.pnl + unrealized - t.entry_fee - t.exit_fee + t.funding,
                status="closed" if closed else "open",
                entry_rule=o.rule if o else None,
                exit_rule=c.rule if c else None,
                entry_bar=o.time if o else None,
                exit_bar=c.time if c else None,
                exit_reason="signal" if closed else None,
            )
        )
    return out


def build_executor(opts: BacktestOptions, ctx: PluginContext, registry: Registry | None = None) -> Executor:
    """The executor plugin ``opts.executor`` with ``opts.executor_options``, plus the account options
    (balance, fee, slippage, funding interval) its ``options_schema`` declares."""
    reg = registry if registry is not None else load_registry()
    cls = reg.executors.get(opts.executor)
    if cls is None:
        installed = ", ".join(sorted(reg.executors)) or "none"
        hint = did_you_mean(opts.executor, reg.executors) or f" (installed: {installed})"
        raise PerpwatchError(f"no executor plugin named {opts.executor!r}{hint}")
    declared = cls.options_schema.get("properties", {})
    options = {**opts.executor_options, **{k: v for k, v in opts.account().items() if k in declared}}
    try:
        return cls(options, ctx)
    except Exception as e:
        raise PerpwatchError(f"executor {opts.executor!r}: {e}") from None


def _as_built(opts: BacktestOptions, executor: Executor, start_equity: float) -> BacktestOptions:
    """The options as the executor took them: its starting equity, and every other option it declares
    (configured or default; the account options stay in their own fields)."""
    declared = executor.options_schema.get("properties", {})
    others = {k: executor.option(k) for k in declared if k not in ACCOUNT_OPTIONS}
    if start_equity == opts.balance_usd and others == opts.executor_options:
        return opts
    return replace(opts, balance_usd=start_equity, executor_options=others)


def _books(executor: Executor, name: str) -> tuple[Accounting, Ledger]:
    """The executor as the accounts and the ledger the backtest reads, or why it cannot be backtested."""
    lacking = [proto.__name__ for proto in (Accounting, Ledger) if not isinstance(executor, proto)]
    if lacking:
        raise PerpwatchError(
            f"executor {name!r} cannot be backtested: it does not implement {' and '.join(lacking)} "
            "(update, pnl, equity; trade_summaries, funding_counts: see docs/plugins.md, Executors)"
        )
    return cast(Accounting, executor), cast(Ledger, executor)


def _metrics_used(
    strategies: Sequence[Strategy], symbols: dict[str, list[str]], frames: dict[str, Frame], bars: slice
) -> dict[str, dict[str, np.ndarray]]:
    """Per symbol, the numeric metrics (``price.*`` aside) its strategies read, over the walked bars;
    one the data lacks is all unknown (NaN), so the report shows it lacks it."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for s in strategies:
        for sym in symbols[s.name]:
            cols = frames[sym].columns
            mine = out.setdefault(sym, {})
            numeric = {n.data for n in s.plan.nodes if n.op == "metric" and n.kind == "num"}
            for name in sorted(numeric):
                col = cols.get(name)
                if name.startswith("price."):
                    continue
                if col is None:
                    mine[name] = np.full(bars.stop - bars.start, np.nan)
                elif isinstance(col, np.ndarray) and col.dtype.kind == "f":
                    mine[name] = col[bars]
    return out


def _signals(events: list[Event]) -> bool:
    return any(e.kind == "fired" and e.signal is not None for e in events)


def _slim(ev: Evaluation, s: Strategy) -> Evaluation:
    """Drop the series no event or check reads again (intermediate nodes), to bound memory.

    Kept: every metric, each rule's condition, signal side and size, and the nodes of the names
    its condition and message use (what ``build_event`` and the trading layer read).
    """
    keep = {k for k, node in enumerate(s.plan.nodes) if node.op == "metric"}
    for rule in s.rules:
        keep.update(x for x in (rule.cond, rule.side, rule.size) if x is not None)
        exits = (rule.stop_loss, rule.take_profit, rule.trailing_stop)
        keep.update(x.node for x in exits if x is not None and x.node is not None)
        names = [*rule.names, *(rule.message.names if rule.message is not None else ())]
        keep.update(x for x in map(s.node_of, names) if x is not None)
    for k, value in enumerate(ev.values):
        if k not in keep and isinstance(value, np.ndarray | Cat):
            ev.values[k] = None
    return ev


def _check_exit_data(strategies: Sequence[Strategy], history: History) -> None:
    """Protective exits are judged on each bar's high and low: data without them cannot backtest them."""
    named = [s.name for s in strategies if s.has_exits]
    if not named:
        return
    for sym, frame in history.frames.items():
        absent = [c for c in ("price.high", "price.low") if c not in frame.columns]
        if absent:
            raise PerpwatchError(
                f"{sym}: the data has no {', '.join(absent)} column; the protective exits of "
                f"{', '.join(named)} (stop_loss, take_profit, trailing_stop) are judged on each bar's high and low"
            )


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
    bars = (hi - lo) // step_ms + 1
    if bars > MAX_GRID_BARS:
        raise PerpwatchError(
            f"the data spans {_when(lo)} .. {_when(hi)}: {bars:,} bars of {history.interval}, "
            f"more than a backtest holds (at most {MAX_GRID_BARS:,} bars); choose the symbols with --symbols"
        )
    grid = np.arange(lo, hi + 1, step_ms, dtype=np.int64)
    return grid, {sym: f.reindex(grid) for sym, f in history.frames.items()}


def _when(ms: int) -> str:
    """A time for a message, even one outside what a datetime can hold (a reader's bad value)."""
    try:
        return format_time(ms)
    except (ValueError, OverflowError, OSError):
        return f"{ms} ms"


def _range(grid: np.ndarray, opts: BacktestOptions, step_ms: int) -> tuple[int, int]:
    i0 = 0 if opts.start is None else int(np.searchsorted(grid, opts.start, side="left"))
    i1 = len(grid) - 1 if opts.end is None else int(np.searchsorted(grid, opts.end, side="right")) - 1
    if i0 > i1 or i0 >= len(grid) or i1 < 0:
        span = f"{format_time(int(grid[0]))} .. {format_time(int(grid[-1]))}"
        raise PerpwatchError(f"--from/--to select no bars; the data spans {span}")
    return i0, i1


def _trades(ledger: Ledger, trading_events: list[Event]) -> list[TradeRecord]:
    """The executor's positions, with the rule and bar that opened and closed each (through the
    ``trade_id`` and ``action`` its fills carry)."""
    opened: dict[object, Event] = {}
    closed: dict[object, Event] = {}
    for e in trading_events:
        for fill in e.values.get("fills", ()) if e.kind == "order" else ():
            if fill.get("trade_id") is not None:
                (opened if fill.get("action") == "open" else closed)[fill["trade_id"]] = e
    out = []
    for t in ledger.trade_summaries():
        o, c = opened.get(t.id), closed.get(t.id)
        reason = None
        if t.status == "closed":
            reason = str(c.values.get("reason", "signal")) if c is not None else "signal"
        summary = {k: v for k, v in dataclasses.asdict(t).items() if k != "id"}
        out.append(
            TradeRecord(
                **summary,
                entry_rule=o.rule if o else None,
                exit_rule=c.rule if c else None,
                entry_bar=o.time if o else None,
                exit_bar=c.time if c else None,
                exit_reason=reason,
            )
        )
    return out
