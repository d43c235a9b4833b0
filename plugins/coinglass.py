"""CoinGlass API V4 source (``https://open-api-v4.coinglass.com``, header ``CG-API-KEY``).

Endpoint -> fields -> metrics (``<COIN>`` is the coin, e.g. BTC; a pair is ``pair_exchange`` plus
``<COIN>USDT``; every value is parsed with ``float`` whether it comes as a string or a number):

======================================================  ================================================  ==============================================
endpoint (params)                                       fields                                            metrics and units
======================================================  ================================================  ==============================================
/api/futures/price/history (pair)                       open, high, low, close, volume_usd                price.open/high/low/close (USD), price.volume (USD)
/api/futures/open-interest/aggregated-history           open, high, low, close                            oi.open/high/low/close (USD, all exchanges)
  (symbol=<COIN>, unit=usd)
/api/futures/funding-rate/oi-weight-history             open, high, low, close                            funding.open/high/low/close (percent, as sent)
  (symbol=<COIN>)
/api/futures/funding-rate/exchange-list                 data[symbol=<COIN>].stablecoin_margin_list[]:     funding.avg/max/min/spread (percent per
  (symbol=<COIN>; a current snapshot)                   exchange, funding_rate, funding_rate_interval     ``funding_basis_hours``), funding.max_exchange /
                                                                                                          min_exchange (Cat); newest bar only
/api/futures/liquidation/aggregated-history             aggregated_long_liquidation_usd,                  liq.long_usd, liq.short_usd (USD),
  (symbol=<COIN>, exchange_list=``exchanges``)          aggregated_short_liquidation_usd                  liq.total_usd = long + short
/api/futures/global-long-short-account-ratio/history    global_account_long_percent,                      ls.global_long_pct, ls.global_short_pct
  (pair)                                                global_account_short_percent                      (percent 0-100, as sent)
/api/futures/top-long-short-account-ratio/history       top_account_long_percent,                         ls.top_long_pct, ls.top_short_pct
  (pair)                                                top_account_short_percent                         (percent 0-100, as sent)
/api/futures/aggregated-taker-buy-sell-volume/history   aggregated_buy_volume_usd,                        taker.buy_usd, taker.sell_usd (USD),
  (symbol=<COIN>, exchange_list=``exchanges``)          aggregated_sell_volume_usd                        taker.buy_pct = buy / (buy + sell) x 100
======================================================  ================================================  ==============================================

History endpoints are paged in windows of at most 1000 bars (``start_time``/``end_time``, ms).
The funding list is a snapshot: its values fill only the newest closed bar, with the fetch time
in ``frame.observed``; it uses the stablecoin-margined rates of the configured ``exchanges``,
skips null rates, and rescales each rate from its own ``funding_rate_interval`` (hours) to
``funding_basis_hours`` (default 8, null keeps the rates as sent) so that exchanges with 1 h and
8 h funding compare fairly; a rate with an unknown interval is then skipped.

Errors follow the CoinGlass rule: a body ``code`` other than ``"0"`` is an error whatever the
HTTP status; 401 "Upgrade plan" is a plan/permission problem, 400 a bad key or parameters, 404 an
unknown path (none of them retried); 408, 429 and 5xx are retried with backoff.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import httpx
import numpy as np

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import PluginContext, Source, SourceError
from perpwatch.common.jsonsafe import finite_or_none
from perpwatch.evaluation.frame import Cat

from ._http import (
    NO_OBSERVATION,
    Columns,
    FetchPlan,
    HeaderAuth,
    HttpSource,
    Job,
    RateLimiter,
    RequestError,
    align_job,
    buy_pct,
    chunks,
    http_options_schema,
    is_retryable_status,
    json_body,
    rows_with_time,
    short_msg,
    split_symbol,
    status_meaning,
)
from .coinglass_convert import register_commands, register_history_readers  # noqa: F401 (hookimpls)

BASE_URL = "https://open-api-v4.coinglass.com"
#: Requests per minute of each CoinGlass plan.
PLANS = {"hobbyist": 30, "startup": 80, "standard": 300, "professional": 1200}
#: Most bars one history request may ask for.
PAGE_LIMIT = 1000
QUOTE = "USDT"
FUNDING_LIST_PATH = "/api/futures/funding-rate/exchange-list"
FUNDING_LIST_METRICS = frozenset(
    {
        "funding.avg",
        "funding.max",
        "funding.min",
        "funding.spread",
        "funding.max_exchange",
        "funding.min_exchange",
    }
)
_PLAN_HINT = "Hobbyist allows intervals >= 4h, Startup >= 30m"


def _total(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    return cols["liq.long_usd"] + cols["liq.short_usd"]


def _taker_pct(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    return buy_pct(cols["taker.buy_usd"], cols["taker.sell_usd"])


@dataclass(frozen=True)
class HistoryEndpoint:
    """A bar-history endpoint: where it lives, how it names the symbol, which fields map to which metrics."""

    path: str
    scope: str  # "pair": exchange + <COIN>USDT; "coin": <COIN>; "coin_exchanges": <COIN> + exchange_list
    fields: Mapping[str, str]
    params: Mapping[str, str] = field(default_factory=dict)
    derived: Mapping[str, Callable[[Mapping[str, Any]], np.ndarray]] = field(default_factory=dict)

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(self.fields.values()) | frozenset(self.derived)


def _ohlc(prefix: str) -> dict[str, str]:
    return {f: f"{prefix}.{f}" for f in ("open", "high", "low", "close")}


HISTORY: dict[str, HistoryEndpoint] = {
    "price": HistoryEndpoint(
        "/api/futures/price/history", "pair", {**_ohlc("price"), "volume_usd": "price.volume"}
    ),
    "oi": HistoryEndpoint(
        "/api/futures/open-interest/aggregated-history", "coin", _ohlc("oi"), {"unit": "usd"}
    ),
    "funding": HistoryEndpoint("/api/futures/funding-rate/oi-weight-history", "coin", _ohlc("funding")),
    "liq": HistoryEndpoint(
        "/api/futures/liquidation/aggregated-history",
        "coin_exchanges",
        {
            "aggregated_long_liquidation_usd": "liq.long_usd",
            "aggregated_short_liquidation_usd": "liq.short_usd",
        },
        derived={"liq.total_usd": _total},
    ),
    "ls_global": HistoryEndpoint(
        "/api/futures/global-long-short-account-ratio/history",
        "pair",
        {
            "global_account_long_percent": "ls.global_long_pct",
            "global_account_short_percent": "ls.global_short_pct",
        },
    ),
    "ls_top": HistoryEndpoint(
        "/api/futures/top-long-short-account-ratio/history",
        "pair",
        {"top_account_long_percent": "ls.top_long_pct", "top_account_short_percent": "ls.top_short_pct"},
    ),
    "taker": HistoryEndpoint(
        "/api/futures/aggregated-taker-buy-sell-volume/history",
        "coin_exchanges",
        {"aggregated_buy_volume_usd": "taker.buy_usd", "aggregated_sell_volume_usd": "taker.sell_usd"},
        derived={"taker.buy_pct": _taker_pct},
    ),
}


def decode_envelope(response: httpx.Response, *, interval: str = "") -> Any:
    """The ``data`` of a CoinGlass V4 envelope, or a :class:`RequestError` saying what went wrong.

    Success needs HTTP 200 *and* ``code == "0"``; ``msg`` is optional.
    """
    status = response.status_code
    if is_retryable_status(status):
        raise _coded_error(status, _body_msg(response), interval)
    try:
        body = json_body(response)
    except RequestError:
        if status != 200:
            raise _coded_error(status, "", interval) from None
        raise
    if not isinstance(body, dict) or "code" not in body:
        if status != 200:
            raise _coded_error(status, "", interval)
        raise RequestError("malformed body: no CoinGlass envelope (code/data)", retryable=True)
    code = str(body.get("code")).strip()
    msg = short_msg(body.get("msg") or "")
    if code != "0":
        try:
            number = int(code)
        except ValueError:
            number = status if status != 200 else 0
        raise _coded_error(number, msg, interval, code=code)
    if status != 200:
        raise _coded_error(status, msg, interval)
    return body.get("data")


def _body_msg(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return short_msg(body.get("msg") or "") if isinstance(body, dict) else ""


def _coded_error(number: int, msg: str, interval: str, code: str | None = None) -> RequestError:
    said = f" ({'code ' + code + ': ' if code else ''}{msg})" if msg or code else ""
    lowered = msg.lower()
    if number in (401, 403) and ("upgrade" in lowered or "plan" in lowered):
        at = f" at interval {interval}" if interval else ""
        return RequestError(
            f"your CoinGlass plan does not allow this endpoint{at}{said}; {_PLAN_HINT}", retryable=False
        )
    if is_retryable_status(number):
        return RequestError(f"CoinGlass error {number}{said}", retryable=True)
    return RequestError(f"{status_meaning(number, _MEANINGS)}{said}", retryable=False)


#: CoinGlass's own wording of some statuses (and body codes).
_MEANINGS = {
    400: "bad request: invalid parameters or API key",
    401: "API key invalid or missing, or no permission for this endpoint",
    403: "forbidden: no permission for this endpoint",
}


class CoinGlassSource(HttpSource):
    """Aggregated derivatives data from CoinGlass API V4 (needs an API key)."""

    name: ClassVar[str] = "coinglass"
    options_schema: ClassVar[dict[str, Any]] = http_options_schema(
        BASE_URL,
        {
            "api_key": {
                "type": "string",
                "x-secret": True,
                "description": "default: the COINGLASS_API_KEY environment variable",
            },
            "plan": {
                "enum": sorted(PLANS),
                "default": "hobbyist",
                "description": "sets the request rate limit",
            },
            "rate_limit_per_min": {
                "type": "integer",
                "minimum": 1,
                "description": "overrides the plan's limit",
            },
            "exchanges": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "default": ["Binance", "OKX", "Bybit"],
                "description": "exchange_list of the aggregated liquidation/taker endpoints and of funding.avg etc.",
            },
            "pair_exchange": {
                "type": "string",
                "default": "Binance",
                "description": "exchange of the pair endpoints (price, long/short ratios); pair = <COIN>USDT",
            },
            "funding_basis_hours": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "default": 8,
                "description": "rescale per-exchange funding to this many hours; null keeps the rates as sent",
            },
        },
    )

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None) -> None:
        given = dict(options or {})
        api_key = str(given.get("api_key") or os.environ.get("COINGLASS_API_KEY") or "")
        auth = HeaderAuth("CG-API-KEY", api_key) if api_key else None
        super().__init__(given, ctx, auth=auth, secrets=(api_key,))
        self._api_key = api_key
        if "api_key" in self.options:
            self.options["api_key"] = "***"
        plan = str(self.option("plan")).lower()
        if plan not in PLANS:
            raise ValueError(f"coinglass: unknown plan {plan!r}; choose one of {', '.join(PLANS)}")
        self.rate_limit_per_min = int(self.option("rate_limit_per_min") or PLANS[plan])
        self.exchanges = [str(e) for e in self.option("exchanges")]
        self.pair_exchange = str(self.option("pair_exchange"))
        basis = self.option("funding_basis_hours")
        self.funding_basis_hours = None if basis is None else float(basis)
        self.limiter = RateLimiter(self.rate_limit_per_min, 60.0, self.ctx.clock)

    def __repr__(self) -> str:
        return f"<CoinGlassSource {self.http.base_url} {self.rate_limit_per_min}/min>"

    @classmethod
    def provides(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """Every metric of the history endpoints and of the funding list, whatever the options."""
        return frozenset().union(*(e.metrics for e in HISTORY.values())) | FUNDING_LIST_METRICS

    def jobs(self, plan: FetchPlan) -> list[Job]:
        """One job per history endpoint wanted, and the funding list; see the module docstring."""
        if not self._api_key:
            raise SourceError("coinglass needs an API key: set api_key or COINGLASS_API_KEY", retryable=False)
        request, grid, wanted = plan.request, plan.grid, plan.wanted
        coin, pair = split_symbol(request.symbol, QUOTE)
        jobs = [
            Job(
                endpoint.path,
                endpoint.metrics,
                partial(self._history, endpoint, coin, pair, request.interval, plan),
            )
            for endpoint in HISTORY.values()
            if endpoint.metrics & wanted
        ]
        if FUNDING_LIST_METRICS & wanted:
            jobs.append(
                Job(
                    FUNDING_LIST_PATH,
                    FUNDING_LIST_METRICS,
                    partial(self._funding_list, coin, grid, plan.newest),
                )
            )
        return jobs

    def observe(self, response: httpx.Response) -> None:
        """Pause until the next minute when CoinGlass reports the key's quota used up."""
        try:
            used = int(response.headers["API-KEY-USE-LIMIT"])
            limit = int(response.headers["API-KEY-MAX-LIMIT"])
        except (KeyError, ValueError):
            return
        if limit > 0 and used >= limit:
            self.limiter.pause(60.0 - self.ctx.clock.time() % 60.0)

    def _params(self, endpoint: HistoryEndpoint, coin: str, pair: str, interval: str) -> dict[str, Any]:
        params: dict[str, Any] = {"interval": interval, **endpoint.params}
        if endpoint.scope == "pair":
            params.update(exchange=self.pair_exchange, symbol=pair)
        else:
            params["symbol"] = coin
        if endpoint.scope == "coin_exchanges":
            params["exchange_list"] = ",".join(self.exchanges)
        return params

    async def _history(
        self, endpoint: HistoryEndpoint, coin: str, pair: str, interval: str, plan: FetchPlan
    ) -> Columns:
        base = self._params(endpoint, coin, pair, interval)
        decode = partial(_decode_rows, interval=interval)
        windows = chunks(int(plan.grid[0]), int(plan.grid[-1]), plan.step, PAGE_LIMIT)
        pages = await asyncio.gather(
            *(
                self.http.get(
                    endpoint.path,
                    {**base, "start_time": start, "end_time": end, "limit": bars},
                    decode,
                    [(self.limiter, 1)],
                )
                for start, end, bars in windows
            )
        )
        rows = [row for page in pages for row in page]
        if not rows:
            raise RequestError(f"no data for {coin} {interval} in the requested range", retryable=False)
        aligned = align_job(rows, "time", endpoint.fields, plan)
        cols: dict[str, np.ndarray | Cat] = dict(aligned.columns)
        if set(endpoint.fields.values()) <= cols.keys():  # else what derives from them is missing too
            for name, derive in endpoint.derived.items():
                cols[name] = derive(cols)
        return Columns(cols, notes=aligned.problems)

    async def _funding_list(self, coin: str, grid: np.ndarray, newest: bool) -> Columns:
        n = len(grid)
        if not newest:
            empty: dict[str, np.ndarray | Cat] = {
                m: Cat.from_values([None] * n) if m.endswith("_exchange") else np.full(n, np.nan)
                for m in FUNDING_LIST_METRICS
            }
            return Columns(empty, notes=["funding.avg/max/min/spread are a current snapshot; no history"])
        data = await self.http.get(FUNDING_LIST_PATH, {"symbol": coin}, decode_envelope, [(self.limiter, 1)])
        stats = funding_stats(data, coin, self.exchanges, self.funding_basis_hours)
        cols: dict[str, np.ndarray | Cat] = {}
        for name, value in stats.items():
            if name.endswith("_exchange"):
                cols[name] = Cat.from_values([None] * (n - 1) + [value])
            else:
                col = np.full(n, np.nan)
                col[-1] = value
                cols[name] = col
        observed = np.full(n, NO_OBSERVATION, dtype=np.int64)
        observed[-1] = int(self.ctx.clock.time() * 1000)  # when the snapshot arrived
        return Columns(cols, {name: observed.copy() for name in cols})


def _decode_rows(response: httpx.Response, *, interval: str) -> list[dict[str, Any]]:
    return rows_with_time(decode_envelope(response, interval=interval), "time")


def funding_stats(
    data: object, coin: str, exchanges: list[str], basis_hours: float | None
) -> dict[str, float | str]:
    """funding.avg/max/min/spread/max_exchange/min_exchange from an exchange-list payload.

    Uses the stablecoin-margined rates of ``exchanges`` (case-insensitive), skipping null rates;
    with ``basis_hours`` each rate is rescaled from its ``funding_rate_interval`` (hours).
    """
    if not isinstance(data, list):
        raise RequestError("malformed funding list: data is not a list", retryable=True)
    entry = next(
        (d for d in data if isinstance(d, dict) and str(d.get("symbol", "")).upper() == coin.upper()), None
    )
    if entry is None:
        raise RequestError(f"no funding list for {coin}", retryable=False)
    allowed = {e.lower() for e in exchanges}
    rates: list[tuple[str, float]] = []
    for item in entry.get("stablecoin_margin_list") or []:
        if not isinstance(item, dict) or str(item.get("exchange", "")).lower() not in allowed:
            continue
        rate = finite_or_none(item.get("funding_rate"))
        if rate is None:
            continue
        if basis_hours is not None:
            hours = finite_or_none(item.get("funding_rate_interval"))
            if hours is None or hours <= 0:
                continue
            rate = rate * basis_hours / hours
        rates.append((str(item["exchange"]), rate))
    if not rates:
        raise RequestError(f"no funding rates for {coin} on {', '.join(exchanges)}", retryable=False)
    hi = max(rates, key=lambda r: r[1])
    lo = min(rates, key=lambda r: r[1])
    return {
        "funding.avg": float(np.mean([r for _, r in rates])),
        "funding.max": hi[1],
        "funding.min": lo[1],
        "funding.spread": hi[1] - lo[1],
        "funding.max_exchange": hi[0],
        "funding.min_exchange": lo[0],
    }


@hookimpl
def register_sources(register: Callable[[type[Source]], None]) -> None:
    register(CoinGlassSource)
