"""The trading glue: fired signals -> risk checks (``risk.py``) -> the strategy's executor.

The runner (and the backtest) call :meth:`Trading.on_bar` once per (strategy, symbol) per evaluated
bar, after every rule of every strategy has stepped, inside the cycle's transaction. It

1. settles funding on the strategy's open position for that symbol (rate: ``funding.close`` at the
   bar, when known) and marks the position at ``price.close``;
2. for each ``fired`` event with a signal, checks the data, then the risk limits, and submits what
   passes to the executor named by ``execute:``.

Before both, an executor that implements ``Protective`` (``paper`` does) has the bar's open, high,
low and close judged against the open position's protective exits and liquidation price
(``check_exits``); what that closes is an ``order`` event of the pseudo-rule ``exit:<reason>``
with ``values["reason"]`` (``stop_loss``, ``take_profit``, ``trailing_stop``, ``liquidation``),
at the bar's open time. An entry whose protective exits are unknown at its bar is ``rejected``.

A bust account opens nothing: once :attr:`Trading.bust` is set (the backtest sets it when the
equity after a bar is at or below zero), every entry is ``rejected`` with that reason (a reversal
closes instead); closing stays allowed.

It returns events for the runner to record: ``rejected`` (the message is the reason), ``order``
(the message says what filled) and ``no_order`` (nothing to do: flat without a position, or the
side already held). Suppressed events never trade.

Fill price: live, orders fill at the bar's ``price.close`` (the latest price the cycle has) at the
clock's time; the backtest passes ``fill_price`` / ``fill_time``: the next bar's open.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

from perpwatch.api.executors import Notice, Reconciling
from perpwatch.api.exits import check_exits_known
from perpwatch.api.interfaces import Accounting, Executor, ExecutorError, Fill, Position, Protective
from perpwatch.common.clock import Clock
from perpwatch.common.timeutil import DAY
from perpwatch.evaluation.evaluate import Evaluation
from perpwatch.evaluation.events import Event, OrderIntent
from perpwatch.language.compiler import Rule, Strategy
from perpwatch.live.risk import RiskGate, Verdict, halt, market_value, rule_inputs, unknown_inputs


class Trading:
    """Turns fired signals into orders behind the risk limits."""

    def __init__(self, store: Any, executors: Mapping[str, Executor], clock: Clock | None = None):
        self.store = store
        self.executors = dict(executors)
        self.clock = clock or Clock()
        self.risk = RiskGate(store)
        self._days: dict[str, int] = {}  # strategy -> the UTC day whose start is noted
        self._inputs: dict[tuple[int, str], list[tuple[str, int]]] = {}
        self._accounting = {name: isinstance(ex, Accounting) for name, ex in self.executors.items()}
        #: set (the reason) once the account is bust: no entry passes from then on, closing stays allowed
        self.bust: str | None = None
        self._protective = {name: isinstance(ex, Protective) for name, ex in self.executors.items()}

    async def on_bar(
        self,
        strategy: Strategy,
        symbol: str,
        bar_time: int,
        ev: Evaluation,
        i: int,
        events: list[Event],
        *,
        fill_price: float | None = None,
        fill_time: int | None = None,
        exit_bars: int = 1,
    ) -> list[Event]:
        """Funding, marks and this bar's signals for one strategy and symbol; the events to record.

        ``exit_bars``: how many of the newest bars (ending at ``i``) to judge protective exits on, in
        order: the runner passes the bars it stepped, so a cycle that catches up on missed bars judges
        each of them (those that closed before the position opened aside)."""
        if not strategy.execute:
            return []
        signals = [e for e in events if e.kind == "fired" and e.signal is not None and e.symbol == symbol]
        executor = self.executors.get(strategy.execute)
        if executor is None:
            reason = f"no executor named {strategy.execute!r} is configured"
            return [_derived(e, "rejected", reason, {}) for e in signals]
        age = strategy.risk.max_data_age_ms
        price = market_value(ev, "price.close", i, age)
        out: list[Event] = []
        if self._protective[strategy.execute] and (
            strategy.has_exits or getattr(executor, "liquidates", True)
        ):
            protective = cast(Protective, executor)
            first = max(0, i - max(1, exit_bars) + 1)
            opened = None
            if first < i:  # catching up: only the bars that closed after the position opened are its own
                pos = await position_of(executor, strategy.name, symbol)
                opened = pos.opened if pos is not None else None
                first = i if opened is None else first
            for j in range(first, i + 1):
                t = bar_time if j == i else int(ev.frame.times[j])
                if opened is not None and t + strategy.step_ms <= opened:
                    continue
                close = price if j == i else market_value(ev, "price.close", j, age)
                hits = await self._exits(strategy, symbol, t, ev, j, protective, close)
                out += hits
                if hits:
                    break
        acct = cast(Accounting, executor) if self._accounting[strategy.execute] else None
        if acct is not None:
            if strategy.risk.max_daily_loss_pct is not None:
                await self._note_day(strategy.name, bar_time, acct)
            rate = market_value(ev, "funding.close", i, age)
            await acct.update(strategy.name, symbol, price, rate, bar_time + strategy.step_ms)
        for event in signals:
            out.extend(
                await self._act(strategy, symbol, event, ev, i, executor, acct, price, fill_price, fill_time)
            )
        return out

    async def _exits(
        self,
        strategy: Strategy,
        symbol: str,
        bar_time: int,
        ev: Evaluation,
        i: int,
        executor: Protective,
        close: float | None,
    ) -> list[Event]:
        """Bar ``i`` judged against the open position's exits; an ``order`` event per exit it hit."""
        age = strategy.risk.max_data_age_ms
        prices = (
            market_value(ev, "price.open", i, age),
            market_value(ev, "price.high", i, age),
            market_value(ev, "price.low", i, age),
            close,
        )
        fills = await executor.check_exits(strategy.name, symbol, bar_time, prices, bar_time)
        out = []
        for f in fills:
            reason = str(f.info.get("reason", "exit"))
            fill = {"side": f.side, "qty": f.qty, "price": f.price, "fee_usd": f.fee_usd, **f.info}
            out.append(
                Event(
                    kind="order",
                    strategy=strategy.name,
                    rule=f"exit:{reason}",
                    symbol=symbol,
                    time=bar_time,
                    severity="high" if reason == "liquidation" else "info",
                    message=f"{reason.replace('_', ' ')}: {_describe(f)}",
                    values={
                        "reason": reason,
                        "side": "flat",
                        "price": f.price,
                        "fill_time": f.time,
                        "fills": [fill],
                    },
                    interval=strategy.interval,
                )
            )
        return out

    async def _note_day(self, strategy: str, bar_time: int, acct: Accounting) -> None:
        """Snapshot equity and PnL when the strategy's first bar of a UTC day comes (before its marks)."""
        day = bar_time // DAY
        if self._days.get(strategy) == day:
            return
        if self.risk.day_start(strategy, day) is None:
            self.risk.note_day_start(strategy, day, await acct.equity(), await acct.pnl(strategy))
        self._days[strategy] = day

    async def _act(
        self,
        strategy: Strategy,
        symbol: str,
        event: Event,
        ev: Evaluation,
        i: int,
        executor: Executor,
        acct: Accounting | None,
        price: float | None,
        fill_price: float | None,
        fill_time: int | None,
    ) -> list[Event]:
        intent = event.signal
        assert intent is not None
        base = {"side": intent.side, "size_usd": intent.size_usd}

        def reject(reason: str) -> list[Event]:
            return [_derived(event, "rejected", reason, base)]

        if intent.side is None:
            return reject("the signal's side is unknown at this bar")
        if intent.side != "flat":
            problem = check_exits_known(intent)
            if problem:
                return reject(problem)
        rule = self._rule(strategy, event.rule)
        missing = unknown_inputs(ev, i, self._rule_inputs(strategy, rule)) if rule is not None else []
        if missing:
            return reject(
                f"data unknown or older than max_data_age at this bar: {', '.join(missing)}; not acting"
            )
        if price is None:
            return reject("price.close is unknown or older than max_data_age at this bar; not acting")
        px = price if fill_price is None else fill_price
        if not (isinstance(px, float | int) and math.isfinite(px) and px > 0):
            return reject("no price to fill at (the next bar's open is unknown)")
        t = int(self.clock.time() * 1000) if fill_time is None else int(fill_time)
        current = await position_of(executor, strategy.name, symbol)
        if intent.side == "flat":
            if current is None:
                return [_derived(event, "no_order", "flat: no position to close; nothing to do", base)]
            return await self._submit(event, executor, OrderIntent("flat", intent.size_usd), px, t, base)
        size = intent.size_usd
        if size is None or not math.isfinite(size):
            return reject("size_usd is unknown at this bar")
        if size <= 0:
            return reject(f"size_usd is {size:g}: nothing to open")
        if current is not None and current.side == intent.side:
            text = (
                f"{intent.side}: already {current.side} {_qty(current)}; nothing to do (signals are targets)"
            )
            return [_derived(event, "no_order", text, base)]
        if self.bust is not None:
            verdict = Verdict(float(size), self.bust)
        else:
            pnl_now = equity_now = None
            if acct is not None and strategy.risk.max_daily_loss_pct is not None:
                pnl_now, equity_now = await acct.pnl(strategy.name), await acct.equity()
            elsewhere = 0  # read only when a limit needs it: listing every position costs
            if strategy.risk.max_open_positions is not None:
                mine = [p for p in await executor.positions() if p.strategy == strategy.name]
                elsewhere = len(mine) - (current is not None)
            verdict = self.risk.check_open(
                strategy,
                symbol,
                float(size),
                bar_time=event.time,
                open_elsewhere=elsewhere,
                pnl_now=pnl_now,
                equity_now=equity_now,
            )
        if verdict.ok:
            return await self._submit(
                event, executor, replace(intent, size_usd=verdict.size_usd), px, t, base, verdict.note
            )
        if current is None:
            return reject(verdict.reason or "")
        out = reject(f"{verdict.reason}; closed the {current.side} position instead of reversing")
        return out + await self._submit(event, executor, OrderIntent("flat", None), px, t, base)

    async def _submit(
        self,
        event: Event,
        executor: Executor,
        intent: OrderIntent,
        price: float,
        t: int,
        base: dict[str, Any],
        note: str | None = None,
    ) -> list[Event]:
        try:
            once = getattr(executor, "submit_once", None)  # the event's key makes a real order idempotent
            if once is not None:
                fills = await once(event.key, event.strategy, event.symbol, intent, price, t)
            else:
                fills = await executor.submit(event.strategy, event.symbol, intent, price, t)
        except ExecutorError as e:
            if getattr(e, "halt", False):  # a margin rejection, too many exchange errors: the kill switch
                halt(self.store, str(e))
            return [_derived(event, "rejected", f"executor refused the order: {e}", base)]
        values = {
            **base,
            "price": price,
            "fill_time": t,
            "fills": [
                {"side": f.side, "qty": f.qty, "price": f.price, "fee_usd": f.fee_usd, **f.info}
                for f in fills
            ],
        }
        text = "; ".join(_describe(f) for f in fills) or "no fill (the executor did nothing)"
        if note:
            text += f" ({note})"
        return [_derived(event, "order", text, values)]

    async def reconcile(self, now_ms: int) -> list[Event]:
        """Start-up and every cycle, before any signal: each executor that reconciles with an exchange
        (``Reconciling``) compares it with its books. A halting notice sets the kill switch with its
        reason. The notices come back as events of the pseudo-rule ``reconcile:<executor>`` at
        ``now_ms``: ``halted`` (critical) or ``reconciled`` (info), one per (strategy, symbol)."""
        out: list[Event] = []
        for name, executor in self.executors.items():
            if not isinstance(executor, Reconciling):
                continue
            merged: dict[tuple[str, str, bool], list[Notice]] = {}
            for notice in await executor.reconcile():
                merged.setdefault((notice.strategy or name, notice.symbol or "*", notice.halt), []).append(
                    notice
                )
            for (strategy, symbol, halting), notices in merged.items():
                message = "; ".join(n.message for n in notices)
                if halting:
                    halt(self.store, message)
                values = {k: v for n in notices for k, v in n.values.items()}
                out.append(
                    Event(
                        kind="halted" if halting else "reconciled",
                        strategy=strategy,
                        rule=f"reconcile:{name}",
                        symbol=symbol,
                        time=now_ms,
                        severity="critical" if halting else "info",
                        message=message,
                        values=values,
                    )
                )
        return out

    def _rule(self, strategy: Strategy, name: str) -> Rule | None:
        return next((r for r in strategy.rules if r.name == name), None)

    def _rule_inputs(self, strategy: Strategy, rule: Rule) -> list[tuple[str, int]]:
        key = (id(strategy.plan), rule.name)
        if key not in self._inputs:
            self._inputs[key] = rule_inputs(strategy, rule)
        return self._inputs[key]


async def position_of(executor: Executor, strategy: str, symbol: str) -> Position | None:
    """The strategy's open position in ``symbol``: the executor's ``position(strategy, symbol)`` when
    it has one (one lookup), else found among every position it lists."""
    lookup = getattr(executor, "position", None)
    if lookup is not None:
        return cast(Position | None, await lookup(strategy, symbol))
    return next(
        (p for p in await executor.positions() if p.strategy == strategy and p.symbol == symbol), None
    )


def _derived(event: Event, kind: str, message: str, values: dict[str, Any]) -> Event:
    return Event(
        kind=kind,
        strategy=event.strategy,
        rule=event.rule,
        symbol=event.symbol,
        time=event.time,
        severity=event.severity,
        message=message,
        values=dict(values),
        signal=event.signal,
        interval=event.interval,
    )


def _qty(p: Position) -> str:
    return f"{p.qty:.6g} {p.symbol} since entry {p.entry_price:,.2f}"


def _describe(f: Fill) -> str:
    action = f.info.get("action", "")
    text = f"{action} {f.side} {f.qty:.6g} {f.symbol} @ {f.price:,.2f}, fee {f.fee_usd:,.2f}"
    if action == "close":
        text += f", pnl {f.info.get('pnl', 0.0):+,.2f}"
    return text
