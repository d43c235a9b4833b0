"""The ``synthetic`` source: deterministic random-walk bars, for demos and tests without a network.

Bar ``k`` (counted from ``origin`` in the request's interval) is driven by the ``k``-th draws of a
generator seeded with (``seed``, symbol, interval), so a bar's values never depend on which range
was asked for: live and backtest see the same numbers. Bars before ``origin`` and bars that have
not closed yet are not served.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from perpwatch.api.interfaces import FetchRequest, PluginContext, Source, SourceError
from perpwatch.common.timeutil import interval_ms, parse_time
from perpwatch.evaluation.frame import Frame
from perpwatch.language.metrics import Metric

OHLC = ("open", "high", "low", "close")
NOISE = "synthetic.noise"


class SyntheticSource(Source):
    """Random-walk ``price.*`` and ``oi.*`` bars and the per-bar shock ``synthetic.noise``."""

    name: ClassVar[str] = "synthetic"
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric(NOISE, "sigma", "the standard-normal shock that moved price.close in this bar"),
    )
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "seed": {"type": "integer", "default": 0, "description": "same seed, same bars"},
            "origin": {
                "type": "string",
                "default": "2024-01-01T00:00:00Z",
                "description": "the first bar (ISO 8601); earlier bars are unknown",
            },
            "price": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 60000,
                "description": "first open, USD",
            },
            "open_interest": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 2e10,
                "description": "first OI, USD",
            },
            "volatility": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 0.2,
                "default": 0.004,
                "description": "standard deviation of the log return per bar",
            },
        },
    }

    def __init__(self, options: Mapping[str, Any] | None = None, ctx: PluginContext | None = None) -> None:
        super().__init__(options, ctx)
        # option(): the configured value, else the default stated once, in options_schema
        self.seed = int(self.option("seed"))
        self.origin = parse_time(self.option("origin"))
        self.price = float(self.option("price"))
        self.open_interest = float(self.option("open_interest"))
        self.volatility = float(self.option("volatility"))

    @classmethod
    def provides(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """What this source fills with ``options`` (here: the same whatever they are); opens nothing."""
        return frozenset({*(f"price.{f}" for f in OHLC), *(f"oi.{f}" for f in OHLC), NOISE})

    async def fetch(self, request: FetchRequest) -> Frame:
        try:
            step = interval_ms(request.interval)
        except KeyError:
            raise SourceError(
                f"synthetic: unsupported interval {request.interval!r}", retryable=False
            ) from None
        now = int(self.ctx.clock.time() * 1000)
        first_bar = -(-self.origin // step) * step
        lo = max(-(-request.start // step), -(-first_bar // step))
        hi = min(request.end // step, now // step - 1)  # closed bars only: open + step <= now
        frame = Frame(np.arange(lo, hi + 1, dtype=np.int64) * step)
        if not len(frame):
            return frame
        series = self.walk(request.symbol, step, int(hi - first_bar // step))
        k0 = int(lo - first_bar // step)
        for name in sorted(request.metrics & self.provides(self.options)):
            frame.columns[name] = series[name][k0:]
        extra = request.metrics - self.provides(self.options)
        if extra:
            frame.problems.append(f"synthetic does not provide {', '.join(sorted(extra))}")
        return frame

    def walk(self, symbol: str, step: int, last: int) -> dict[str, np.ndarray]:
        """Bars 0..``last`` counted from ``origin``: the same values whatever ``last`` is."""
        key = [self.seed, zlib.crc32(symbol.upper().encode()), step]
        draws = np.random.default_rng(key).standard_normal((last + 1, 4))  # row k: the draws of bar k
        shock, oi_shock, up, down = draws.T
        vol = self.volatility
        close = self.price * np.exp(vol * np.cumsum(shock))
        open_ = np.concatenate([[self.price], close[:-1]])
        oi_close = self.open_interest * np.exp(0.5 * vol * np.cumsum(0.6 * shock + 0.8 * oi_shock))
        oi_open = np.concatenate([[self.open_interest], oi_close[:-1]])
        return {
            "price.open": open_,
            "price.high": np.maximum(open_, close) * np.exp(vol * np.abs(up) / 2),
            "price.low": np.minimum(open_, close) * np.exp(-vol * np.abs(down) / 2),
            "price.close": close,
            "oi.open": oi_open,
            "oi.high": np.maximum(oi_open, oi_close),
            "oi.low": np.minimum(oi_open, oi_close),
            "oi.close": oi_close,
            NOISE: shock,
        }
