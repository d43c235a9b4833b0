"""A local fake of the CoinGlass V4 and Binance USD-M market-data APIs (a real HTTP server).

For source tests, end-to-end runner tests and benchmarks. It listens on 127.0.0.1 (a free port),
serves both APIs from one store of series in the metric namespace, and injects faults per path::

    from fakes.market import FakeMarket          # tests/ is on sys.path under pytest

    with FakeMarket(latency=0.05) as market:     # fixed latency per request, seconds
        market.generate("BTC", "1h", start_ms, bars=500, seed=1)         # random-walk series, all metrics
        market.set_series("ETH", "4h", {"price.close": [...], "oi.close": [...]}, start_ms)
        market.fail("/open-interest/", "500", times=2)                   # the next 2 matching requests
        source = CoinGlassSource({"base_url": market.base_url, "api_key": "k"}, ctx)
        ...
        market.count("/open-interest/")          # requests seen whose path contains the text

Series
    ``set_series(symbol, interval, {metric: values}, start_ms)`` stores bars (open times
    ``start_ms + i * step``) in the units of the strategy language (USD, percent); ``None``/NaN is a
    missing value (``null`` in CoinGlass rows; the kline is left out for Binance). ``symbol`` is a
    coin (``BTC``; ``BTCUSDT`` works too). Metrics not set are served as ``null``.
    Bars whose open time is after the market's ``now`` are not served; the open (unfinished) bar is,
    as real APIs do. ``now`` comes from ``clock`` (a :class:`perpwatch.common.clock.Clock`; pass the test's
    ``FakeClock``) or the wall clock.

CoinGlass (``/api/...``)
    price/history, open-interest/aggregated-history, funding-rate/oi-weight-history,
    liquidation/aggregated-history (needs ``exchange_list``), global- and
    top-long-short-account-ratio/history (need ``exchange``), aggregated-taker-buy-sell-volume/history
    (needs ``exchange_list``) and funding-rate/exchange-list. Envelope ``{"code": "0", "msg":
    "success", "data": ...}``; value types as in real responses (price strings, the rest numbers)
    unless ``value_style`` is ``"str"`` or ``"num"``. ``limit`` above 1000 is refused. With
    ``api_key`` set, a request without that ``CG-API-KEY`` gets HTTP 400 ``Invalid API key provided``.
    The funding list comes from ``set_funding_list`` or, by default, Binance/OKX/Bybit around the
    coin's last ``funding.close``.

Binance (``/fapi/...``, ``/futures/data/...``)
    klines (from ``price.*``, ``price.volume`` = quote volume, ``taker.buy_usd`` = taker buy quote),
    fundingRate (from ``set_funding`` or, by default, ``funding.close`` at every 8 h bar, as a
    fraction), premiumIndex, openInterestHist / globalLongShortAccountRatio /
    topLongShortAccountRatio (snapshots from the series of that period, or sampled from a finer one;
    only the last 30 days). Numbers are strings; responses carry ``X-MBX-USED-WEIGHT-1M``.

Faults: ``fail(path_substring, kind, times=1, symbol=None, **options)``; ``times=None`` means
every matching request; the first matching rule with uses left applies.

=================  ==========================================================================
kind               what the server does
=================  ==========================================================================
``"delay"``        waits ``seconds`` (default 5) then answers normally (client timeouts)
``"hold"``         waits until ``release()`` (or ``close()``), then answers normally: a request
                   the test knows is in flight, for as long as it needs (setting a "hold"
                   fault again after a release holds again)
``"reset"``        closes the connection with a TCP reset, no response
``"cut"``          announces the full Content-Length, sends half the body, closes
``"429"``          HTTP 429, with ``Retry-After: retry_after`` if given
``"418"``          HTTP 418 (Binance IP ban), ``Retry-After: retry_after`` (default 120)
``"500"`` etc.     that HTTP status (any 4xx/5xx given as a string) with a small JSON body
``"upgrade_plan"`` HTTP ``status`` (default 200) with ``{"code":"401","msg":"Upgrade plan"}``
``"bad_key"``      HTTP ``status`` (default 400) with ``{"code":"400","msg":"Invalid API key provided"}``
``"envelope"``     HTTP ``status`` (default 200) with ``{"code": code, "msg": msg}``
``"html"``         HTTP ``status`` (default 200) with an HTML page
``"truncated"``    HTTP 200 with the first half of the JSON body (valid HTTP, broken JSON)
``"empty"``        a successful answer with no rows
``"shuffle"``      rows in reverse order, each 3rd row preceded by a wrong duplicate (last wins)
``"lag"``          the newest ``bars`` rows (default 1) left out: stale data
``"rewrite"``      the rows (a list: dicts for CoinGlass and Binance statistics, arrays for
                   klines) passed through ``rows(list) -> list`` before they are sent
``"endless"``      HTTP 200, chunked JSON that never ends (``[[0,"1"],[0,"1"],...``); stops
                   after ``max_bytes`` (default 1 GiB), a fuse for clients without a limit
``"big"``          HTTP 200 announcing ``Content-Length: size`` (default 1 GiB) of JSON
                   whitespace, sent as long as the client reads
``"gzip_bomb"``    HTTP 200, ``Content-Encoding: gzip``: ``size`` (default 4 GiB; None: no end)
                   zero bytes, about 1/1000 of that on the wire, built with zlib streaming
``"gzip_stuffing"`` HTTP 200, ``Content-Encoding: gzip``: a gzip header, then empty deflate
                   blocks that decode to nothing, forever (``max_bytes`` fuse as above)
``"drip"``         HTTP 200, chunked: one byte every ``interval`` seconds (default 0.05),
                   forever
=================  ==========================================================================

``sent_bytes`` counts the body bytes the streaming faults (``endless`` ... ``drip``) wrote.

``requests`` lists what was asked (:class:`Seen`: path, params, headers, time); ``count`` counts;
``wait_for(path, count)`` blocks until that many matching requests have arrived.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from perpwatch.common.clock import Clock
from perpwatch.common.timeutil import DAY, HOUR, INTERVALS

QUOTE = "USDT"
CG_LIMIT = 1000
BINANCE_DATA_DAYS = 30
DATA_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
METRICS = (
    "price.open", "price.high", "price.low", "price.close", "price.volume",
    "oi.open", "oi.high", "oi.low", "oi.close",
    "funding.open", "funding.high", "funding.low", "funding.close",
    "liq.long_usd", "liq.short_usd",
    "ls.global_long_pct", "ls.global_short_pct", "ls.top_long_pct", "ls.top_short_pct",
    "taker.buy_usd", "taker.sell_usd",
)  # fmt: skip


def _coin(symbol: str) -> str:
    sym = symbol.strip().upper()
    return sym[: -len(QUOTE)] if sym.endswith(QUOTE) and len(sym) > len(QUOTE) else sym


class Series:
    """Bars of one coin and interval: open times ``start + i * step`` and metric columns."""

    def __init__(self, start: int, step: int, columns: dict[str, np.ndarray]) -> None:
        self.start = start
        self.step = step
        self.columns = columns
        n = max((len(c) for c in columns.values()), default=0)
        self.times = start + step * np.arange(n, dtype=np.int64)
        self._values = {
            m: [float(v) if math.isfinite(v) else None for v in col.tolist()] for m, col in columns.items()
        }

    def value(self, metric: str, i: int) -> float | None:
        """The value of ``metric`` at bar ``i``, or None when missing."""
        col = self._values.get(metric)
        return col[i] if col is not None and i < len(col) else None


@dataclass
class Fault:
    path: str
    kind: str
    times: int | None
    symbol: str | None
    options: dict[str, Any]


@dataclass
class Seen:
    """One request the market received."""

    path: str
    params: dict[str, str]
    headers: dict[str, str]
    time: float = field(default_factory=time.time)


class FakeMarket:
    """A threaded HTTP server speaking CoinGlass V4 and Binance USD-M shapes; see the module docstring."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        clock: Clock | None = None,
        api_key: str | None = None,
        value_style: str = "real",
        host: str = "127.0.0.1",
    ) -> None:
        if value_style not in ("real", "str", "num"):
            raise ValueError("value_style is 'real', 'str' or 'num'")
        self.latency = latency
        self.clock = clock or Clock()
        self.api_key = api_key
        self.value_style = value_style
        self.requests: list[Seen] = []
        self.sent_bytes = 0  # body bytes written by the streaming faults
        self._series: dict[str, dict[str, Series]] = {}  # coin -> interval -> bars
        self._funding: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._funding_lists: dict[str, dict[str, Any]] = {}
        self._faults: list[Fault] = []
        self._weight: dict[int, int] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified at every request
        self._closing = threading.Event()
        self._released = threading.Event()  # set by release(): "hold" faults answer
        self._server = _Server((host, 0), _handler_for(self))
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeMarket:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name="FakeMarket",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._released.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeMarket:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    # -- data -------------------------------------------------------------------------------

    def set_series(
        self,
        symbol: str,
        interval: str,
        series: Mapping[str, Sequence[float | None] | np.ndarray],
        start_ms: int,
    ) -> None:
        """Store bars of ``symbol`` at ``interval`` from ``start_ms``; values in metric-namespace units."""
        step = INTERVALS[interval]
        cols = {
            m: np.asarray([np.nan if v is None else v for v in vals], dtype=float)
            for m, vals in series.items()
        }
        with self._lock:
            self._series.setdefault(_coin(symbol), {})[interval] = Series(int(start_ms), step, cols)

    def generate(
        self, symbol: str, interval: str, start_ms: int, bars: int, *, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """Random-walk series of every metric (plausible magnitudes), stored and returned."""
        series = generate_series(bars, seed=seed)
        self.set_series(symbol, interval, series, start_ms)
        return series

    def set_funding(self, symbol: str, times_ms: Sequence[int], rates_pct: Sequence[float | None]) -> None:
        """Binance funding settlements of ``symbol`` (rates in percent; served as fractions)."""
        rates = np.asarray([np.nan if r is None else r for r in rates_pct], dtype=float)
        with self._lock:
            self._funding[_coin(symbol)] = (np.asarray(times_ms, dtype=np.int64), rates)

    def set_funding_list(
        self,
        symbol: str,
        stablecoin_margin_list: Sequence[Mapping[str, Any]],
        token_margin_list: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """The CoinGlass funding-rate exchange-list entry of ``symbol`` (rows as CoinGlass sends them)."""
        entry = {
            "symbol": _coin(symbol),
            "stablecoin_margin_list": [dict(r) for r in stablecoin_margin_list],
            "token_margin_list": [dict(r) for r in token_margin_list],
        }
        with self._lock:
            self._funding_lists[_coin(symbol)] = entry

    # -- faults and inspection ----------------------------------------------------------------

    def fail(
        self, path: str, kind: str, *, times: int | None = 1, symbol: str | None = None, **options: Any
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``path`` (and, if given, for
        ``symbol``) with fault ``kind``; see the table in the module docstring."""
        with self._lock:
            self._faults.append(Fault(path, kind, times, _coin(symbol) if symbol else None, options))
        if kind == "hold":
            self._released.clear()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def release(self) -> None:
        """Let every request held by a ``"hold"`` fault, and every later one, be answered."""
        self._released.set()

    def wait_for(self, path: str = "", count: int = 1, timeout: float = 30.0) -> list[Seen]:
        """Block until ``count`` requests whose path contains ``path`` have arrived (they are
        recorded before any latency or fault); AssertionError after ``timeout`` seconds."""
        with self._arrived:
            if not self._arrived.wait_for(
                lambda: sum(1 for r in self.requests if path in r.path) >= count, timeout
            ):
                seen = sum(1 for r in self.requests if path in r.path)
                raise AssertionError(f"expected {count} requests to {path!r}, got {seen}")
            return [r for r in self.requests if path in r.path]

    def count(self, path: str = "") -> int:
        """How many requests had ``path`` in their path."""
        with self._lock:
            return sum(1 for r in self.requests if path in r.path)

    def seen(self, path: str = "") -> list[Seen]:
        """The requests whose path contains ``path``, oldest first."""
        with self._lock:
            return [r for r in self.requests if path in r.path]

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def _take_fault(self, path: str, params: Mapping[str, str]) -> Fault | None:
        symbol = _coin(params.get("symbol", ""))
        with self._lock:
            for fault in self._faults:
                if fault.path in path and (fault.symbol is None or fault.symbol == symbol):
                    if fault.times is None:
                        return fault
                    if fault.times > 0:
                        fault.times -= 1
                        return fault
        return None

    def _lookup(self, coin: str, interval: str) -> Series | None:
        with self._lock:
            return self._series.get(coin, {}).get(interval)

    def _finest(self, coin: str) -> Series | None:
        with self._lock:
            found = list(self._series.get(coin, {}).values())
        return min(found, key=lambda s: s.step) if found else None

    # -- request handling -------------------------------------------------------------------

    def handle(self, path: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        """Build the reply to one GET (called from the server threads)."""
        with self._arrived:
            self.requests.append(Seen(path, params, headers))
            self._arrived.notify_all()
        if self.latency:
            self._closing.wait(self.latency)
        fault = self._take_fault(path, params)
        kind = fault.kind if fault is not None else None
        if kind == "reset":
            return Reply(action="reset")
        if kind == "hold":
            self._released.wait()
            kind = None
        if kind in ("delay", "cut", "truncated"):
            reply = self._answer(path, params, headers, None, 0)
            reply.action = kind
            reply.delay = float(fault.options.get("seconds", 5.0)) if kind == "delay" else 0.0
            return reply
        if kind in _STREAM_FAULTS:
            return _STREAM_FAULTS[kind](self, fault)
        if kind == "rewrite":
            return self._answer(path, params, headers, None, 0, fault.options["rows"])
        binance = path.startswith(("/fapi/", "/futures/"))
        if kind in _STATUS_FAULTS:
            return _STATUS_FAULTS[kind](fault, binance)
        if kind is not None and kind.isdigit():
            return _status_reply(int(kind), binance, fault)
        if kind not in (None, "empty", "shuffle", "lag"):
            raise ValueError(f"unknown fault kind {kind!r}")
        lag = int(fault.options.get("bars", 1)) if kind == "lag" else 0
        return self._answer(path, params, headers, kind, lag)

    def _answer(
        self,
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
        shape: str | None,
        lag: int,
        rewrite: Callable[[list[Any]], list[Any]] | None = None,
    ) -> Reply:
        try:
            if path.startswith(("/fapi/", "/futures/")):
                return self._binance(path, params, shape, lag, rewrite)
            return self._coinglass(path, params, headers, shape, lag, rewrite)
        except _Refused as refused:
            return refused.reply

    # CoinGlass ---------------------------------------------------------------------------------

    def _coinglass(
        self,
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
        shape: str | None,
        lag: int,
        rewrite: Callable[[list[Any]], list[Any]] | None = None,
    ) -> Reply:
        if self.api_key is not None and headers.get("cg-api-key") != self.api_key:
            return Reply.json({"code": "400", "msg": "Invalid API key provided"}, 400)
        if path == "/api/futures/funding-rate/exchange-list":
            data = [] if shape == "empty" else self._funding_list(params.get("symbol"))
            return Reply.json({"code": "0", "msg": "success", "data": data})
        if path in _CG_ETF:
            return Reply.json({"code": "0", "msg": "success", "data": _CG_ETF[path]})
        endpoint = _CG_HISTORY.get(path)
        if endpoint is None:
            return Reply.json({"code": "404", "msg": "Endpoint not found"}, 404)
        fields, scope, style = endpoint
        if scope == "none":  # the BTC-only indexes
            params = {**params, "symbol": "BTC"}
        _require(params, ("symbol", "interval"), binance=False)
        if scope == "pair":
            _require(params, ("exchange",), binance=False)
        if scope == "coin_exchanges":
            _require(params, ("exchange_list",), binance=False)
        limit = int(params.get("limit", CG_LIMIT))
        if limit > CG_LIMIT:
            raise _Refused(Reply.json({"code": "400", "msg": f"limit must be <= {CG_LIMIT}"}))
        series = self._lookup(_coin(params["symbol"]), params["interval"])
        rows = self._history_rows(series, fields, params, "start_time", "end_time", limit, style, lag)
        rows = _reshape(rows, shape, "time")
        if rewrite is not None:
            rows = rewrite(rows)
        return Reply.json({"code": "0", "msg": "success", "data": rows})

    def _history_rows(
        self,
        series: Series | None,
        fields: Mapping[str, Callable[[Series, int], float | None]],
        params: Mapping[str, str],
        start_key: str,
        end_key: str,
        limit: int,
        style: str,
        lag: int,
    ) -> list[dict[str, Any]]:
        if series is None:
            return []
        idx = _window(series.times, params.get(start_key), params.get(end_key), self.now_ms(), limit, lag)
        return [
            {
                "time": series.start + int(i) * series.step,
                **{name: self._cg_value(get(series, i), style) for name, get in fields.items()},
            }
            for i in idx
        ]

    def _cg_value(self, value: float | None, style: str) -> Any:
        if value is None:
            return None
        wanted = style if self.value_style == "real" else self.value_style
        return _num_str(value) if wanted == "str" else value

    def _funding_list(self, symbol: str | None) -> list[dict[str, Any]]:
        with self._lock:
            given = dict(self._funding_lists)
            coins = sorted(set(self._series) | set(given))
        if symbol:
            coins = [c for c in coins if c == _coin(symbol)]
        now = self.now_ms()
        entries = []
        for coin in coins:
            if coin in given:
                entries.append(given[coin])
                continue
            series = self._finest(coin)
            idx = _window(series.times, None, None, now, 1, 0) if series else []
            last = series.value("funding.close", int(idx[-1])) if len(idx) else None
            if last is not None:
                entries.append(_default_funding_list(coin, last, now))
        return entries

    # Binance -----------------------------------------------------------------------------------

    def _binance(
        self,
        path: str,
        params: dict[str, str],
        shape: str | None,
        lag: int,
        rewrite: Callable[[list[Any]], list[Any]] | None = None,
    ) -> Reply:
        handler = {
            "/fapi/v1/klines": self._klines,
            "/fapi/v1/fundingRate": self._funding_rates,
            "/fapi/v1/premiumIndex": self._premium,
        }.get(path)
        if handler is None and path in _BINANCE_DATA:
            handler = self._data
        if handler is None:
            return Reply.json({"code": -1000, "msg": "Unknown endpoint"}, 404)
        _require(params, ("symbol",), binance=True)
        coin = _coin(params["symbol"])
        if self._finest(coin) is None and coin not in self._funding:
            raise _Refused(Reply.json({"code": -1121, "msg": "Invalid symbol."}, 400))
        body, key = handler(path, coin, params, lag)
        if isinstance(body, list):
            body = _reshape(body, shape, key)
            if rewrite is not None:
                body = rewrite(body)
        reply = Reply.json(body)
        reply.headers["X-MBX-USED-WEIGHT-1M"] = str(self._spend_weight(path, params))
        return reply

    def _spend_weight(self, path: str, params: Mapping[str, str]) -> int:
        weight = 0 if path.startswith("/futures/") else 1
        if path == "/fapi/v1/klines":
            limit = int(params.get("limit", 500))
            weight = 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        minute = self.now_ms() // 60_000
        with self._lock:
            self._weight[minute] = used = self._weight.get(minute, 0) + weight
        return used

    def _klines(self, path: str, coin: str, params: dict[str, str], lag: int) -> tuple[Any, str]:
        _require(params, ("interval",), binance=True)
        limit = min(int(params.get("limit", 500)), 1500)
        series = self._lookup(coin, params["interval"])
        if series is None:
            return [], "0"
        rows = []
        for i in _window(
            series.times, params.get("startTime"), params.get("endTime"), self.now_ms(), limit, lag
        ):
            t = series.start + int(i) * series.step
            o, h, lo, c = (series.value(f"price.{f}", i) for f in ("open", "high", "low", "close"))
            quote = series.value("price.volume", i)
            buy = series.value("taker.buy_usd", i)
            if None in (o, h, lo, c, quote, buy):
                continue
            base = quote / c if c else 0.0
            buy_base = buy / c if c else 0.0
            rows.append([
                t, *(self._bn(v) for v in (o, h, lo, c, base)), t + series.step - 1, self._bn(quote),
                100 + int(i), self._bn(buy_base), self._bn(buy), "0",
            ])  # fmt: skip
        return rows, "0"

    def _settlements(self, coin: str) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            given = self._funding.get(coin)
        if given is not None:
            return given
        series = self._finest(coin)
        if series is None or "funding.close" not in series.columns:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        rates = series.columns["funding.close"]
        times = series.times[: len(rates)]
        pick = times % (8 * HOUR) == 0  # a settlement at every 8 h bar open
        return times[pick], rates[pick]

    def _funding_rates(self, path: str, coin: str, params: dict[str, str], lag: int) -> tuple[Any, str]:
        times, rates = self._settlements(coin)
        limit = min(int(params.get("limit", 100)), 1000)
        rows = [
            {
                "symbol": coin + QUOTE,
                "fundingTime": int(times[i]),
                "fundingRate": self._bn(rates[i] / 100.0),
                "markPrice": "",
            }
            for i in _window(times, params.get("startTime"), params.get("endTime"), self.now_ms(), limit, lag)
            if math.isfinite(rates[i])
        ]
        return rows, "fundingTime"

    def _premium(self, path: str, coin: str, params: dict[str, str], lag: int) -> tuple[Any, str]:
        times, rates = self._settlements(coin)
        now = self.now_ms()
        known = [
            r for t, r in zip(times.tolist(), rates.tolist(), strict=True) if t <= now and math.isfinite(r)
        ]
        series = self._finest(coin)
        price = None
        if series is not None:
            idx = _window(series.times, None, str(now), now, 1, 0)
            price = series.value("price.close", int(idx[-1])) if len(idx) else None
        body = {
            "symbol": coin + QUOTE,
            "markPrice": self._bn(price) if price is not None else "0",
            "indexPrice": self._bn(price) if price is not None else "0",
            "estimatedSettlePrice": self._bn(price) if price is not None else "0",
            "lastFundingRate": self._bn(known[-1] / 100.0) if known else "0",
            "interestRate": "0.00010000",
            "nextFundingTime": (now // (8 * HOUR) + 1) * 8 * HOUR,
            "time": now,
        }
        return body, "time"

    def _data(self, path: str, coin: str, params: dict[str, str], lag: int) -> tuple[Any, str]:
        _require(params, ("period",), binance=True)
        period = params["period"]
        if period not in DATA_PERIODS:
            raise _Refused(Reply.json({"code": -1120, "msg": "Invalid period."}, 400))
        series = self._lookup(coin, period) or self._finest(coin)
        step = INTERVALS.get(period) or {"2h": 2 * HOUR}[period]
        if series is None or step % series.step:
            return [], "timestamp"
        now = self.now_ms()
        oldest = now - BINANCE_DATA_DAYS * DAY
        start = max(int(params.get("startTime", oldest)), oldest)
        limit = min(int(params.get("limit", 30)), 500)
        times = series.times
        on_period = np.flatnonzero(times % step == 0)
        idx = on_period[_window(times[on_period], str(start), params.get("endTime"), now, limit, lag)]
        rows = [self._data_row(path, coin, series, int(i)) for i in idx]
        return [r for r in rows if r is not None], "timestamp"

    def _data_row(self, path: str, coin: str, series: Series, i: int) -> dict[str, Any] | None:
        t = int(series.times[i])
        stamp: Any = str(t) if self.value_style == "str" else t
        if path.endswith("openInterestHist"):
            value, price = series.value("oi.close", i), series.value("price.close", i)
            if value is None:
                return None
            return {
                "symbol": coin + QUOTE,
                "sumOpenInterest": self._bn(value / price) if price else "0",
                "sumOpenInterestValue": self._bn(value),
                "timestamp": stamp,
            }
        prefix = "ls.global" if "global" in path else "ls.top"
        long, short = series.value(f"{prefix}_long_pct", i), series.value(f"{prefix}_short_pct", i)
        if long is None or short is None:
            return None
        return {
            "symbol": coin + QUOTE,
            "longShortRatio": self._bn(long / short if short else 0.0),
            "longAccount": self._bn(long / 100.0),
            "shortAccount": self._bn(short / 100.0),
            "timestamp": stamp,
        }

    def _bn(self, value: float) -> Any:
        return value if self.value_style == "num" else _num_str(value)


# -- replies, faults -------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the handler sends: status, headers, body; ``action`` for transport faults."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None  # "reset", "delay", "cut" or "truncated"
    delay: float = 0.0
    stream: Iterator[bytes] | None = None  # a body written piece by piece, as long as the client reads
    length: int | None = None  # its announced Content-Length; None: chunked

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


class _Refused(Exception):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply


def _require(params: Mapping[str, str], names: Sequence[str], *, binance: bool) -> None:
    missing = [n for n in names if not params.get(n)]
    if missing:
        body: dict[str, Any] = (
            {"code": -1102, "msg": f"Mandatory parameter '{missing[0]}' was not sent."}
            if binance
            else {"code": "400", "msg": f"{missing[0]} is required"}
        )
        raise _Refused(Reply.json(body, 400))


def _status_reply(status: int, binance: bool, fault: Fault) -> Reply:
    if binance:
        reply = Reply.json({"code": -1000 if status >= 500 else -1003, "msg": f"HTTP {status}"}, status)
    else:
        reply = Reply.json({"code": str(status), "msg": f"HTTP {status}"}, status)
    retry_after = fault.options.get("retry_after", 120 if status == 418 else None)
    if retry_after is not None:
        reply.headers["Retry-After"] = str(retry_after)
    return reply


def _envelope(code: str, msg: str, default_status: int) -> Callable[[Fault, bool], Reply]:
    def reply(fault: Fault, binance: bool) -> Reply:
        body = {"code": str(fault.options.get("code", code)), "msg": fault.options.get("msg", msg)}
        return Reply.json(body, int(fault.options.get("status", default_status)))

    return reply


def _html(fault: Fault, binance: bool) -> Reply:
    page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
    return Reply(int(fault.options.get("status", 200)), page, {"Content-Type": "text/html"})


_STATUS_FAULTS: dict[str, Callable[[Fault, bool], Reply]] = {
    "upgrade_plan": _envelope("401", "Upgrade plan", 200),
    "bad_key": _envelope("400", "Invalid API key provided", 400),
    "envelope": _envelope("500", "Server error", 200),
    "html": _html,
}


def _endless(market: FakeMarket, fault: Fault) -> Reply:
    fuse = int(fault.options.get("max_bytes", 1 << 30))

    def body() -> Iterator[bytes]:
        yield b"["
        block = b'[0,"1"],' * 8192  # 64 KiB
        sent = 1
        while sent < fuse:
            yield block
            sent += len(block)

    return Reply(headers={"Content-Type": "application/json"}, stream=body())


def _big(market: FakeMarket, fault: Fault) -> Reply:
    size = int(fault.options.get("size", 1 << 30))

    def body() -> Iterator[bytes]:
        piece = b" " * 65536
        for at in range(0, size, len(piece)):
            yield piece[: size - at]

    return Reply(headers={"Content-Type": "application/json"}, stream=body(), length=size)


def gzip_zeros(size: int | None, block: int = 1 << 20) -> Iterator[bytes]:
    """A gzip stream of ``size`` zero bytes rounded up to whole ``block``s (None: endless).

    zlib compresses two blocks, each ended by a full flush, which resets the compressor: every
    later block compresses to the same bytes as the second, so GiBs cost nothing to produce.
    """
    zeros = bytes(block)
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = z.compress(zeros) + z.flush(zlib.Z_FULL_FLUSH)
    steady = z.compress(zeros) + z.flush(zlib.Z_FULL_FLUSH)
    batch = 64  # blocks per write
    yield first
    crc, done = zlib.crc32(zeros), 1
    total = None if size is None else max(1, -(-size // block))
    while total is None or done < total:
        n = batch if total is None else min(batch, total - done)
        yield steady * n
        if total is not None:
            for _ in range(n):
                crc = zlib.crc32(zeros, crc)
        done += n
    yield b"\x03\x00" + struct.pack("<II", crc, (done * block) & 0xFFFFFFFF)  # a final empty block, trailer


def _gzip_bomb(market: FakeMarket, fault: Fault) -> Reply:
    size = fault.options.get("size", 4 << 30)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return Reply(headers=headers, stream=gzip_zeros(None if size is None else int(size)))


def _gzip_stuffing(market: FakeMarket, fault: Fault) -> Reply:
    fuse = int(fault.options.get("max_bytes", 1 << 30))

    def body() -> Iterator[bytes]:
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        yield z.compress(b"") + z.flush(zlib.Z_SYNC_FLUSH)  # the gzip header and an empty block
        empty = b"\x00\x00\x00\xff\xff" * 13107  # empty stored blocks, 64 KiB
        for _ in range(0, fuse, len(empty)):
            yield empty

    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return Reply(headers=headers, stream=body())


def _drip(market: FakeMarket, fault: Fault) -> Reply:
    interval = float(fault.options.get("interval", 0.05))

    def body() -> Iterator[bytes]:
        yield b"["
        while not market._closing.wait(interval):
            yield b" "

    return Reply(headers={"Content-Type": "application/json"}, stream=body())


#: Faults whose body is streamed (``Reply.stream``): huge, endless or slow responses.
_STREAM_FAULTS: dict[str, Callable[[FakeMarket, Fault], Reply]] = {
    "endless": _endless,
    "big": _big,
    "gzip_bomb": _gzip_bomb,
    "gzip_stuffing": _gzip_stuffing,
    "drip": _drip,
}


def _reshape(rows: list[Any], shape: str | None, key: str) -> list[Any]:
    """Apply a data-shape fault (``empty``, ``shuffle``) to response rows."""
    if shape == "empty":
        return []
    if shape != "shuffle":
        return rows
    out: list[Any] = []
    for n, row in enumerate(reversed(rows)):
        if n % 3 == 0:
            out.append(_spoiled(row, key))
        out.append(row)
    return out


def _spoiled(row: Any, key: str) -> Any:
    """A copy of ``row`` with every value but its time changed (a wrong duplicate)."""
    if isinstance(row, list):
        return [row[0], *("-1" if isinstance(v, str) else v for v in row[1:])]
    return {
        k: (v if k in (key, "symbol") else (-1 if isinstance(v, int | float) else "-1"))
        for k, v in row.items()
    }


def _window(
    times: np.ndarray, start: str | None, end: str | None, now_ms: int, limit: int, lag: int
) -> np.ndarray:
    """Indices of ``times`` in [start, end] and not after now, minus the newest ``lag``; the first
    ``limit`` from ``start`` if given, else the newest ``limit``."""
    keep = times <= now_ms
    if start is not None:
        keep &= times >= int(start)
    if end is not None:
        keep &= times <= int(end)
    idx = np.flatnonzero(keep)
    if lag:
        newest = np.flatnonzero(times <= now_ms)[-lag:]
        idx = np.setdiff1d(idx, newest)
    return idx[:limit] if start is not None else idx[-limit:]


def _num_str(value: float) -> str:
    return repr(float(value))


def _default_funding_list(coin: str, rate: float, now_ms: int) -> dict[str, Any]:
    nxt = (now_ms // (8 * HOUR) + 1) * 8 * HOUR
    return {
        "symbol": coin,
        "stablecoin_margin_list": [
            {
                "exchange": "Binance",
                "funding_rate": rate,
                "funding_rate_interval": 8,
                "next_funding_time": nxt,
            },
            {
                "exchange": "OKX",
                "funding_rate": rate + 0.002,
                "funding_rate_interval": 8,
                "next_funding_time": nxt,
            },
            {
                "exchange": "Bybit",
                "funding_rate": rate - 0.001,
                "funding_rate_interval": 8,
                "next_funding_time": nxt,
            },
        ],
        "token_margin_list": [
            {
                "exchange": "Binance",
                "funding_rate": rate / 2,
                "funding_rate_interval": 8,
                "next_funding_time": nxt,
            },
        ],
    }


def _get(metric: str) -> Callable[[Series, int], float | None]:
    return lambda s, i: s.value(metric, i)


def _ratio(prefix: str) -> Callable[[Series, int], float | None]:
    def get(s: Series, i: int) -> float | None:
        long, short = s.value(f"{prefix}_long_pct", i), s.value(f"{prefix}_short_pct", i)
        return round(long / short, 2) if long is not None and short else None

    return get


def _ohlc(prefix: str) -> dict[str, Callable[[Series, int], float | None]]:
    return {f: _get(f"{prefix}.{f}") for f in ("open", "high", "low", "close")}


#: path -> (response field -> value getter, symbol scope, value type in real responses)
_CG_HISTORY: dict[str, tuple[dict[str, Callable[[Series, int], float | None]], str, str]] = {
    "/api/futures/price/history": ({**_ohlc("price"), "volume_usd": _get("price.volume")}, "pair", "str"),
    "/api/futures/open-interest/aggregated-history": (_ohlc("oi"), "coin", "num"),
    "/api/futures/funding-rate/oi-weight-history": (_ohlc("funding"), "coin", "num"),
    "/api/futures/liquidation/aggregated-history": (
        {
            "aggregated_long_liquidation_usd": _get("liq.long_usd"),
            "aggregated_short_liquidation_usd": _get("liq.short_usd"),
        },
        "coin_exchanges",
        "num",
    ),
    "/api/futures/global-long-short-account-ratio/history": (
        {
            "global_account_long_percent": _get("ls.global_long_pct"),
            "global_account_short_percent": _get("ls.global_short_pct"),
            "global_account_long_short_ratio": _ratio("ls.global"),
        },
        "pair",
        "num",
    ),
    "/api/futures/top-long-short-account-ratio/history": (
        {
            "top_account_long_percent": _get("ls.top_long_pct"),
            "top_account_short_percent": _get("ls.top_short_pct"),
            "top_account_long_short_ratio": _ratio("ls.top"),
        },
        "pair",
        "num",
    ),
    "/api/futures/aggregated-taker-buy-sell-volume/history": (
        {
            "aggregated_buy_volume_usd": _get("taker.buy_usd"),
            "aggregated_sell_volume_usd": _get("taker.sell_usd"),
        },
        "coin_exchanges",
        "num",
    ),
    # issue 17: served from the series' depth.*/basis.*/premium.* metrics (null where not set)
    "/api/futures/orderbook/ask-bids-history": (
        {"bids_usd": _get("depth.bid_usd_1pct"), "asks_usd": _get("depth.ask_usd_1pct")},
        "pair",
        "num",
    ),
    "/api/futures/orderbook/aggregated-ask-bids-history": (
        {
            "aggregated_bids_usd": _get("depth.bid_usd_1pct"),
            "aggregated_asks_usd": _get("depth.ask_usd_1pct"),
        },
        "coin_exchanges",
        "num",
    ),
    "/api/futures/basis/history": (
        {"close_basis": _get("basis.cg_close"), "close_change": _get("basis.cg_close_change")},
        "pair",
        "num",
    ),
    "/api/coinbase-premium-index": (
        {"premium_rate": _get("premium.coinbase_btc_pct"), "premium": _get("premium.coinbase_btc_usd")},
        "none",
        "num",
    ),
}
#: ETF daily paths (issue 17): the documented example day and the feed's trailing filler row.
_CG_ETF = {
    "/api/etf/bitcoin/flow-history": [
        {"timestamp": 1704931200000, "flow_usd": 655300000, "price_usd": 46663,
         "etf_flows": [{"etf_ticker": "GBTC", "flow_usd": -95100000}, {"etf_ticker": "IBIT", "flow_usd": 111700000}]},
        {"timestamp": 1705017600000, "flow_usd": 0.0, "price_usd": None,
         "etf_flows": [{"etf_ticker": "GBTC", "flow_usd": None}, {"etf_ticker": "IBIT", "flow_usd": None}]},
    ],
    "/api/etf/ethereum/flow-history": [
        {"timestamp": 1721692800000, "flow_usd": 106600000, "price_usd": 3480.1,
         "etf_flows": [{"etf_ticker": "ETHA", "flow_usd": 266500000}, {"etf_ticker": "ETHE", "flow_usd": -484100000}]},
    ],
    "/api/etf/bitcoin/net-assets/history": [
        {"net_assets_usd": 51671409241.39, "change_usd": 655300000, "timestamp": 1704931200000, "price_usd": 46337.8}
    ],
    "/api/etf/ethereum/net-assets/history": [
        {"net_assets_usd": 10234000000.0, "change_usd": 106600000, "timestamp": 1721692800000}
    ],
}  # fmt: skip
_BINANCE_DATA = frozenset(
    {
        "/futures/data/openInterestHist",
        "/futures/data/globalLongShortAccountRatio",
        "/futures/data/topLongShortAccountRatio",
    }
)


def generate_series(bars: int, *, seed: int = 0, price: float = 60_000.0) -> dict[str, np.ndarray]:
    """Random-walk bars of every metric with plausible magnitudes (USD, percent)."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
    open_ = np.concatenate([[price], close[:-1]])
    wiggle = np.abs(rng.normal(0, 0.002, (2, bars)))
    volume = rng.uniform(2e8, 6e8, bars)
    buy_share = rng.uniform(0.4, 0.6, bars)
    oi_close = 3e10 * np.exp(np.cumsum(rng.normal(0, 0.003, bars)))
    oi_open = np.concatenate([[3e10], oi_close[:-1]])
    fr_close = 0.01 + np.cumsum(rng.normal(0, 0.0005, bars))
    fr_open = np.concatenate([[0.01], fr_close[:-1]])
    g_long = np.clip(55 + np.cumsum(rng.normal(0, 0.3, bars)), 20, 80).round(2)
    t_long = np.clip(52 + np.cumsum(rng.normal(0, 0.3, bars)), 20, 80).round(2)
    return {
        "price.open": open_,
        "price.high": np.maximum(open_, close) * (1 + wiggle[0]),
        "price.low": np.minimum(open_, close) * (1 - wiggle[1]),
        "price.close": close,
        "price.volume": volume,
        "oi.open": oi_open,
        "oi.high": np.maximum(oi_open, oi_close) * 1.001,
        "oi.low": np.minimum(oi_open, oi_close) * 0.999,
        "oi.close": oi_close,
        "funding.open": fr_open,
        "funding.high": np.maximum(fr_open, fr_close) + 0.0002,
        "funding.low": np.minimum(fr_open, fr_close) - 0.0002,
        "funding.close": fr_close,
        "liq.long_usd": rng.exponential(2e6, bars),
        "liq.short_usd": rng.exponential(2e6, bars),
        "ls.global_long_pct": g_long,
        "ls.global_short_pct": (100 - g_long).round(2),
        "ls.top_long_pct": t_long,
        "ls.top_short_pct": (100 - t_long).round(2),
        "taker.buy_usd": volume * buy_share,
        "taker.sell_usd": volume * (1 - buy_share),
    }


# -- the HTTP server ---------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # many concurrent clients (benchmarks) must not see dropped SYNs

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Faults break connections on purpose; stay quiet about it."""


def _handler_for(market: FakeMarket) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def setup(self) -> None:
            super().setup()
            # headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                reply = market.handle(url.path, params, headers)
            except Exception as exc:  # a bug in the fake itself: answer 500 rather than hang the client
                reply = Reply.json({"code": "500", "msg": f"fake market error: {exc!r}"}, 500)
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            if reply.action == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if reply.stream is not None:
                self._stream(reply)
                return
            if reply.action == "delay":
                market._closing.wait(reply.delay)
            body = reply.body
            length = len(body)
            if reply.action in ("cut", "truncated"):
                body = body[: len(body) // 2]
                if reply.action == "truncated":
                    length = len(body)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(length))
            if reply.action == "cut":
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def _stream(self, reply: Reply) -> None:
            """Write ``reply.stream`` piece by piece until it ends, the client goes or the market closes."""
            assert reply.stream is not None
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            chunked = reply.length is None
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(reply.length))
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            try:
                for piece in reply.stream:
                    if market._closing.is_set():
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    with market._lock:
                        market.sent_bytes += len(piece)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client went away: what the faults are for
                return

    return Handler
