"""A local stand-in of the Binance USD-M futures REST API (a real HTTP server on 127.0.0.1).

For the ``exchange`` executor's tests: ccxt's ``binanceusdm`` is pointed at it (``urls`` from
:meth:`FakeBinanceUSDM.api_urls`) and talks to it exactly as to Binance. It keeps one one-way-mode
account: a USDT wallet, positions per symbol, leverage and margin type per symbol, orders and the
conditional ("algo") orders Binance now takes for STOP_MARKET / TAKE_PROFIT_MARKET::

    with FakeBinanceUSDM(key="k", secret="s") as fake:
        fake.set_mark("BTCUSDT", 50_000)
        fake.fail("POST /fapi/v1/order", "timeout_after_accept")   # the next matching request
        ... ccxt / the executor ...
        fake.orders_with(client_id)          # every order ever placed with that client id
        fake.wait_for_request(k)             # blocks until request number k (1-based) arrived
        fake.hold_at(k)                      # request k is carried out, its answer held (a crash)

Endpoints (what ccxt 4.5 calls): ``GET /fapi/v1/time``, ``/fapi/v1/exchangeInfo``; signed:
``POST /fapi/v1/leverage``, ``POST /fapi/v1/marginType``, ``POST|GET|DELETE /fapi/v1/order``,
``GET /fapi/v1/openOrders``, ``POST|GET|DELETE /fapi/v1/algoOrder``, ``GET /fapi/v1/openAlgoOrders``,
``GET /fapi/v1/leverageBracket``, ``GET /fapi/v1/userTrades``,
``GET /fapi/v3/positionRisk``, ``GET /fapi/v3/account``, ``GET /fapi/v3/balance``. A signed request
needs ``X-MBX-APIKEY: key`` and an HMAC-SHA256 ``signature`` (with ``secret``) over its parameters
(query string then body, as Binance signs them): otherwise ``-2015`` / ``-1022`` with HTTP 401/400.
Anything else answers 404 and is logged, so a call the stand-in does not know is seen, never sent
to the internet.

Matching: market orders fill at once at the mark price (``fill_ratio`` < 1 leaves them ``EXPIRED``
after a partial fill, as Binance does when the book runs out); a limit order at or through the mark
fills the same way and its rest stays on the book (``PARTIALLY_FILLED``), one away from it rests
(``NEW``) until cancelled; algo orders stay ``NEW`` until :meth:`trigger`. Fees are ``fee_rate`` of the notional.
Checks in Binance's order: quantity or price with more decimals than the market allows -> ``-1111``;
notional under the minimum (not reduce-only) -> ``-4164``; a new ``newClientOrderId`` that is
already used by an open order -> ``-4116``; initial margin beyond the available balance -> ``-2019``;
a reduce-only order that would not reduce -> ``-2022``.

Faults: ``fail(match, kind, times=1, **options)``, ``match`` is ``"METHOD /path"`` or a path.

=========================  ===================================================================
kind                       what the server does
=========================  ===================================================================
``"timeout_after_accept"`` carries the request out (the order exists), then holds the answer until
                           ``release()`` or ``close()``: the client times out
``"500"``/``"502"``/...    that HTTP status with an HTML body, nothing carried out
``"429"``, ``"418"``       that status, ``{"code": -1003}`` and ``Retry-After: retry_after``
``"reject"``               HTTP 400 with ``{"code": code, "msg": msg}``, nothing carried out
=========================  ===================================================================
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_MARKETS = {
    # symbol: (tick size, step size, min qty, min notional)
    "BTCUSDT": ("0.10", "0.001", "0.001", "100"),
    "ETHUSDT": ("0.01", "0.001", "0.001", "20"),
}


@dataclass
class FakeOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT | STOP_MARKET | TAKE_PROFIT_MARKET
    qty: Decimal
    price: Decimal
    stop_price: Decimal
    reduce_only: bool
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    time: int = 0
    algo: bool = False
    fills: list[tuple[Decimal, Decimal, Decimal]] = field(default_factory=list)  # qty, price, fee


@dataclass
class Fault:
    method: str | None
    path: str
    kind: str
    times: int | None
    options: dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _dec(text: str | None, name: str) -> Decimal:
    if text is None:
        raise ApiError(
            400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    try:
        return Decimal(text)
    except ArithmeticError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


def _decimals(step: str) -> int:
    exp = Decimal(step).normalize().as_tuple().exponent
    return max(0, -int(exp))


class FakeBinanceUSDM:
    """The stand-in: start with ``with`` (or :meth:`start`), stop with :meth:`close`."""

    def __init__(
        self,
        key: str = "test-key",
        secret: str = "test-secret",
        *,
        balance: float = 10_000.0,
        fee_rate: float = 0.0004,
        markets: dict[str, tuple[str, str, str, str]] | None = None,
    ):
        self.key, self.secret = key, secret
        self.balance = Decimal(str(balance))
        self.fee_rate = Decimal(str(fee_rate))
        self.markets = dict(markets or DEFAULT_MARKETS)
        self.marks: dict[str, Decimal] = {
            s: Decimal(50_000 if s.startswith("BTC") else 3_000) for s in self.markets
        }
        self.positions: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (signed amount, entry price)
        self.leverage: dict[str, int] = {}
        self.margin_type: dict[str, str] = {}
        self.orders: list[FakeOrder] = []
        self.realized = Decimal(0)
        self.fill_ratio = Decimal(1)
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, params), in arrival order
        self.unknown: list[str] = []
        self._faults: list[Fault] = []
        self._next_id = 1000
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)
        self._released = threading.Event()
        self._hold: tuple[int, bool] | None = None
        self.held = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> FakeBinanceUSDM:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                fake._handle(self)

            do_GET = do_POST = do_DELETE = do_PUT = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeBinanceUSDM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def api_urls(self) -> dict[str, str]:
        """ccxt's ``urls['api']`` pointed here (every section, so nothing can reach the internet)."""
        b = self.base_url
        urls = {
            f"fapi{kind}{v}": f"{b}/fapi/{'v1' if not v else v.lower()}"
            for kind in ("Public", "Private")
            for v in ("", "V2", "V3")
        }
        urls["fapiData"] = f"{b}/futures/data"
        for name in (
            "sapi",
            "sapiV2",
            "sapiV3",
            "sapiV4",
            "dapiPublic",
            "dapiPrivate",
            "dapiPrivateV2",
            "dapiData",
            "eapiPublic",
            "eapiPrivate",
            "public",
            "private",
            "v1",
            "papi",
            "papiV2",
        ):
            urls[name] = f"{b}/unexpected/{name}"
        return urls

    # -- test controls -----------------------------------------------------------------------------

    def set_mark(self, symbol: str, price: float) -> None:
        with self._lock:
            self.marks[symbol] = Decimal(str(price))

    def open_by_hand(self, symbol: str, amount: float, price: float | None = None) -> None:
        """A position someone opened on the exchange's website (signed amount: + long, - short)."""
        with self._lock:
            px = Decimal(str(price)) if price is not None else self.marks[symbol]
            self.positions[symbol] = (Decimal(str(amount)), px)

    def fail(self, match: str, kind: str, times: int | None = 1, **options: Any) -> None:
        method, _, path = match.rpartition(" ")
        with self._lock:
            self._faults.append(Fault(method or None, path, kind, times, options))
            if kind == "timeout_after_accept":
                self._released.clear()

    def hold_at(self, k: int, *, carry_out: bool = True) -> None:
        """Request number ``k`` (1-based) gets no answer until :meth:`release`: carried out first
        (the exchange accepted it, the answer is lost) or not at all (it never arrived). ``held`` is
        set once the request is held: the moment a test kills its client."""
        with self._lock:
            self._hold = (k, carry_out)
            self._released.clear()
            self.held.clear()

    def release(self) -> None:
        """Let held answers (``timeout_after_accept``) go."""
        self._released.set()

    def wait_for_request(self, k: int, timeout: float = 30.0) -> bool:
        """Block until the k-th request (1-based) has arrived; False after ``timeout`` seconds."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.requests) >= k, timeout)

    def orders_with(self, client_id: str) -> list[FakeOrder]:
        with self._lock:
            return [o for o in self.orders if o.client_id == client_id]

    def open_orders(self, symbol: str | None = None, *, algo: bool | None = None) -> list[FakeOrder]:
        with self._lock:
            return [
                o
                for o in self.orders
                if o.status in ("NEW", "PARTIALLY_FILLED")
                and (symbol is None or o.symbol == symbol)
                and (algo is None or o.algo == algo)
            ]

    def position(self, symbol: str) -> Decimal:
        with self._lock:
            return self.positions.get(symbol, (Decimal(0), Decimal(0)))[0]

    def trigger(self, client_id: str) -> FakeOrder:
        """A conditional order's trigger price was reached: it fills (reduce-only) at the mark."""
        with self._lock:
            order = next(o for o in self.orders if o.client_id == client_id and o.algo and o.status == "NEW")
            self._fill(order, order.qty, self.marks[order.symbol])
            order.status = "FINISHED"
            return order

    def count(self, match: str) -> int:
        method, _, path = match.rpartition(" ")
        with self._lock:
            return sum(1 for m, p, _ in self.requests if p == path and (not method or m == method))

    # -- HTTP --------------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length).decode() if length else ""
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        method, path = h.command, parts.path
        with self._arrived:
            self.requests.append((method, path, params))
            self._arrived.notify_all()
            fault = self._take_fault(method, path)
            hold = self._hold if self._hold is not None and len(self.requests) == self._hold[0] else None
        if hold is not None:  # request k: carried out (or not), then no answer until released
            if hold[1]:
                self._carry_out(h, method, path, params, parts.query, body)
            self.held.set()
            self._released.wait(60)
            return
        if fault is not None and fault.kind != "timeout_after_accept":
            self._send_fault(h, fault)
            return
        status, payload = self._carry_out(h, method, path, params, parts.query, body)
        if fault is not None:  # carried out; the answer never comes in time
            self._released.wait(60)
            return
        self._send(h, status, payload)

    def _carry_out(
        self, h: BaseHTTPRequestHandler, method: str, path: str, params: dict[str, str], query: str, body: str
    ) -> tuple[int, Any]:
        try:
            self._check_signature(h, path, query, body)
            with self._lock:
                return 200, self._route(method, path, params)
        except ApiError as e:
            return e.status, {"code": e.code, "msg": e.msg}

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for f in self._faults:
            if (
                (f.method is None or f.method == method)
                and f.path == path
                and (f.times is None or f.times > 0)
            ):
                if f.times is not None:
                    f.times -= 1
                return f
        return None

    def _send_fault(self, h: BaseHTTPRequestHandler, f: Fault) -> None:
        if f.kind in ("429", "418"):
            headers = {"Retry-After": str(f.options.get("retry_after", 2))}
            self._send(h, int(f.kind), {"code": -1003, "msg": "Too many requests."}, headers)
        elif f.kind == "reject":
            self._send(h, 400, {"code": f.options["code"], "msg": f.options.get("msg", "rejected")})
        else:
            data = b"<html><body>Service Unavailable</body></html>"
            h.send_response(int(f.kind))
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

    def _send(
        self, h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _check_signature(self, h: BaseHTTPRequestHandler, path: str, query: str, body: str) -> None:
        if path in ("/fapi/v1/time", "/fapi/v1/exchangeInfo"):
            return
        if h.headers.get("X-MBX-APIKEY") != self.key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        total = query + body  # Binance signs the query string followed by the body
        payload, sep, signature = total.rpartition("&signature=")
        if not sep or "&" in signature:
            raise ApiError(
                400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
        want = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, signature):
            raise ApiError(400, -1022, "Signature for this request is not valid.")

    # -- the API -----------------------------------------------------------------------------------

    def _route(self, method: str, path: str, p: dict[str, str]) -> Any:
        routes = {
            ("GET", "/fapi/v1/time"): lambda: {"serverTime": int(time.time() * 1000)},
            ("GET", "/fapi/v1/exchangeInfo"): self._exchange_info,
            ("POST", "/fapi/v1/leverage"): lambda: self._set_leverage(p),
            ("POST", "/fapi/v1/marginType"): lambda: self._set_margin_type(p),
            ("POST", "/fapi/v1/order"): lambda: self._new_order(p, algo=False),
            ("GET", "/fapi/v1/order"): lambda: self._order_json(self._find(p, algo=False)),
            ("DELETE", "/fapi/v1/order"): lambda: self._cancel(p, algo=False),
            ("GET", "/fapi/v1/openOrders"): lambda: [
                self._order_json(o) for o in self.open_orders(p.get("symbol"), algo=False)
            ],
            ("POST", "/fapi/v1/algoOrder"): lambda: self._new_order(p, algo=True),
            ("GET", "/fapi/v1/algoOrder"): lambda: self._order_json(self._find(p, algo=True)),
            ("DELETE", "/fapi/v1/algoOrder"): lambda: self._cancel(p, algo=True),
            ("GET", "/fapi/v1/openAlgoOrders"): lambda: [
                self._order_json(o) for o in self.open_orders(p.get("symbol"), algo=True)
            ],
            ("GET", "/fapi/v1/userTrades"): lambda: self._user_trades(p),
            ("GET", "/fapi/v1/leverageBracket"): lambda: [
                {
                    "symbol": sym,
                    "brackets": [
                        {
                            "bracket": 1,
                            "initialLeverage": 125,
                            "notionalCap": 10_000_000,
                            "notionalFloor": 0,
                            "maintMarginRatio": 0.004,
                            "cum": 0.0,
                        }
                    ],
                }
                for sym in self.markets
            ],
            ("GET", "/fapi/v3/positionRisk"): self._position_risk,
            ("GET", "/fapi/v2/positionRisk"): self._position_risk,
            ("GET", "/fapi/v3/account"): self._account,
            ("GET", "/fapi/v2/account"): self._account,
            ("GET", "/fapi/v3/balance"): self._balance_list,
            ("GET", "/fapi/v2/balance"): self._balance_list,
        }
        route = routes.get((method, path))
        if route is None:
            self.unknown.append(f"{method} {path}")
            raise ApiError(404, -5000, f"the stand-in has no {method} {path}")
        return route()

    def _exchange_info(self) -> dict[str, Any]:
        symbols = []
        for sym, (tick, step, min_qty, min_notional) in self.markets.items():
            base = sym[: -len("USDT")]
            symbols.append(
                {
                    "symbol": sym,
                    "pair": sym,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "baseAsset": base,
                    "quoteAsset": "USDT",
                    "marginAsset": "USDT",
                    "pricePrecision": _decimals(tick),
                    "quantityPrecision": _decimals(step),
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "tickSize": tick,
                            "minPrice": tick,
                            "maxPrice": "4529764",
                        },
                        {"filterType": "LOT_SIZE", "stepSize": step, "minQty": min_qty, "maxQty": "1000"},
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "stepSize": step,
                            "minQty": min_qty,
                            "maxQty": "120",
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MIN_NOTIONAL", "notional": min_notional},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True}],
            "symbols": symbols,
        }

    def _market(self, p: dict[str, str]) -> str:
        sym = p.get("symbol", "")
        if sym not in self.markets:
            raise ApiError(400, -1121, "Invalid symbol.")
        return sym

    def _set_leverage(self, p: dict[str, str]) -> dict[str, Any]:
        sym = self._market(p)
        lev = int(p.get("leverage", "0"))
        if not 1 <= lev <= 125:
            raise ApiError(400, -4028, "Leverage is not valid")
        self.leverage[sym] = lev
        return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": sym}

    def _set_margin_type(self, p: dict[str, str]) -> dict[str, Any]:
        sym = self._market(p)
        kind = p.get("marginType", "")
        if kind not in ("ISOLATED", "CROSSED"):
            raise ApiError(400, -1116, "Invalid marginType.")
        if self.margin_type.get(sym, "CROSSED") == kind:
            raise ApiError(400, -4046, "No need to change margin type.")
        self.margin_type[sym] = kind
        return {"code": 200, "msg": "success"}

    def _check_precision(self, sym: str, value: Decimal, step: str) -> None:
        if value % Decimal(step) != 0:
            raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.")

    def _new_order(self, p: dict[str, str], *, algo: bool) -> dict[str, Any]:
        sym = self._market(p)
        tick, step, min_qty, min_notional = self.markets[sym]
        side = p.get("side", "")
        kind = p.get("type", "") if not algo else p.get("type", "")
        client_id = p.get("clientAlgoId" if algo else "newClientOrderId", "")
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        qty = _dec(p.get("quantity"), "quantity")
        self._check_precision(sym, qty, step)
        price = _dec(p["price"], "price") if "price" in p else Decimal(0)
        trailing = algo and kind == "TRAILING_STOP_MARKET"
        stop = Decimal(0)
        if algo and not trailing:
            stop = _dec(p.get("triggerPrice") or p.get("stopPrice"), "triggerPrice")
        if trailing and not Decimal("0.1") <= _dec(p.get("callbackRate"), "callbackRate") <= 10:
            raise ApiError(400, -2007, "Invalid callBack rate.")
        for px in (price, stop):
            if px:
                self._check_precision(sym, px, tick)
        if qty < Decimal(min_qty):
            raise ApiError(400, -4003, "Quantity less than or equal to zero.")
        if any(o.client_id == client_id and o.status in ("NEW", "PARTIALLY_FILLED") for o in self.orders):
            raise ApiError(400, -4116, "ClientOrderId is duplicated.")
        mark = self.marks[sym]
        amount, _ = self.positions.get(sym, (Decimal(0), Decimal(0)))
        sign = 1 if side == "BUY" else -1
        if reduce_only and (amount == 0 or (amount > 0) == (sign > 0)):
            raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
        if not reduce_only and not algo:
            notional = qty * (price or mark)
            if notional < Decimal(min_notional):
                raise ApiError(
                    400,
                    -4164,
                    f"Order's notional must be no smaller than {min_notional} (unless you choose reduce only).",
                )
            lev = self.leverage.get(sym, 20)
            if notional / lev > self._available():
                raise ApiError(400, -2019, "Margin is insufficient.")
        self._next_id += 1
        order = FakeOrder(
            self._next_id,
            client_id,
            sym,
            side,
            kind,
            qty,
            price,
            stop,
            reduce_only,
            time=int(time.time() * 1000),
            algo=algo,
        )
        self.orders.append(order)
        marketable = kind == "LIMIT" and (price >= mark if side == "BUY" else price <= mark)
        if kind == "MARKET" or marketable:
            part = (qty * self.fill_ratio / Decimal(step)).to_integral_value() * Decimal(step)
            if reduce_only:
                part = min(part, abs(amount))
            if part > 0:
                self._fill(order, part, mark)
            if order.executed == qty:
                order.status = "FILLED"
            elif kind == "MARKET":
                order.status = "EXPIRED"
            else:  # a limit order's rest stays on the book
                order.status = "PARTIALLY_FILLED" if order.executed else "NEW"
        return self._order_json(order)

    def _available(self) -> Decimal:
        used = sum(
            (abs(a) * self.marks[s] / self.leverage.get(s, 20) for s, (a, _) in self.positions.items()),
            Decimal(0),
        )
        return self.balance + self._unrealized() - used

    def _unrealized(self) -> Decimal:
        return sum(((self.marks[s] - e) * a for s, (a, e) in self.positions.items()), Decimal(0))

    def _fill(self, order: FakeOrder, qty: Decimal, price: Decimal) -> None:
        sign = 1 if order.side == "BUY" else -1
        amount, entry = self.positions.get(order.symbol, (Decimal(0), Decimal(0)))
        fee = qty * price * self.fee_rate
        self.balance -= fee
        new = amount + sign * qty
        if amount == 0 or (amount > 0) == (sign > 0):  # opening or adding
            entry = (abs(amount) * entry + qty * price) / abs(new)
        else:  # reducing
            closed = min(qty, abs(amount))
            pnl = (price - entry) * closed * (1 if amount > 0 else -1)
            self.balance += pnl
            self.realized += pnl
            if (new > 0) != (amount > 0) and new != 0:
                entry = price
        if new == 0:
            self.positions.pop(order.symbol, None)
        else:
            self.positions[order.symbol] = (new, entry)
        total = order.executed + qty
        order.avg_price = (order.avg_price * order.executed + price * qty) / total
        order.executed = total
        order.fills.append(
            (qty, price, fee)
        )  # conditional orders outlive their position: the client cancels them

    def _find(self, p: dict[str, str], *, algo: bool) -> FakeOrder:
        sym = self._market(p)
        if algo:
            cid, oid = p.get("clientAlgoId"), p.get("algoId")
        else:
            cid, oid = p.get("origClientOrderId"), p.get("orderId")
        for o in self.orders:
            if (
                o.symbol == sym
                and o.algo == algo
                and ((cid is not None and o.client_id == cid) or (oid is not None and str(o.order_id) == oid))
            ):
                return o
        raise ApiError(400, -2013, "Order does not exist.")

    def _cancel(self, p: dict[str, str], *, algo: bool) -> dict[str, Any]:
        order = self._find(p, algo=algo)
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise ApiError(400, -2011, "Unknown order sent.")
        order.status = "CANCELED"
        return self._order_json(order)

    def _order_json(self, o: FakeOrder) -> dict[str, Any]:
        if o.algo:
            return {
                "algoId": o.order_id,
                "clientAlgoId": o.client_id,
                "algoType": "CONDITIONAL",
                "orderType": o.type,
                "symbol": o.symbol,
                "side": o.side,
                "positionSide": "BOTH",
                "timeInForce": "GTC",
                "quantity": str(o.qty),
                "algoStatus": o.status,
                "triggerPrice": str(o.stop_price),
                "price": "0",
                "workingType": "CONTRACT_PRICE",
                "priceProtect": False,
                "reduceOnly": o.reduce_only,
                "closePosition": False,
                "createTime": o.time,
                "updateTime": o.time,
            }
        return {
            "orderId": o.order_id,
            "symbol": o.symbol,
            "status": o.status,
            "clientOrderId": o.client_id,
            "price": str(o.price),
            "avgPrice": str(o.avg_price),
            "origQty": str(o.qty),
            "executedQty": str(o.executed),
            "cumQty": str(o.executed),
            "cumQuote": str(o.executed * o.avg_price),
            "timeInForce": "GTC",
            "type": o.type,
            "origType": o.type,
            "reduceOnly": o.reduce_only,
            "closePosition": False,
            "side": o.side,
            "positionSide": "BOTH",
            "stopPrice": str(o.stop_price),
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "time": o.time,
            "updateTime": o.time,
        }

    def _user_trades(self, p: dict[str, str]) -> list[dict[str, Any]]:
        sym = self._market(p)
        out = []
        for o in self.orders:
            if o.symbol != sym or o.algo or ("orderId" in p and str(o.order_id) != p["orderId"]):
                continue
            for n, (qty, price, fee) in enumerate(o.fills):
                out.append(
                    {
                        "symbol": sym,
                        "id": o.order_id * 100 + n,
                        "orderId": o.order_id,
                        "side": o.side,
                        "price": str(price),
                        "qty": str(qty),
                        "quoteQty": str(qty * price),
                        "realizedPnl": "0",
                        "commission": str(fee),
                        "commissionAsset": "USDT",
                        "time": o.time,
                        "positionSide": "BOTH",
                        "buyer": o.side == "BUY",
                        "maker": False,
                    }
                )
        return out

    def _position_risk(self) -> list[dict[str, Any]]:
        out = []
        for sym, (amount, entry) in self.positions.items():
            mark = self.marks[sym]
            lev = self.leverage.get(sym, 20)
            out.append(
                {
                    "symbol": sym,
                    "positionSide": "BOTH",
                    "positionAmt": str(amount),
                    "entryPrice": str(entry),
                    "breakEvenPrice": str(entry),
                    "markPrice": str(mark),
                    "unRealizedProfit": str((mark - entry) * amount),
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": str(mark * amount),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": str(abs(mark * amount) / lev),
                    "maintMargin": "0",
                    "positionInitialMargin": str(abs(mark * amount) / lev),
                    "openOrderInitialMargin": "0",
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": int(time.time() * 1000),
                }
            )
        return out

    def _account(self) -> dict[str, Any]:
        unrealized = self._unrealized()
        return {
            "totalWalletBalance": str(self.balance),
            "totalUnrealizedProfit": str(unrealized),
            "totalMarginBalance": str(self.balance + unrealized),
            "availableBalance": str(self._available()),
            "maxWithdrawAmount": str(self._available()),
            "assets": [
                {
                    "asset": "USDT",
                    "walletBalance": str(self.balance),
                    "unrealizedProfit": str(unrealized),
                    "marginBalance": str(self.balance + unrealized),
                    "maintMargin": "0",
                    "initialMargin": "0",
                    "positionInitialMargin": "0",
                    "openOrderInitialMargin": "0",
                    "crossWalletBalance": str(self.balance),
                    "crossUnPnl": str(unrealized),
                    "availableBalance": str(self._available()),
                    "maxWithdrawAmount": str(self._available()),
                    "updateTime": int(time.time() * 1000),
                }
            ],
            "positions": [],
        }

    def _balance_list(self) -> list[dict[str, Any]]:
        return [
            {
                "accountAlias": "fake",
                "asset": "USDT",
                "balance": str(self.balance),
                "crossWalletBalance": str(self.balance),
                "crossUnPnl": str(self._unrealized()),
                "availableBalance": str(self._available()),
                "maxWithdrawAmount": str(self._available()),
                "marginAvailable": True,
                "updateTime": int(time.time() * 1000),
            }
        ]
