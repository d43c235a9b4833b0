"""The malformed-input corpus: ``perpwatch validate`` on each file of ``tests/malformed/``.

Every file is a small strategy with exactly one problem; its first line is ``# expect: <text>``.
For each one, ``perpwatch validate`` (the installed console script, in a subprocess) must exit 2
and print exactly one line, ``file:line:col: error: ...`` with a real location, containing the
expected text, with no traceback, and it must not take longer than one second beyond the
interpreter start-up (the child's CPU time, measured against validating a good file).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import console_script

from perpwatch.common.errors import ErrorList, LocatedError
from perpwatch.language.compiler import load_strategy

HERE = Path(__file__).resolve().parent
CORPUS_DIR = HERE / "malformed"
CORPUS = sorted(CORPUS_DIR.glob("*.yaml"))
LINE = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.+)$")
EXTRA_SECONDS = 1.0

VALID = """\
version: 1
name: fine
params:
  window: 24
let:
  funding_z: zscore(funding.close, window)
  state:
    cases:
      - when: funding_z > 2
        then: HOT
    else: CALM
rules:
  - name: hot
    when:
      all:
        - state == "HOT"
        - pct_change(oi.close, 1) > 0
    message: "{symbol}: funding z {funding_z:.1f}"
"""


def validate(name: str, cwd: Path) -> tuple[int, str, str, float]:
    """Run ``perpwatch validate name``; return exit code, stdout, stderr and the child's CPU seconds.

    CPU time (user + system, from ``wait4``) rather than wall time: the suite runs on shared,
    busy machines, and what matters is the work perpwatch does (an exponent or alias bomb shows
    up there), not how long it waited for a core.
    """
    proc = subprocess.Popen(
        [*console_script(), "validate", name],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("PERPWATCH")},
    )
    timer = threading.Timer(60, proc.kill)
    timer.start()
    try:
        out, err = proc.stdout.read(), proc.stderr.read()  # a few lines each: no pipe can fill up
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    return proc.returncode, out.decode(), err.decode(), usage.ru_utime + usage.ru_stime


def expected_text(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{path.name}: the first line must be '# expect: <text>'"
    return first[len("# expect: ") :].strip()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> float:
    """CPU seconds to validate a good file: interpreter start-up, imports, plugin discovery."""
    folder = tmp_path_factory.mktemp("valid")
    (folder / "fine.yaml").write_text(VALID)
    runs = []
    for _ in range(3):
        code, out, err, seconds = validate("fine.yaml", folder)
        assert code == 0, err
        assert out.startswith("fine.yaml: ok (1 rules, 2 lets)"), out
        runs.append(seconds)
    return min(runs)


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[int, str, str, float]]:
    """Every corpus file validated in its own subprocess, a few at a time (CPU time is per child)."""
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        done = pool.map(lambda p: validate(p.name, CORPUS_DIR), CORPUS)
        return {p.name: r for p, r in zip(CORPUS, done, strict=True)}


def test_corpus_is_large_and_well_formed():
    assert len(CORPUS) >= 45
    for path in CORPUS:
        assert expected_text(path), path.name


def test_corpus_covers_the_attack_classes():
    names = {p.stem for p in CORPUS}
    for wanted in [
        "yaml_python_tag",
        "yaml_billion_laughs",
        "nul_byte",
        "yaml_empty_file",
        "yaml_top_level_list",
        "dunder_import",
        "dunder_class_of_tuple",
        "lambda",
        "list_comprehension",
        "generator_expression",
        "walrus",
        "fstring",
        "huge_exponent",
        "power_tower",
        "string_bomb",
        "deep_parentheses",
        "long_sum",
        "template_dunder",
        "template_index",
        "template_conversion",
        "multiple_statements",
        "assignment",
    ]:
        assert wanted in names


def test_nul_byte_file_really_holds_a_nul_byte():
    assert b"\x00" in (CORPUS_DIR / "nul_byte.yaml").read_bytes()


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_validate_reports_one_located_error(path, results, baseline):
    code, out, err, seconds = results[path.name]
    assert "Traceback" not in out + err
    assert code == 2, f"exit {code}; stdout {out!r}; stderr {err!r}"
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one error line, got:\n{err}"
    m = LINE.match(lines[0])
    assert m, f"not 'file:line:col: error: ...': {lines[0]!r}"
    assert m["file"] == path.name
    assert int(m["line"]) > 0 and int(m["col"]) > 0
    assert int(m["line"]) <= path.read_bytes().count(b"\n") + 1
    assert expected_text(path) in m["msg"]
    if seconds - baseline >= EXTRA_SECONDS:  # time it once more, on its own
        seconds = min(seconds, validate(path.name, CORPUS_DIR)[3])
    assert seconds - baseline < EXTRA_SECONDS, f"{seconds:.2f} CPU s against a {baseline:.2f} CPU s baseline"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_in_process_error_is_fast_and_the_same(path, results):
    """The same error from the library call, and the time spent in perpwatch itself (< 1 s)."""
    start = time.process_time()  # CPU time, as for the subprocess: a busy machine does not count
    with pytest.raises((ErrorList, LocatedError)) as info:
        load_strategy(str(path))
    assert time.process_time() - start < EXTRA_SECONDS
    errors = info.value.errors if isinstance(info.value, ErrorList) else [info.value]
    assert len(errors) == 1
    _, _, err, _ = results[path.name]
    assert errors[0].format().replace(str(path), path.name) == err.strip()
