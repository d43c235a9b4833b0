"""``perpwatch sweep``: param specs, walk-forward folds, the ranked table and JSON checked against
backtests run directly, bad input (exit 2), local worker processes (data loaded once each), the
seeded random search, TPE, and the missing extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import H, invoke, write_csv

from perpwatch.backtest.history import load_history, symbols_for
from perpwatch.backtest.result import BacktestOptions
from perpwatch.backtest.walk import run_backtest
from perpwatch.common.errors import PerpwatchError
from perpwatch.language.compiler import load_strategy
from perpwatch.research.folds import MIN_WINDOW_BARS, split
from perpwatch.research.specs import parse_spec

pytest.importorskip("optuna", reason="perpwatch sweep needs optuna (perpwatch[sweep])")

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
BARS = 1200
CROSS = """
version: 1
name: cross
interval: 1h
params: {fast: 10, slow: 40, size: 1000, flip: true}
rules:
  - name: up
    when: sma(price.close, fast) > sma(price.close, slow)
    signal: {side: long, size_usd: size}
  - name: down
    when: flip and sma(price.close, fast) < sma(price.close, slow)
    signal: {side: short, size_usd: size}
"""


def make_market(folder: Path, seed: int = 7, bars: int = BARS) -> tuple[Path, Path]:
    """A strategy file and one symbol of 1h bars (a random walk with trends) in ``folder``."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.006, bars) + 0.002 * np.sin(np.arange(bars) / 60)
    close = 100 * np.exp(np.cumsum(steps))
    opens = np.concatenate([[close[0]], close[:-1]])
    data = folder / "data"
    data.mkdir()
    cols = {"price.open": list(opens), "price.close": list(close), "funding.close": [0.01] * bars}
    write_csv(data / "BTC_1h.csv", cols, T0, H)
    strat = folder / "cross.yaml"
    strat.write_text(CROSS)
    return strat, data


@pytest.fixture
def market(tmp_path: Path) -> tuple[Path, Path]:
    return make_market(tmp_path)


def sweep(strat: Path, data: Path, *args: object, json_path: Path | None = None):
    extra = ["--json", json_path] if json_path is not None else []
    return invoke("sweep", strat, "--data", data, *args, *extra)


# --- specs ------------------------------------------------------------------------------------------


def test_specs_lists_ranges_and_distributions():
    assert parse_spec("x", "1.5,2,2.5").values == (1.5, 2, 2.5)
    assert parse_spec("x", "7").values == (7,)
    assert parse_spec("x", "true,false").values == (True, False)
    assert parse_spec("x", "1.5:3:0.25").values == (1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0)  # end on the grid
    assert parse_spec("x", "0.1:0.3:0.1").values == (0.1, 0.2, 0.3)  # decimal: no 0.30000000000000004
    assert parse_spec("x", "1:2:0.3").values == (1.0, 1.3, 1.6, 1.9)  # 2 is off the grid
    whole = parse_spec("x", "12:72:12")
    assert whole.values == (12, 24, 36, 48, 60, 72) and all(type(v) is int for v in whole.values)
    u = parse_spec("x", "uniform:1.5:3")
    assert (u.kind, u.low, u.high, u.gridded) == ("uniform", 1.5, 3.0, False)
    i = parse_spec("x", "int:12:72:4")
    assert (i.kind, i.low, i.high, i.step, i.whole) == ("int", 12, 72, 4, True)
    assert parse_spec("x", "log:0.001:1").kind == "log"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("1.5:3", "LOW:HIGH:STEP"),
        ("3:1.5:0.5", "HIGH 1.5 is below LOW 3"),
        ("1:2:0", "the step 0 must be above 0"),
        ("1:2:-1", "the step -1 must be above 0"),
        ("gauss:1:2", "'gauss' is neither a number nor a distribution"),
        ("uniform:3:1", "HIGH 1 must be above LOW 3"),
        ("uniform:1", "uniform:LOW:HIGH"),
        ("int:1.5:9", "1.5 is not a whole number"),
        ("log:0:1", "log: needs LOW above 0"),
        ("1,,2", "an empty value"),
        ("1,nan", "NaN"),
        ("0:1000000:1", "more than 10,000"),
        ("uniform:1:inf", "NaN and infinities are not allowed"),
    ],
)
def test_bad_specs_name_the_value_and_what_is_valid(spec, says):
    with pytest.raises(PerpwatchError) as e:
        parse_spec("fast", spec)
    assert says in str(e.value) and f"fast={spec}" in str(e.value)


def test_bad_spec_on_the_command_line_exits_2(market):
    strat, data = market
    r = sweep(strat, data, "--param", "fast=5:20")
    assert r.exit_code == 2
    assert "--param fast=5:20: a range is LOW:HIGH:STEP" in r.output and "Traceback" not in r.output


def test_undeclared_param_says_did_you_mean(market):
    strat, data = market
    r = sweep(strat, data, "--param", "fsat=5,10")
    assert r.exit_code == 2
    assert "has no param 'fsat'" in r.output and "did you mean: fast?" in r.output


def test_value_the_strategy_cannot_take_is_said_before_any_trial(market):
    strat, data = market
    r = sweep(strat, data, "--param", "fast=0,5")
    assert r.exit_code == 2
    assert "the strategy cannot take fast=0" in r.output and "sweep cross:" not in r.output


def test_a_whole_number_param_with_a_continuous_distribution_is_refused(market):
    strat, data = market
    r = sweep(strat, data, "--param", "fast=uniform:5:20", "--search", "random")
    assert r.exit_code == 2
    assert "fast takes whole numbers only" in r.output and "use int:5:20" in r.output


def test_grid_refuses_a_distribution(market):
    strat, data = market
    r = sweep(strat, data, "--param", "fast=int:5:20")
    assert r.exit_code == 2 and "--search grid walks lists and ranges" in r.output


def test_unknown_objective_says_did_you_mean(market):
    strat, data = market
    r = sweep(strat, data, "--param", "fast=5,10", "--objective", "sharp")
    assert r.exit_code == 2
    assert "--objective sharp: no such figure (did you mean: sharpe" in r.output
    assert "net_pnl_usd" in r.output  # the valid figures are listed
    r = sweep(strat, data, "--param", "fast=5,10", "--objective", "start")
    assert r.exit_code == 2 and "--objective start: that figure is not a number" in r.output


def test_missing_extra_names_perpwatch_sweep(market, monkeypatch):
    strat, data = market
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    r = sweep(strat, data, "--param", "fast=5,10")
    assert r.exit_code == 2
    assert "perpwatch sweep needs optuna: pip install 'perpwatch[sweep]'" in r.output


def test_missing_dask_names_perpwatch_sweep(market, monkeypatch):
    strat, data = market
    monkeypatch.setitem(sys.modules, "distributed", None)
    r = sweep(strat, data, "--param", "fast=5,10", "--dask", "tcp://127.0.0.1:8786")
    assert r.exit_code == 2
    assert "--dask needs distributed: pip install 'perpwatch[sweep]'" in r.output


# --- folds ------------------------------------------------------------------------------------------


def test_folds_are_consecutive_train_then_test_windows():
    times = T0 + H * np.arange(1000, dtype=np.int64)
    folds = split(times, 3, 0.3)
    assert len(folds) == 3
    bounds = [0, 333, 666, 1000]
    for k, f in enumerate(folds):
        n = bounds[k + 1] - bounds[k]
        assert f.test is not None
        assert f.train.start == times[bounds[k]] and f.test.end == times[bounds[k + 1] - 1]
        assert f.test.start == f.train.end + H  # the test window follows its train window
        assert f.test.bars == round(n * 0.3) and f.train.bars + f.test.bars == n
        if k:
            assert f.train.start == folds[k - 1].test.end + H  # no overlap, no gap
    whole = split(times, 0, 0.3)
    assert len(whole) == 1 and whole[0].test is None and whole[0].train.bars == 1000
    with pytest.raises(PerpwatchError, match=f"each needs at least {MIN_WINDOW_BARS}"):
        split(times, 40, 0.3)


# --- the sweep against direct backtests -------------------------------------------------------------


def direct(strat: Path, data: Path, params: dict, start: int | None = None, end: int | None = None) -> dict:
    s = load_strategy(
        str(strat),
        overrides={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()},
    )
    history = load_history([str(data)], s.interval, None)
    r = run_backtest([s], history, symbols_for([s], history, None), BacktestOptions(start=start, end=end))
    return r.stats


def test_grid_sweep_with_folds_matches_direct_backtests_and_ranks_in_sample(market, tmp_path):
    strat, data = market
    out = tmp_path / "s.json"
    r = sweep(strat, data, "--param", "fast=5,10,20", "--param", "slow=30:50:20", "--folds", "2",
              "--workers", "1", json_path=out)  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    trials = doc["trials"]
    assert sorted((t["params"]["fast"], t["params"]["slow"]) for t in trials) == sorted(
        (f, s) for f in (5, 10, 20) for s in (30, 50)
    )  # every grid point exactly once
    ranked = [t for t in trials if t["rank"] is not None]
    ins = [t["in_sample"]["objective"] for t in ranked]
    assert ins == sorted(ins, reverse=True) and [t["rank"] for t in ranked] == list(range(1, len(ranked) + 1))
    outs = [t["out_of_sample"]["objective"] for t in ranked]
    assert outs != sorted(outs, reverse=True)  # the order is the in-sample one, not the out-of-sample one
    # each figure is what a backtest of that window with those params gives
    folds = doc["folds"]
    for t in (ranked[0], ranked[-1]):
        for k, f in enumerate(folds):
            train = direct(strat, data, t["params"], f["train"]["start"], f["train"]["end"])
            test = direct(strat, data, t["params"], f["test"]["start"], f["test"]["end"])
            assert t["folds"][k]["train"]["sharpe"] == pytest.approx(train["sharpe"], rel=1e-12)
            assert t["folds"][k]["test"]["net_pnl_usd"] == pytest.approx(test["net_pnl_usd"], rel=1e-12)
        mean_in = np.mean([fold["train"]["sharpe"] for fold in t["folds"]])
        assert t["in_sample"]["objective"] == pytest.approx(mean_in)
    best = ranked[0]
    params = f"fast={best['params']['fast']} slow={best['params']['slow']}"
    assert f"best (chosen in-sample): trial {best['trial']}  {params}" in r.output
    assert "sharpe in" in r.output and "sharpe out" in r.output and "fold 2" in r.output


def test_min_trades_floor_and_no_winner(market, tmp_path):
    strat, data = market
    out = tmp_path / "s.json"
    r = sweep(strat, data, "--param", "fast=5,10", "--min-trades", "100000", "--workers", "1", json_path=out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert all(t["rank"] is None and t["status"] == "< 100000 trades" for t in doc["trials"])
    assert "no trial has a known sharpe with at least 100000 trades in-sample" in r.output


def test_minimised_objective_ranks_lowest_first(market, tmp_path):
    strat, data = market
    out = tmp_path / "s.json"
    r = sweep(strat, data, "--param", "fast=5,10,20", "--objective", "max_drawdown_pct", "--workers", "1",
              json_path=out)  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["direction"] == "minimize"
    values = [t["in_sample"]["objective"] for t in doc["trials"]]
    assert values == sorted(values)


def test_local_processes_give_the_same_table_and_load_the_data_once_each(market, tmp_path):
    strat, data = market
    args = ("--param", "fast=5,10,20", "--param", "slow=30,50", "--folds", "1")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    a = sweep(strat, data, *args, "--workers", "1", json_path=one)
    b = sweep(strat, data, *args, "--workers", "2", json_path=two)
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert "on 2 local processes" in b.output
    table = lambda out: out[out.index("  rank") : out.index("wrote")]  # noqa: E731
    assert table(a.output) == table(b.output)
    trials = json.loads(two.read_text())["trials"]
    assert len({t["worker"] for t in trials}) <= 2
    assert all(t["worker"] and not t["worker"].endswith(f":{__import__('os').getpid()}") for t in trials)


def test_every_worker_loads_the_data_once(market):
    """run_trial in worker processes: each process reads the history on its first trial only."""
    import concurrent.futures as cf
    import dataclasses
    import multiprocessing

    from perpwatch.research.trial import Setup, run_trial

    strat, data = market
    setup = Setup(str(strat), (str(data),), None, None, (), BacktestOptions(), ())
    times = T0 + H * np.arange(BARS, dtype=np.int64)
    setup = dataclasses.replace(setup, folds=tuple(split(times, 1, 0.3)))
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        results = list(ex.map(run_trial, [setup] * 8, [{"fast": str(f)} for f in range(3, 11)]))
    by_process: dict[str, list[bool]] = {}
    for res in results:
        by_process.setdefault(res["process"], []).append(res["loaded"])
        assert res["loads"] == 1
    assert sum(sum(v) for v in by_process.values()) == len(by_process)  # one load per process


def test_random_search_is_seeded_per_trial(market, tmp_path):
    strat, data = market
    args = ("--param", "fast=int:3:30", "--param", "slow=30:60:5", "--search", "random", "--trials", "5",
            "--workers", "1")  # fmt: skip
    runs = []
    for k, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"r{k}.json"
        assert sweep(strat, data, *args, "--seed", seed, json_path=out).exit_code == 0
        runs.append({t["trial"]: t["params"] for t in json.loads(out.read_text())["trials"]})
    assert runs[0] == runs[1] and runs[0] != runs[2]
    for params in runs[0].values():
        assert 3 <= params["fast"] <= 30 and params["slow"] in range(30, 61, 5)


def test_tpe_search_runs_its_trials(market, tmp_path):
    strat, data = market
    out = tmp_path / "t.json"
    r = sweep(strat, data, "--param", "fast=int:3:30", "--param", "size=uniform:500:2000", "--param", "flip=true,false",
              "--search", "tpe", "--trials", "12", "--workers", "1", json_path=out)  # fmt: skip
    assert r.exit_code == 0, r.output
    trials = json.loads(out.read_text())["trials"]
    assert len(trials) == 12 and len({t["trial"] for t in trials}) == 12
    for t in trials:
        p = t["params"]
        assert 3 <= p["fast"] <= 30 and 500 <= p["size"] <= 2000 and p["flip"] in (True, False)


def test_a_failing_trial_is_recorded_as_failed_and_the_sweep_goes_on(market):
    import concurrent.futures as cf

    from perpwatch.research.pool import Pool
    from perpwatch.research.ranking import format_table, ranked
    from perpwatch.research.specs import parse_specs
    from perpwatch.research.study import SweepPlan, run_sweep
    from perpwatch.research.trial import Setup

    class Flaky(Pool):
        def submit(self, setup, params):
            if params["fast"] == "10":
                future: cf.Future = cf.Future()
                future.set_exception(ValueError("boom at fast=10"))
                return future
            return super().submit(setup, params)

    strat, data = market
    times = T0 + H * np.arange(BARS, dtype=np.int64)
    setup = Setup(str(strat), (str(data),), None, None, (), BacktestOptions(), tuple(split(times, 0, 0.3)))
    plan = SweepPlan(setup, parse_specs(("fast=5,10,20",)), "grid", 3, "sharpe", "maximize", 1, 0, None, "t")
    study, progress = run_sweep(plan, Flaky())
    assert (progress.ran, progress.failed) == (2, 1)
    rows = ranked(study, plan)
    failed = [r for r in rows if r.status == "failed"]
    assert [r.params["fast"] for r in failed] == [10] and failed[0].error == "ValueError: boom at fast=10"
    assert [r.rank for r in rows] == [1, 2, None]
    assert "failed: ValueError: boom at fast=10" in format_table(rows, plan)
