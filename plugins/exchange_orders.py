"""Order identities and sizes for the ``exchange`` executor: client order ids derived from the event
that asked for the order, quantities and prices rounded to a market's precision, and the market's
minimums checked before anything is sent.

Client order ids: ``pw`` + a one-letter leg + ``-`` + 30 hex digits of SHA-256 over the account and
the event key (``strategy/rule/symbol/bar/kind``), 33 characters, inside Binance's
``^[.A-Z:/a-z0-9_-]{1,36}$`` (and Bybit's 36, OKX's 32 alphanumeric when ``compact``). The same
event always gives the same id, so an order whose answer was lost (a timeout, a crash) is found on
the exchange by that id instead of being sent again. Legs: ``e`` entry, ``c`` close (of this event's
reversal or flat), ``s`` stop-loss, ``t`` take-profit, ``r`` trailing stop; the protective exits of a
position derive from its entry's id, so they too are the same after a restart.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

LEGS = {"entry": "e", "close": "c", "stop_loss": "s", "take_profit": "t", "trailing_stop": "r"}
BINANCE_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


def client_order_id(account: str, key: str, leg: str, *, compact: bool = False) -> str:
    """The client order id of ``leg`` (a name in :data:`LEGS`) for the event ``key`` on ``account``."""
    digest = hashlib.sha256(f"{account}\n{key}\n{leg}".encode()).hexdigest()
    if compact:  # OKX: alphanumeric, at most 32
        return f"pw{LEGS[leg]}{digest[:29]}"
    return f"pw{LEGS[leg]}-{digest[:30]}"


def exit_id(entry_id: str, leg: str, *, compact: bool = False) -> str:
    """The client order id of a protective exit (``stop_loss``/``take_profit``/``trailing_stop``) of
    the position opened by the order ``entry_id``."""
    digest = hashlib.sha256(f"{entry_id}\n{leg}".encode()).hexdigest()
    return f"pw{LEGS[leg]}{digest[:29]}" if compact else f"pw{LEGS[leg]}-{digest[:30]}"


@dataclass(frozen=True)
class MarketRules:
    """What an exchange allows in one market (from ccxt's ``markets``)."""

    symbol: str  # ccxt's unified symbol, e.g. BTC/USDT:USDT
    amount_step: Decimal
    price_step: Decimal
    min_qty: Decimal | None
    min_notional: Decimal | None
    contract_size: Decimal = Decimal(1)

    @classmethod
    def from_ccxt(cls, market: dict[str, Any], precision_mode: int) -> MarketRules:
        """From a ccxt market; ``precision_mode`` is the exchange's ``precisionMode`` (4: tick size)."""
        prec = market.get("precision") or {}
        limits = market.get("limits") or {}

        def step(value: Any) -> Decimal:
            if value is None:
                raise ValueError(f"market {market.get('symbol')} has no precision")
            if precision_mode == 4:  # TICK_SIZE
                return Decimal(str(value))
            return Decimal(1).scaleb(-int(value))  # DECIMAL_PLACES

        def limit(name: str) -> Decimal | None:
            value = (limits.get(name) or {}).get("min")
            return Decimal(str(value)) if value is not None else None

        return cls(
            symbol=str(market["symbol"]),
            amount_step=step(prec.get("amount")),
            price_step=step(prec.get("price")),
            min_qty=limit("amount"),
            min_notional=limit("cost"),
            contract_size=Decimal(str(market.get("contractSize") or 1)),
        )

    def qty(self, size_usd: float, price: float) -> Decimal:
        """The number of contracts for ``size_usd`` at ``price``, rounded *down* to the amount step."""
        raw = Decimal(str(size_usd)) / Decimal(str(price)) / self.contract_size
        return round_step(raw, self.amount_step, ROUND_DOWN)

    def round_qty(self, qty: float | Decimal) -> Decimal:
        return round_step(Decimal(str(qty)), self.amount_step, ROUND_DOWN)

    def round_price(self, price: float) -> Decimal:
        """``price`` to the nearest tick."""
        return round_step(Decimal(str(price)), self.price_step, ROUND_HALF_UP)

    def too_small(self, qty: Decimal, price: float, raw_qty: float) -> str | None:
        """Why ``qty`` contracts at ``price`` is under the market's minimum quantity or notional
        (with the numbers), or None when it may be sent."""
        notional = qty * self.contract_size * Decimal(str(price))
        shown = f"qty {qty} (rounded down from {raw_qty:.10g} to the step {self.amount_step})"
        if qty <= 0 or (self.min_qty is not None and qty < self.min_qty):
            return f"{shown} is under the minimum quantity {self.min_qty} of {self.symbol}"
        if self.min_notional is not None and notional < self.min_notional:
            return (
                f"{shown} x price {price:.10g} = {notional:.2f} USD is under the minimum notional "
                f"{self.min_notional} USD of {self.symbol}"
            )
        return None


def round_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    """``value`` to a whole number of ``step`` (``ROUND_DOWN`` or ``ROUND_HALF_UP``), exactly."""
    if step <= 0:
        return value
    return ((value / step).to_integral_value(rounding=rounding) * step).normalize()


def finite(x: Any) -> float | None:
    """``x`` as a float when it is a finite number, else None (unknown)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


__all__ = ["LEGS", "MarketRules", "client_order_id", "exit_id", "finite", "round_step"]
