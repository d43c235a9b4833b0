"""Rule events of a backtest, built on first use.

A year of bars can fire tens of thousands of events; most are only counted (statistics, forward
moves) and few are ever shown. :class:`LazyEvent` holds what identifies an event (kind, strategy,
rule, symbol, bar) and builds its message and values with
:func:`~perpwatch.evaluation.rules.build_event` the first time one of them is read, its signal
alone with :func:`~perpwatch.evaluation.rules.signal_at` (all the trading layer reads); equal,
field by field, to the event ``build_event`` returns.
"""

from __future__ import annotations

from typing import Any

from perpwatch.evaluation.evaluate import Evaluation
from perpwatch.evaluation.events import Event, OrderIntent
from perpwatch.evaluation.rules import build_event, signal_at
from perpwatch.language.compiler import Rule, Strategy


class LazyEvent(Event):
    """An :class:`Event` whose ``message``, ``values`` and ``signal`` are built when first read."""

    def __init__(self, strategy: Strategy, rule: Rule, ev: Evaluation, i: int, kind: str):
        self.kind = kind
        self.strategy = strategy.name
        self.rule = rule.name
        self.symbol = ev.symbol
        self.time = int(ev.frame.times[i])
        self.severity = rule.severity
        self.interval = strategy.interval
        self._source: tuple[Strategy, Rule, Evaluation, int] | None = (strategy, rule, ev, i)
        self._built: dict[str, Any] = {}

    def _full(self) -> dict[str, Any]:
        if self._source is not None:
            full = build_event(*self._source, self.kind)
            built = {"message": full.message, "values": full.values, "signal": full.signal}
            self._built = {**built, **self._built}  # what was read or set already stays
            self._source = None  # the evaluation is no longer needed by this event
        return self._built

    @property
    def message(self) -> str:
        return str(self._full()["message"])

    @message.setter
    def message(self, value: str) -> None:
        self._built["message"] = value

    @property
    def values(self) -> dict[str, Any]:
        return self._full()["values"]

    @values.setter
    def values(self, value: dict[str, Any]) -> None:
        self._built["values"] = value

    @property
    def signal(self) -> OrderIntent | None:
        if "signal" not in self._built:  # the trading layer reads only this: no message rendered for it
            assert self._source is not None
            _, rule, ev, i = self._source
            self._built["signal"] = signal_at(rule, ev, i)
        return self._built["signal"]

    @signal.setter
    def signal(self, value: OrderIntent | None) -> None:
        self._built["signal"] = value

    def eager(self) -> Event:
        """The same event as a plain :class:`Event`."""
        return Event(
            kind=self.kind,
            strategy=self.strategy,
            rule=self.rule,
            symbol=self.symbol,
            time=self.time,
            severity=self.severity,
            message=self.message,
            values=self.values,
            signal=self.signal,
            interval=self.interval,
        )

    def __repr__(self) -> str:  # never builds: a repr of a result stays cheap
        return f"LazyEvent({self.key})"
