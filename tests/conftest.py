"""Shared test set-up: the guard that the code under test is this checkout, ``tests/`` on
``sys.path`` (for ``helpers`` and ``fakes``), and a state-database fixture. Plain shared
constants and functions are in ``helpers.py``.

Nothing from perpwatch is imported at module level, so a missing or foreign install gets the
guard's message rather than an import error.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from perpwatch.live.state import StateStore

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
INSTALL = 'pip install -e ".[test]"'

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def checkout_problem() -> str | None:
    """Why the importable ``perpwatch`` is not this checkout's code, or None when it is."""
    expected = {"perpwatch": ROOT / "engine", "perpwatch.plugins": ROOT / "plugins"}
    for name, folder in expected.items():
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:
            spec = None
        if spec is None or spec.origin is None:
            return f"{name} cannot be imported by {sys.executable}: it is not installed."
        origin = Path(spec.origin).resolve()
        if not origin.is_relative_to(folder):
            return (
                f"{name} is imported from {origin}, not from this checkout ({folder}): the tests "
                "would test that copy (a non-editable install, or another checkout), not this code."
            )
    return None


def pytest_configure(config: pytest.Config) -> None:
    # the user's own config (PERPWATCH_CONFIG, ~/.config/perpwatch/perpwatch.yaml) never reaches a
    # test or the commands it starts: an empty config folder of the session's own
    os.environ.pop("PERPWATCH_CONFIG", None)
    os.environ["XDG_CONFIG_HOME"] = config_home = tempfile.mkdtemp(prefix="perpwatch-test-config-")
    config.add_cleanup(lambda: shutil.rmtree(config_home, ignore_errors=True))
    problem = checkout_problem()
    if problem:
        raise pytest.UsageError(
            f"{problem}\nInstall this checkout in editable mode with its test extra, then run the tests "
            f"again:\n    cd {ROOT} && {INSTALL}"
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    """A state database in the test's temporary folder (``state.db``), closed afterwards."""
    from perpwatch.live.state import StateStore

    s = StateStore(str(tmp_path / "state.db"))
    yield s
    s.close()
