"""The architecture, enforced from the imports: lower layers never import higher ones, the engine
never imports a plugin, every engine package ships in the wheel, and docs/architecture.md names
every module that exists (and none that does not)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
from helpers import ROOT

ENGINE = ROOT / "engine"

#: Engine packages from the bottom up: a module may import its own package or a lower one.
LAYERS = ["common", "language", "evaluation", "api", "testing", "live", "web", "backtest", "research", "cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def engine_modules() -> list[Path]:
    return sorted(p for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ENGINE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["perpwatch", *parts])


def imported(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, function-level ones included."""
    source = path.read_text(encoding="utf-8") if text is None else text
    tree = ast.parse(source, filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out.extend((node.lineno, f"{mod}.{alias.name}") for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.append((node.lineno, node.args[0].value))
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "perpwatch" and parts[1] in RANK else None


def test_every_engine_package_has_a_layer() -> None:
    packages = {p.parent.name for p in ENGINE.glob("*/__init__.py")}
    assert packages == set(LAYERS), f"packages without a layer: {packages - set(LAYERS)}"
    top = {p.stem for p in ENGINE.glob("*.py")}
    assert top == {"__init__"}, f"modules outside a layer package: {sorted(top - {'__init__'})}"


def test_lower_layers_never_import_higher_ones() -> None:
    problems = []
    for path in engine_modules():
        own = layer_of(module_name(path))
        if own is None:
            continue
        for line, mod in imported(path):
            other = layer_of(mod)
            if other is not None and RANK[other] > RANK[own]:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {mod} ({other} is higher)")
    assert not problems, "\n".join(problems)


def test_the_engine_never_imports_a_plugin() -> None:
    problems = []
    for path in engine_modules():
        for line, mod in imported(path):
            if mod == "perpwatch.plugins" or mod.startswith("perpwatch.plugins."):
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {mod}")
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"""["']perpwatch\.plugins\b""", text):
            problems.append(
                f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: names {m.group()}"
            )
    assert not problems, "\n".join(problems)


def test_the_checker_resolves_relative_and_dynamic_imports() -> None:
    """The scan itself: relative imports of a higher layer or of the plugins, and import_module()."""
    text = (
        "from ..live.state import StateStore\n"
        "def f():\n    from ..plugins import replay\n"
        "    importlib.import_module('perpwatch.plugins.paper')\n"
        "from . import expr\n"
    )
    mods = [m for _, m in imported(ENGINE / "language" / "fake.py", text)]
    assert "perpwatch.live.state" in mods
    assert "perpwatch.plugins.replay" in mods
    assert "perpwatch.plugins.paper" in mods
    assert "perpwatch.language.expr" in mods


def test_every_engine_package_ships_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {module_name(p) for p in ENGINE.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"


@pytest.fixture(scope="module")
def architecture() -> str:
    return (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_the_architecture_doc_names_every_module(architecture: str) -> None:
    listed = set(re.findall(r"`((?:engine|plugins)/[\w/]+\.py)`", architecture))
    actual = {str(p.relative_to(ROOT)) for p in engine_modules() if p.name != "__init__.py"}
    actual |= {str(p.relative_to(ROOT)) for p in (ROOT / "plugins").glob("*.py") if p.name != "__init__.py"}
    assert actual - listed == set(), f"modules missing from docs/architecture.md: {sorted(actual - listed)}"
    assert listed - actual == set(), (
        f"docs/architecture.md names modules that do not exist: {sorted(listed - actual)}"
    )
