"""The fast path of a backtest: the fired signals traded in one pass, the account in arrays.

The walk (``walk.py``) steps every rule and calls the trading layer for every (strategy, symbol) at
every bar. Where nothing path-dependent limits a strategy (:func:`why_not_fast` names what does),
the same result comes from far less work:

1. each rule's events over the whole history at once (:func:`~perpwatch.evaluation.rules.transitions`,
   equal to stepping bar by bar), as :class:`~perpwatch.backtest.lazyevent.LazyEvent` (messages
   rendered when read);
2. the fired signals, in the walk's order (bar, then strategy and symbol, then rule), through the
   trading layer's checks (:mod:`perpwatch.live.risk`) and the ``paper`` executor's fill rules, one
   signal at a time, keeping only the open position of each (strategy, symbol);
3. funding, marks, the balance and the equity curve from those positions, in arrays.

Same results, not merely close ones: every number is computed by the same floating-point
operations, in the same order, as the ``paper`` executor computes it bar by bar (fills: ``qty =
size / price``, ``fill = price x (1 +- slippage)``, ``fee = qty x fill x fee``, ``pnl = sign x
(fill - entry) x qty``; funding per settlement ``-sign x (qty x mark) x rate / 100``, a bar's
settlements summed in turn; the balance: the start plus every cash movement in the walk's order:
bar, (strategy, symbol), funding before fills; equity: the balance plus the open positions'
unrealised PnL added in (strategy, symbol) order, as ``PaperExecutor.equity`` adds them).
``tests/test_backtest_fast.py`` compares the two paths with ``==``.

The account is **bust** once its equity after a bar is at or below zero: no position opens after
that bar (each entry is a recorded rejection; closing stays allowed). The first pass trades as if
it never happens; when it does, a second pass repeats the trading with entries refused from the
bar after (everything before it is unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perpwatch.api.executors import Fill, Position
from perpwatch.backtest.lazyevent import LazyEvent
from perpwatch.backtest.result import BacktestOptions
from perpwatch.common.collector import without_collection
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.evaluate import Evaluation
from perpwatch.evaluation.events import Event
from perpwatch.evaluation.rules import RuleState, transitions
from perpwatch.language.compiler import Strategy
from perpwatch.live.risk import RiskGate, market_column, rule_inputs, unknown_inputs
from perpwatch.live.trading import _derived, _describe, _qty

HOUR_MS = 3_600_000
EXIT_FIELDS = ("stop_loss", "take_profit", "trailing_stop")


def why_not_fast(strategies: Sequence[Strategy], opts: BacktestOptions) -> str | None:
    """Why this backtest must take the bar-by-bar walk, or None when the fast path gives the same
    result: an executor other than ``paper`` (its fills are its own), a daily-loss limit (it reads
    the running PnL at each entry), an inhibitor (it reads another rule's state at each entry), a
    protective exit (judged against every bar's prices)."""
    if opts.engine == "walk":
        return "asked for (engine walk)"
    if opts.executor != "paper":
        return f"the executor is {opts.executor!r}, not paper (its fills are its own)"
    if opts.executor_options.get("leverage") is not None:
        return "the paper account has leverage (the margin model checks free margin and liquidations)"
    for s in strategies:
        if s.risk.max_daily_loss_pct is not None:
            return f"{s.name} has max_daily_loss_pct (each entry reads the day's running PnL)"
        if s.risk.inhibited_by:
            return f"{s.name} has inhibited_by (each entry reads another rule's state)"
        for rule in s.rules:
            if any(getattr(rule, name, None) is not None for name in EXIT_FIELDS):
                return f"{s.name}/{rule.name} has protective exits (judged against every bar's prices)"
    return None


@dataclass
class Job:
    """One (strategy, symbol) of the backtest, evaluated."""

    strategy: Strategy
    symbol: str
    ev: Evaluation


@dataclass
class Trade:
    """One position the fast path took, open or closed (the paper executor's ``Trade``)."""

    id: int
    job: int
    strategy: str
    side: str
    qty: float
    size_usd: float
    entry_time: int
    entry_price: float
    entry_fee: float
    mark: float  # the price it was opened at (before slippage): its first mark
    open_bar: int
    exit_time: int | None = None
    exit_price: float | None = None
    exit_fee: float = 0.0
    pnl: float = 0.0  # realised, before fees and funding
    funding: float = 0.0
    close_bar: int | None = None
    entry_event: Event | None = None
    exit_event: Event | None = None

    @property
    def sign(self) -> int:
        return 1 if self.side == "long" else -1


@dataclass
class Outcome:
    """What the fast path produced (the parts of a ``BacktestResult`` it computes)."""

    events: list[Event]
    trading: list[Event]
    trades: list[Trade]
    unrealized: dict[int, float]  # trade id -> unrealised PnL of an open trade at the last mark
    equity: np.ndarray
    exposed: np.ndarray
    funding_settled: int
    funding_skipped: int
    bust_time: int | None


@dataclass
class _Book:
    """The account while signals are traded: open positions, cash movements, counters."""

    fee: float
    slippage: float
    open: dict[int, Trade] = field(default_factory=dict)  # job -> its open position
    per_strategy: dict[str, int] = field(default_factory=dict)  # open positions per strategy
    trades: list[Trade] = field(default_factory=list)
    cash: list[tuple[int, int, int, float]] = field(default_factory=list)  # (bar, job, order, amount)
    order_bars: list[int] = field(default_factory=list)  # the bar of each order, by order id - 1


def rule_events(jobs: Sequence[Job], times: np.ndarray, i0: int, i1: int) -> list[tuple[int, int, LazyEvent]]:
    """Every rule event of bars ``i0..i1`` as (bar, job, event), in the walk's order (bar, job, rule)."""
    found: list[tuple[int, int, int, str]] = []
    upto = times[: i1 + 1]
    for j, job in enumerate(jobs):
        for r, rule in enumerate(job.strategy.rules):
            truth = job.ev.truths(rule.cond)[: i1 + 1]
            for i, kind in transitions(RuleState(), truth, upto, i0, rule.for_bars, rule.cooldown_ms):
                found.append((i, j, r, kind))
    found.sort()
    return [
        (i, j, LazyEvent(jobs[j].strategy, jobs[j].strategy.rules[r], jobs[j].ev, i, kind))
        for i, j, r, kind in found
    ]


@without_collection  # many small acyclic objects: no full collection over the evaluations
def run_fast(
    jobs: Sequence[Job],
    times: np.ndarray,
    opens: dict[str, np.ndarray],
    i0: int,
    i1: int,
    step_ms: int,
    opts: BacktestOptions,
    risk: RiskGate,
) -> Outcome:
    """The backtest of ``jobs`` over bars ``i0..i1`` of the grid ``times`` (see the module doc)."""
    found = rule_events(jobs, times, i0, i1)
    with_signal = {
        (job.strategy.name, rule.name) for job in jobs for rule in job.strategy.rules if rule.side is not None
    }
    signals = [(i, j, e) for i, j, e in found if e.kind == "fired" and (e.strategy, e.rule) in with_signal]
    market = [_Market(job, step_ms) for job in jobs]
    book = _Book(fee=float(opts.fee_bps) / 10_000, slippage=float(opts.slippage_bps) / 10_000)
    trading: list[Event] = []
    _trade(book, trading, signals, jobs, market, times, opens, step_ms, risk, bust_after=None)
    out = _account(book, trading, jobs, market, times, i0, i1, step_ms, opts)
    low = np.flatnonzero(out.equity <= 0)
    if len(low):  # bust after bar b: trade again from the next bar, entries refused
        k = int(low[0])
        b = i0 + k
        trading = _rewind(book, trading, b + 1, int(times[b + 1]) if b + 1 < len(times) else None)
        rest = [x for x in signals if x[0] > b]
        _trade(
            book,
            trading,
            rest,
            jobs,
            market,
            times,
            opens,
            step_ms,
            risk,
            bust_after=(b, float(out.equity[k])),
        )
        out = _account(book, trading, jobs, market, times, i0, i1, step_ms, opts)
        out.bust_time = int(times[b]) + step_ms
    out.events = [e for _, _, e in found]
    return out


class _Market:
    """A job's marks and funding rates as the trading layer reads them (NaN: unknown or stale)."""

    def __init__(self, job: Job, step_ms: int):
        age = job.strategy.risk.max_data_age_ms
        n = len(job.ev.frame.times)
        close = market_column(job.ev, "price.close", age)
        rate = market_column(job.ev, "funding.close", age)
        self.close = np.full(n, np.nan) if close is None else close
        self.rate = np.full(n, np.nan) if rate is None else rate
        good = self.close > 0  # a mark needs a finite positive price (NaN compares False)
        idx = np.where(good, np.arange(n), -1)
        self.last_good = np.maximum.accumulate(idx)  # the newest bar <= i with a good close, or -1
        self.good = good


def _rewind(book: _Book, trading: list[Event], bar: int, bar_time: int | None) -> list[Event]:
    """Undo what the signals of bars ``bar`` on did to ``book``; the trading events before them."""
    kept = [t for t in book.trades if t.open_bar < bar]
    for t in kept:
        if t.close_bar is not None and t.close_bar >= bar:
            t.exit_time = t.exit_price = t.close_bar = t.exit_event = None
            t.exit_fee = t.pnl = 0.0
    book.trades = kept
    book.open = {t.job: t for t in kept if t.close_bar is None}
    book.per_strategy = {}
    for t in book.open.values():
        book.per_strategy[t.strategy] = book.per_strategy.get(t.strategy, 0) + 1
    book.cash = [c for c in book.cash if c[0] < bar]
    book.order_bars = [b for b in book.order_bars if b < bar]
    return [e for e in trading if bar_time is None or e.time < bar_time]


def _trade(
    book: _Book,
    out: list[Event],
    signals: list[tuple[int, int, LazyEvent]],
    jobs: Sequence[Job],
    market: list[_Market],
    times: np.ndarray,
    opens: dict[str, np.ndarray],
    step_ms: int,
    risk: RiskGate,
    bust_after: tuple[int, float] | None,
) -> None:
    """Each fired signal through the trading layer's checks and the paper account's fills, into
    ``book`` and ``out`` (the trading events)."""
    n = len(times)
    known: dict[tuple[int, str], np.ndarray | None] = {}
    inputs: dict[tuple[int, str], list[tuple[str, int]]] = {}
    for i, j, event in signals:
        job = jobs[j]
        s, ev = job.strategy, job.ev
        intent = event.signal
        assert intent is not None
        base = {"side": intent.side, "size_usd": intent.size_usd}

        def reject(reason: str, event: Event = event, base: dict[str, Any] = base) -> list[Event]:
            return [_derived(event, "rejected", reason, base)]

        if intent.side is None:
            out += reject("the signal's side is unknown at this bar")
            continue
        key = (j, event.rule)
        if key not in known:
            rule = next(r for r in s.rules if r.name == event.rule)
            inputs[key] = rule_inputs(s, rule)
            known[key] = _all_known(ev, inputs[key])
        mask = known[key]
        missing = [] if mask is not None and mask[i] else unknown_inputs(ev, i, inputs[key])
        if missing:
            out += reject(
                f"data unknown or older than max_data_age at this bar: {', '.join(missing)}; not acting"
            )
            continue
        price = float(market[j].close[i])
        if price != price:
            out += reject("price.close is unknown or older than max_data_age at this bar; not acting")
            continue
        px = float(opens[job.symbol][i + 1]) if i + 1 < n else math.nan
        if not (math.isfinite(px) and px > 0):
            out += reject("no price to fill at (the next bar's open is unknown)")
            continue
        t = int(times[i]) + step_ms
        current = book.open.get(j)
        if intent.side == "flat":
            if current is None:
                out.append(_derived(event, "no_order", "flat: no position to close; nothing to do", base))
                continue
            out.append(_submit(book, event, j, job, i, "flat", None, px, t, base))
            continue
        size = intent.size_usd
        if size is None or not math.isfinite(size):
            out += reject("size_usd is unknown at this bar")
            continue
        if size <= 0:
            out += reject(f"size_usd is {size:g}: nothing to open")
            continue
        if current is not None and current.side == intent.side:
            held = Position(
                s.name, job.symbol, current.side, current.qty, current.entry_price, current.entry_time
            )
            text = f"{intent.side}: already {current.side} {_qty(held)}; nothing to do (signals are targets)"
            out.append(_derived(event, "no_order", text, base))
            continue
        mine = book.per_strategy.get(s.name, 0)
        if bust_after is not None and i > bust_after[0]:
            reason: str | None = bust_reason(int(times[bust_after[0]]) + step_ms, bust_after[1])
            verdict_size, note = float(size), None
        else:
            verdict = risk.check_open(
                s,
                job.symbol,
                float(size),
                bar_time=event.time,
                open_elsewhere=mine - (current is not None),
                pnl_now=None,
                equity_now=None,
            )
            reason, verdict_size, note = verdict.reason, verdict.size_usd, verdict.note
        if reason is None:
            out.append(_submit(book, event, j, job, i, intent.side, verdict_size, px, t, base, note))
            continue
        if current is None:
            out += reject(reason)
            continue
        out += reject(f"{reason}; closed the {current.side} position instead of reversing")
        out.append(_submit(book, event, j, job, i, "flat", None, px, t, base))


def _all_known(ev: Evaluation, inputs: list[tuple[str, int]]) -> np.ndarray | None:
    """Where every input is known (the bars :func:`unknown_inputs` finds nothing missing at), when
    all are number columns; None: ask bar by bar."""
    mask = np.ones(len(ev.frame.times), dtype=bool)
    for _, node in inputs:
        v = ev.values[node]
        if not (isinstance(v, np.ndarray) and v.dtype.kind == "f"):
            return None
        mask &= ~np.isnan(v)
    return mask


def bust_reason(when: int, equity: float) -> str:
    """The rejection of an entry once the account is bust (the walk's trading layer says the same)."""
    return (
        f"the account is bust: its equity was {equity:,.2f} USD at {format_time(when)}; "
        "no new positions (closing stays allowed)"
    )


def _submit(
    book: _Book,
    event: Event,
    j: int,
    job: Job,
    i: int,
    side: str,
    size: float | None,
    px: float,
    t: int,
    base: dict[str, Any],
    note: str | None = None,
) -> Event:
    """The paper executor's ``submit`` of ``side`` (size ``size``) at ``px``, and its order event."""
    book.order_bars.append(i)
    order = len(book.order_bars)
    fills: list[Fill] = []
    trade = book.open.get(j)
    if side == "flat" or (size is not None and math.isfinite(size) and size > 0):
        if trade is not None:
            fills.append(_close(book, trade, event, order, j, i, px, t))
        if side != "flat":
            assert size is not None
            fills.append(_open(book, event, order, j, job, i, side, size, px, t))
    values = {
        **base,
        "price": px,
        "fill_time": t,
        "fills": [
            {"side": f.side, "qty": f.qty, "price": f.price, "fee_usd": f.fee_usd, **f.info} for f in fills
        ],
    }
    text = "; ".join(_describe(f) for f in fills) or "no fill (the executor did nothing)"
    if note:
        text += f" ({note})"
    return _derived(event, "order", text, values)


def _open(
    book: _Book, event: Event, order: int, j: int, job: Job, i: int, side: str, size: float, px: float, t: int
) -> Fill:
    buy = side == "long"
    qty = size / px
    fill_price = px * (1 + book.slippage) if buy else px * (1 - book.slippage)
    fee = qty * fill_price * book.fee
    trade = Trade(
        id=len(book.trades) + 1,
        job=j,
        strategy=job.strategy.name,
        side=side,
        qty=qty,
        size_usd=size,
        entry_time=t,
        entry_price=fill_price,
        entry_fee=fee,
        mark=px,
        open_bar=i,
        entry_event=event,
    )
    book.trades.append(trade)
    book.open[j] = trade
    name = job.strategy.name
    book.per_strategy[name] = book.per_strategy.get(name, 0) + 1
    book.cash.append((i, j, len(book.cash), -fee))
    info = {"action": "open", "pnl": 0.0, "order_id": order, "trade_id": trade.id, "strategy": name}
    return Fill(
        symbol=job.symbol,
        side="buy" if buy else "sell",
        qty=qty,
        price=fill_price,
        fee_usd=fee,
        time=t,
        info=info,
    )


def _close(book: _Book, trade: Trade, event: Event, order: int, j: int, i: int, px: float, t: int) -> Fill:
    buy = trade.side == "short"
    fill_price = px * (1 + book.slippage) if buy else px * (1 - book.slippage)
    fee = trade.qty * fill_price * book.fee
    pnl = trade.sign * (fill_price - trade.entry_price) * trade.qty
    trade.exit_time, trade.exit_price, trade.exit_fee, trade.pnl = t, fill_price, fee, pnl
    trade.close_bar, trade.exit_event = i, event
    del book.open[j]
    name = event.strategy
    book.per_strategy[name] -= 1
    book.cash.append((i, j, len(book.cash), pnl - fee))
    info = {
        "action": "close",
        "pnl": pnl,
        "order_id": order,
        "trade_id": trade.id,
        "strategy": name,
        "reason": "signal",
    }
    symbol = event.symbol
    return Fill(
        symbol=symbol,
        side="buy" if buy else "sell",
        qty=trade.qty,
        price=fill_price,
        fee_usd=fee,
        time=t,
        info=info,
    )


def _account(
    book: _Book,
    trading: list[Event],
    jobs: Sequence[Job],
    market: list[_Market],
    times: np.ndarray,
    i0: int,
    i1: int,
    step_ms: int,
    opts: BacktestOptions,
) -> Outcome:
    """Funding, marks, balance and equity of the traded positions (see the module doc)."""
    funding_ms = int(opts.funding_interval_hours) * HOUR_MS
    settled = skipped = 0
    cash = list(book.cash)
    for tr in book.trades:
        m = market[tr.job]
        last = tr.close_bar if tr.close_bar is not None else i1  # the last bar its funding is settled at
        until = int(times[last]) + step_ms
        s = (tr.entry_time // funding_ms + 1) * funding_ms  # the first settlement after the entry
        funding = 0.0
        while s <= until:
            k = tr.open_bar + -(-(s - tr.entry_time) // step_ms)  # the bar whose update settles it
            upto = int(times[k]) + step_ms
            count = 0
            while s <= upto:
                count += 1
                s += funding_ms
            price = float(m.close[k])
            if m.good[k]:
                mark = price
            else:
                g = int(m.last_good[k - 1])
                mark = float(m.close[g]) if g > tr.open_bar else tr.mark
            rate = float(m.rate[k])
            if rate == rate:
                amount = -tr.sign * (tr.qty * mark) * rate / 100
                settled += count
            else:
                amount = 0.0
                skipped += count
            total = sum([amount] * count)
            funding = funding + total
            cash.append((k, tr.job, -1, total))
        tr.funding = funding
    cash.sort()  # (bar, job, order): the order is unique, amounts are never compared
    bars = np.fromiter((c[0] for c in cash), dtype=np.int64, count=len(cash))
    balance = np.cumsum(np.array([float(opts.balance_usd), *(c[3] for c in cash)]))
    walked = np.arange(i0, i1 + 1)
    cash_balance = balance[np.searchsorted(bars, walked, side="right")]

    unrealized_sum = np.zeros(len(walked))
    exposed = np.zeros(len(walked), dtype=bool)
    unrealized_end: dict[int, float] = {}
    by_job: dict[int, list[Trade]] = {}
    for tr in book.trades:
        by_job.setdefault(tr.job, []).append(tr)
    order = sorted(range(len(jobs)), key=lambda j: (jobs[j].strategy.name, jobs[j].symbol))
    for j in order:
        mine = by_job.get(j)
        if not mine:
            continue
        m = market[j]
        held = np.full(len(walked), -1)
        for x, tr in enumerate(mine):
            stop = tr.close_bar if tr.close_bar is not None else i1 + 1
            held[tr.open_bar - i0 : stop - i0] = x
        on = held >= 0
        pick = np.where(on, held, 0)
        sign = np.array([float(tr.sign) for tr in mine])[pick]
        entry = np.array([tr.entry_price for tr in mine])[pick]
        qty = np.array([tr.qty for tr in mine])[pick]
        first = np.array([tr.mark for tr in mine])[pick]
        opened = np.array([tr.open_bar for tr in mine])[pick]
        good_at = m.last_good[i0 : i1 + 1]
        marks = np.where(good_at > opened, m.close[np.maximum(good_at, 0)], first)
        u = np.where(on, sign * (marks - entry) * qty, 0.0)
        unrealized_sum = unrealized_sum + u
        exposed |= on
        if mine[-1].close_bar is None:
            unrealized_end[mine[-1].id] = float(u[-1])
    return Outcome(
        events=[],
        trading=trading,
        trades=book.trades,
        unrealized=unrealized_end,
        equity=cash_balance + unrealized_sum,
        exposed=exposed,
        funding_settled=settled,
        funding_skipped=skipped,
        bust_time=None,
    )
