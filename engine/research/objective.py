"""The objective of a sweep (a numeric figure of the backtest report) and each trial's in-sample
and out-of-sample summary across the walk-forward folds.

In-sample value: the mean of the objective over the folds' train windows; out-of-sample: its mean
over the test windows. A window whose objective is unknown (a Sharpe ratio without any return
variance, say) makes the mean unknown: it is never read as zero. Trades and net PnL are summed
over the windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from perpwatch.common.errors import PerpwatchError, did_you_mean

#: Figures where lower is better: the sweep minimises them unless --direction says otherwise.
LOWER_IS_BETTER = frozenset({"max_drawdown_pct", "max_drawdown_usd", "fees_usd", "rejected"})


def check_objective(name: str, stats: Mapping[str, Any]) -> None:
    """``name`` must be a numeric figure of the report (``stats`` of a backtest of this setup)."""
    numeric = sorted(k for k, v in stats.items() if v is None or _is_number(v))
    if name in stats and (stats[name] is None or _is_number(stats[name])):
        return
    if name in stats:
        raise PerpwatchError(f"--objective {name}: that figure is not a number ({stats[name]!r})")
    hint = did_you_mean(name, numeric) or ""
    raise PerpwatchError(f"--objective {name}: no such figure{hint}; one of: {', '.join(numeric)}")


def default_direction(objective: str) -> str:
    return "minimize" if objective in LOWER_IS_BETTER else "maximize"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class Summary:
    """A trial across its folds (``out_*`` None without walk-forward)."""

    in_value: float | None
    out_value: float | None
    in_trades: int
    out_trades: int | None
    in_net: float | None
    out_net: float | None


def summarize(folds: list[dict[str, Any]], objective: str) -> Summary:
    """The in-sample and out-of-sample summary of a trial's ``folds`` (``trial.run_trial``)."""
    train = [f["train"] for f in folds]
    test = [f["test"] for f in folds if f.get("test") is not None]
    return Summary(
        in_value=_mean(w.get(objective) for w in train),
        out_value=_mean(w.get(objective) for w in test) if test else None,
        in_trades=int(sum(w.get("trades") or 0 for w in train)),
        out_trades=int(sum(w.get("trades") or 0 for w in test)) if test else None,
        in_net=_sum(w.get("net_pnl_usd") for w in train),
        out_net=_sum(w.get("net_pnl_usd") for w in test) if test else None,
    )


def _mean(values: Iterable[Any]) -> float | None:
    xs = list(values)
    if not xs or any(x is None for x in xs):
        return None
    return float(sum(xs) / len(xs))


def _sum(values: Iterable[Any]) -> float | None:
    xs = list(values)
    if not xs or any(x is None for x in xs):
        return None
    return float(sum(xs))
