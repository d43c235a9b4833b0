"""mypy over engine/ and plugins/ as the package they install as (``perpwatch``, ``perpwatch.plugins``).

The repository keeps the folder names the user asked for, so mypy cannot map ``engine/`` to
``perpwatch`` by itself (and the editable install's import hook is invisible to it). This builds a
tree of symlinks, ``perpwatch/ -> engine/*`` and ``perpwatch/plugins -> plugins/``, in a temporary
folder, runs ``mypy -p perpwatch`` there with the settings in pyproject.toml, and prints the
errors with the repository's own paths. Usage: ``python .ci/typecheck.py`` (exit status: mypy's).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="perpwatch-mypy-") as tmp:
        tree = Path(tmp) / "perpwatch"
        tree.mkdir()
        for entry in (ROOT / "engine").iterdir():
            if entry.name != "__pycache__":
                (tree / entry.name).symlink_to(entry)
        (tree / "plugins").symlink_to(ROOT / "plugins")
        env = {**os.environ, "MYPYPATH": tmp}
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "perpwatch"]
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        for line in (done.stdout + done.stderr).splitlines():
            line = (
                line.replace("perpwatch/plugins/", "plugins/", 1)
                if line.startswith("perpwatch/plugins/")
                else line
            )
            print(line.replace("perpwatch/", "engine/", 1) if line.startswith("perpwatch/") else line)
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
