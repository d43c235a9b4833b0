"""An interrupted sweep resumes: a sweep subprocess is SIGKILLed once some trials are recorded in
its study (the test waits on the trials being told, not on time), then the same command finishes
the study — every trial exactly once, the interrupted ones under their own numbers. Also: the lock
against a second sweep on the same study, and a study name reused with other settings."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import invoke
from test_sweep import make_market

optuna = pytest.importorskip("optuna", reason="perpwatch sweep needs optuna (perpwatch[sweep])")

MARK = b"\x1e"
#: Before perpwatch: after each trial is told to the study, write MARK and wait for a byte on stdin.
GATE = """
import logging, os
class Gate(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("trial "):
            os.write(1, b"\\x1e")
            os.read(0, 1)
logging.getLogger("perpwatch.research").setLevel(logging.INFO)
logging.getLogger("perpwatch.research").addHandler(Gate())
"""


def trials_of(db: Path) -> list:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    (summary,) = storage.get_all_studies()
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)


def kill_after(args: list[str], told: int) -> None:
    """Run ``perpwatch ARGS`` gated; SIGKILL it (and its worker processes) while it holds still
    right after the ``told``-th trial was recorded."""
    proc = subprocess.Popen(
        [sys.executable, "-c", GATE + "from perpwatch.cli.main import main; main()", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    seen = 0
    try:
        while seen < told:
            byte = proc.stdout.read(1)
            assert byte, f"the sweep ended early: {proc.stderr.read().decode() if proc.stderr else ''}"
            if byte == MARK:
                seen += 1
                if seen < told:
                    proc.stdin.write(b"g")
                    proc.stdin.flush()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep's own process group: it and its workers
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize(
    ("search", "spec", "workers"),
    [("grid", "fast=3:14:1", "2"), ("random", "fast=int:3:30", "1")],
)
def test_killed_sweep_resumes_without_running_a_trial_twice(tmp_path, search, spec, workers):
    strat, data = make_market(tmp_path)
    db = tmp_path / "study.db"
    args = ["sweep", str(strat), "--data", str(data), "--param", spec, "--param", "slow=40,60",
            "--search", search, "--trials", "10", "--folds", "1", "--study", str(db), "--workers", workers]  # fmt: skip
    kill_after(args, told=3)
    before = trials_of(db)
    state = optuna.trial.TrialState
    assert sum(t.state == state.COMPLETE for t in before) == 3
    running = [t.number for t in before if t.state == state.RUNNING]
    if workers == "2":
        assert running  # a trial was in flight on the other worker when the sweep died
    out = tmp_path / "s.json"
    r = invoke(*args, "--json", out)
    assert r.exit_code == 0, r.output
    resumed = f" ({len(running)} of them interrupted before, run again)" if running else ""
    assert f"7 trials run now{resumed}, 3 finished before" in r.output
    after = trials_of(db)
    assert len(after) == 10 and all(t.state == state.COMPLETE for t in after)
    assert sorted(t.number for t in after) == list(range(10))  # interrupted trials kept their numbers
    combos = [(t.params["fast"], t.params["slow"]) for t in after]
    if search == "grid":
        assert len(set(combos)) == 10  # no grid point ran twice
    for t in before:  # what was recorded before the kill is unchanged
        if t.state == state.COMPLETE:
            assert after[t.number].params == t.params and after[t.number].value == t.value
    assert len(json.loads(out.read_text())["trials"]) == 10
    # a straight run of the same sweep draws the same params for every trial number
    straight = tmp_path / "straight"
    straight.mkdir()
    db2 = straight / "study.db"
    r2 = invoke(*[a if a != str(db) else str(db2) for a in args[:-1]], "1")  # in this process
    assert r2.exit_code == 0, r2.output
    assert {t.number: t.params for t in trials_of(db2)} == {t.number: t.params for t in after}
    # and nothing is left to do
    r3 = invoke(*args)
    assert r3.exit_code == 0 and "0 trials run now, 10 finished before" in r3.output


def test_a_second_sweep_on_a_running_study_is_refused(tmp_path):
    strat, data = make_market(tmp_path)
    db = tmp_path / "study.db"
    fd = os.open(f"{db}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sweep holds it
        r = invoke("sweep", strat, "--data", data, "--param", "fast=5,10", "--study", db, "--workers", 1)
    finally:
        os.close(fd)
    assert r.exit_code == 2 and "another sweep is running on it" in r.output


def test_a_study_name_reused_with_other_settings_is_refused(tmp_path):
    strat, data = make_market(tmp_path)
    db = tmp_path / "study.db"
    base = ("sweep", strat, "--data", data, "--study", db, "--study-name", "mine", "--workers", 1)
    assert invoke(*base, "--param", "fast=5,10").exit_code == 0
    r = invoke(*base, "--param", "fast=5,20")
    assert r.exit_code == 2
    assert "--study-name mine: that study" in r.output and "params" in r.output and "differ" in r.output
