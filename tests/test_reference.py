"""docs/reference.md stays true and complete: every registered function is documented (built-ins in
the reference format, checked against the code), the generated sections are current, the metric
table agrees with ``perpwatch metrics``, every key of the schemas is described, the truth tables are
the engine's, its example files validate and pass, and its links resolve."""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from helpers import ROOT, invoke

from perpwatch.api.registry import load_registry
from perpwatch.cli.functions import (
    FIELDS,
    all_functions,
    function_doc,
    lookback_formula,
    returns_of,
    signature_of,
    undocumented,
)
from perpwatch.language.compiler import load_strategy
from perpwatch.language.functions import BUILTINS, and3, not3, or3
from perpwatch.language.metrics import CATALOGUE
from perpwatch.language.schemas import load_schema

DOCS = ROOT / "docs"
REFERENCE = (DOCS / "reference.md").read_text(encoding="utf-8")
NOTES = (DOCS / "language.md").read_text(encoding="utf-8")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plugin(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


PLUGIN = '''
import numpy as np
from perpwatch.api.hookspecs import hookimpl


def spread_ratio(a, b, n=3):
    """spread_ratio(a, b, n=3) -> number

    The ratio of a to b, averaged over the last n bars.

    Unit: none (a ratio).
    Lookback: n - 1 bars.
    Unknown: wherever a or b is unknown in the window, or b is 0.
    Example: spread_ratio(taker.buy_usd, taker.sell_usd, 4) > 1.2
    """
    return np.asarray(a) / np.asarray(b)


def bare(x):
    return np.asarray(x)


@hookimpl
def register_functions(register):
    register("spread_ratio", spread_ratio, windows=(2,))
    register("bare", bare)
'''


# --- every function is documented ----------------------------------------------------------------


def test_every_registered_function_is_documented() -> None:
    specs = all_functions(load_registry().functions)
    assert {s.name for s in specs} >= set(BUILTINS)
    assert undocumented(specs) == [], "add a docstring (docs/reference.md, *Documenting a plugin function*)"


def test_an_undocumented_plugin_function_is_found(tmp_path: Path) -> None:
    reg = load_registry([str(_plugin(tmp_path, "ratios", PLUGIN))], entry_points=False)
    assert undocumented(all_functions(reg.functions)) == ["bare"]
    doc = function_doc(reg.functions["spread_ratio"])
    assert (doc.summary, doc.lookback, doc.origin) == (
        "The ratio of a to b, averaged over the last n bars.",
        "n - 1 bars.",
        "ratios",
    )
    bare = function_doc(reg.functions["bare"])
    assert (bare.documented, bare.signature, bare.lookback) == (False, "bare(x)", "0 bars")


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_docstrings_follow_the_reference_format(name: str) -> None:
    spec = BUILTINS[name]
    doc = function_doc(spec)
    assert doc.doc_signature == f"{signature_of(spec)} -> {returns_of(spec)}", "first line: signature -> kind"
    assert doc.missing_fields == [], f"fields {FIELDS} each on a line of their own"
    assert doc.summary.endswith(".") and len(doc.summary) <= 100, "the first sentence is the summary"


def _bars(formula: str, n: int) -> int:
    """``4n - 1 bars`` (as a docstring writes it) at window ``n``."""
    text = formula.split(" bar")[0]
    assert re.fullmatch(r"[0-9n +\-]+", text), formula
    return int(eval(re.sub(r"(\d+)n", r"\1*n", text), {"n": n}))


@pytest.mark.parametrize("name", list(BUILTINS))
def test_documented_lookback_is_the_code_s(name: str) -> None:
    spec = BUILTINS[name]
    documented = function_doc(spec).lookback
    assert documented.rstrip(".") == lookback_formula(spec)
    for n in (1, 2, 5, 24):
        windows = [n] * len(spec.windows)
        assert _bars(documented, n) == spec.bars_back(windows), f"{name} at window {n}"


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_examples_compile(name: str) -> None:
    example = function_doc(BUILTINS[name]).example
    text = f"version: 1\nname: t\nlet:\n  example: {json.dumps(example)}\nrules:\n  - {{name: r, when: 'True'}}\n"
    strategy = load_strategy("example.yaml", text=text)
    assert name in {n.data[0] for n in strategy.plan.nodes if n.op == "call"}


# --- the command ---------------------------------------------------------------------------------


def test_functions_lists_builtins_and_plugin_functions(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path, "ratios", PLUGIN)
    result = invoke("--plugin", plugin, "functions")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(BUILTINS) + 2
    assert re.match(r"^ema\(x, n\)\s+4n - 1 bars\s+perpwatch\s+Exponential moving average", lines[4])
    assert re.search(
        r"^spread_ratio\(a, b, n=3\)\s+n - 1 bars\s+ratios\s+The ratio of a to b", result.output, re.M
    )
    assert re.search(r"^bare\(x\)\s+0 bars\s+ratios\s+\(undocumented\)$", result.output, re.M)


def test_functions_json_and_one_entry(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path, "ratios", PLUGIN)
    rows = json.loads(invoke("--plugin", plugin, "functions", "--json").output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["zscore"]["unit"] == "standard deviations (no unit)."
    assert by_name["zscore"]["windows"] == ["n"] and by_name["zscore"]["origin"] == "perpwatch"
    assert by_name["spread_ratio"]["origin"] == "ratios" and by_name["spread_ratio"]["windows"] == ["n"]
    assert by_name["bare"]["documented"] is False
    entry = invoke("--plugin", plugin, "functions", "bars_since", "bare").output
    assert entry.startswith("bars_since(c, n) -> number    [built-in]")
    assert "  Unknown:  until n bars exist" in entry
    assert "bare(x) -> number    [plugin ratios]\n\n  (no documentation)" in entry


def test_functions_markdown_marks_plugin_functions(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path, "ratios", PLUGIN)
    out = invoke("--plugin", plugin, "functions", "--markdown").output
    assert "### spread_ratio\n\n`spread_ratio(a, b, n=3)` → number (plugin `ratios`)" in out
    assert out.count("\n### ") == len(BUILTINS) + 2


def test_functions_unknown_name_is_bad_input() -> None:
    result = invoke("functions", "zscor")
    assert result.exit_code == 2
    assert "error: no function 'zscor' (did you mean: zscore?)" in result.output


# --- the reference is current and complete -------------------------------------------------------


def test_generated_sections_are_current() -> None:
    gen = _generator()
    for name, make in gen.BLOCKS.items():
        assert gen.current(REFERENCE, name) == "\n" + make() + "\n", (
            f"docs/reference.md: the generated {name} section is out of date; run python docs/gen_reference.py"
        )


def test_the_generator_finds_a_stale_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _generator()
    stale = tmp_path / "reference.md"
    stale.write_text(REFERENCE.replace("| `oi.close` |", "| `oi.closed` |"), encoding="utf-8")
    monkeypatch.setattr(gen, "REFERENCE", stale)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == REFERENCE


def _metric_rows() -> dict[str, tuple[str, str]]:
    block = _generator().current(REFERENCE, "metrics") or ""
    return {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^\| `([\w.]+)` \| ([^|]+) \| [^|]+ \| ([^|]+) \|", block, re.M)
    }


def test_metric_table_agrees_with_perpwatch_metrics() -> None:
    result = invoke("metrics", "--json")
    assert result.exit_code == 0, result.output
    listed = {m["name"]: m for m in json.loads(result.output)}
    builtin_sources = {"binance", "coinglass", "replay"}
    ours = {n for n, m in listed.items() if n in CATALOGUE or builtin_sources & set(m["sources"])}
    rows = _metric_rows()
    assert ours - set(rows) == set(), "metrics missing from docs/reference.md's table"
    assert set(rows) - ours == set(), (
        "docs/reference.md's table names metrics perpwatch metrics does not list"
    )
    for name, (unit, meaning) in rows.items():
        assert (unit, meaning) == (listed[name]["unit"], listed[name]["meaning"]), name


def _schema_keys(node: object) -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                keys |= set(value)
            keys |= _schema_keys(value)
    elif isinstance(node, list):
        for item in node:
            keys |= _schema_keys(item)
    return keys


@pytest.mark.parametrize("schema", ["strategy", "strategy-test"])
def test_every_key_of_the_schemas_is_in_the_reference(schema: str) -> None:
    keys = _schema_keys(load_schema(schema))
    assert len(keys) > 10
    missing = sorted(k for k in keys if not re.search(rf"\| `{re.escape(k)}`", REFERENCE))
    assert missing == [], f"keys of {schema}.schema.json without a row in docs/reference.md"


def _truth_table(header: str) -> dict[tuple[str, str], str]:
    """The table whose first cell is ``header``: (row label, column label) -> cell."""
    lines = REFERENCE.split(f"\n| {header} |", 1)[1].split("\n\n", 1)[0].splitlines()

    def cells(line: str) -> list[str]:
        return [c.strip().strip("*") for c in line.strip().strip("|").split("|")]

    columns = [c.removeprefix("b = ") for c in cells(lines[0])]
    table = {}
    for line in lines[2:]:
        row, *values = cells(line)
        for col, value in zip(columns, values, strict=True):
            table[(row.removeprefix("a = "), col)] = value
    return table


def test_the_truth_tables_are_the_engine_s() -> None:
    value = {"True": 1.0, "False": 0.0, "unknown": np.nan}

    def name(x: float) -> str:
        return "unknown" if np.isnan(x) else ("True" if x == 1.0 else "False")

    for header, op in (("`a and b`", and3), ("`a or b`", or3)):
        table = _truth_table(header)
        assert len(table) == 9, header
        for (a, b), shown in table.items():
            assert shown == name(float(op(np.array([value[a]]), np.array([value[b]]))[0])), (header, a, b)
    table = _truth_table("`not a`")
    assert len(table) == 3
    for (a, _), shown in table.items():
        assert shown == name(float(not3(np.array([value[a]]))[0]))


def test_the_reference_s_example_files_validate_and_pass(tmp_path: Path) -> None:
    files = {}
    for block in re.findall(r"```yaml\n(.*?)```", REFERENCE, re.S):
        m = re.match(r"# ([\w.-]+\.yaml)\n", block)
        if m:
            files[m.group(1)] = block
    assert {"short-squeeze.yaml", "funding-heat.yaml", "funding-heat.test.yaml"} <= set(files)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for name in files:
        path = tmp_path / name
        if name.endswith(".test.yaml"):
            result = invoke("test", path)
            assert result.exit_code == 0, result.output
            assert "1 passed, 0 failed" in result.output
        else:
            result = invoke("validate", path)
            assert result.exit_code == 0, result.output


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', '-1' for a repeat."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def test_links_between_the_reference_and_the_notes_resolve() -> None:
    anchors = _anchors(REFERENCE)
    internal = set(re.findall(r"\]\(#([\w-]+)\)", REFERENCE))
    from_notes = set(re.findall(r"\]\(reference\.md#([\w-]+)\)", NOTES))
    assert internal and from_notes
    assert internal - anchors == set()
    assert from_notes - anchors == set()
    assert "](language.md)" in REFERENCE and "](reference.md)" in NOTES
    assert "`docs/reference.md`" in (ROOT / "README.md").read_text(encoding="utf-8")
