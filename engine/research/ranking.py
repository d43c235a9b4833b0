"""A sweep's trials ranked, as a text table and a JSON document.

Trials are ranked on the in-sample objective alone (best first; ties by trial number); trials
without a usable in-sample value (unknown, too few trades) or that failed come after, unranked.
The out-of-sample figures sit beside the in-sample ones, so a winner that does not hold up is
visible; the best trial is the first ranked one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from perpwatch.backtest.report import table
from perpwatch.common.jsonsafe import jsonable
from perpwatch.research.objective import Summary, summarize
from perpwatch.research.specs import format_value
from perpwatch.research.study import SweepPlan, optuna_module


@dataclass
class Row:
    number: int
    params: dict[str, Any]
    status: str  # ok | too few trades | unknown objective | failed
    summary: Summary | None
    folds: list[dict[str, Any]]
    error: str | None = None
    rank: int | None = None
    worker: str | None = None


def ranked(study: Any, plan: SweepPlan) -> list[Row]:
    """Every finished trial of the study, best first (see the module doc)."""
    state = optuna_module().trial.TrialState
    rows = []
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished():
            continue
        result = t.user_attrs.get("result")
        if t.state == state.FAIL or result is None:
            rows.append(Row(t.number, dict(t.params), "failed", None, [], t.user_attrs.get("error")))
            continue
        s = summarize(result["folds"], plan.objective)
        if s.in_value is None:
            status = f"unknown {plan.objective}"
        elif s.in_trades < plan.min_trades:
            status = f"< {plan.min_trades} trades"
        else:
            status = "ok"
        rows.append(Row(t.number, dict(t.params), status, s, result["folds"], worker=result.get("process")))
    sign = -1.0 if plan.direction == "maximize" else 1.0
    good = sorted(
        (r for r in rows if r.status == "ok"),
        key=lambda r: (sign * r.summary.in_value, r.number),  # type: ignore[union-attr,operator]
    )
    for k, r in enumerate(good, start=1):
        r.rank = k
    rest = sorted((r for r in rows if r.status != "ok"), key=lambda r: r.number)
    return good + rest


def _f(x: float | None, spec: str = ".3f") -> str:
    return "unknown" if x is None else format(x, spec)


def format_table(rows: list[Row], plan: SweepPlan, top: int = 20) -> str:
    """The ranked table: params, in-sample and out-of-sample objective, trades and net PnL."""
    walk = any(f.get("test") is not None for r in rows for f in r.folds)
    names = list(plan.specs)
    obj = plan.objective
    headers = ["rank", "trial", *names, f"{obj} in"]
    if walk:
        headers.append(f"{obj} out")
    headers += ["trades in"] + (["trades out"] if walk else [])
    headers += ["net in USD"] + (["net out USD"] if walk else []) + ["status"]
    body = []
    for r in rows[:top]:
        s = r.summary
        line: list[Any] = ["" if r.rank is None else r.rank, r.number]
        line += [format_value(r.params[n]) if n in r.params else "" for n in names]
        if s is None:
            line += [""] * (len(headers) - len(line) - 1) + [f"failed: {(r.error or '')[:60]}"]
        else:
            line.append(_f(s.in_value))
            if walk:
                line.append(_f(s.out_value))
            line.append(s.in_trades)
            if walk:
                line.append(s.out_trades)
            line.append(_f(s.in_net, ",.2f"))
            if walk:
                line.append(_f(s.out_net, ",.2f"))
            line.append(r.status)
        body.append(line)
    right = [True, True, *[True] * len(names), *[True] * (len(headers) - len(names) - 3), False]
    lines = table(headers, body, right)
    if len(rows) > top:
        lines.append(f"  ... {len(rows) - top} more trials (--top, or --json for every one)")
    return "\n".join(lines)


def best_line(rows: list[Row], plan: SweepPlan) -> str:
    """The winner, chosen in-sample, and how it did out of sample."""
    best = next((r for r in rows if r.rank == 1), None)
    if best is None or best.summary is None:
        return f"no trial has a known {plan.objective} with at least {plan.min_trades} trades in-sample"
    params = " ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
    text = f"best (chosen in-sample): trial {best.number}  {params}  {plan.objective} in-sample {_f(best.summary.in_value)}"
    if best.summary.out_value is not None or any(f.get("test") for f in best.folds):
        text += f", out-of-sample {_f(best.summary.out_value)}"
    return text


def to_json(rows: list[Row], plan: SweepPlan, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every trial (ranked first), the plan and the folds, as strict JSON data."""
    trials = []
    for r in rows:
        s = r.summary
        trials.append(
            {
                "rank": r.rank,
                "trial": r.number,
                "params": r.params,
                "status": r.status,
                "error": r.error,
                "in_sample": None
                if s is None
                else {"objective": s.in_value, "trades": s.in_trades, "net_pnl_usd": s.in_net},
                "out_of_sample": None
                if s is None or s.out_trades is None
                else {"objective": s.out_value, "trades": s.out_trades, "net_pnl_usd": s.out_net},
                "folds": r.folds,
                "worker": r.worker,
            }
        )
    doc = {
        "study": {"file": plan.study_path, "name": plan.study_name},
        "objective": plan.objective,
        "direction": plan.direction,
        "search": plan.search,
        "min_trades": plan.min_trades,
        "seed": plan.seed,
        "params": {name: spec.text for name, spec in plan.specs.items()},
        "folds": [
            {
                "train": {"start": f.train.start, "end": f.train.end, "bars": f.train.bars},
                "test": None
                if f.test is None
                else {"start": f.test.start, "end": f.test.end, "bars": f.test.bars},
            }
            for f in plan.setup.folds
        ],
        "trials": trials,
        **(extra or {}),
    }
    out: dict[str, Any] = jsonable(doc)
    return out


def write_json(doc: dict[str, Any], path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
