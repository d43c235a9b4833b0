"""The example third-party plugin, installed for real into a fresh virtual environment.

Slow-ish (about 10-20 s: two wheel builds), but in the default run: it is the only test that
proves a plugin distribution is found through its ``perpwatch`` entry point after ``pip install``.

Offline and fast: the venv is created without pip and without system site-packages; a ``.pth``
file lends it this interpreter's site-packages for the dependencies (numpy, pyyaml, pip, hatchling,
...), while perpwatch itself and the example are built from the repository and installed into the
venv's own site-packages, which come first on its ``sys.path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from helpers import ROOT

EXAMPLE = ROOT / "examples" / "perpwatch-example-plugin"
STRATEGY = EXAMPLE / "strategies" / "synthetic-midrange.yaml"
TRADING = EXAMPLE / "strategies" / "synthetic-trend.yaml"


def _site_dirs() -> list[str]:
    return [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


@pytest.fixture(scope="module")
def env_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pip", reason="pip is needed to install into the test venv")
    pytest.importorskip("hatchling", reason="hatchling is needed to build the wheels without network")
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False, system_site_packages=False, clear=True).create(home)
    bindir = home / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "_borrowed_deps.pth").write_text("\n".join(_site_dirs()) + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--force-reinstall", "--quiet", "--disable-pip-version-check", str(ROOT), str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    return bindir


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERPWATCH_", "PYTHON", "PIP_"))}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def perpwatch(bindir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = bindir / ("perpwatch.exe" if os.name == "nt" else "perpwatch")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=_env(), timeout=60, cwd=cwd)


def test_installed_from_the_venv_itself(env_bin: Path) -> None:
    code = "import perpwatch, perpwatch_example, sys; print(perpwatch.__file__); print(perpwatch_example.__file__)"
    out = subprocess.run([str(env_bin / "python"), "-c", code], capture_output=True, text=True, env=_env())
    assert out.returncode == 0, out.stderr
    home = str(env_bin.parent)
    assert all(line.startswith(home) for line in out.stdout.split()), out.stdout


def test_plugins_lists_synthetic_with_version_and_origin(env_bin: Path) -> None:
    result = perpwatch(env_bin, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    synthetic = rows["synthetic"]
    assert synthetic["version"] == "0.2.0"
    assert synthetic["origin"] == "entry point (perpwatch-example-plugin)"
    assert synthetic["error"] is None
    assert synthetic["registers"] == {
        "sources": ["synthetic"],
        "notifiers": ["eventfile"],
        "executors": ["fixedfee"],
        "functions": ["midrange"],
        "commands": [],
    }
    assert rows["replay"]["origin"] == "entry point (perpwatch)"
    text = perpwatch(env_bin, "plugins").stdout
    assert (
        "synthetic 0.2.0  [entry point (perpwatch-example-plugin)]  sources: synthetic; notifiers: eventfile; "
        "executors: fixedfee; functions: midrange" in text
    )


def test_metrics_show_the_plugin_metric(env_bin: Path) -> None:
    result = perpwatch(env_bin, "metrics", "--json")
    assert result.returncode == 0, result.stderr
    metrics = {m["name"]: m for m in json.loads(result.stdout)}
    assert metrics["synthetic.noise"]["unit"] == "sigma" and metrics["synthetic.noise"]["sources"] == [
        "synthetic"
    ]
    assert "synthetic" in metrics["price.close"]["sources"]
    assert "synthetic.noise" in perpwatch(env_bin, "metrics").stdout


def test_a_strategy_using_the_plugin_validates(env_bin: Path) -> None:
    result = perpwatch(env_bin, "validate", "--verbose", "--source", "synthetic", str(STRATEGY))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{STRATEGY}: ok (1 rules, 2 lets)" in result.stdout
    assert "metrics:  oi.close, price.close, synthetic.noise" in result.stdout
    assert result.stderr == ""


def test_the_plugin_command_runs(env_bin: Path) -> None:
    result = perpwatch(env_bin, "synthetic-sample", "--bars", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["time", "price.close", "oi.close", "synthetic.noise"] and len(lines) == 4


def test_disabling_the_plugin_makes_its_names_unknown(env_bin: Path, tmp_path: Path) -> None:
    env = {**_env(), "PERPWATCH_DISABLE_PLUGINS": "synthetic"}
    exe = env_bin / ("perpwatch.exe" if os.name == "nt" else "perpwatch")
    result = subprocess.run([str(exe), "validate", str(STRATEGY)], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "midrange" in result.stderr


def test_the_example_s_own_tests_pass_once_installed(env_bin: Path) -> None:
    pytest.importorskip("pytest")
    result = subprocess.run(
        [str(env_bin / "python"), "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout  # the entry-point test runs (it skips when not installed)


@pytest.fixture(scope="module")
def synthetic_data(env_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three months of synthetic BTC 4h bars, fetched from the plugin's source into replay files."""
    home = tmp_path_factory.mktemp("synthetic")
    result = perpwatch(
        env_bin, "fetch", "--source", "synthetic", "--symbols", "BTC", "--interval", "4h",
        "--from", "2024-01-01", "--to", "2024-04-01", "--out", "data", cwd=home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote data/BTC_4h.csv: 546 bars" in result.stdout
    return home / "data"


def test_backtest_trades_on_the_plugin_executor(env_bin: Path, synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt.json"
    args = ["backtest", str(TRADING), "--data", str(synthetic_data), "--executor", "fixedfee"]
    result = perpwatch(env_bin, *args, "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the fixedfee executor's own (a plugin; its options: fee_usd=1)" in result.stdout
    doc = json.loads(out.read_text())
    trades, stats = doc["trades"], doc["stats"]
    assert stats["trades"] == len(trades) > 5 and stats["starting_balance_usd"] == 10_000
    assert all(t["fees"] == (2 if t["status"] == "closed" else 1) for t in trades)  # 1 USD a fill
    assert stats["fees_usd"] == pytest.approx(sum(t["fees"] for t in trades))
    assert stats["net_pnl_usd"] == pytest.approx(sum(t["net_pnl"] for t in trades))
    assert {t["entry_rule"] for t in trades} == {"enter"}  # linked through the fills' trade_id
    assert {t["exit_rule"] for t in trades if t["status"] == "closed"} == {"leave"}
    config = tmp_path / "cheap.yaml"
    config.write_text("executors:\n  cheap: {plugin: fixedfee, fee_usd: 0, balance_usd: 2500}\n")
    cheap = perpwatch(env_bin, *args[:-1], "cheap", "--config", str(config), "--json", str(out), cwd=tmp_path)
    assert cheap.returncode == 0, cheap.stderr
    doc = json.loads(out.read_text())
    assert doc["stats"]["fees_usd"] == 0 and doc["stats"]["starting_balance_usd"] == 2500
    refused = perpwatch(env_bin, *args, "--fee-bps", "3", cwd=tmp_path)
    assert refused.returncode == 2 and "the fixedfee executor has no fee_bps option" in refused.stderr


def test_simulated_run_notifies_the_plugin_notifier_as_the_backtest_fires(
    env_bin: Path, synthetic_data: Path, tmp_path: Path
) -> None:
    """``run --simulate-from`` over the same replay files: the eventfile notifier receives exactly the
    events the backtest fires (the strategy's source name, synthetic, is served from the files)."""
    out, events = tmp_path / "bt.json", tmp_path / "events.txt"
    backtest = perpwatch(env_bin, "backtest", str(TRADING), "--data", str(synthetic_data), "--json", str(out))
    assert backtest.returncode == 0, backtest.stderr
    (tmp_path / "perpwatch.yaml").write_text(
        "state: state.db\n"
        f"sources:\n  synthetic: {{plugin: replay, path: '{synthetic_data}'}}\n"
        f"notifiers:\n  eventfile: {{path: '{events}'}}\n"
    )
    run = perpwatch(
        env_bin,
        "run",
        str(TRADING),
        "--simulate-from",
        "2024-01-01",
        "--simulate-to",
        "2024-04-01",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    # the engine's own alerts (strategy perpwatch: stale data before the files begin) go there too
    lines = [line for line in events.read_text().splitlines() if " perpwatch/" not in line]
    assert lines[0].startswith("2024-01-04T04:00:00Z medium synthetic-trend/enter BTC fired: BTC: close ")
    notified = [(line.split()[0], line.split()[2]) for line in lines]
    fired = json.loads(out.read_text())["events"]
    assert notified == [
        (e["time_iso"], f"{e['strategy']}/{e['rule']}") for e in fired if e["kind"] == "fired"
    ]
