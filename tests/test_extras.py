"""Optional dependencies named when missing, and ``explain --data`` reading what ``backtest`` reads.

Without pyarrow, every path that reads Parquet (replay files in backtest, run and explain; saved
CoinGlass snapshots) fails at once with one line naming the file and the extra to install, exit 2,
never a "no data" message; without plotly, ``backtest --html`` names its extra. The missing module
is simulated in a child process (``sys.modules[name] = None`` before perpwatch is imported), so
the rest of the suite keeps its modules.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import COINGLASS_REPORT, H, invoke, write_csv

from perpwatch.common.errors import LocatedError
from perpwatch.common.extras import MissingExtra, available, install_hint, require

PARQUET = "reading Parquet files needs pyarrow: pip install 'perpwatch[parquet]'"
REPORT = "--html needs plotly: pip install 'perpwatch[report]'"
START = 1_722_470_400_000  # 2024-08-01T00:00:00Z
STRATEGY = """\
version: 1
name: heat
interval: 1h
symbols: [BTC]
rules:
  - name: up
    when: price.close > 100
"""


def without(*modules: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``perpwatch ARGS`` in a child process in which ``modules`` cannot be imported."""
    hide = "; ".join(f"sys.modules[{m!r}] = None" for m in modules)
    code = f"import sys; {hide}; from perpwatch.cli.main import main; sys.argv[0] = 'perpwatch'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def fake_parquet(path: Path) -> Path:
    """A file with Parquet's magic bytes (never read: the missing module is found first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")
    return path


def one_error_line(proc: subprocess.CompletedProcess[str], where: str, hint: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"{where}: error: {hint}"] if where else lines == [f"error: {hint}"], proc.stderr
    assert "no data" not in proc.stdout + proc.stderr and "price history" not in proc.stderr


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "heat.yaml").write_text(STRATEGY)
    return tmp_path


# -- the helper -----------------------------------------------------------------------------------


def test_require_returns_the_module_when_it_is_there():
    assert require("json", extra="x", purpose="y").dumps([1]) == "[1]"
    assert available("json") and not available("perpwatch_no_such_module")


def test_require_names_the_extra_and_the_place(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtra) as info:
        require("pyarrow", extra="parquet", purpose="reading Parquet files", where="data/BTC_1h.parquet")
    assert info.value.format() == f"data/BTC_1h.parquet: error: {PARQUET}"
    assert (info.value.module, info.value.extra) == ("pyarrow", "parquet")


def test_a_plugin_names_its_own_package():
    with pytest.raises(MissingExtra) as info:
        require(
            "perpwatch_no_such_module", extra="fast", purpose="the fast source", install="perpwatch-fast[all]"
        )
    assert (
        info.value.message
        == "the fast source needs perpwatch_no_such_module: pip install 'perpwatch-fast[all]'"
    )
    assert install_hint("plotly", "report", "--html") == REPORT


def test_an_installed_package_that_fails_to_import_is_not_called_missing(monkeypatch, tmp_path):
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import perpwatch_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LocatedError) as info:
        require("brokenpkg", extra="x", purpose="reading it")
    assert not isinstance(info.value, MissingExtra)
    assert "brokenpkg, which is installed but cannot be imported" in info.value.message


# -- every path that needs pyarrow or plotly -----------------------------------------------------


def test_backtest_of_a_parquet_replay_folder_names_the_extra(folder):
    fake_parquet(folder / "data" / "BTC_1h.parquet")
    proc = without("pyarrow", args=["backtest", "heat.yaml", "--data", "data"], cwd=folder)
    one_error_line(proc, "data/BTC_1h.parquet", PARQUET)


def test_backtest_of_one_parquet_replay_file_names_the_extra(folder):
    fake_parquet(folder / "BTC_1h.parquet")
    proc = without("pyarrow", args=["backtest", "heat.yaml", "--data", "BTC_1h.parquet"], cwd=folder)
    one_error_line(proc, "BTC_1h.parquet", PARQUET)


def test_explain_of_a_parquet_replay_file_names_the_extra(folder):
    fake_parquet(folder / "BTC_1h.parquet")
    args = ["explain", "heat.yaml", "--data", "BTC_1h.parquet", "--at", "2024-08-01T05:00:00Z"]
    one_error_line(without("pyarrow", args=args, cwd=folder), "BTC_1h.parquet", PARQUET)


def test_run_over_parquet_replay_files_names_the_extra_at_start_up(folder):
    data = fake_parquet(folder / "data" / "BTC_1h.parquet").parent
    (folder / "perpwatch.yaml").write_text(
        f"state: {folder / 'state.db'}\nsources:\n  history: {{plugin: replay, path: {data}}}\n"
    )
    (folder / "heat.yaml").write_text(STRATEGY.replace("interval: 1h\n", "interval: 1h\nsource: history\n"))
    args = ["run", "heat.yaml", "--once", "--simulate-from", "2024-08-01T05:00:00Z"]
    proc = without("pyarrow", args=args, cwd=folder)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1] == f"{data / 'BTC_1h.parquet'}: error: {PARQUET}"
    assert "does not provide" not in proc.stderr + proc.stdout  # not taken for missing columns
    assert "Traceback" not in proc.stderr


def test_saved_coinglass_snapshots_name_the_extra(folder):
    fake_parquet(folder / "snap" / "futures" / "market" / "api_price_ohlc_history.parquet")
    proc = without("pyarrow", args=["backtest", "heat.yaml", "--data", "snap"], cwd=folder)
    one_error_line(proc, "snap/futures/market/api_price_ohlc_history.parquet", PARQUET)


def test_backtest_html_names_the_report_extra_before_any_work(folder):
    (folder / "data").mkdir()
    write_csv(folder / "data" / "BTC_1h.csv", _bars(48), START, H)
    args = ["backtest", "heat.yaml", "--data", "data", "--html", "out.html"]
    one_error_line(without("plotly", args=args, cwd=folder), "", REPORT)
    assert not (folder / "out.html").exists()


def test_write_html_itself_names_the_extra(monkeypatch):
    from perpwatch.backtest.html_report import write_html

    monkeypatch.setitem(sys.modules, "plotly", None)
    with pytest.raises(MissingExtra) as info:
        write_html(None, "out.html")  # type: ignore[arg-type]  # fails before the result is read
    assert info.value.message == REPORT


# -- explain --data takes what backtest --data takes ---------------------------------------------


def _bars(n: int) -> dict[str, list[float | None]]:
    closes = [99.0 + i for i in range(n)]
    return {"price.open": closes, "price.high": closes, "price.low": closes, "price.close": closes}


def test_explain_reads_a_replay_folder_and_one_file(folder):
    (folder / "data").mkdir()
    write_csv(folder / "data" / "BTC_1h.csv", _bars(48), START, H)
    for data in ("data", "data/BTC_1h.csv"):
        result = invoke(
            "explain", folder / "heat.yaml", "--data", folder / data, "--at", "2024-08-01T05:00:00Z"
        )
        assert result.exit_code == 0, result.output
        assert "bar 5 (2024-08-01T05:00:00Z), symbol BTC" in result.output
        assert "up: True" in result.output


def test_explain_runs_at_another_interval_like_backtest(folder):
    (folder / "data").mkdir()
    write_csv(folder / "data" / "BTC_4h.csv", _bars(12), START, 4 * H)
    result = invoke(
        "explain",
        folder / "heat.yaml",
        "--data",
        folder / "data",
        "--interval",
        "4h",
        "--at",
        "2024-08-01T08:00:00Z",
    )
    assert result.exit_code == 0, result.output
    assert "bar 2 (2024-08-01T08:00:00Z)" in result.output


NOV, MAY = COINGLASS_REPORT / "20251114", COINGLASS_REPORT / "20250529"


@pytest.mark.skipif(
    not (NOV.is_dir() and MAY.is_dir()), reason=f"no saved CoinGlass responses at {COINGLASS_REPORT}"
)
def test_explain_joins_coinglass_snapshot_folders_as_backtest_does(folder):
    pytest.importorskip("pyarrow")
    args = ["--symbol", "BTC", "--at", "2025-11-01T00:00:00Z"]
    result = invoke("explain", folder / "heat.yaml", "--data", MAY, "--data", NOV, "--interval", "4h", *args)
    assert result.exit_code == 0, result.output
    assert f"data CoinGlass snapshots {MAY} + {NOV}" in result.output
    one = invoke("explain", folder / "heat.yaml", "--data", MAY, *args)
    assert one.exit_code == 2
    assert "no 1h price bars for BTC (its price bars are 4h apart: pass --interval 4h)" in one.output
