"""``perpwatch sweep --dask``: trials on a Dask ``LocalCluster`` give the same ranked table as the
local run, each worker loads the data once, and an unreachable scheduler is one clear error."""

from __future__ import annotations

import json

import pytest
from helpers import invoke
from test_sweep import make_market

pytest.importorskip("optuna", reason="perpwatch sweep needs optuna (perpwatch[sweep])")
distributed = pytest.importorskip("distributed", reason="--dask needs dask.distributed (perpwatch[sweep])")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as c:
        yield c


def table(output: str) -> str:
    return output[output.index("  rank") : output.index("wrote")]


@pytest.mark.parametrize("search", ["grid", "random"])
def test_dask_gives_the_local_table(tmp_path, cluster, search):
    strat, data = make_market(tmp_path)
    spec = "fast=4:12:2" if search == "grid" else "fast=int:3:30"
    args = ("sweep", strat, "--data", data, "--param", spec, "--param", "slow=30,50", "--folds", "2",
            "--search", search, "--trials", "10")  # fmt: skip
    here, there = tmp_path / "here.json", tmp_path / "there.json"
    local = invoke(*args, "--workers", 1, "--json", here)
    remote = invoke(*args, "--dask", cluster.scheduler_address, "--json", there)
    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    assert f"on Dask at {cluster.scheduler_address} (2 workers, 2 threads)" in remote.output
    assert table(remote.output) == table(local.output)
    a, b = json.loads(here.read_text())["trials"], json.loads(there.read_text())["trials"]
    assert [(t["trial"], t["params"], t["in_sample"], t["out_of_sample"]) for t in a] == [
        (t["trial"], t["params"], t["in_sample"], t["out_of_sample"]) for t in b
    ]


def test_each_dask_worker_loads_the_data_once(tmp_path, cluster):
    """The trials ship params and the small setup; a worker reads the history on its first trial."""
    import dataclasses

    import numpy as np
    from test_sweep import BARS, T0, H

    from perpwatch.backtest.result import BacktestOptions
    from perpwatch.research import trial as trial_mod
    from perpwatch.research.folds import split
    from perpwatch.research.pool import DaskPool

    strat, data = make_market(tmp_path)
    setup = trial_mod.Setup(str(strat), (str(data),), None, None, (), BacktestOptions(), ())
    times = T0 + H * np.arange(BARS, dtype=np.int64)
    setup = dataclasses.replace(setup, folds=tuple(split(times, 1, 0.3)))
    before = trial_mod.LOADS.get(setup.key, 0)
    pool = DaskPool(cluster.scheduler_address)
    try:
        futures = [pool.submit(setup, {"fast": str(f)}) for f in range(3, 15)]
        results = [pool.result(f) for f in futures]
    finally:
        pool.close()
    # processes=False: both workers share this process and its cache, so one load in all
    assert sum(r["loaded"] for r in results) == 1
    assert trial_mod.LOADS[setup.key] - before == 1
    assert len({r["worker"] for r in results}) == 2  # both worker threads ran trials


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    import socket

    strat, data = make_market(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    r = invoke("sweep", strat, "--data", data, "--param", "fast=5,10", "--dask", f"tcp://127.0.0.1:{port}",
               "--dask-timeout", "1")  # fmt: skip
    assert r.exit_code == 2
    assert f"--dask tcp://127.0.0.1:{port}: cannot reach the Dask scheduler" in r.output
