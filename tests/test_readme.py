"""The README's sample sessions are the real output of the commands they show.

The strategy and the test file are taken from the README's YAML blocks; ``broken.yaml`` and
``failing.test.yaml`` are made as the README's text describes them (a word misspelt on a line; the
last expectation changed). Then every ``$ perpwatch validate ...`` and ``$ perpwatch test ...``
of the README's plain code blocks runs, in a subprocess (the installed console script), and its
output must be the lines the README shows under it, exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import console_script

README = Path(__file__).resolve().parent.parent / "README.md"
CHECKED = ("validate", "test")  # the commands whose samples are compared (others need data or time)


def blocks(text: str, lang: str) -> list[str]:
    """The fenced code blocks of ``text`` whose info string is ``lang`` ("" for plain blocks)."""
    out, current, info = [], [], None
    for line in text.split("\n"):
        if info is None and line.startswith("```"):
            info, current = line[3:].strip(), []
        elif info is not None and line.strip() == "```":
            if info == lang:
                out.append("\n".join(current) + "\n")
            info = None
        elif info is not None:
            current.append(line)
    return out


def sessions(text: str) -> list[tuple[str, str]]:
    """Each ``$ perpwatch ...`` line of the plain blocks and the output shown under it."""
    out = []
    for block in blocks(text, ""):
        parts = re.split(r"^\$ (.*)\n", block, flags=re.M)
        for command, shown in zip(parts[1::2], parts[2::2], strict=True):
            out.append((command, shown.rstrip("\n")))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The files the README shows, written as it describes them."""
    text = README.read_text()
    folder = tmp_path_factory.mktemp("readme")
    strategy = next(b for b in blocks(text, "yaml") if re.search(r"^name: funding-heat$", b, re.M))
    test_file = next(b for b in blocks(text, "yaml") if b.startswith("strategy: funding-heat.yaml"))
    (folder / "funding-heat.yaml").write_text(strategy)
    (folder / "funding-heat.test.yaml").write_text(test_file)

    m = re.search(r"`(\S+\.yaml)` is the same\s+file with `(\w+)` misspelt `(\w+)` on line (\d+)", text)
    assert m, "the README says how broken.yaml differs from funding-heat.yaml"
    lines = strategy.split("\n")
    line = int(m[4]) - 1
    assert re.search(rf"\b{m[2]}\b", lines[line]), lines[line]
    lines[line] = re.sub(rf"\b{m[2]}\b", m[3], lines[line], count=1)
    (folder / m[1]).write_text("\n".join(lines))

    m = re.search(
        r"`(\S+\.test\.yaml)` is the test file above with its last expectation changed to\s+`(.+?)`", text
    )
    assert m, "the README says how the failing test file differs from the test file"
    lines = test_file.rstrip("\n").split("\n")
    assert lines[-1].lstrip().startswith("- {at:")
    lines[-1] = lines[-1][: lines[-1].index("-")] + "- " + m[2]
    (folder / m[1]).write_text("\n".join(lines) + "\n")
    return folder


def run(command: str, cwd: Path) -> str:
    argv = shlex.split(command)
    assert argv[0] == "perpwatch"
    proc = subprocess.run(
        [*console_script(), *argv[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PERPWATCH")},
    )
    return (proc.stdout + proc.stderr).rstrip("\n")


def test_the_readme_shows_the_validate_and_test_samples():
    commands = [c for c, _ in sessions(README.read_text())]
    assert "perpwatch validate -v funding-heat.yaml" in commands
    assert "perpwatch validate broken.yaml" in commands
    assert "perpwatch test funding-heat.test.yaml" in commands
    assert "perpwatch test failing.test.yaml" in commands


@pytest.mark.parametrize(
    ("command", "shown"),
    [s for s in sessions(README.read_text()) if s[0].split()[1:2] and s[0].split()[1] in CHECKED],
    ids=lambda v: v if v.startswith("perpwatch") else "",
)
def test_readme_sample_is_the_real_output(command, shown, workdir):
    assert run(command, workdir) == shown
