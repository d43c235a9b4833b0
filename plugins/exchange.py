"""``exchange``: real orders on a USD-M perpetual futures exchange through ccxt (``perpwatch[exchange]``).

Binance USD-M (``binanceusdm``) first; Bybit (``bybit``) and OKX (``okx``) through the same unified
ccxt calls. ``network: testnet`` uses Binance's demo-trading endpoints (ccxt no longer supports the
old futures testnet) and the sandbox of Bybit and OKX; ``live`` trades real money.

What it guarantees (``docs/trading.md`` has the whole story):

* Keys come from the environment only (``key_env``/``secret_env``/``password_env`` name the
  variables); they are never logged, never in an error, event or either database.
* Before a symbol's first order: its margin mode and leverage are set (once, remembered).
* Quantities are rounded down to the market's step, prices to its tick; an order under the minimum
  quantity or notional is refused before sending (``rejected`` with the numbers).
* Every order has a client order id derived from the event that asked for it
  (:mod:`perpwatch.plugins.exchange_orders`), and is journalled as ``sending`` before it is sent
  (:mod:`perpwatch.plugins.exchange_journal`, committed at once). An order whose outcome is
  unknown (a timeout, a 5xx, a crash) is looked up by that id before anything is sent again.
* Each order's status is confirmed (filled, partial, rejected, expired); fills, fees (from the
  account's trades) and the average price are recorded; a partial fill opens (or closes) what filled.
* Right after an entry fills, its protective exits go on the exchange as reduce-only conditional
  orders (STOP_MARKET, TAKE_PROFIT_MARKET, TRAILING_STOP_MARKET on Binance), so they hold when
  perpwatch does not; a close cancels them.
* :meth:`ExchangeExecutor.reconcile` (start-up and every cycle, called by the trading layer)
  resolves unknown orders, places missing exits, notices exits that fired, and compares the
  exchange's positions and open orders with the journal: any mismatch halts trading (the kill
  switch) with the reason.
* It halts by itself after ``max_consecutive_errors`` exchange errors in a row, an order rejected
  for margin, or an authentication failure. A 429/418 is honoured: its ``Retry-After`` is waited
  when short (``max_wait_seconds``), otherwise nothing is sent until it has passed.
* ``dry_run: true`` sends nothing that changes the account: it logs exactly what it would send,
  with the rounded numbers.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from perpwatch.api.executors import Notice
from perpwatch.api.exits import ExitProblem, check_exits_known, exit_levels
from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import Executor, ExecutorError, Fill, PluginContext, PluginError, Position
from perpwatch.common.extras import require
from perpwatch.common.redact import redact, secret_parts
from perpwatch.common.retry_after import retry_after_seconds
from perpwatch.common.timeutil import format_time
from perpwatch.evaluation.events import OrderIntent
from perpwatch.plugins.exchange_journal import FINAL, Journal, OrderRow, PositionRow, journal_path
from perpwatch.plugins.exchange_orders import MarketRules, client_order_id, exit_id, finite

log = logging.getLogger("perpwatch.plugins.exchange")

EXCHANGES = ("binanceusdm", "bybit", "okx")
EXIT_LEGS = ("stop_loss", "take_profit", "trailing_stop")
_CODE = re.compile(r'"code"\s*:\s*"?(-?\d+)')
MARGIN_CODES = {-2019, -2018, -2027, -2028}  # margin insufficient, balance insufficient, leverage/position
AUTH_CODES = {-2014, -2015, -1022}
CONFIRM_POLLS = 5  # fetches of an order that is still open after sending (market orders)


class ExchangeHalt(ExecutorError):
    """A failure after which nothing more may be opened on this account: the trading layer sets the
    kill switch with this message."""

    halt = True
    answered = False  # the exchange answered the request (it refused it); else its outcome is unknown


@dataclass
class Outcome:
    """What became of one order."""

    cid: str
    status: str  # see exchange_journal.ex_orders
    filled: float = 0.0
    avg_price: float | None = None
    fee: float | None = None  # None: unknown
    exchange_id: str | None = None
    note: str = ""


class ExchangeExecutor(Executor):
    """Orders on a real exchange (see the module doc)."""

    name: ClassVar[str] = "exchange"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["network"],
        "properties": {
            "exchange": {"enum": list(EXCHANGES), "default": "binanceusdm"},
            "network": {
                "enum": ["testnet", "live"],
                "description": "testnet: Binance demo trading, Bybit/OKX sandbox; live: real money",
            },
            "account": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "default": "exchange"},
            "key_env": {
                "type": "string",
                "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                "default": "PERPWATCH_EXCHANGE_KEY",
            },
            "secret_env": {
                "type": "string",
                "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                "default": "PERPWATCH_EXCHANGE_SECRET",
            },
            "password_env": {
                "type": "string",
                "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                "description": "OKX's API passphrase",
            },
            "quote": {"enum": ["USDT", "USDC"], "default": "USDT"},
            "leverage": {"type": "integer", "minimum": 1, "maximum": 125, "default": 1},
            "margin_mode": {"enum": ["isolated", "cross"], "default": "isolated"},
            "dry_run": {"type": "boolean", "default": False},
            "max_consecutive_errors": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
            "max_wait_seconds": {"type": "number", "minimum": 0, "maximum": 60, "default": 5},
            "entry_order": {
                "enum": ["market", "limit"],
                "default": "market",
                "description": "limit: entries rest at the bar's price (less limit_offset_bps) until filled or "
                "limit_timeout_seconds, then the rest is cancelled; closes and exits are always market",
            },
            "limit_offset_bps": {"type": "number", "minimum": 0, "maximum": 500, "default": 0},
            "limit_timeout_seconds": {"type": "number", "minimum": 1, "maximum": 3600, "default": 60},
            "request_timeout_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 120,
                "default": 10,
            },
            "journal": {
                "type": "string",
                "minLength": 1,
                "description": "default: <state db>.exchange.sqlite",
            },
            "api_urls": {
                "type": "object",
                "additionalProperties": {"type": "string", "pattern": "^https?://"},
                "description": "replace ccxt's API URLs (a proxy, or the tests' stand-in)",
            },
        },
    }

    def __init__(self, options: dict[str, Any] | None = None, ctx: PluginContext | None = None):
        super().__init__(options, ctx)
        self._check_options()
        self._ccxt = require("ccxt.async_support", extra="exchange", purpose="the exchange executor")
        o = self.options
        self.exchange_id = str(o.get("exchange", "binanceusdm"))
        self.network = str(o["network"])
        self.account = str(o.get("account", "exchange"))
        self.quote = str(o.get("quote", "USDT"))
        self.leverage = int(o.get("leverage", 1))
        self.margin_mode = str(o.get("margin_mode", "isolated"))
        self.dry_run = bool(o.get("dry_run", False))
        self.max_errors = int(o.get("max_consecutive_errors", 3))
        self.max_wait = float(o.get("max_wait_seconds", 5))
        self.entry_order = str(o.get("entry_order", "market"))
        self.limit_offset = float(o.get("limit_offset_bps", 0)) / 10_000
        self.limit_timeout = float(o.get("limit_timeout_seconds", 60))
        self.timeout = float(o.get("request_timeout_seconds", 10))
        self.compact_ids = self.exchange_id == "okx"
        self._credentials = self._read_credentials()
        self._hidden = set(self.ctx.secrets)
        for value in self._credentials.values():
            self._hidden |= secret_parts(value)
        self._log_filter = _Redacting(self._hidden)
        for name in _ccxt_loggers():
            logging.getLogger(name).addFilter(self._log_filter)  # ccxt's DEBUG lines show the key header
        self.clock = self.ctx.clock
        self.journal = Journal(str(o.get("journal") or journal_path(self.ctx.state_path)), self.account)
        self._client: Any = None
        self._rules: dict[str, MarketRules] = {}
        self._reconciled = False
        self._halt: str | None = None  # a halt met after an entry filled (raised on the next entry)

    # -- set-up ---------------------------------------------------------------------------------

    def _check_options(self) -> None:
        from jsonschema.exceptions import best_match

        from perpwatch.language.schemas import schema_validator

        error = best_match(schema_validator(self.options_schema).iter_errors(self.options))
        if error is not None:
            at = "/".join(str(p) for p in error.absolute_path) or "options"
            raise PluginError(f"exchange executor: {at}: {error.message}", retryable=False)

    def _read_credentials(self) -> dict[str, str]:
        names = {
            "apiKey": str(self.options.get("key_env", "PERPWATCH_EXCHANGE_KEY")),
            "secret": str(self.options.get("secret_env", "PERPWATCH_EXCHANGE_SECRET")),
        }
        if self.options.get("password_env"):
            names["password"] = str(self.options["password_env"])
        elif self.exchange_id == "okx":
            raise PluginError(
                "exchange executor: okx needs password_env (the API passphrase)", retryable=False
            )
        found, missing = {}, []
        for field_name, var in names.items():
            value = os.environ.get(var, "")
            if value:
                found[field_name] = value
            else:
                missing.append(var)
        if missing:
            raise PluginError(
                f"exchange executor: environment variable(s) {', '.join(missing)} not set (the exchange's API "
                "credentials are read from the environment only)",
                retryable=False,
            )
        return found

    def _safe(self, text: str) -> str:
        """``text`` with the credentials (and the config's secrets) redacted."""
        return redact(text, self._hidden)

    def client(self) -> Any:
        """The ccxt exchange object (created on first use)."""
        if self._client is None:
            cls = getattr(self._ccxt, self.exchange_id)
            config: dict[str, Any] = {
                **self._credentials,
                "enableRateLimit": True,
                "timeout": int(self.timeout * 1000),
                "options": {"defaultType": "swap", "fetchCurrencies": False},
            }
            ex = cls(config)
            ex.options["warnOnFetchOpenOrdersWithoutSymbol"] = False  # reconciliation lists them all
            if self.network == "testnet":
                if self.exchange_id == "binanceusdm":
                    ex.enable_demo_trading(True)
                else:
                    ex.set_sandbox_mode(True)
            urls = self.options.get("api_urls")
            if urls:
                ex.urls["api"] = {**ex.urls.get("api", {}), **urls}
            self._client = ex
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.journal.close()
        for name in _ccxt_loggers():
            logging.getLogger(name).removeFilter(self._log_filter)

    def market_symbol(self, symbol: str) -> str:
        """perpwatch's coin (``BTC``) as ccxt's linear perpetual (``BTC/USDT:USDT``)."""
        return f"{symbol.upper()}/{self.quote}:{self.quote}"

    async def _ready(self, symbol: str) -> MarketRules:
        """The market's rules; its margin mode and leverage set before its first order."""
        sym = self.market_symbol(symbol)
        if sym not in self._rules:
            ex = self.client()
            markets = await self._call("load markets", ex.load_markets)
            if sym not in markets:
                raise ExecutorError(f"{self.exchange_id} has no market {sym}", retryable=False)
            self._rules[sym] = MarketRules.from_ccxt(markets[sym], int(ex.precisionMode))
        if not self.journal.setup_done(sym, self.leverage, self.margin_mode):
            if self.dry_run:
                log.info(
                    "dry run: would set margin mode %s and leverage %d on %s",
                    self.margin_mode,
                    self.leverage,
                    sym,
                )
            else:
                await self._set_margin_mode(sym)
                await self._call("set leverage", self.client().set_leverage, self.leverage, sym)
                self.journal.note_setup(sym, self.leverage, self.margin_mode)
        return self._rules[sym]

    async def _set_margin_mode(self, sym: str) -> None:
        params = {} if self.exchange_id == "binanceusdm" else {"leverage": self.leverage}
        try:
            await self._call("set margin mode", self.client().set_margin_mode, self.margin_mode, sym, params)
        except ExecutorError as e:
            if "No need to change margin type" not in str(e) and "-4046" not in str(e):
                raise

    # -- requests -------------------------------------------------------------------------------

    def _code(self, e: Exception) -> int | None:
        m = _CODE.search(str(e))
        return int(m.group(1)) if m else None

    def _kind(self, e: Exception) -> str:
        """rate | unknown | margin | auth | notfound | rejected | other."""
        c = self._ccxt
        code = self._code(e)
        if isinstance(e, c.OrderNotFound) or code == -2013:
            return "notfound"
        if isinstance(e, c.DDoSProtection):  # 429, 418 (RateLimitExceeded is one)
            return "rate"
        if isinstance(e, c.AuthenticationError | c.PermissionDenied) or code in AUTH_CODES:
            return "auth"
        if isinstance(e, c.InsufficientFunds) or code in MARGIN_CODES:
            return "margin"
        if isinstance(e, c.NetworkError):  # timeouts, 5xx, resets: the outcome is unknown
            return "unknown"
        if isinstance(e, c.BaseError):
            return "rejected"
        return "other"

    def _retry_after(self) -> float:
        headers = getattr(self._client, "last_response_headers", None) or {}
        value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
        wait = retry_after_seconds(value, self.clock.time())
        return 60.0 if wait is None else wait

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` (a ccxt call); exchange errors counted (halting after too many in a row),
        rate limits honoured, every message redacted. Raises ExecutorError subclasses; the ccxt
        exception is kept as ``__cause__``-free ``kind`` on it."""
        until = finite(self.journal.get("backoff_until"))
        if until is not None and self.clock.time() < until:
            raise _Failure(
                f"{what}: the exchange asked to wait until {format_time(int(until * 1000))}; nothing sent",
                "rate",
            )
        try:
            result = await fn(*args)
        except Exception as e:  # ccxt raises its own tree; anything else is a bug shown as one line
            kind = self._kind(e)
            text = self._safe(f"{what}: {type(e).__name__}: {e}")[:600]
            if kind == "rate":
                wait = self._retry_after()
                self.journal.put("backoff_until", repr(self.clock.time() + wait))
                text += f" (Retry-After {wait:g} s)"
            if kind in ("rate", "unknown", "other"):
                self._count_error(text)
            elif kind == "auth":
                raise _answered(
                    ExchangeHalt(f"{self.account}: authentication failed, halting: {text}", retryable=False)
                ) from None
            elif kind == "margin":
                raise _answered(
                    ExchangeHalt(f"{self.account}: rejected for margin, halting: {text}", retryable=False)
                ) from None
            raise _Failure(text, kind) from None
        self.journal.put("errors", None)
        return result

    def _count_error(self, text: str) -> None:
        n = int(self.journal.get("errors") or 0) + 1
        self.journal.put("errors", str(n))
        if n >= self.max_errors:
            raise ExchangeHalt(
                f"{self.account}: {n} exchange errors in a row (max_consecutive_errors {self.max_errors}), "
                f"halting; the last: {text}",
                retryable=False,
            )

    # -- orders ---------------------------------------------------------------------------------

    async def _lookup(self, cid: str, sym: str, trigger: bool) -> dict[str, Any] | None:
        """The order with client id ``cid`` on the exchange, or None when it does not exist there."""
        params: dict[str, Any] = {"clientOrderId": cid}
        if trigger:
            params["trigger"] = True
        try:
            return await self._call("look up order", self.client().fetch_order, None, sym, params)
        except _Failure as e:
            if e.kind == "notfound":
                return None
            raise

    async def _fee(self, sym: str, order: dict[str, Any]) -> float | None:
        """The fees the order's trades paid, in the quote currency (None: unknown)."""
        fee = order.get("fee") or {}
        if fee.get("cost") is not None and fee.get("currency") in (self.quote, None):
            return finite(fee["cost"])
        try:
            trades = await self._call(
                "fetch the order's trades",
                self.client().fetch_my_trades,
                sym,
                None,
                None,
                {"orderId": order["id"]},
            )
        except _Failure:
            return None
        costs = [
            finite((t.get("fee") or {}).get("cost"))
            for t in trades
            if str(t.get("order")) == str(order["id"])
        ]
        if not costs or any(c is None for c in costs):
            return None
        return float(sum(c for c in costs if c is not None))

    async def _absorb(self, row_cid: str, sym: str, order: dict[str, Any], conditional: bool) -> Outcome:
        """Record what the exchange says of an order (confirming a market order until it is final)."""
        polls = 0
        while (
            order.get("status") == "open"
            and not conditional
            and order.get("type") == "market"
            and polls < CONFIRM_POLLS
        ):
            polls += 1
            await self.clock.sleep(0.2 * polls)
            order = await self._lookup(row_cid, sym, False) or order
        filled = finite(order.get("filled")) or 0.0
        amount = finite(order.get("amount")) or 0.0
        ccxt_status = order.get("status")
        if ccxt_status == "open":
            status = "open"
        elif ccxt_status == "closed":
            status = "filled" if filled >= amount or conditional else "partial"
        elif ccxt_status in ("canceled", "expired", "rejected"):
            status = "partial" if filled > 0 else str(ccxt_status)
        else:
            status = "open" if conditional else "partial" if filled > 0 else "expired"
        avg = finite(order.get("average")) or (finite(order.get("price")) if filled > 0 else None)
        fee = await self._fee(sym, order) if filled > 0 else 0.0
        note = f"{ccxt_status}: filled {filled:g} of {amount:g}"
        out = Outcome(row_cid, status, filled, avg, fee, str(order.get("id")), note)
        self.journal.settle(
            row_cid, status, exchange_id=out.exchange_id, filled=filled, avg_price=avg, fee=fee, note=note
        )
        return out

    async def _order(
        self,
        *,
        strategy: str,
        symbol: str,
        key: str,
        leg: str,
        cid: str,
        side: str,
        qty: Decimal,
        ref_price: float | None,
        reduce_only: bool,
        params: dict[str, Any],
        exits: dict[str, Any] | None = None,
        position_id: int | None = None,
        limit: Decimal | None = None,
    ) -> Outcome:
        """Send one order at most once: its journal row first, a lookup when its outcome is unknown.
        ``limit``: a GTC limit order at that price instead of a market order."""
        sym = self.market_symbol(symbol)
        conditional = leg in EXIT_LEGS
        row = self.journal.order(cid)
        if row is not None and row.status == "sending":
            found = await self._lookup(cid, sym, conditional)
            if found is not None:
                return await self._absorb(cid, sym, found, conditional)
            self.journal.settle(cid, "lost", note="looked up after an unknown outcome: not on the exchange")
            row = self.journal.order(cid)
        if row is not None and row.status != "lost":
            return _outcome(row)
        params = {**params, "clientOrderId": cid}
        if reduce_only:
            params["reduceOnly"] = True
        kind = "market" if limit is None else "limit"
        if limit is not None:
            params["timeInForce"] = "GTC"
        shown = f"{self.exchange_id} {sym} {side.upper()} {kind.upper()} qty {qty}"
        shown += (f" price {limit}" if limit is not None else "") + "".join(
            f" {k} {v}" for k, v in params.items()
        )
        record_sending = functools.partial(
            self.journal.sending,
            cid,
            strategy=strategy,
            symbol=symbol,
            event_key=key,
            leg=leg,
            side=side,
            qty=str(qty),
            price=ref_price,
            reduce_only=reduce_only,
            exits=exits,
            position_id=position_id,
        )
        record_sending(status="dry_run" if self.dry_run else "sending")
        if self.dry_run:
            log.info("dry run: would send %s", shown)
            self.journal.settle(cid, "dry_run", note=f"would send {shown}")
            return Outcome(cid, "dry_run", note=f"dry run: would send {shown}")
        for attempt in (1, 2):
            try:
                order = await self._call(
                    f"send {leg} order {cid}",
                    self.client().create_order,
                    sym,
                    kind,
                    side,
                    float(qty),
                    None if limit is None else float(limit),
                    params,
                )
            except ExchangeHalt as e:
                if e.answered:  # refused (margin, keys); otherwise unknown: looked up later
                    self.journal.settle(cid, "rejected", note=str(e))
                raise
            except _Failure as e:
                if e.kind == "rate":  # refused before it was carried out
                    self.journal.settle(cid, "lost", note=str(e))
                    wait = (finite(self.journal.get("backoff_until")) or 0.0) - self.clock.time()
                    if attempt == 1 and wait <= self.max_wait:
                        await self.clock.sleep(max(0.0, wait))
                        self.journal.put("backoff_until", None)
                        record_sending()
                        continue
                    raise ExecutorError(f"{shown}: not sent: {e}") from None
                if e.kind in ("unknown", "other"):
                    found = await self._lookup(cid, sym, conditional)
                    if found is not None:
                        return await self._absorb(cid, sym, found, conditional)
                    raise ExecutorError(
                        f"{shown}: outcome unknown ({e}); not found by its client order id {cid}, not sent again; "
                        "reconciliation looks it up again next cycle"
                    ) from None
                self.journal.settle(cid, "rejected", note=str(e))
                raise ExecutorError(f"{shown}: rejected by the exchange: {e}", retryable=False) from None
            return await self._absorb(cid, sym, order, conditional)
        raise AssertionError("unreachable")

    async def _await_limit(self, cid: str, sym: str) -> Outcome:
        """A resting limit order: polled until it is done or ``limit_timeout_seconds`` passed, then
        what is left is cancelled; the outcome with what filled."""
        deadline = self.clock.monotonic() + self.limit_timeout
        step = max(1.0, min(5.0, self.limit_timeout / 10))
        while self.clock.monotonic() < deadline:
            await self.clock.sleep(min(step, max(0.0, deadline - self.clock.monotonic())))
            found = await self._lookup(cid, sym, False)
            if found is not None and found.get("status") != "open":
                return await self._absorb(cid, sym, found, False)
        try:
            await self._call(
                "cancel the limit order's rest", self.client().cancel_order, None, sym, {"clientOrderId": cid}
            )
        except _Failure as e:
            if e.kind not in ("notfound", "rejected"):  # it finished meanwhile: looked up below
                raise
        found = await self._lookup(cid, sym, False)
        if found is None:
            raise ExecutorError(f"limit order {cid} is no longer on the exchange", retryable=False)
        out = await self._absorb(cid, sym, found, False)
        if out.status == "open":
            raise ExecutorError(
                f"limit order {cid} is still open after cancelling it; reconciliation follows it up"
            )
        out.note += f" (limit order; the rest cancelled after {self.limit_timeout:g} s)"
        return out

    # -- the Executor interface -----------------------------------------------------------------

    async def submit(
        self, strategy: str, symbol: str, intent: OrderIntent, price: float, time: int
    ) -> list[Fill]:
        """Without the event's key the order id would not survive a restart: refused."""
        raise ExecutorError(
            "the exchange executor acts only through submit_once (with the event's key)", retryable=False
        )

    async def submit_once(
        self, key: str, strategy: str, symbol: str, intent: OrderIntent, price: float, time: int
    ) -> list[Fill]:
        """Act on ``intent`` for the event ``key``: the same key never sends the same order twice."""
        if self._halt is not None and intent.side != "flat":
            raise ExchangeHalt(self._halt, retryable=False)
        if not self._reconciled:
            notices = await self.reconcile()
            halting = [n.message for n in notices if n.halt]
            if halting:
                raise ExchangeHalt("; ".join(halting), retryable=False)
        side = intent.side
        if side not in ("long", "short", "flat"):
            raise ExecutorError(f"side {side!r} is not long, short or flat", retryable=False)
        rules = await self._ready(symbol)
        pos = self.journal.open_position(strategy, symbol)
        fills: list[Fill] = []
        if pos is not None and (side == "flat" or pos.side != side):
            fills += await self._close(pos, key, "signal", time)
        if side == "flat" or (pos is not None and pos.side == side):
            return fills
        if self.journal.open_position(strategy, symbol) is not None:  # the close filled only in part
            raise ExecutorError(
                f"{symbol}: the {pos.side if pos else ''} position did not close in full; not reversing"
            )
        held = [p for p in self.journal.positions() if p.symbol == symbol and p.strategy != strategy]
        if held:
            raise ExecutorError(
                f"{symbol}: strategy {held[0].strategy} already holds a {held[0].side} position on account "
                f"{self.account} (one position per symbol on an exchange account)",
                retryable=False,
            )
        size = intent.size_usd
        if size is None or not math.isfinite(size) or size <= 0 or not (math.isfinite(price) and price > 0):
            raise ExecutorError(f"size_usd {size!r} at price {price!r}: nothing to send", retryable=False)
        unknown = check_exits_known(intent)
        if unknown:
            raise ExecutorError(unknown, retryable=False)
        qty = rules.qty(size, price)
        small = rules.too_small(qty, price, size / price)
        if small:
            raise ExecutorError(f"not sent: {small}", retryable=False)
        cid = client_order_id(self.account, key, "entry", compact=self.compact_ids)
        exits = (
            {name: {"kind": x.kind, "value": x.value} for name, x in intent.exits().items()}
            if intent.has_exits
            else None
        )
        limit = None
        if self.entry_order == "limit":
            offset = -self.limit_offset if side == "long" else self.limit_offset
            limit = rules.round_price(price * (1 + offset))
        out = await self._order(
            strategy=strategy,
            symbol=symbol,
            key=key,
            leg="entry",
            cid=cid,
            side="buy" if side == "long" else "sell",
            qty=qty,
            ref_price=price,
            reduce_only=False,
            params={},
            exits=exits,
            limit=limit,
        )
        if out.status == "open":  # a resting limit order (sent now, or before a restart)
            out = await self._await_limit(cid, self.market_symbol(symbol))
        if out.status == "dry_run":
            log.info("dry run: %s", out.note)
            return fills
        row = self.journal.order(cid)
        assert row is not None
        pid = row.position_id
        if pid is None and out.filled > 0:
            pid = self._opened(row, out, time)
        if pid is None:
            raise ExecutorError(
                f"entry {cid}: {out.status} ({out.note}); no position opened", retryable=False
            )
        try:
            problems = await self._protect(pid)
        except ExchangeHalt as e:  # the entry filled: report it, and halt before anything else opens
            self._halt = str(e)
            problems = [str(e)]
        info: dict[str, Any] = {
            "action": "open",
            "trade_id": pid,
            "client_order_id": cid,
            "status": out.status,
            "order_id": out.exchange_id,
            "strategy": strategy,
        }
        if out.status == "partial":
            info["requested_qty"] = float(qty)
        if problems:
            info["exits_pending"] = "; ".join(problems)
        fills.append(
            Fill(
                symbol=symbol,
                side="buy" if side == "long" else "sell",
                qty=out.filled,
                price=out.avg_price or price,
                fee_usd=math.nan if out.fee is None else out.fee,
                time=time,
                info=info,
            )
        )
        return fills

    def _opened(self, row: OrderRow, out: Outcome, time: int) -> int:
        """The position an entry's fill opened, with its exits' prices from the fill."""
        side = "long" if row.side == "buy" else "short"
        avg = out.avg_price or row.price or 0.0
        stop = take = trail_pct = None
        if row.exits:
            intent = OrderIntent(side, None, **row.exits)
            try:
                levels = exit_levels(side, avg, intent)
            except ExitProblem as e:
                log.error("%s: %s; the position has no such exit", row.cid, e)
            else:
                stop, take = levels.stop, levels.take
                if levels.trail is not None:
                    trail_pct = levels.trail / avg * 100
        return self.journal.open(
            strategy=row.strategy,
            symbol=row.symbol,
            side=side,
            qty=out.filled,
            entry_price=avg,
            opened=time,
            entry_cid=row.cid,
            fee=out.fee or 0.0,
            stop=stop,
            take=take,
            trail_pct=trail_pct,
        )

    async def _protect(self, pid: int) -> list[str]:
        """Place the position's missing exits on the exchange (reduce-only); what could not be placed."""
        pos = self.journal.position(pid)
        if pos is None or pos.status != "open":
            return []
        rules = await self._ready(pos.symbol)
        problems = []
        qty = rules.round_qty(pos.qty)
        close_side = "sell" if pos.side == "long" else "buy"
        for leg in EXIT_LEGS:
            params: dict[str, Any]
            if leg == "stop_loss" and pos.stop is not None:
                params = {"stopLossPrice": float(rules.round_price(pos.stop))}
            elif leg == "take_profit" and pos.take is not None:
                params = {"takeProfitPrice": float(rules.round_price(pos.take))}
            elif leg == "trailing_stop" and pos.trail_pct is not None:
                params = {"trailingPercent": round(pos.trail_pct, 1)}
            else:
                continue
            cid = exit_id(pos.entry_cid, leg, compact=self.compact_ids)
            row = self.journal.order(cid)
            if row is not None and row.status in ("open", "dry_run"):
                continue
            try:
                await self._order(
                    strategy=pos.strategy,
                    symbol=pos.symbol,
                    key=pos.entry_cid,
                    leg=leg,
                    cid=cid,
                    side=close_side,
                    qty=qty,
                    ref_price=None,
                    reduce_only=True,
                    params=params,
                    position_id=pid,
                )
            except ExchangeHalt:
                raise
            except ExecutorError as e:
                problems.append(f"{leg}: {e}")
                log.error("%s %s: protective %s not placed: %s", pos.strategy, pos.symbol, leg, e)
        return problems

    async def _close(self, pos: PositionRow, key: str, reason: str, time: int) -> list[Fill]:
        rules = await self._ready(pos.symbol)
        cid = client_order_id(self.account, key, "close", compact=self.compact_ids)
        side = "sell" if pos.side == "long" else "buy"
        out = await self._order(
            strategy=pos.strategy,
            symbol=pos.symbol,
            key=key,
            leg="close",
            cid=cid,
            side=side,
            qty=rules.round_qty(pos.qty),
            ref_price=pos.mark,
            reduce_only=True,
            params={},
            position_id=pos.id,
        )
        if out.filled <= 0:
            if out.status == "dry_run":
                return []
            raise ExecutorError(f"close {cid}: {out.status} ({out.note})")
        row = self.journal.order(cid)
        if row is not None and row.note.startswith("applied"):
            return []  # this close was recorded before a restart
        avg = out.avg_price or pos.mark or pos.entry_price
        pnl = self.journal.reduce(pos.id, out.filled, avg, out.fee or 0.0, time, reason)
        self.journal.settle(cid, out.status, note=f"applied: {out.note}")
        after = self.journal.position(pos.id)
        if after is not None and after.status == "closed":
            await self._cancel_exits(after)
        info = {
            "action": "close",
            "trade_id": pos.id,
            "pnl": pnl,
            "client_order_id": cid,
            "status": out.status,
            "order_id": out.exchange_id,
            "strategy": pos.strategy,
        }
        return [
            Fill(
                symbol=pos.symbol,
                side=side,
                qty=out.filled,
                price=avg,
                fee_usd=math.nan if out.fee is None else out.fee,
                time=time,
                info=info,
            )
        ]

    async def _cancel_exits(self, pos: PositionRow) -> None:
        sym = self.market_symbol(pos.symbol)
        for leg in EXIT_LEGS:
            cid = exit_id(pos.entry_cid, leg, compact=self.compact_ids)
            row = self.journal.order(cid)
            if row is None or row.status not in ("open", "sending"):
                continue
            if self.dry_run:
                log.info("dry run: would cancel %s", cid)
                continue
            try:
                await self._call(
                    "cancel exit",
                    self.client().cancel_order,
                    None,
                    sym,
                    {"clientOrderId": cid, "trigger": True},
                )
            except _Failure as e:
                if e.kind not in ("notfound", "rejected"):
                    log.error("%s: cancelling %s failed: %s (reconciliation retries)", pos.symbol, cid, e)
                    continue
            self.journal.settle(cid, "canceled", note="the position closed")

    async def positions(self) -> list[Position]:
        return [
            Position(p.strategy, p.symbol, p.side, p.qty, p.entry_price, p.opened)
            for p in self.journal.positions()
        ]

    # -- accounting (perpwatch.api.interfaces.Accounting) ---------------------------------------

    async def update(
        self, strategy: str, symbol: str, price: float | None, rate: float | None, until: int
    ) -> list[Any]:
        """Mark the position at ``price``; funding is settled by the exchange itself (in the balance)."""
        if price is not None and math.isfinite(price) and price > 0:
            self.journal.mark(strategy, symbol, price)
        return []

    async def pnl(self, strategy: str) -> float:
        """Realised PnL after fees of the strategy's closed positions plus its open ones at the marks."""
        return self.journal.strategy_pnl(strategy)

    async def equity(self) -> float:
        """The account's margin balance on the exchange (wallet plus unrealised PnL); NaN when the
        exchange cannot be asked (the risk layer then refuses to open)."""
        try:
            bal = await self._call("fetch balance", self.client().fetch_balance)
        except ExecutorError as e:
            log.error("%s: equity unknown: %s", self.account, e)
            return math.nan
        info = bal.get("info") or {}
        for key in ("totalMarginBalance",):
            value = finite(info.get(key)) if isinstance(info, dict) else None
            if value is not None:
                return value
        total = finite((bal.get(self.quote) or {}).get("total"))
        return math.nan if total is None else total

    # -- reconciliation -------------------------------------------------------------------------

    async def reconcile(self) -> list[Notice]:
        """Start-up and every cycle: resolve orders whose outcome is unknown, notice exits that fired,
        place missing exits, then compare the exchange's positions and open orders with the journal.
        A mismatch is a halting notice (the trading layer sets the kill switch and records it)."""
        notices: list[Notice] = []
        if self._halt is not None:  # a halt met while protecting a fill: the kill switch now
            notices.append(Notice(self._halt, halt=True))
            self._halt = None
        try:
            await self._resolve_unknown(notices)
            await self._fired_exits(notices)
            for pos in self.journal.positions():
                for problem in await self._protect(pos.id):
                    notices.append(
                        Notice(f"{pos.symbol}: exit not placed: {problem}", pos.strategy, pos.symbol)
                    )
            if not self.dry_run:
                notices += await self._compare()
        except ExchangeHalt as e:
            notices.append(Notice(str(e), halt=True))
        except ExecutorError as e:
            notices.append(Notice(f"reconciliation incomplete: {e}"))
            return notices
        self._reconciled = True
        return notices

    async def _resolve_unknown(self, notices: list[Notice]) -> None:
        for row in self.journal.orders("open"):  # a limit entry a restart left resting: cancelled
            if row.leg == "entry":
                sym = self.market_symbol(row.symbol)
                try:
                    await self._call(
                        "cancel a resting entry",
                        self.client().cancel_order,
                        None,
                        sym,
                        {"clientOrderId": row.cid},
                    )
                except _Failure as e:
                    if e.kind not in ("notfound", "rejected"):
                        raise
                self.journal.settle(row.cid, "sending", note="cancelled at reconciliation; looked up next")
        for row in self.journal.orders("sending"):
            sym = self.market_symbol(row.symbol)
            found = await self._lookup(row.cid, sym, row.leg in EXIT_LEGS)
            if found is None:
                self.journal.settle(
                    row.cid, "lost", note="looked up after an unknown outcome: not on the exchange"
                )
                notices.append(
                    Notice(
                        f"order {row.cid} ({row.leg}) never reached the exchange", row.strategy, row.symbol
                    )
                )
                continue
            out = await self._absorb(row.cid, sym, found, row.leg in EXIT_LEGS)
            if row.leg == "entry" and out.filled > 0 and self.journal.order(row.cid).position_id is None:  # type: ignore[union-attr]
                fresh = self.journal.order(row.cid)
                assert fresh is not None
                pid = self._opened(fresh, out, int(self.clock.time() * 1000))
                notices.append(
                    Notice(
                        f"entry {row.cid} had filled {out.filled:g} @ {out.avg_price} before a restart: position recorded",
                        row.strategy,
                        row.symbol,
                        values={"trade_id": pid},
                    )
                )
            elif row.leg == "close" and out.filled > 0 and row.position_id is not None:
                pos = self.journal.position(row.position_id)
                if pos is not None and pos.status == "open":
                    self.journal.reduce(
                        pos.id,
                        out.filled,
                        out.avg_price or pos.entry_price,
                        out.fee or 0.0,
                        int(self.clock.time() * 1000),
                        "signal",
                    )
                    self.journal.settle(row.cid, out.status, note=f"applied: {out.note}")
                    after = self.journal.position(pos.id)
                    if after is not None and after.status == "closed":
                        await self._cancel_exits(after)

    async def _fired_exits(self, notices: list[Notice]) -> None:
        """Exits that filled on the exchange close their position in the journal."""
        for pos in self.journal.positions():
            sym = self.market_symbol(pos.symbol)
            for leg in EXIT_LEGS:
                cid = exit_id(pos.entry_cid, leg, compact=self.compact_ids)
                row = self.journal.order(cid)
                if row is None or row.status != "open" or self.dry_run:
                    continue
                found = await self._lookup(cid, sym, True)
                if found is None or found.get("status") != "closed":
                    continue
                price = finite(found.get("average")) or finite(found.get("triggerPrice")) or pos.entry_price
                self.journal.settle(
                    cid, "filled", filled=pos.qty, avg_price=price, note="fired on the exchange"
                )
                pnl = self.journal.reduce(pos.id, pos.qty, price, 0.0, int(self.clock.time() * 1000), leg)
                notices.append(
                    Notice(
                        f"{pos.symbol}: {leg} fired on the exchange at {price:g}, closing the {pos.side} "
                        f"{pos.qty:g} (pnl {pnl:+.2f} before fees)",
                        pos.strategy,
                        pos.symbol,
                        values={"reason": leg, "price": price, "trade_id": pos.id},
                    )
                )
                after = self.journal.position(pos.id)
                if after is not None:
                    await self._cancel_exits(after)
                break

    async def _compare(self) -> list[Notice]:
        ex = self.client()
        on_exchange = await self._call("fetch positions", ex.fetch_positions)
        held: dict[str, float] = {}
        for p in on_exchange:
            contracts = finite(p.get("contracts")) or 0.0
            if contracts:
                sign = -1 if p.get("side") == "short" else 1
                held[str(p.get("symbol"))] = held.get(str(p.get("symbol")), 0.0) + sign * contracts
        mine: dict[str, float] = {}
        for pos in self.journal.positions():
            sym = self.market_symbol(pos.symbol)
            mine[sym] = mine.get(sym, 0.0) + pos.sign * pos.qty
        notices = []
        for sym in sorted(set(held) | set(mine)):
            have, want = held.get(sym, 0.0), mine.get(sym, 0.0)
            step = float(self._rules[sym].amount_step) if sym in self._rules else 1e-9
            if abs(have - want) > step / 2:
                notices.append(
                    Notice(
                        f"{self.account}: position mismatch on {sym}: the exchange holds {have:+g}, perpwatch's "
                        f"journal {want:+g}; halting (a position opened or changed by hand, or an unrecorded fill)",
                        symbol=sym.split("/")[0],
                        halt=True,
                        values={"exchange_qty": have, "journal_qty": want},
                    )
                )
        known = {r.cid for r in self.journal.orders("open")} | {r.cid for r in self.journal.orders("sending")}
        symbols = sorted(
            set(held) | set(mine) | {self.market_symbol(r.symbol) for r in self.journal.orders("open")}
        )
        # Binance lists every symbol's open orders in one call; elsewhere the symbols perpwatch knows
        scopes: list[str | None] = [None] if self.exchange_id == "binanceusdm" else list(symbols)
        for scope in scopes:
            for trigger in (False, True):
                params = {"trigger": True} if trigger else {}
                orders = await self._call(
                    "fetch open orders", ex.fetch_open_orders, scope, None, None, params
                )
                for o in orders:
                    cid = str(o.get("clientOrderId") or "")
                    sym = str(o.get("symbol") or scope)
                    if cid not in known:
                        notices.append(
                            Notice(
                                f"{self.account}: an open order on {sym} perpwatch did not place or no longer "
                                f"expects ({o.get('type')} {o.get('side')} {o.get('amount')}, client id {cid or '-'}); "
                                "halting",
                                symbol=sym.split("/")[0],
                                halt=True,
                            )
                        )
        return notices


def _answered(e: ExchangeHalt) -> ExchangeHalt:
    e.answered = True
    return e


class _Redacting(logging.Filter):
    """Hides the credentials in what ccxt logs (its DEBUG lines quote the request headers)."""

    def __init__(self, hidden: set[str]):
        super().__init__()
        self.hidden = hidden

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(text, self.hidden)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


def _ccxt_loggers() -> list[str]:
    """ccxt's loggers (a filter applies only to records of the logger it is attached to)."""
    known = [n for n in logging.root.manager.loggerDict if n == "ccxt" or n.startswith("ccxt.")]
    return sorted({"ccxt", "ccxt.base.exchange", "ccxt.async_support.base.exchange", *known})


class _Failure(ExecutorError):
    """A failed exchange call, with its kind (see :meth:`ExchangeExecutor._kind`)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message, retryable=kind in ("rate", "unknown"))
        self.kind = kind


def _outcome(row: OrderRow) -> Outcome:
    return Outcome(row.cid, row.status, row.filled, row.avg_price, row.fee, row.exchange_id, row.note)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@hookimpl
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    register(ExchangeExecutor)


__all__ = ["EXCHANGES", "ExchangeExecutor", "ExchangeHalt", "FINAL"]
