"""The bundled strategy library: every strategy validates, its strategy tests pass, and each one
has a test file and a commented param block (issue 6)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, console_script

STRATEGIES = sorted((ROOT / "strategies").glob("*.yaml"))
TESTS = sorted((ROOT / "strategies" / "tests").glob("*.test.yaml"))
EXPECTED = {
    "trend-confirmation",
    "short-squeeze",
    "long-squeeze-filter",
    "funding-arbitrage",
    "risk-off",
    "derivatives-state",
    "derivatives-monitor",
    "etf-flow-confirmation",
    "liquidity-guard",
}


def perpwatch(*args: str) -> subprocess.CompletedProcess:
    """Run the installed ``perpwatch`` command (the console script next to this interpreter)."""
    return subprocess.run([*console_script(), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_library_is_complete():
    assert {p.stem for p in STRATEGIES} == EXPECTED
    assert {p.name.removesuffix(".test.yaml") for p in TESTS} == EXPECTED


def test_validate_passes():
    result = perpwatch("validate", *map(str, STRATEGIES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_strategy_tests_pass():
    result = perpwatch("test", *map(str, TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


@pytest.mark.parametrize("path", STRATEGIES, ids=lambda p: p.stem)
def test_every_param_is_commented(path: Path):
    """Each threshold and window in ``params:`` carries a comment saying what it is and its unit."""
    lines = path.read_text().splitlines()
    start = lines.index("params:")
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line)
    assert block, f"{path.name}: empty params block"
    for line in block:
        assert re.match(r"^  [A-Za-z_]\w*: \S+\s+# \S", line), (
            f"{path.name}: param without a comment: {line!r}"
        )


@pytest.mark.parametrize("path", STRATEGIES, ids=lambda p: p.stem)
def test_missing_data_never_fires_is_tested(path: Path):
    """Each test file has a case named for missing data (the issue's 'missing data never reads as calm')."""
    text = (ROOT / "strategies" / "tests" / f"{path.stem}.test.yaml").read_text()
    assert re.search(r"name: .*missing", text), f"{path.stem}: no missing-data case"
