"""Binance USD-M futures public market data (``https://fapi.binance.com``, no API key).

Endpoint -> fields -> metrics (the pair is ``<COIN>USDT``; numbers arrive as strings):

============================================  ===========================================  =============================================
endpoint                                      fields                                       metrics and units
============================================  ===========================================  =============================================
/fapi/v1/klines (interval)                    open, high, low, close                       price.open/high/low/close (USDT ~ USD)
                                              quoteVolume                                  price.volume (USDT)
                                              takerBuyQuote                                taker.buy_usd (USDT)
                                              quoteVolume - takerBuyQuote                  taker.sell_usd (USDT)
                                              takerBuyQuote / quoteVolume x 100            taker.buy_pct (percent)
/fapi/v1/fundingRate                          fundingRate (fraction) x 100                 funding.close (percent per funding interval):
                                                                                           the last settlement before the bar's close,
                                                                                           in force until the next is due (see below)
/fapi/v1/premiumIndex                         lastFundingRate (fraction) x 100             only with ``funding_estimate_newest: true``:
                                                                                           funding.close of the newest closed bar is
                                                                                           the predicted rate (``observed`` = its time)
/futures/data/openInterestHist (period)       sumOpenInterestValue                         oi.close (USDT), last 30 days only
/futures/data/globalLongShortAccountRatio     longAccount, shortAccount (fractions) x 100  ls.global_long_pct, ls.global_short_pct (percent)
/futures/data/topLongShortAccountRatio        longAccount, shortAccount (fractions) x 100  ls.top_long_pct, ls.top_short_pct (percent)
/futures/data/basis (pair, PERPETUAL)         basisRate (fraction) x 100, basis             basis.rate_pct (percent of index), basis.usd
/fapi/v1/depth (limit 1000, weight 20)        bids, asks [price, qty] within the band        depth.bid_usd/ask_usd/imbalance _1pct, _2pct
                                              around the mid price: sum of price x qty     and at ``depth_range``: the newest bar only
============================================  ===========================================  =============================================

What Binance does not honestly provide, and so is absent from :meth:`BinanceSource.provides`:

* ``liq.*``: ``/fapi/v1/forceOrders`` needs a key and returns only the caller's own orders; the
  public ``forceOrder`` stream sends at most one liquidation per symbol per second (undercounts).
* ``oi.open/high/low``: ``openInterestHist`` gives one snapshot per period, not an OHLC bar.
* ``funding.open/high/low``: one rate per settlement (every 8 h, some symbols 4 h or 1 h), so
  there is no intra-bar range to report; ``funding.close`` is the settled rate in force.
* ``funding.avg/max/min/spread/*_exchange``: cross-exchange figures; Binance is one exchange.

All values are Binance's own (one exchange): ``oi.close`` is Binance's open interest and
``funding.close`` Binance's rate, not the all-exchange / OI-weighted figures CoinGlass gives.

A settled funding rate stays in force until the next settlement is due (the symbol's funding
interval, read from the spacing of its settlements), so a bar that closes before then carries it
as a current value (``observed`` = the bar's own time); once a settlement is overdue the carried
rate ages from its settlement time and turns unknown past the strategy's ``max_data_age``. The
newest bar's predicted rate (premiumIndex) is off by default: a later backtest could not
reproduce it, and the language promises that the live value of a bar equals the backtest's.

``/futures/data/*`` values are snapshots taken at ``timestamp`` (the 1 h and 30 m series agree at
every common timestamp), so the value stamped ``T`` is put on the bar that opens at ``T``: it is
known before that bar closes, which keeps live and backtest identical (never a look-ahead; it
trails the bar's true close by one bar). Their periods are 5m 15m 30m 1h 2h 4h 6h 12h 1d; an 8h
bar uses the 4h series at its open time, and 1m/3m bars have no such data. Only the last 30 days
are served: older bars are not requested and stay unknown.

Rate limits: request weight (klines by ``limit``: 1/2/5/10) against ``weight_limit_per_min``
(default 2400), pausing until the next minute when ``X-MBX-USED-WEIGHT-1M`` reaches 90 %; the
``/futures/data`` endpoints against 1000 requests per 5 min, ``fundingRate`` against 500 per
5 min. HTTP 429 is retried after ``Retry-After``; HTTP 418 (an IP ban) stops all requests of this
source until the ban ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import httpx
import numpy as np

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import PluginContext, Source
from perpwatch.common.timeutil import DAY, HOUR, MINUTE, format_time
from perpwatch.evaluation.frame import Cat, to_float

from ._http import (
    NO_OBSERVATION,
    Columns,
    FetchPlan,
    HttpSource,
    Job,
    RateLimiter,
    RequestError,
    align_job,
    buy_pct,
    check_times,
    chunks,
    drop_impossible,
    http_options_schema,
    json_body,
    rows_with_time,
    short_msg,
    split_symbol,
    status_error,
    to_ms,
)
from ._rows import MS_FLOOR

BASE_URL = "https://fapi.binance.com"
KLINES_PATH = "/fapi/v1/klines"
FUNDING_PATH = "/fapi/v1/fundingRate"
PREMIUM_PATH = "/fapi/v1/premiumIndex"
DEPTH_PATH = "/fapi/v1/depth"
#: Levels per side asked of ``/fapi/v1/depth`` (the most it serves; request weight 20).
DEPTH_LIMIT = 1000
DEPTH_WEIGHT = 20
KLINES_LIMIT = 1000
FUNDING_LIMIT = 1000
DATA_LIMIT = 500
#: How far back ``/futures/data`` serves history.
DATA_HISTORY_MS = 30 * DAY
#: Longest Binance funding interval: a bar's rate in force was settled at most this long before its close.
MAX_FUNDING_INTERVAL_MS = 8 * HOUR
#: ``/futures/data`` periods, finest first.
DATA_PERIODS = {
    "5m": 5 * MINUTE, "15m": 15 * MINUTE, "30m": 30 * MINUTE, "1h": HOUR, "2h": 2 * HOUR,
    "4h": 4 * HOUR, "6h": 6 * HOUR, "12h": 12 * HOUR, "1d": DAY,
}  # fmt: skip

#: Position in a kline array of each field read.
KLINE_POSITIONS = {
    "time": 0,
    "open": 1,
    "high": 2,
    "low": 3,
    "close": 4,
    "quote_volume": 7,
    "taker_buy_quote": 10,
}
KLINE_FIELDS = {
    "open": "price.open",
    "high": "price.high",
    "low": "price.low",
    "close": "price.close",
    "quote_volume": "price.volume",
    "taker_buy_quote": "taker.buy_usd",
}
KLINE_METRICS = frozenset(KLINE_FIELDS.values()) | {"taker.sell_usd", "taker.buy_pct"}
FUNDING_METRICS = frozenset({"funding.close"})


@dataclass(frozen=True)
class DataEndpoint:
    """A ``/futures/data`` statistics endpoint and how its fields map to metrics (times ``scale``;
    ``rescale`` multiplies single metrics after that), with its symbol parameter and extra params."""

    path: str
    fields: Mapping[str, str]
    scale: float = 1.0
    symbol_param: str = "symbol"
    params: Mapping[str, str] = field(default_factory=dict)
    rescale: Mapping[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(self.fields.values())


DATA: dict[str, DataEndpoint] = {
    "oi": DataEndpoint("/futures/data/openInterestHist", {"sumOpenInterestValue": "oi.close"}),
    "ls_global": DataEndpoint(
        "/futures/data/globalLongShortAccountRatio",
        {"longAccount": "ls.global_long_pct", "shortAccount": "ls.global_short_pct"},
        100.0,
    ),
    "ls_top": DataEndpoint(
        "/futures/data/topLongShortAccountRatio",
        {"longAccount": "ls.top_long_pct", "shortAccount": "ls.top_short_pct"},
        100.0,
    ),
    "basis": DataEndpoint(
        "/futures/data/basis",
        {"basisRate": "basis.rate_pct", "basis": "basis.usd"},
        symbol_param="pair",
        params={"contractType": "PERPETUAL"},
        rescale={"basis.rate_pct": 100.0},  # basisRate is a fraction of the index price
    ),
}
#: Depth metrics' suffix -> band in percent ("" is the ``depth_range`` option's).
DEPTH_BANDS = {"_1pct": 1.0, "_2pct": 2.0}
DEPTH_METRICS = frozenset(
    f"depth.{kind}{suffix}"
    for kind in ("bid_usd", "ask_usd", "imbalance")
    for suffix in ("_1pct", "_2pct", "")
)


def klines_weight(limit: int) -> int:
    """Request weight of ``/fapi/v1/klines`` for ``limit``."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    return 5 if limit <= 1000 else 10


def data_period(step: int) -> str | None:
    """The coarsest ``/futures/data`` period whose snapshots fall on every bar open of ``step``."""
    fitting = [name for name, ms in DATA_PERIODS.items() if ms <= step and step % ms == 0]
    return fitting[-1] if fitting else None


def decode(response: httpx.Response) -> Any:
    """The JSON payload of a Binance response, or a :class:`RequestError` saying what went wrong."""
    status = response.status_code
    if status == 418:
        raise RequestError(
            "HTTP 418: Binance banned this IP for exceeding rate limits", retryable=False, ban=True
        )
    if status == 429:
        raise RequestError("HTTP 429: Binance rate limit exceeded", retryable=True)
    if status == 403:
        raise RequestError("HTTP 403: blocked by Binance's web application firewall", retryable=False)
    if status != 200:
        raise status_error(status, _error_detail(response))
    body = json_body(response)
    if isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] < 0:
        raise RequestError(f"Binance error{_error_detail(response)}", retryable=False)
    return body


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and "msg" in body:
        return f" (code {body.get('code')}: {short_msg(body['msg'])})"
    return ""


def decode_klines(response: httpx.Response) -> list[dict[str, Any]]:
    """Kline arrays -> dict rows keyed ``time`` (open time), OHLC, ``quote_volume``, ``taker_buy_quote``.

    A short array gives a row without the fields it lacks (``align_job`` names them)."""
    data = decode(response)
    if not isinstance(data, list):
        raise RequestError("malformed klines: expected a list", retryable=True)
    rows = [
        {name: k[i] for name, i in KLINE_POSITIONS.items() if i < len(k)} if isinstance(k, list) else {}
        for k in data
    ]
    return rows_with_time(rows, "time")


class BinanceSource(HttpSource):
    """Binance USD-M perpetual market data: price, taker flow, funding, open interest, long/short ratios."""

    name: ClassVar[str] = "binance"
    options_schema: ClassVar[dict[str, Any]] = http_options_schema(
        BASE_URL,
        {
            "quote": {
                "type": "string",
                "default": "USDT",
                "description": "quote asset of the perpetual pair",
            },
            "weight_limit_per_min": {"type": "integer", "minimum": 1, "default": 2400},
            "data_requests_per_5min": {"type": "integer", "minimum": 1, "default": 1000},
            "funding_requests_per_5min": {"type": "integer", "minimum": 1, "default": 500},
            "depth_range": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 10,
                "default": 1,
                "description": "band (percent around the mid price) of depth.bid_usd/ask_usd/imbalance",
            },
            "funding_estimate_newest": {
                "type": "boolean",
                "default": False,
                "description": "funding.close of the newest bar from premiumIndex (the predicted rate) instead of the "
                "settled rate in force; a later backtest cannot reproduce it",
            },
        },
    )

    #: Current values with no history (``perpwatch fetch`` asks for them only when named).
    snapshot_metrics: ClassVar[frozenset[str]] = DEPTH_METRICS

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None) -> None:
        super().__init__(options, ctx)
        clock = self.ctx.clock
        self.quote = str(self.option("quote"))
        self.funding_estimate_newest = bool(self.option("funding_estimate_newest"))
        self.depth_bands = {**DEPTH_BANDS, "": float(self.option("depth_range"))}
        self.weight = RateLimiter(int(self.option("weight_limit_per_min")), 60.0, clock)
        self.data_limiter = RateLimiter(int(self.option("data_requests_per_5min")), 300.0, clock)
        self.funding_limiter = RateLimiter(int(self.option("funding_requests_per_5min")), 300.0, clock)

    @classmethod
    def provides(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """Klines, settled funding and the ``/futures/data`` statistics, whatever the options."""
        return (
            KLINE_METRICS
            | FUNDING_METRICS
            | DEPTH_METRICS
            | frozenset().union(*(e.metrics for e in DATA.values()))
        )

    def jobs(self, plan: FetchPlan) -> list[Job]:
        """Klines, funding and one job per ``/futures/data`` endpoint wanted; see the module docstring."""
        request, grid, step, wanted = plan.request, plan.grid, plan.step, plan.wanted
        _, pair = split_symbol(request.symbol, self.quote)
        jobs = []
        if KLINE_METRICS & wanted:
            jobs.append(Job(KLINES_PATH, KLINE_METRICS, partial(self._klines, pair, request.interval, plan)))
        if FUNDING_METRICS & wanted:
            jobs.append(
                Job(
                    FUNDING_PATH,
                    FUNDING_METRICS,
                    partial(self._funding, pair, grid, step, plan.newest, plan.now_ms),
                )
            )
        if DEPTH_METRICS & wanted:
            jobs.append(Job(DEPTH_PATH, DEPTH_METRICS, partial(self._depth, pair, plan)))
        for endpoint in DATA.values():
            if endpoint.metrics & wanted:
                jobs.append(
                    Job(
                        endpoint.path,
                        endpoint.metrics,
                        partial(self._data, endpoint, pair, request.interval, plan),
                    )
                )
        return jobs

    def observe(self, response: httpx.Response) -> None:
        """Pause until the next minute when the IP's used weight nears the limit."""
        try:
            used = int(response.headers["X-MBX-USED-WEIGHT-1M"])
        except (KeyError, ValueError):
            return
        if used >= 0.9 * self.weight.capacity:
            self.weight.pause(60.0 - self.ctx.clock.time() % 60.0)

    async def _klines(self, pair: str, interval: str, plan: FetchPlan) -> Columns:
        grid, step = plan.grid, plan.step
        pages = await asyncio.gather(
            *(
                self.http.get(
                    KLINES_PATH,
                    {"symbol": pair, "interval": interval, "startTime": start, "endTime": end, "limit": bars},
                    decode_klines,
                    [(self.weight, klines_weight(bars))],
                )
                for start, end, bars in chunks(int(grid[0]), int(grid[-1]), step, KLINES_LIMIT)
            )
        )
        rows = [row for page in pages for row in page]
        if not rows:
            raise RequestError(f"no klines for {pair} {interval} in the requested range", retryable=False)
        aligned = align_job(rows, "time", KLINE_FIELDS, plan)
        cols: dict[str, np.ndarray | Cat] = dict(aligned.columns)
        notes = list(aligned.problems)
        buy, volume = cols.get("taker.buy_usd"), cols.get("price.volume")
        if isinstance(buy, np.ndarray) and isinstance(volume, np.ndarray):  # else both derived are missing
            cols["taker.sell_usd"] = volume - buy
            impossible = drop_impossible(cols, ["taker.sell_usd"])  # a taker buy volume above the total
            if impossible:
                notes.append(impossible)
            cols["taker.buy_pct"] = buy_pct(buy, cols["taker.sell_usd"])  # type: ignore[arg-type]
        return Columns(cols, notes=notes)

    async def _funding(self, pair: str, grid: np.ndarray, step: int, newest: bool, now_ms: int) -> Columns:
        settlements, premium = await asyncio.gather(
            self._settlements(
                pair, int(grid[0]) + step - MAX_FUNDING_INTERVAL_MS - HOUR, int(grid[-1]) + step - 1, now_ms
            ),
            self._premium(pair) if newest and self.funding_estimate_newest else _nothing(),
        )
        times, rates, notes = settlements
        if not len(times):
            said = "".join(f"; {note}" for note in notes)
            raise RequestError(
                f"no funding settlements for {pair} in the requested range{said}", retryable=False
            )
        idx = np.searchsorted(times, grid + step, side="left") - 1
        known = idx >= 0
        safe = np.maximum(idx, 0)
        values = np.where(known, rates[safe], np.nan)
        settled = times[safe]
        in_force = known & (
            grid + step <= settled + funding_interval(times)
        )  # the next settlement is not due yet
        observed = np.where(in_force, grid, np.where(known, settled, NO_OBSERVATION)).astype(np.int64)
        if isinstance(premium, RequestError):
            notes.append(f"{PREMIUM_PATH}: {premium}; the newest bar keeps the last settled rate")
        elif premium is not None and premium[0] >= int(grid[-1]) + step:
            values[-1], observed[-1] = premium[1], premium[0]
        return Columns({"funding.close": values}, {"funding.close": observed}, notes)

    async def _settlements(
        self, pair: str, start: int, end: int, now_ms: int
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Settlement times and rates (percent) in ``[start, end]``, ascending (a repeated time:
        last wins), and one note per kind of settlement ignored (bad times, rates that are no numbers)."""
        by_time: dict[int, float] = {}
        notes: dict[str, None] = {}
        unusable = 0
        while start <= end:
            page = await self.http.get(
                FUNDING_PATH,
                {"symbol": pair, "startTime": start, "endTime": end, "limit": FUNDING_LIMIT},
                partial(_decode_rows, time_key="fundingTime"),
                [(self.funding_limiter, 1)],
            )
            times, usable, said = check_times(page, "fundingTime", now_ms)
            notes.update(dict.fromkeys(said))
            for row, time, ok in zip(page, times.tolist(), usable.tolist(), strict=True):
                rate = to_float(row.get("fundingRate")) * 100.0
                if ok and rate == rate:
                    by_time[time] = rate
                elif ok:
                    unusable += 1
            after = int(times[usable].max()) + 1 if usable.any() else start
            if len(page) < FUNDING_LIMIT or after <= start:  # a short page, or a server ignoring startTime
                break
            start = after
        if unusable:
            notes[f"{unusable} settlements without a finite fundingRate (ignored)"] = None
        known = sorted(by_time.items())
        return (
            np.asarray([t for t, _ in known], dtype=np.int64),
            np.asarray([r for _, r in known], dtype=float),
            list(notes),
        )

    async def _premium(self, pair: str) -> tuple[int, float] | RequestError:
        """(time, current funding rate in percent) from premiumIndex, or the error (it is optional)."""
        try:
            body = await self.http.get(PREMIUM_PATH, {"symbol": pair}, decode, [(self.weight, 1)])
        except RequestError as err:
            return err
        when = to_ms(body.get("time")) if isinstance(body, dict) else None
        rate = to_float(body.get("lastFundingRate")) * 100.0 if isinstance(body, dict) else float("nan")
        if when is None or rate != rate:
            return RequestError(f"{PREMIUM_PATH}: malformed body", retryable=True)
        return when, rate

    async def _data(self, endpoint: DataEndpoint, pair: str, interval: str, plan: FetchPlan) -> Columns:
        grid, now_ms = plan.grid, plan.now_ms
        period = data_period(plan.step)
        if period is None:
            raise RequestError(f"Binance has no such statistics for {interval} bars", retryable=False)
        period_ms = DATA_PERIODS[period]
        oldest = -(-(now_ms - DATA_HISTORY_MS) // period_ms) * period_ms + period_ms
        first = max(int(grid[0]), oldest)
        notes = []
        if first > int(grid[0]):
            notes.append(
                f"Binance keeps 30 days of these statistics; bars before {format_time(first)} are unknown"
            )
        rows: list[dict[str, Any]] = []
        if first <= int(grid[-1]):
            pages = await asyncio.gather(
                *(
                    self.http.get(
                        endpoint.path,
                        {
                            endpoint.symbol_param: pair,
                            **endpoint.params,
                            "period": period,
                            "startTime": start,
                            "endTime": end,
                            "limit": bars,
                        },
                        partial(_decode_rows, time_key="timestamp"),
                        [(self.data_limiter, 1)],
                    )
                    for start, end, bars in chunks(first, int(grid[-1]), period_ms, DATA_LIMIT)
                )
            )
            rows = [row for page in pages for row in page]
            if not rows:
                raise RequestError(f"no data for {pair} in the requested range", retryable=False)
        aligned = align_job(rows, "timestamp", endpoint.fields, plan, endpoint.scale)
        cols: dict[str, np.ndarray | Cat] = dict(aligned.columns)
        for name, factor in endpoint.rescale.items():
            col = cols.get(name)
            if isinstance(col, np.ndarray):
                cols[name] = col * factor
        return Columns(cols, notes=[*notes, *aligned.problems])

    async def _depth(self, pair: str, plan: FetchPlan) -> Columns:
        """The order book now, on the newest closed bar (observed at the book's time); older bars
        are unknown: Binance serves no depth history."""
        n = len(plan.grid)
        unknown = {m: np.full(n, np.nan) for m in DEPTH_METRICS}
        if not plan.newest:
            return Columns(dict(unknown), notes=["depth.* is the live order book: no history (unknown)"])
        body = await self.http.get(
            DEPTH_PATH, {"symbol": pair, "limit": DEPTH_LIMIT}, decode, [(self.weight, DEPTH_WEIGHT)]
        )
        values, when, notes = depth_bands(body, self.depth_bands, DEPTH_LIMIT)
        cols: dict[str, np.ndarray | Cat] = {}
        for name, value in values.items():
            col = np.full(n, np.nan)
            col[-1] = value
            cols[name] = col
        observed = np.full(n, NO_OBSERVATION, dtype=np.int64)
        observed[-1] = when if when is not None else plan.now_ms
        return Columns(cols, {name: observed.copy() for name in cols}, notes)


def _decode_rows(response: httpx.Response, *, time_key: str) -> list[dict[str, Any]]:
    return rows_with_time(decode(response), time_key)


async def _nothing() -> None:
    return None


@hookimpl
def register_sources(register: Callable[[type[Source]], None]) -> None:
    register(BinanceSource)


def _levels(side: object) -> np.ndarray | None:
    """``[[price, qty], ...]`` (strings) -> an (n, 2) float array; None when any level is not two
    positive finite numbers."""
    if not isinstance(side, list):
        return None
    out = np.empty((len(side), 2))
    for i, level in enumerate(side):
        if not isinstance(level, list) or len(level) < 2:
            return None
        price, qty = to_float(level[0]), to_float(level[1])
        if not (np.isfinite(price) and np.isfinite(qty)) or price <= 0 or qty < 0:
            return None
        out[i] = (price, qty)
    return out


def depth_bands(
    body: object, bands: Mapping[str, float], limit: int
) -> tuple[dict[str, float], int | None, list[str]]:
    """A ``/fapi/v1/depth`` body -> depth.bid_usd/ask_usd/imbalance per band (percent around the mid
    price; USD = price x quantity, USDT taken as USD), the book's time (``E``, ms) and notes.

    A side whose returned levels end inside a band (a full page of ``limit`` levels that does not
    reach the band's edge) cannot say what rests there: unknown, said; so is a level that is not a
    number and a book time in seconds."""
    if not isinstance(body, dict):
        raise RequestError("malformed depth: expected an object", retryable=True)
    notes: list[str] = []
    when = to_ms(body.get("E", body.get("T")))
    if when is not None and when < MS_FLOOR:
        notes.append(f"book time {when} is in seconds, not milliseconds: depth.* unknown")
        return {m: np.nan for m in DEPTH_METRICS}, None, notes
    bids, asks = _levels(body.get("bids")), _levels(body.get("asks"))
    if bids is None or asks is None or not len(bids) or not len(asks):
        notes.append(
            "order book levels that are not [price, quantity] numbers, or an empty side: depth.* unknown"
        )
        return {m: np.nan for m in DEPTH_METRICS}, when, notes
    best_bid, best_ask = float(bids[:, 0].max()), float(asks[:, 0].min())
    if best_bid >= best_ask:
        notes.append(f"crossed book (bid {best_bid:g} >= ask {best_ask:g}): depth.* unknown")
        return {m: np.nan for m in DEPTH_METRICS}, when, notes
    mid = (best_bid + best_ask) / 2
    out: dict[str, float] = {}
    short: list[str] = []
    for suffix, band in bands.items():
        low, high = mid * (1 - band / 100), mid * (1 + band / 100)
        bid_ok = len(bids) < limit or float(bids[:, 0].min()) < low
        ask_ok = len(asks) < limit or float(asks[:, 0].max()) > high
        bid = float((bids[:, 0] * bids[:, 1])[bids[:, 0] >= low].sum()) if bid_ok else np.nan
        ask = float((asks[:, 0] * asks[:, 1])[asks[:, 0] <= high].sum()) if ask_ok else np.nan
        if not (bid_ok and ask_ok):
            short.append(f"{band:g} %")
        out[f"depth.bid_usd{suffix}"] = bid
        out[f"depth.ask_usd{suffix}"] = ask
        total = bid + ask
        out[f"depth.imbalance{suffix}"] = (bid - ask) / total if total > 0 else np.nan
    if short:
        notes.append(f"the {limit} levels returned do not reach +/-{', '.join(short)}: those depths unknown")
    return out, when, notes


def funding_interval(times: np.ndarray) -> int:
    """A symbol's funding interval (ms): the usual spacing of its settlements, 8 h when unclear."""
    if len(times) < 2:
        return 8 * HOUR
    gaps = np.diff(times)
    # settlement times jitter by milliseconds; round to the minute before taking the median
    return int(np.median(np.round(gaps / 60_000) * 60_000)) or 8 * HOUR
