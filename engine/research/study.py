"""The sweep's Optuna study: samplers, the SQLite storage, resuming, and the ask/tell loop.

The study lives in this process only: workers get ``(setup, params)`` and return figures, and
each finished trial is told to the study (one SQLite transaction) as soon as it is back. A sweep
killed mid-way leaves the trials it had in flight RUNNING; the same command finds them, runs
them again under their own numbers, then asks for new trials until the study holds ``--trials``
finished ones. No trial is finished twice, and a lock file (``FILE.lock``) keeps a second sweep
off a study that one is running.

Random search draws each trial's params from ``(seed, trial number)`` alone, so a resumed or
parallel sweep draws exactly what a straight run would; grid search (Optuna's ``GridSampler``)
gives trial *n* grid point *n*; TPE learns from the trials told so far, so its choices depend on
the order trials finish in (it is seeded, but reproducible only with one worker).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perpwatch.common.errors import PerpwatchError
from perpwatch.common.extras import require
from perpwatch.common.text import printable
from perpwatch.research.objective import summarize
from perpwatch.research.pool import Pool, WorkerLost
from perpwatch.research.specs import ParamSpec, Value, format_value
from perpwatch.research.trial import Setup

log = logging.getLogger("perpwatch.research")

SEARCHES = ("grid", "random", "tpe")
CONFIG_ATTR = "perpwatch_sweep"


@dataclass
class SweepPlan:
    setup: Setup
    specs: dict[str, ParamSpec]
    search: str  # grid | random | tpe
    trials: int  # finished trials the study should hold
    objective: str
    direction: str  # maximize | minimize
    min_trades: int
    seed: int
    study_path: str | None  # None: in memory (nothing to resume)
    study_name: str
    config: dict[str, Any] = field(default_factory=dict)  # what the study name is derived from


@dataclass
class Progress:
    """What a sweep did this time (the study may hold more from earlier runs)."""

    resumed: int = 0  # interrupted trials run again
    ran: int = 0  # trials finished by this run
    failed: int = 0
    already: int = 0  # finished trials the study held before


def optuna_module() -> Any:
    optuna = require("optuna", extra="sweep", purpose="perpwatch sweep")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def grid_size(specs: dict[str, ParamSpec]) -> int:
    return math.prod(len(s.values) for s in specs.values())


def make_sampler(plan: SweepPlan, seen: int) -> Any:
    """The sampler of ``plan.search``; ``seen``: trials the study already holds (TPE's seed moves
    on by it, so a resumed sweep does not replay the draws it began with)."""
    optuna = optuna_module()
    if plan.search == "grid":
        space = {name: list(s.values) for name, s in plan.specs.items()}

        class Grid(optuna.samplers.GridSampler):  # type: ignore[name-defined]
            def after_trial(self, *args: Any, **kwargs: Any) -> None:
                """Nothing: GridSampler's own calls ``study.stop()``, which only an ``optimize``
                loop may; the sweep stops when the grid's trials are done."""

        return Grid(space, seed=plan.seed)
    if plan.search == "random":
        return numbered_random_sampler(optuna, plan.seed)
    return optuna.samplers.TPESampler(seed=plan.seed + seen, constant_liar=True)


def numbered_random_sampler(optuna: Any, seed: int) -> Any:
    """A random sampler whose draws for trial *n* depend on ``(seed, n, param name)`` only."""

    class NumberedRandomSampler(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {}

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
            return {}

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            rng = np.random.default_rng([seed, trial.number, zlib.crc32(name.encode())])
            d = optuna.distributions
            if isinstance(dist, d.CategoricalDistribution):
                return dist.choices[int(rng.integers(len(dist.choices)))]
            if isinstance(dist, d.IntDistribution):
                if dist.log:
                    return int(round(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))))
                k = (dist.high - dist.low) // dist.step
                return dist.low + dist.step * int(rng.integers(k + 1))
            if dist.log:
                return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
            if dist.step is not None:
                k = int(round((dist.high - dist.low) / dist.step))
                return float(dist.low + dist.step * int(rng.integers(k + 1)))
            return float(rng.uniform(dist.low, dist.high))

    return NumberedRandomSampler()


def suggest(trial: Any, spec: ParamSpec, search: str) -> Value:
    """The trial's value of ``spec`` (the value it already has, for a trial asked before)."""
    if search == "grid" or spec.kind == "list" or (spec.kind == "range" and len(spec.values) == 1):
        return trial.suggest_categorical(spec.name, list(spec.values))
    if spec.kind == "range":
        first, last = spec.values[0], spec.values[-1]
        step = spec.step or 1
        if spec.whole:
            return trial.suggest_int(spec.name, first, last, step=step)
        return _snap(trial.suggest_float(spec.name, first, last, step=step))
    if spec.kind == "int":
        step = int(spec.step or 1)
        return trial.suggest_int(spec.name, int(spec.low), int(spec.high), step=step)
    return _snap(trial.suggest_float(spec.name, spec.low, spec.high, log=spec.kind == "log"))


def _snap(x: float) -> float:
    return float(f"{x:.12g}")


def params_text(params: dict[str, Any]) -> dict[str, str]:
    """A trial's params as ``--param`` texts for the compiler."""
    return {k: format_value(v) for k, v in params.items()}


@contextlib.contextmanager
def study_lock(path: str | None) -> Iterator[None]:
    """Hold ``path``.lock while the sweep runs; a second sweep on the same study file is refused."""
    if path is None:
        yield
        return
    lock = path + ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PerpwatchError(
                f"--study {path}: another sweep is running on it (it holds {lock}); wait for it to end"
            ) from None
        yield
    finally:
        os.close(fd)


def open_study(plan: SweepPlan, *, create: bool = True) -> Any:
    """The plan's study (created, or loaded from ``--study``), checked to be for the same sweep."""
    optuna = optuna_module()
    storage: Any
    if plan.study_path is None:
        storage = optuna.storages.InMemoryStorage()
    else:
        folder = os.path.dirname(os.path.abspath(plan.study_path))
        if not os.path.isdir(folder):
            raise PerpwatchError(f"--study {plan.study_path}: no such folder {folder}")
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{os.path.abspath(plan.study_path)}",
            engine_kwargs={"connect_args": {"timeout": 60}},
        )
        _write_ahead(storage.engine)
    names = [s.study_name for s in storage.get_all_studies()]
    if plan.study_name in names:
        study = optuna.load_study(study_name=plan.study_name, storage=storage, sampler=None)
        stored = study.user_attrs.get(CONFIG_ATTR)
        if stored is not None and stored != plan.config:
            differ = sorted(k for k in {*stored, *plan.config} if stored.get(k) != plan.config.get(k))
            raise PerpwatchError(
                f"--study-name {plan.study_name}: that study in {plan.study_path} was run with other "
                f"settings ({', '.join(differ)} differ); give another --study-name"
            )
    else:
        if not create:
            raise PerpwatchError(f"no study {plan.study_name!r} in {plan.study_path}")
        study = optuna.create_study(storage=storage, study_name=plan.study_name, direction=plan.direction)
        study.set_user_attr(CONFIG_ATTR, plan.config)
    study.sampler = make_sampler(plan, len(study.get_trials(deepcopy=False)))
    return study


def _write_ahead(engine: Any) -> None:
    """SQLite in WAL mode with ``synchronous=NORMAL``: a commit is one append, not a sync of the
    whole file; a committed trial survives the process being killed (a power cut may lose the last
    few, which a resumed sweep runs again)."""
    from sqlalchemy import event

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # the connections opened while Optuna created its tables get the pragmas too


def run_sweep(
    plan: SweepPlan, pool: Pool, on_trial: Callable[[int, dict[str, Any] | None], None] | None = None
) -> tuple[Any, Progress]:
    """Run the plan's remaining trials on ``pool``; the study and what this run did.

    ``on_trial(number, result)`` is called after each trial is recorded (``result`` None when it
    failed)."""
    optuna = optuna_module()
    state = optuna.trial.TrialState
    with study_lock(plan.study_path):
        study = open_study(plan)
        trials = study.get_trials(deepcopy=False)
        progress = Progress(already=sum(t.state.is_finished() for t in trials))
        orphans = [optuna.trial.Trial(study, t._trial_id) for t in trials if t.state == state.RUNNING]
        progress.resumed = len(orphans)
        wanted = max(0, plan.trials - progress.already)
        if plan.search == "grid":
            wanted = min(wanted, max(0, grid_size(plan.specs) - progress.already))
        queue = list(orphans)
        asked = len(orphans)
        pending: dict[Any, Any] = {}  # future -> trial
        try:
            while True:
                while len(pending) < pool.slots and (queue or asked < wanted):
                    if queue:
                        trial = queue.pop(0)
                    else:
                        trial = study.ask()
                        asked += 1
                    params = {name: suggest(trial, spec, plan.search) for name, spec in plan.specs.items()}
                    pending[pool.submit(plan.setup, params_text(params))] = trial
                if not pending:
                    break
                for future in pool.wait(list(pending)):
                    trial = pending.pop(future)
                    result = _record(study, plan, pool, future, trial, progress, state)
                    if on_trial is not None:
                        on_trial(trial.number, result)
        except BaseException:
            pool.cancel(list(pending))  # their trials stay RUNNING: the next run resumes them
            raise
    return study, progress


def _record(
    study: Any, plan: SweepPlan, pool: Pool, future: Any, trial: Any, progress: Progress, state: Any
) -> dict[str, Any] | None:
    """Tell the study how ``trial`` went: its value (in-sample objective), pruned (unknown, or
    below --min-trades) or failed (its error kept)."""
    try:
        result: dict[str, Any] = pool.result(future)
    except WorkerLost:
        raise
    except Exception as e:
        message = printable(f"{type(e).__name__}: {e}")[:2000]
        trial.set_user_attr("error", message)
        study.tell(trial, state=state.FAIL)
        progress.failed += 1
        log.warning("trial %d failed: %s", trial.number, message)
        return None
    trial.set_user_attr("result", result)
    s = summarize(result["folds"], plan.objective)
    value = s.in_value
    if value is None or s.in_trades < plan.min_trades:
        study.tell(trial, state=state.PRUNED)
    else:
        study.tell(trial, value)
    progress.ran += 1
    log.info("trial %d finished: %s %s", trial.number, plan.objective, value)
    return result
