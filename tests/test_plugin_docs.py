"""docs/plugins.md tells the truth: every import it shows works, its tables of names say where each
name lives, the contract's every name is listed, the complete notifier and executor it shows are the
example plugin's real files, and every helper for plugin tests is documented."""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import pytest
from helpers import ROOT

DOC = ROOT / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def code_blocks(language: str = "python") -> list[str]:
    return [m.group(2) for m in FENCE.finditer(DOC.read_text(encoding="utf-8")) if m.group(1) == language]


def perpwatch_imports() -> list[str]:
    """Every ``from perpwatch... import ...`` / ``import perpwatch...`` statement of the doc's Python."""
    statements = []
    for block in code_blocks():
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            if re.match(r"(from perpwatch(\.\w+)* import |import perpwatch\b)", line):
                statement = line
                while statement.count("(") > statement.count(")"):
                    i += 1
                    statement += " " + lines[i].strip()
                statements.append(statement)
            i += 1
    return statements


def table_rows(header: str) -> list[tuple[list[str], str]]:
    """(names, module) of each row of the table whose header row starts with ``header``."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(header)
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((re.findall(r"`(\w+)`", cells[0]), cells[1].strip("`")))
    return rows


def test_the_doc_shows_imports() -> None:
    statements = perpwatch_imports()
    assert len(statements) >= 10, statements
    assert any("perpwatch.api.interfaces import" in s for s in statements)
    assert any("perpwatch.testing.plugins import" in s for s in statements)


@pytest.mark.parametrize("statement", perpwatch_imports())
def test_every_import_shown_works(statement: str) -> None:
    ast.parse(statement)
    exec(statement, {})  # an ImportError names the name or module that moved


def test_the_tables_say_where_each_name_lives() -> None:
    contract = table_rows("| names | defined in | what |")
    helpers = table_rows("| names | from | what |")
    assert contract and helpers
    interfaces = importlib.import_module("perpwatch.api.interfaces")
    for names, module in contract:
        assert module.startswith("perpwatch."), module
        mod = importlib.import_module(module)
        for name in names:
            assert getattr(mod, name) is getattr(interfaces, name), f"{name} from {module}"
    for names, module in helpers:
        mod = importlib.import_module(module)
        for name in names:
            assert hasattr(mod, name), f"{name} is not in {module}"
    listed = {name for names, _ in contract for name in names}
    assert set(interfaces.__all__) == listed, "perpwatch.api.interfaces and the doc's table differ"


@pytest.mark.parametrize("name", ["notifier.py", "executor.py"])
def test_the_complete_notifier_and_executor_are_the_real_files(name: str) -> None:
    path = f"examples/perpwatch-example-plugin/src/perpwatch_example/{name}"
    shown = [b for b in code_blocks() if b.startswith(f"# file: {path}\n")]
    assert len(shown) == 1, f"docs/plugins.md shows {path} {len(shown)} times"
    assert shown[0].split("\n", 1)[1] == (ROOT / path).read_text(encoding="utf-8")


def test_every_file_shown_whole_is_the_real_file() -> None:
    for block in code_blocks():
        first, _, body = block.partition("\n")
        if first.startswith("# file: "):
            assert body == (ROOT / first.removeprefix("# file: ")).read_text(encoding="utf-8"), first


def test_every_testing_helper_is_documented() -> None:
    module = importlib.import_module("perpwatch.testing.plugins")
    public = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    }
    assert {"make_context", "frame_from_rows", "deliver", "check_plugin_class"} <= public
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(name for name in public if f"`{name}" not in text)
    assert not missing, f"not in docs/plugins.md: {missing}"


def test_the_example_tests_use_the_helpers() -> None:
    tests = (ROOT / "examples/perpwatch-example-plugin/tests/test_synthetic.py").read_text(encoding="utf-8")
    for name in ("make_context", "fetch", "deliver", "check_plugin_class", "check_causal", "load_plugin"):
        assert re.search(rf"\b{name}\(", tests), name
