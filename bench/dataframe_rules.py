"""The rule set of ``eval_bench.py``'s strategy written by hand in pandas and in polars.

Both follow perpwatch's semantics where it matters for the comparison: an unknown value (the
warm-up, a zero standard deviation, a division by zero) makes comparisons unknown, ``and`` /
``or`` / ``not`` use three-valued (Kleene) logic, and a ``cases`` block is unknown from the first
unknown condition before a true one. Rolling means and deviations are each library's own, so a
value right at a threshold can differ in the last bits; ``eval_bench.py`` counts agreements.

Each function returns ``{rule name: bool array}`` (unknown counted as not firing).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perpwatch.common.extras import require

W, Z_HI, Z_LO = 24, 2.0, -2.0  # the strategy's params


def load(name: str) -> Any:
    """pandas or polars, or the error saying which extra installs it (the ``test`` extra has both)."""
    return require(name, extra="test", purpose=f"the {name} comparison of bench/eval_bench.py")


def pandas_rules(pd: Any, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    df = pd.DataFrame(columns)

    def known(*xs: Any) -> Any:
        mask = None
        for x in xs:
            if isinstance(x, pd.Series):
                mask = x.notna() if mask is None else mask & x.notna()
        return mask

    def cmp(result: Any, *xs: Any) -> Any:
        """A comparison as a nullable boolean: NA where an operand is unknown."""
        return result.astype("boolean").where(known(*xs), pd.NA)

    def zscore(x: Any, n: int) -> Any:
        roll = x.rolling(n)
        sd = roll.std()
        return ((x - roll.mean()) / sd).where(sd != 0)

    def pct_change(x: Any, n: int) -> Any:
        return ((x / x.shift(n) - 1) * 100).replace([np.inf, -np.inf], np.nan)

    def sma(x: Any, n: int) -> Any:
        return x.rolling(n).mean()

    close, funding = df["price.close"], df["funding.close"]
    funding_z = zscore(funding, W)
    oi_chg = pct_change(df["oi.close"], 4)
    oi_z = zscore(df["oi.close"], 48)
    liq_z = zscore(df["liq.total_usd"], W)
    short_liq_z = zscore(df["liq.short_usd"], W)
    long_liq_z = zscore(df["liq.long_usd"], W)
    sma20 = sma(close, 20)
    trend_up = cmp(sma20 > sma(close, 50), sma20, sma(close, 50))
    hi = df["price.high"].shift(1).rolling(W).max()
    lo = df["price.low"].shift(1).rolling(W).min()
    breakout = cmp(close > hi, close, hi)
    breakdown = cmp(close < lo, close, lo)
    taker_z = zscore(df["taker.buy_pct"], W)
    ret_24 = pct_change(close, 24)
    vol_z = zscore(df["price.volume"], 48)
    cases = [
        (cmp(liq_z > 4, liq_z), "RISK_OFF"),
        (cmp(short_liq_z > Z_HI, short_liq_z) & cmp(funding < 0, funding), "SHORT_SQUEEZE"),
        (cmp(long_liq_z > Z_HI, long_liq_z) & cmp(funding > 0.03, funding), "LONG_SQUEEZE"),
    ]
    state = pd.Series("NEUTRAL", index=df.index, dtype=object)
    for cond, label in reversed(cases):  # the first true case wins; an unknown one before it: unknown
        state = state.mask(cond.isna(), None).mask(cond.fillna(False), label)

    def is_state(label: str) -> Any:
        return cmp(state == label, state)

    sma5 = sma(close, 5)
    rules = {
        "squeeze_long": is_state("SHORT_SQUEEZE") & cmp(oi_chg > 0, oi_chg) & breakout,
        "squeeze_short": is_state("LONG_SQUEEZE") & cmp(oi_chg < 0, oi_chg) & breakdown,
        "funding_hot": cmp(funding_z > Z_HI, funding_z) & cmp(oi_z > 1, oi_z),
        "funding_cold": cmp(funding_z < Z_LO, funding_z) & ~trend_up,
        "liq_cascade": cmp(liq_z > 4, liq_z) | (cmp(long_liq_z > 3, long_liq_z) & cmp(ret_24 < -5, ret_24)),
        "oi_build": cmp(oi_chg > 1, oi_chg) & cmp(ret_24.abs() < 1, ret_24),
        "taker_flow": cmp(taker_z > Z_HI, taker_z) & trend_up,
        "trend_break": breakdown & trend_up,
        "risk_off": is_state("RISK_OFF"),
        "volume_spike": cmp(vol_z > 4, vol_z) & cmp(sma5 > sma20, sma5, sma20),
    }
    return {name: rule.fillna(False).to_numpy(dtype=bool) for name, rule in rules.items()}


def polars_rules(pl: Any, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Lazy polars expressions over a frame whose NaN are nulls (polars orders NaN above every
    number, so ``NaN > x`` would be true there)."""
    df = pl.DataFrame(columns).fill_nan(None)
    c = pl.col

    def unknown_if_bad(x: Any) -> Any:
        return pl.when(x.is_nan() | x.is_infinite()).then(None).otherwise(x)

    def zscore(name: str, n: int) -> Any:
        x = c(name)
        sd = x.rolling_std(n)
        return pl.when(sd == 0).then(None).otherwise((x - x.rolling_mean(n)) / sd)

    def pct_change(name: str, n: int) -> Any:
        x = c(name)
        return unknown_if_bad((x / x.shift(n) - 1) * 100)

    close, funding = c("price.close"), c("funding.close")
    lets = df.lazy().with_columns(
        funding_z=zscore("funding.close", W),
        oi_chg=pct_change("oi.close", 4),
        oi_z=zscore("oi.close", 48),
        liq_z=zscore("liq.total_usd", W),
        short_liq_z=zscore("liq.short_usd", W),
        long_liq_z=zscore("liq.long_usd", W),
        sma5=close.rolling_mean(5),
        sma20=close.rolling_mean(20),
        sma50=close.rolling_mean(50),
        hi=c("price.high").shift(1).rolling_max(W),
        lo=c("price.low").shift(1).rolling_min(W),
        taker_z=zscore("taker.buy_pct", W),
        ret_24=pct_change("price.close", 24),
        vol_z=zscore("price.volume", 48),
    )
    conds = [
        (c("liq_z") > 4, "RISK_OFF"),
        ((c("short_liq_z") > Z_HI) & (funding < 0), "SHORT_SQUEEZE"),
        ((c("long_liq_z") > Z_HI) & (funding > 0.03), "LONG_SQUEEZE"),
    ]
    state: Any = pl.lit("NEUTRAL")
    for cond, label in reversed(conds):  # the first true case wins; an unknown one before it: unknown
        state = pl.when(cond).then(pl.lit(label)).when(cond.is_null()).then(pl.lit(None)).otherwise(state)
    lets = lets.with_columns(
        trend_up=c("sma20") > c("sma50"),
        breakout=close > c("hi"),
        breakdown=close < c("lo"),
        state=state,
    )
    rules = lets.select(
        squeeze_long=(c("state") == "SHORT_SQUEEZE") & (c("oi_chg") > 0) & c("breakout"),
        squeeze_short=(c("state") == "LONG_SQUEEZE") & (c("oi_chg") < 0) & c("breakdown"),
        funding_hot=(c("funding_z") > Z_HI) & (c("oi_z") > 1),
        funding_cold=(c("funding_z") < Z_LO) & ~c("trend_up"),
        liq_cascade=(c("liq_z") > 4) | ((c("long_liq_z") > 3) & (c("ret_24") < -5)),
        oi_build=(c("oi_chg") > 1) & (c("ret_24").abs() < 1),
        taker_flow=(c("taker_z") > Z_HI) & c("trend_up"),
        trend_break=c("breakdown") & c("trend_up"),
        risk_off=c("state") == "RISK_OFF",
        volume_spike=(c("vol_z") > 4) & (c("sma5") > c("sma20")),
    ).collect()
    return {name: rules[name].fill_null(False).to_numpy() for name in rules.columns}
