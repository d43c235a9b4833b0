"""Protective exits: the one set of rules paper trading, backtests and executors share.

A position opened with a ``stop_loss``, ``take_profit`` or ``trailing_stop`` (an
:class:`~perpwatch.evaluation.events.ExitDistance` on its :class:`OrderIntent`) gets price levels
from its entry fill (:func:`exit_levels`); every later bar is checked against them
(:func:`check_bar`), starting with the bar whose open the entry filled at.

The rules, for a long (a short is the mirror image):

- the stop is hit when the bar's low reaches it; the fill is at the stop, or at the bar's open when
  the bar opened at or below it (a gap through the stop fills at the open, not at the stop);
- the take-profit is hit when the bar's high reaches it; the fill is at the take-profit, or at the
  open when the bar opened at or above it;
- when the stop and the take-profit both lie inside one bar, the stop is taken (the order of the
  prices inside a bar is unknown; the conservative assumption);
- the trailing stop lies ``distance`` below the best (highest) price since entry; the best price of
  the bars before this one and this bar's open set it for this bar, and this bar's high raises it
  for the next (a high and a low inside one bar never both count in its favour). The stop that
  lies closer to the price wins (reason ``trailing_stop`` when the trailing level is above the
  fixed stop, else ``stop_loss``);
- a liquidation price (the margin model, :mod:`perpwatch.api.margin`) is one more stop level, with
  reason ``liquidation``; a protective stop at the same price or closer is taken first.

Slippage and fees are the executor's: these functions return the price the exit is triggered at
(before slippage). A bar whose high or low is unknown is judged by the prices of it that are known
(open, close); a bar with none known is not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from perpwatch.evaluation.events import ExitDistance, OrderIntent

#: Why a position was closed other than by a signal (the ``reason`` of its ``order`` event).
EXIT_REASONS = ("stop_loss", "take_profit", "trailing_stop", "liquidation")


@dataclass(frozen=True)
class Levels:
    """The protective levels of one open position, in prices (None: none of that kind)."""

    side: str  # long | short
    stop: float | None = None  # stop-loss price
    take: float | None = None  # take-profit price
    trail: float | None = None  # trailing-stop distance, in price units
    best: float | None = None  # best price since entry (highest for a long, lowest for a short)
    liquidation: float | None = None  # the margin model's liquidation price

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.stop, self.take, self.trail, self.liquidation))

    def trailing_level(self) -> float | None:
        """Where the trailing stop lies now."""
        if self.trail is None or self.best is None:
            return None
        return self.best - self.trail if self.side == "long" else self.best + self.trail


@dataclass(frozen=True)
class Hit:
    """An exit a bar triggered: why, and the price it fills at before slippage."""

    reason: str  # one of EXIT_REASONS
    price: float
    level: float  # the level that was reached (== price unless the bar gapped through it)


class ExitProblem(ValueError):
    """A protective exit that cannot be placed (unknown at the decision bar, not positive, or beyond
    zero); the entry must not open without it."""


def exit_levels(side: str, entry_price: float, intent: OrderIntent) -> Levels:
    """The levels of a ``side`` position filled at ``entry_price`` with ``intent``'s exits.

    Raises :class:`ExitProblem` naming the exit when one is unknown or cannot lie on the right side of
    the fill (a long's stop at or below zero)."""
    sign = 1 if side == "long" else -1
    stop = take = trail = None
    if intent.stop_loss is not None:
        stop = entry_price - sign * _distance("stop_loss", intent.stop_loss, entry_price)
        if stop <= 0:
            raise ExitProblem(
                f"stop_loss {intent.stop_loss.describe()} from the fill {entry_price:.8g} lies at or below zero"
            )
    if intent.take_profit is not None:
        take = entry_price + sign * _distance("take_profit", intent.take_profit, entry_price)
        if take <= 0:
            raise ExitProblem(
                f"take_profit {intent.take_profit.describe()} from the fill {entry_price:.8g} lies at or below zero"
            )
    if intent.trailing_stop is not None:
        trail = _distance("trailing_stop", intent.trailing_stop, entry_price)
        if side == "long" and trail >= entry_price:
            raise ExitProblem(
                f"trailing_stop {intent.trailing_stop.describe()} is at least the fill {entry_price:.8g}"
            )
    return Levels(side=side, stop=stop, take=take, trail=trail, best=entry_price)


def check_exits_known(intent: OrderIntent) -> str | None:
    """Why ``intent``'s exits cannot be placed whatever the fill (unknown or not positive), or None."""
    for name, x in intent.exits().items():
        if x.value is None or not math.isfinite(x.value):
            return f"{name} is unknown at this bar; not opening a position without it"
        if x.value <= 0:
            return f"{name} is {x.describe()} at this bar: it must be positive; not opening"
    return None


def _distance(name: str, x: ExitDistance, entry_price: float) -> float:
    d = x.distance(entry_price)
    if d is None:
        raise ExitProblem(f"{name} is {x.describe()}: it must be a positive, known distance")
    return d


def check_bar(
    levels: Levels,
    open_: float | None,
    high: float | None,
    low: float | None,
    close: float | None = None,
) -> tuple[Hit | None, Levels]:
    """Judge one bar against ``levels``: the exit it triggers (or None), and the levels for the next
    bar (the best price moved on by this bar). See the module doc for the rules."""
    if levels.side == "long":
        hit, best = _check_long(levels, open_, high, low, close)
        return hit, replace(levels, best=best)
    mirrored = Levels(
        side="long",
        stop=_neg(levels.stop),
        take=_neg(levels.take),
        trail=levels.trail,
        best=_neg(levels.best),
        liquidation=_neg(levels.liquidation),
    )
    hit, best = _check_long(mirrored, _neg(open_), _neg(low), _neg(high), _neg(close))
    if hit is not None:
        hit = Hit(hit.reason, -hit.price, -hit.level)
    return hit, replace(levels, best=_neg(best))


def _check_long(
    lv: Levels, o: float | None, h: float | None, lo: float | None, c: float | None
) -> tuple[Hit | None, float | None]:
    o, h, lo, c = (_known(x) for x in (o, h, lo, c))
    known = [x for x in (o, h, lo, c) if x is not None]
    if not known:
        return None, lv.best
    high = max(known) if h is None else max(h, *known)
    low = min(known) if lo is None else min(lo, *known)
    best = lv.best
    if o is not None and best is not None:
        best = max(best, o)
    # Stop levels, the closest to the price first; a protective stop before a liquidation at one price.
    stops: list[tuple[float, int, str]] = []
    if lv.stop is not None:
        stops.append((lv.stop, 2, "stop_loss"))
    if lv.trail is not None and best is not None:
        stops.append((best - lv.trail, 1, "trailing_stop"))
    if lv.liquidation is not None:
        stops.append((lv.liquidation, 0, "liquidation"))
    if stops:
        level, _, reason = max(stops)
        if low <= level:
            price = o if o is not None and o <= level else level
            return Hit(reason, price, level), best
    if lv.take is not None and high >= lv.take:
        price = o if o is not None and o >= lv.take else lv.take
        return Hit("take_profit", price, lv.take), best
    if best is not None:
        best = max(best, high)
    return None, best


def _known(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _neg(x: float | None) -> float | None:
    return None if x is None else -x


__all__ = ["EXIT_REASONS", "ExitProblem", "Hit", "Levels", "check_bar", "check_exits_known", "exit_levels"]
