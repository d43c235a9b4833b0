"""The SYNTHETIC scenario of ``perpwatch demo``: hourly derivatives bars made up from a seed.

Not market data: seeded noise around fixed anchor points, in the phases below, shaped on the
magnitudes of the crash of 10 October 2025 (BTC about 122k to a low near 101.5k within one 4h bar
from 20:00 UTC, open interest about 85.8B to 70.5B USD, hundreds of millions of long
liquidations) but copied or derived from no recorded data. The symbol is ``SYNTHBTC`` so that every alert line says so.

====================  ======  ==============================================================
phase                 bars    what the series do
====================  ======  ==============================================================
warm-up (history)     96      calm uptrend 114k -> 120k; funding ~0.01 %/8h, OI 80B -> 82B
calm                  6       the uptrend goes on (the classifier's first BUY)
crowded long          12      funding climbs to ~0.11 %/8h, OI rises steadily to 85.8B, 70 % of
                              accounts long while top traders stay near 56 %, takers ~67 % buy
long-squeeze cascade  4       121.5k -> 103k (low 101.5k); OI -> 70.5B (-5..-8 %/bar); long
                              liquidations 121..478M per bar; takers ~27 % buy; funding < 0
risk-off              14      price chops near 105k, OI flat, funding ~-0.06 %/8h, 61 % short
recovery              60      price back to ~116k; a short squeeze (short liquidations ~70M),
                              funding and positioning normalise, OI rebuilds
====================  ======  ==============================================================

:func:`scenario` returns the bars as a :class:`Frame` (deterministic for a seed);
``SIMULATE_FROM`` is the first bar after the warm-up.
"""

from __future__ import annotations

import numpy as np

from perpwatch.common.timeutil import format_time, parse_time
from perpwatch.evaluation.frame import Cat, Frame

SYMBOL = "SYNTHBTC"
INTERVAL = "1h"
SEED = 20251010
HOUR = 3_600_000

WARMUP, CALM, CROWDED, CASCADE, RISK_OFF, RECOVERY = 96, 6, 12, 4, 14, 60
#: The cascade's first bar opens at 2025-10-10T20:00Z, as the real crash's 4h bar did.
CASCADE_START = parse_time("2025-10-10T20:00:00Z")
FIRST = CASCADE_START - (WARMUP + CALM + CROWDED) * HOUR
BARS = WARMUP + CALM + CROWDED + CASCADE + RISK_OFF + RECOVERY
#: Where the simulation starts (the bars before it are history for the z-scores and averages).
SIMULATE_FROM = format_time(FIRST + WARMUP * HOUR)
#: The open of the last bar.
SIMULATE_TO = format_time(FIRST + (BARS - 1) * HOUR)

EXCHANGES = ("Binance", "OKX", "Bybit")


def _path(points: list[tuple[int, float]], rng: np.random.Generator, noise: float) -> np.ndarray:
    """A series through (bar, value) anchors, linear between them, times (1 + noise) per bar."""
    xs, ys = zip(*points, strict=True)
    base = np.interp(np.arange(BARS), xs, ys)
    return base * (1 + noise * rng.standard_normal(BARS))


def scenario(seed: int = SEED) -> Frame:
    """The SYNTHETIC bars of every metric the bundled monitor and classifier read (1h, ``SYMBOL``)."""
    rng = np.random.default_rng(seed)
    calm = WARMUP
    crowd = calm + CALM
    cas = crowd + CROWDED
    off = cas + CASCADE
    rec = off + RISK_OFF
    end = BARS - 1

    close = _path(
        [
            (0, 114_000),
            (crowd, 120_300),
            (cas - 1, 121_500),
            (cas, 117_500),
            (cas + 1, 108_000),
            (cas + 2, 103_000),
            (cas + 3, 105_200),
            (off + 6, 104_300),
            (rec - 1, 105_800),
            (rec + 8, 111_000),
            (end, 116_000),
        ],
        rng,
        0.0015,
    )
    opens = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.standard_normal(BARS)) * 0.002 + 0.001
    high = np.maximum(opens, close) * (1 + wick)
    low = np.minimum(opens, close) * (1 - wick)
    low[cas + 2] = 101_500.0  # the cascade's low
    volume = np.full(BARS, 2.5e9) * (1 + 0.2 * rng.random(BARS))
    volume[cas : cas + CASCADE] *= [4, 9, 7, 3]

    oi = _path(
        [
            (0, 80.0e9),
            (crowd, 82.0e9),
            (cas - 1, 85.8e9),
            (cas, 81.0e9),
            (cas + 1, 75.0e9),
            (cas + 2, 71.5e9),
            (cas + 3, 70.5e9),
            (rec - 1, 70.8e9),
            (end, 76.0e9),
        ],
        rng,
        0.0005,
    )

    funding = _path(
        [
            (0, 0.010),
            (crowd, 0.011),
            (crowd + 4, 0.016),
            (crowd + 8, 0.040),
            (cas - 1, 0.112),
            (cas, 0.030),
            (cas + 1, -0.020),
            (off, -0.055),
            (rec - 1, -0.062),
            (rec + 10, -0.010),
            (end, 0.009),
        ],
        rng,
        0.04,
    )
    # the exchanges' rates around the average; the highest is the first column's exchange, and so on
    spread = np.abs(funding) * 0.25 + 0.002
    per_exchange = np.stack([funding + spread, funding, funding - spread])
    order = rng.permuted(np.tile(np.arange(3), (BARS, 1)), axis=1).T  # a random exchange per place

    liq_long = _path([(0, 4e6), (cas - 1, 9e6), (off, 9e6), (end, 4e6)], rng, 0.3)
    liq_short = _path([(0, 3e6), (rec, 3e6), (end, 4e6)], rng, 0.3)
    liq_long[cas : cas + CASCADE] = [121e6, 306e6, 478e6, 152e6]
    liq_short[cas : cas + CASCADE] = [9e6, 14e6, 11e6, 6e6]
    liq_short[rec + 2 : rec + 5] = [34e6, 71e6, 29e6]  # the recovery's short squeeze
    liq_long, liq_short = np.abs(liq_long), np.abs(liq_short)

    global_long = _path(
        [
            (0, 55.0),
            (crowd, 57.0),
            (cas - 1, 70.5),
            (cas + 1, 63.0),
            (off, 45.0),
            (off + 3, 38.5),
            (rec - 1, 38.0),
            (rec + 12, 50.0),
            (end, 54.0),
        ],
        rng,
        0.005,
    )
    top_long = _path([(0, 55.0), (cas - 1, 57.0), (off, 50.0), (rec, 48.0), (end, 53.0)], rng, 0.004)

    taker_pct = _path(
        [
            (0, 51.0),
            (crowd, 52.0),
            (crowd + 3, 66.5),
            (cas - 1, 67.0),
            (cas, 29.0),
            (cas + 1, 26.0),
            (cas + 3, 38.0),
            (off + 2, 47.0),
            (rec + 2, 58.0),
            (end, 51.0),
        ],
        rng,
        0.01,
    )

    columns: dict[str, np.ndarray | Cat] = {
        "price.open": opens,
        "price.high": high,
        "price.low": low,
        "price.close": close,
        "price.volume": volume,
        "oi.close": oi,
        "funding.close": funding,
        "funding.avg": funding,
        "funding.max": per_exchange[0],
        "funding.min": per_exchange[2],
        "funding.max_exchange": Cat.from_values(EXCHANGES[i] for i in order[0]),
        "funding.min_exchange": Cat.from_values(EXCHANGES[i] for i in order[2]),
        "liq.long_usd": liq_long,
        "liq.short_usd": liq_short,
        "liq.total_usd": liq_long + liq_short,
        "ls.global_long_pct": global_long,
        "ls.global_short_pct": 100 - global_long,
        "ls.top_long_pct": top_long,
        "ls.top_short_pct": 100 - top_long,
        "taker.buy_usd": volume * taker_pct / 100,
        "taker.sell_usd": volume * (100 - taker_pct) / 100,
        "taker.buy_pct": taker_pct,
    }
    rounded = {k: v if isinstance(v, Cat) else np.round(v, 6) for k, v in columns.items()}
    return Frame(FIRST + np.arange(BARS, dtype=np.int64) * HOUR, rounded)
