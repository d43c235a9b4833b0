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

Issue 17's families (``docs/market-data.md``; the payload parsing is in ``coinglass_market.py``):

* ``/api/futures/orderbook/ask-bids-history`` (pair) or ``aggregated-ask-bids-history``
  (``depth_scope: aggregated``, exchange_list = ``exchanges``), one request per band (``range`` 1,
  2 and ``depth_range``, always sent): bids_usd, asks_usd -> depth.bid_usd/ask_usd_1pct, _2pct and
  unsuffixed (USD), depth.imbalance* = (bids - asks) / (bids + asks);
* ``/api/coinbase-premium-index`` (no symbol; times in seconds): premium_rate -> premium.coinbase_btc_pct
  (percent), premium -> premium.coinbase_btc_usd;
* ``/api/futures/basis/history`` (pair): close_basis, close_change -> basis.cg_close,
  basis.cg_close_change, raw (their units are unconfirmed);
* ``/api/etf/{bitcoin,ethereum}/flow-history`` and ``.../net-assets/history`` (whole history, daily):
  etf.{btc,eth}_flow_usd, _flow_cum_usd, _net_assets_usd, on the bars causally;
* snapshots on the newest bar: ``/api/option/max-pain`` (symbol, ``options_exchange``) ->
  options.max_pain_near/_chosen; ``/api/option/info`` -> options.oi_usd, options.volume_usd_24h;
  the funding list -> funding.ex.<exchange> (percent per 8 h) and funding.count;
  ``/api/futures/liquidation/aggregated-heatmap/model{1,2,3}`` (Professional only) -> liqmap.*.

History endpoints are paged in windows of at most 1000 bars (``start_time``/``end_time``, ms).
The funding list is a snapshot: its values fill only the newest closed bar, with the fetch time
in ``frame.observed``; it uses the stablecoin-margined rates of ``funding_exchanges`` (all by default),
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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import httpx
import numpy as np

from perpwatch.api.hookspecs import hookimpl
from perpwatch.api.interfaces import PluginContext, Source, SourceError
from perpwatch.common.jsonsafe import finite_or_none
from perpwatch.evaluation.frame import Cat
from perpwatch.language.metrics import FUNDING_EXCHANGES

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
from .coinglass_market import (
    ETF_KNOWN_AFTER_MS,
    ETF_METRICS,
    ETF_PATHS,
    cross_exchange,
    daily_on_bars,
    etf_days,
    exchange_columns,
    funding_by_exchange,
    heatmap_levels,
    max_pain,
    options_totals,
    seconds_to_ms,
)

BASE_URL = "https://open-api-v4.coinglass.com"
#: Requests per minute of each CoinGlass plan.
PLANS = {"hobbyist": 30, "startup": 80, "standard": 300, "professional": 1200}
#: Most bars one history request may ask for.
PAGE_LIMIT = 1000
QUOTE = "USDT"
FUNDING_LIST_PATH = "/api/futures/funding-rate/exchange-list"
CROSS_FUNDING_METRICS = frozenset(
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
    """A bar-history endpoint: where it lives, how it names the symbol, which fields map to which metrics.

    ``seconds``: the endpoint stamps rows in seconds (the premium index); such times become ms."""

    path: str
    scope: str  # "pair": exchange + <COIN>USDT; "coin": <COIN>; "coin_exchanges": <COIN> + exchange_list;
    # "none": no symbol (BTC-only indexes)
    fields: Mapping[str, str]
    params: Mapping[str, str] = field(default_factory=dict)
    derived: Mapping[str, Callable[[Mapping[str, Any]], np.ndarray]] = field(default_factory=dict)
    seconds: bool = False

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(self.fields.values()) | frozenset(self.derived)


def _ohlc(prefix: str) -> dict[str, str]:
    return {f: f"{prefix}.{f}" for f in ("open", "high", "low", "close")}


def _imbalance(suffix: str) -> Callable[[Mapping[str, Any]], np.ndarray]:
    def derive(cols: Mapping[str, np.ndarray]) -> np.ndarray:
        bid, ask = cols[f"depth.bid_usd{suffix}"], cols[f"depth.ask_usd{suffix}"]
        total = bid + ask
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (bid - ask) / total, np.nan)

    return derive


#: Depth metrics' suffix -> the ``range`` (percent) asked for; "" is the source's ``depth_range``.
DEPTH_RANGES = {"_1pct": "1", "_2pct": "2"}
DEPTH_RANGE_CHOICES = ("0.25", "0.5", "0.75", "1", "2", "3", "5", "10")


def _copy(metric: str) -> Callable[[Mapping[str, Any]], np.ndarray]:
    return lambda cols: np.array(cols[metric], dtype=float)


def depth_endpoint(suffix: str, range_pct: str, aggregated: bool, also: str | None = None) -> HistoryEndpoint:
    """The order-book history (``ask-bids-history``, or its coin-aggregated twin) at ``range_pct``;
    ``also``: a second suffix filled with the same values (``depth_range`` 1 is the 1 % band: one request)."""
    prefix = "aggregated_" if aggregated else ""
    copies = (
        {f"depth.{k}{also}": _copy(f"depth.{k}{suffix}") for k in ("bid_usd", "ask_usd", "imbalance")}
        if also is not None
        else {}
    )
    return HistoryEndpoint(
        "/api/futures/orderbook/aggregated-ask-bids-history"
        if aggregated
        else "/api/futures/orderbook/ask-bids-history",
        "coin_exchanges" if aggregated else "pair",
        {f"{prefix}bids_usd": f"depth.bid_usd{suffix}", f"{prefix}asks_usd": f"depth.ask_usd{suffix}"},
        {"range": range_pct},
        derived={f"depth.imbalance{suffix}": _imbalance(suffix), **copies},
    )


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
    "premium": HistoryEndpoint(
        "/api/coinbase-premium-index",
        "none",
        {"premium_rate": "premium.coinbase_btc_pct", "premium": "premium.coinbase_btc_usd"},
        seconds=True,
    ),
    "basis": HistoryEndpoint(
        "/api/futures/basis/history",
        "pair",
        {"close_basis": "basis.cg_close", "close_change": "basis.cg_close_change"},
    ),
}
#: Snapshot endpoints of the options metrics.
OPTIONS_MAX_PAIN_PATH = "/api/option/max-pain"
OPTIONS_INFO_PATH = "/api/option/info"
MAX_PAIN_METRICS = frozenset({"options.max_pain_near", "options.max_pain_chosen"})
OPTIONS_INFO_METRICS = frozenset({"options.oi_usd", "options.volume_usd_24h"})
HEATMAP_PATH = "/api/futures/liquidation/aggregated-heatmap/model{model}"
HEATMAP_METRICS = frozenset({"liqmap.above_usd", "liqmap.below_usd", "liqmap.cluster_dist_pct"})
HEATMAP_RANGES = ("12h", "24h", "3d", "7d", "30d", "90d", "180d", "1y")
EXCHANGE_FUNDING_METRICS = frozenset(f"funding.ex.{slug}" for slug in FUNDING_EXCHANGES) | {"funding.count"}
#: Everything the funding exchange list (a current snapshot) fills.
FUNDING_LIST_METRICS = CROSS_FUNDING_METRICS | EXCHANGE_FUNDING_METRICS
DEPTH_METRICS = frozenset(
    f"depth.{kind}{suffix}"
    for kind in ("bid_usd", "ask_usd", "imbalance")
    for suffix in ("_1pct", "_2pct", "")
)
ETF_ALL_METRICS = frozenset().union(*ETF_METRICS.values())


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
                "description": "exchange_list of the aggregated liquidation, taker and (depth_scope: aggregated) order-book endpoints",
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
                "description": "rescale funding.avg/max/min/spread to this many hours; null keeps the rates as sent",
            },
            "funding_exchanges": {
                "type": ["array", "null"],
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "default": None,
                "description": "exchanges of funding.avg/max/min/spread/count; null: every exchange CoinGlass reports",
            },
            "depth_range": {
                "enum": list(DEPTH_RANGE_CHOICES),
                "default": "1",
                "description": "band (percent around the price) of depth.bid_usd/ask_usd/imbalance",
            },
            "depth_scope": {
                "enum": ["pair", "aggregated"],
                "default": "pair",
                "description": "depth.* from the pair_exchange's order book, or aggregated over exchanges",
            },
            "options_exchange": {
                "type": "string",
                "default": "Deribit",
                "description": "exchange of options.max_pain_* (Deribit, Binance, OKX)",
            },
            "options_expiry": {
                "type": ["string", "integer", "null"],
                "pattern": "^[0-9]{6}$",
                "minimum": 100101,
                "maximum": 991231,
                "default": None,
                "description": "expiry (YYMMDD, e.g. 251226) of options.max_pain_chosen",
            },
            "etf_known_after_hours": {
                "type": "number",
                "minimum": 0,
                "default": ETF_KNOWN_AFTER_MS / 3_600_000,
                "description": "hours after a US trading day's 00:00 UTC stamp when its ETF figures count as known",
            },
            "heatmap_model": {"enum": [1, 2, 3], "default": 1, "description": "CoinGlass heatmap model"},
            "heatmap_range": {
                "enum": list(HEATMAP_RANGES),
                "default": "3d",
                "description": "heatmap time range",
            },
            "heatmap_band_pct": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 50,
                "default": 2,
                "description": "liqmap.above_usd/below_usd: levels within this many percent of the price",
            },
            "heatmap_cluster_share": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "default": 0.05,
                "description": "a price level holding at least this share of the heatmap's total is a large cluster",
            },
        },
    )

    #: Current values with no history (``perpwatch fetch`` asks for them only when named).
    snapshot_metrics: ClassVar[frozenset[str]] = (
        FUNDING_LIST_METRICS | MAX_PAIN_METRICS | OPTIONS_INFO_METRICS | HEATMAP_METRICS
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
        listed = self.option("funding_exchanges")
        self.funding_exchanges = None if listed is None else [str(e) for e in listed]
        self.plan = plan
        aggregated = self.option("depth_scope") == "aggregated"
        chosen = str(self.option("depth_range"))
        same = next((s for s, r in DEPTH_RANGES.items() if r == chosen), None)  # 1 or 2: no third request
        self.depth = {
            s: depth_endpoint(s, r, aggregated, "" if s == same else None) for s, r in DEPTH_RANGES.items()
        }
        if same is None:
            self.depth[""] = depth_endpoint("", chosen, aggregated)
        self.options_exchange = str(self.option("options_exchange"))
        expiry = self.option("options_expiry")
        self.options_expiry = None if expiry is None else str(expiry)
        self.etf_known_after_ms = int(float(self.option("etf_known_after_hours")) * 3_600_000)
        self._said: dict[str, None] = {}  # snapshot notes already reported (said once, not every cycle)
        self.limiter = RateLimiter(self.rate_limit_per_min, 60.0, self.ctx.clock)

    def __repr__(self) -> str:
        return f"<CoinGlassSource {self.http.base_url} {self.rate_limit_per_min}/min>"

    @classmethod
    def provides(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """Every metric of the history endpoints and the snapshots, whatever the options (the
        liquidation heatmap is refused at fetch time without the Professional plan)."""
        return (
            frozenset().union(*(e.metrics for e in HISTORY.values()))
            | FUNDING_LIST_METRICS
            | DEPTH_METRICS
            | ETF_ALL_METRICS
            | MAX_PAIN_METRICS
            | OPTIONS_INFO_METRICS
            | HEATMAP_METRICS
        )

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
            for endpoint in [*HISTORY.values(), *self.depth.values()]
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
        for etf_coin, metrics in ETF_METRICS.items():
            if metrics & wanted:
                jobs.append(Job(ETF_PATHS[etf_coin][0], metrics, partial(self._etf, etf_coin, plan)))
        snapshots = [
            (OPTIONS_MAX_PAIN_PATH, MAX_PAIN_METRICS, self._max_pain),
            (OPTIONS_INFO_PATH, OPTIONS_INFO_METRICS, self._option_info),
            (HEATMAP_PATH.format(model=self.option("heatmap_model")), HEATMAP_METRICS, self._heatmap),
        ]
        for path, metrics, get in snapshots:
            if metrics & wanted:
                jobs.append(Job(path, metrics, partial(self._snapshot, metrics, get, coin, plan)))
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
        elif endpoint.scope != "none":
            params["symbol"] = coin
        if endpoint.scope == "coin_exchanges":
            params["exchange_list"] = ",".join(self.exchanges)
        return params

    async def _history(
        self, endpoint: HistoryEndpoint, coin: str, pair: str, interval: str, plan: FetchPlan
    ) -> Columns:
        base = self._params(endpoint, coin, pair, interval)
        decode = partial(_decode_rows, interval=interval, seconds=endpoint.seconds)
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
        notes = list(aligned.problems)
        if set(endpoint.fields.values()) <= cols.keys():  # else what derives from them is missing too
            for name, derive in endpoint.derived.items():
                cols[name] = derive(cols)
        if endpoint is HISTORY["premium"]:
            notes += premium_unit_check(rows, cols, plan)
        return Columns(cols, notes=notes)

    async def _funding_list(self, coin: str, grid: np.ndarray, newest: bool) -> Columns:
        if not newest:
            return Columns(
                _unknown(FUNDING_LIST_METRICS, len(grid)),
                notes=["funding.avg/max/min/spread and funding.ex.* are a current snapshot; no history"],
            )
        data = await self.http.get(FUNDING_LIST_PATH, {"symbol": coin}, decode_envelope, [(self.limiter, 1)])
        stats, notes = funding_stats(data, coin, self.funding_exchanges, self.funding_basis_hours)
        return self._newest_only(stats, len(grid), self._once(f"{coin}: ", notes))

    def _once(self, key: str, notes: list[str]) -> list[str]:
        """The notes not reported before by this instance: a snapshot's lasting condition (an exchange
        without a funding interval, an expiry not listed) is said once, not on every cycle."""
        fresh = [n for n in notes if key + n not in self._said]
        for note in fresh:
            if len(self._said) >= 1024:  # bounded: the oldest is forgotten (and may be said again)
                self._said.pop(next(iter(self._said)))
            self._said[key + note] = None
        return fresh

    def _newest_only(self, values: Mapping[str, float | str], n: int, notes: list[str]) -> Columns:
        """Snapshot values on the newest bar (older bars unknown), observed when they arrived."""
        cols: dict[str, np.ndarray | Cat] = {}
        for name, value in values.items():
            if name.endswith("_exchange"):
                cols[name] = Cat.from_values([None] * (n - 1) + [value])
            else:
                col = np.full(n, np.nan)
                col[-1] = value
                cols[name] = col
        observed = np.full(n, NO_OBSERVATION, dtype=np.int64)
        observed[-1] = int(self.ctx.clock.time() * 1000)  # when the snapshot arrived
        return Columns(cols, {name: observed.copy() for name in cols}, notes)

    async def _snapshot(
        self,
        metrics: frozenset[str],
        get: Callable[[str, int], Awaitable[tuple[dict[str, float], list[str]]]],
        coin: str,
        plan: FetchPlan,
    ) -> Columns:
        """A current snapshot (options, heatmap): the newest bar only; history is unknown."""
        n = len(plan.grid)
        if not plan.newest:
            return Columns(
                _unknown(metrics, n), notes=[f"{', '.join(sorted(metrics))}: a current snapshot; no history"]
            )
        values, notes = await get(coin, plan.now_ms)
        unwanted = metrics - plan.wanted  # a note about only those is not this fetch's business
        notes = [
            note
            for note in notes
            if not any(m in note for m in unwanted) or any(m in note for m in metrics & plan.wanted)
        ]
        return self._newest_only(values, n, self._once(f"{coin}: ", notes))

    async def _max_pain(self, coin: str, now_ms: int) -> tuple[dict[str, float], list[str]]:
        params = {"symbol": coin, "exchange": self.options_exchange}
        data = await self.http.get(OPTIONS_MAX_PAIN_PATH, params, decode_envelope, [(self.limiter, 1)])
        try:
            return max_pain(data, now_ms, self.options_expiry)
        except ValueError as e:
            raise RequestError(str(e), retryable=True) from None

    async def _option_info(self, coin: str, now_ms: int) -> tuple[dict[str, float], list[str]]:
        data = await self.http.get(OPTIONS_INFO_PATH, {"symbol": coin}, decode_envelope, [(self.limiter, 1)])
        try:
            return options_totals(data)
        except ValueError as e:
            raise RequestError(str(e), retryable=True) from None

    async def _heatmap(self, coin: str, now_ms: int) -> tuple[dict[str, float], list[str]]:
        if self.plan != "professional":
            raise RequestError(
                f"the liquidation heatmap (liqmap.*) needs the Professional plan; this source is set to "
                f"plan: {self.plan}",
                retryable=False,
            )
        path = HEATMAP_PATH.format(model=self.option("heatmap_model"))
        params = {"symbol": coin, "range": self.option("heatmap_range")}
        data = await self.http.get(path, params, _decode_professional, [(self.limiter, 1)])
        try:
            return heatmap_levels(
                data, float(self.option("heatmap_band_pct")), float(self.option("heatmap_cluster_share"))
            )
        except ValueError as e:
            raise RequestError(str(e), retryable=True) from None

    async def _etf(self, coin: str, plan: FetchPlan) -> Columns:
        """Daily ETF flows and net assets (full history each call), aligned causally to the bars."""
        flow_path, assets_path = ETF_PATHS[coin]
        wanted = plan.wanted & ETF_METRICS[coin]
        want_flow = bool(wanted - {f"etf.{coin}_net_assets_usd"})
        want_assets = f"etf.{coin}_net_assets_usd" in wanted
        rows = partial(_decode_rows, interval="", time_key="timestamp")
        flows, assets = await asyncio.gather(
            self.http.get(flow_path, {}, rows, [(self.limiter, 1)]) if want_flow else _none(),
            self.http.get(assets_path, {}, rows, [(self.limiter, 1)]) if want_assets else _none(),
        )
        days = etf_days(flows, assets, coin, plan.now_ms)
        if not len(days.days):
            raise RequestError(f"no {coin.upper()} ETF days in the response", retryable=False)
        cols, observed = daily_on_bars(days, plan.grid, plan.step, self.etf_known_after_ms)
        return Columns(dict(cols), observed, self._once("", days.notes))  # the newest filler: once


async def _none() -> None:
    return None


def _unknown(metrics: frozenset[str], n: int) -> dict[str, np.ndarray | Cat]:
    return {
        m: Cat.from_values([None] * n) if m.endswith("_exchange") else np.full(n, np.nan) for m in metrics
    }


def _decode_rows(
    response: httpx.Response, *, interval: str, seconds: bool = False, time_key: str = "time"
) -> list[dict[str, Any]]:
    data = decode_envelope(response, interval=interval)
    if seconds and isinstance(data, list):
        data = seconds_to_ms([r for r in data if isinstance(r, dict)], time_key)
    return rows_with_time(data, time_key)


def _decode_professional(response: httpx.Response) -> Any:
    """A Professional-only endpoint: a plan refusal says which plan it needs."""
    try:
        return decode_envelope(response)
    except RequestError as e:
        if "plan" in str(e).lower() or response.status_code in (401, 403):
            raise RequestError(
                f"the liquidation heatmap (liqmap.*) needs the Professional plan; CoinGlass refused it: {e}",
                retryable=False,
            ) from None
        raise


def premium_unit_check(
    rows: list[dict[str, Any]], cols: dict[str, np.ndarray | Cat], plan: FetchPlan
) -> list[str]:
    """``premium_rate`` is a percent in the real responses (premium / price x 100), a fraction in the
    docs' wording. Where a row also has ``coinbase_price`` both readings are tested; rates that read
    as fractions are rescaled to percent and said, rates that fit neither are unknown and said."""
    percent = fraction = neither = 0
    for row in rows:
        rate, prem, cb = (
            finite_or_none(_num(row.get(k))) for k in ("premium_rate", "premium", "coinbase_price")
        )
        if rate is None or prem is None or cb is None or cb - prem <= 0 or rate == 0:
            continue
        actual = prem / (cb - prem) * 100.0
        if abs(rate - actual) <= 0.05 * abs(actual) + 1e-6:
            percent += 1
        elif abs(rate * 100.0 - actual) <= 0.05 * abs(actual) + 1e-6:
            fraction += 1
        else:
            neither += 1
    col = cols.get("premium.coinbase_btc_pct")
    if not isinstance(col, np.ndarray) or not (fraction or neither):
        return []
    if fraction > percent + neither:
        cols["premium.coinbase_btc_pct"] = col * 100.0
        return [
            f"premium_rate reads as a fraction in {fraction} rows (checked with coinbase_price): scaled to percent"
        ]
    cols["premium.coinbase_btc_pct"] = np.full(len(col), np.nan)
    return [
        f"premium_rate fits neither percent nor fraction of coinbase_price in {fraction + neither} of "
        f"{fraction + neither + percent} rows: premium.coinbase_btc_pct unknown"
    ]


def _num(value: object) -> object:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return value


def funding_stats(
    data: object, coin: str, exchanges: list[str] | None, basis_hours: float | None
) -> tuple[dict[str, float | str], list[str]]:
    """funding.avg/max/min/spread/count/max_exchange/min_exchange and funding.ex.* from an
    exchange-list payload, and notes on what was left out.

    funding.ex.<exchange> is every exchange's stablecoin-margined rate rescaled from its own
    ``funding_rate_interval`` to 8 h. The cross-exchange figures use ``exchanges`` (case-insensitive;
    None: all of them) rescaled to ``basis_hours`` (None: the rates as sent).
    """
    if not isinstance(data, list):
        raise RequestError("malformed funding list: data is not a list", retryable=True)
    entry = next(
        (d for d in data if isinstance(d, dict) and str(d.get("symbol", "")).upper() == coin.upper()), None
    )
    if entry is None:
        raise RequestError(f"no funding list for {coin}", retryable=False)
    every = funding_by_exchange(entry, None)
    chosen = funding_by_exchange(entry, exchanges)
    notes = list(chosen.notes)
    if basis_hours is None:  # the rates as sent, whatever their interval
        raw = funding_by_exchange({"stablecoin_margin_list": _as_if_8h(entry)}, exchanges)
        rates = raw.rates
        notes = list(raw.notes)
    else:
        rates = {name: rate * basis_hours / 8.0 for name, rate in chosen.rates.items()}
    if not rates:
        among = ", ".join(exchanges) if exchanges else "any exchange"
        raise RequestError(f"no funding rates for {coin} on {among}", retryable=False)
    return {**exchange_columns(every.rates), **cross_exchange(rates)}, notes


def _as_if_8h(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {**item, "funding_rate_interval": 8}
        for item in entry.get("stablecoin_margin_list") or []
        if isinstance(item, dict)
    ]


@hookimpl
def register_sources(register: Callable[[type[Source]], None]) -> None:
    register(CoinGlassSource)
