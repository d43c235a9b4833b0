"""The YAML loader's limits: the file size (refused, never truncated), alias expansion (counted
apart from plain nodes), nesting; for strategies, test files and the config alike, with both of
PyYAML's parsers (libyaml when installed, PyYAML's own otherwise)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from helpers import invoke

from perpwatch.common.errors import ErrorList, LocatedError
from perpwatch.language import yamlsrc
from perpwatch.language.compiler import load_strategy
from perpwatch.language.yamlsrc import MAX_ALIAS_NODES, MAX_BYTES, load_yaml, load_yaml_file
from perpwatch.live.config import load_config
from perpwatch.testing.testfile import run_test_file

HERE = Path(__file__).resolve().parent
GOOD = """\
version: 1
name: big
rules:
  - name: fine
    when: price.close > 1
"""
#: An invalid rule: a file that loses its tail would not see it.
BAD_TAIL = """\
  - name: broken
    when: price.close >
"""


@pytest.fixture(params=["default", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test once with the loader perpwatch picks and once with PyYAML's pure-Python parser."""
    if request.param == "python":
        monkeypatch.setattr(yamlsrc, "_Loader", yamlsrc.loader_class(yaml.SafeLoader))
    return request.param


def padded(size: int, filler: str = "é") -> str:
    """GOOD + a comment of ``filler`` + BAD_TAIL, ``size`` bytes in UTF-8 (at least)."""
    head, tail = GOOD + "# ", "\n" + BAD_TAIL
    room = size - len((head + tail).encode())
    per = len(filler.encode())
    text = head + filler * (room // per) + "x" * (room % per) + tail
    assert len(text.encode()) == size
    return text


def errors(excinfo: pytest.ExceptionInfo) -> list[LocatedError]:
    e = excinfo.value
    return list(e.errors) if isinstance(e, ErrorList) else [e]


# --- the file size --------------------------------------------------------------------------------


def test_a_file_over_the_limit_in_bytes_but_not_in_characters_is_refused(tmp_path: Path, parser: str) -> None:
    """The reported case: 2 MB of text in fewer characters validated ok with its tail dropped."""
    text = padded(MAX_BYTES + 500_000)
    assert len(text) < MAX_BYTES  # two bytes a character: under the limit counted in characters
    path = tmp_path / "big.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LocatedError) as info:
        load_strategy(str(path))
    assert f"file larger than {MAX_BYTES} bytes" in info.value.message
    result = invoke("validate", path)
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"file larger than {MAX_BYTES} bytes" in line and line.startswith(f"{path}:")


@pytest.mark.parametrize("filler", ["é", "x", "€"])
def test_the_limit_is_exact_in_bytes(tmp_path: Path, filler: str, parser: str) -> None:
    path = tmp_path / "s.yaml"
    text = padded(MAX_BYTES, filler)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ErrorList) as info:  # loads whole: the invalid rule at the very end is found
        load_strategy(str(path))
    (err,) = errors(info)
    assert err.loc.line == text.count("\n") and "syntax error" in err.message
    path.write_text(padded(MAX_BYTES + 1, filler), encoding="utf-8")
    with pytest.raises(LocatedError, match=f"file larger than {MAX_BYTES} bytes"):
        load_strategy(str(path))


def test_text_given_as_a_string_is_measured_in_bytes_too() -> None:
    text = padded(MAX_BYTES + 10)
    with pytest.raises(LocatedError, match="file larger than"):
        load_yaml(text, "s.yaml")
    with pytest.raises(LocatedError, match="file larger than"):
        load_strategy("s.yaml", text=text)


def test_the_error_points_where_the_limit_is_crossed() -> None:
    line = "# " + "é" * 99 + "\n"  # 201 bytes, 102 characters
    text = line * (MAX_BYTES // len(line.encode()) + 1)
    with pytest.raises(LocatedError) as info:
        load_yaml(text.encode(), "s.yaml")
    loc = info.value.loc
    full_lines = MAX_BYTES // len(line.encode())
    assert loc.line == full_lines + 1
    rest = MAX_BYTES - full_lines * len(line.encode())  # bytes into the line: "# " then é's
    assert loc.col == 3 + (rest - 2) // 2


def test_only_one_byte_more_than_the_limit_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (3 * MAX_BYTES))
    sizes: list[int] = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n: int = -1) -> bytes:
            sizes.append(n)
            return self.f.read(n)

    monkeypatch.setattr(yamlsrc, "open", lambda p, mode="r": Spy(real_open(p, mode)), raising=False)
    with pytest.raises(LocatedError, match="file larger than"):
        load_yaml_file(str(path))
    assert sizes == [MAX_BYTES + 1]


def test_oversize_test_files_and_configs_are_refused_too(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(GOOD)
    test_file = tmp_path / "s.test.yaml"
    test_file.write_text(
        "strategy: s.yaml\ntests:\n  - name: t\n    series: {price.close: '1 2'}\n    expect: [{at: 1}]\n"
        + "# "
        + "é" * MAX_BYTES
        + "\n  - name: broken\n"
    )
    with pytest.raises(LocatedError, match="file larger than"):
        run_test_file(str(test_file))
    result = invoke("test", test_file)
    assert result.exit_code == 2 and "file larger than" in result.stderr
    config = tmp_path / "perpwatch.yaml"
    config.write_text("symbols: [BTC]\n# " + "é" * MAX_BYTES + "\nstate: ''\n")
    with pytest.raises(LocatedError, match="file larger than"):
        load_config(str(config))


# --- nodes and aliases ----------------------------------------------------------------------------


def many_rules(n: int) -> str:
    return "version: 1\nname: big\nrules:\n" + "".join(
        f"  - name: r{i}\n    when: price.close > {i}\n" for i in range(n)
    )


def test_a_large_plain_strategy_under_the_byte_limit_loads(tmp_path: Path) -> None:
    """More than the 50,000 nodes the old limit allowed in all (an 'alias bomb?' before)."""
    path = tmp_path / "big.yaml"
    path.write_text(many_rules(10_500))  # 52,504 nodes, about 470 kB
    strategy = load_strategy(str(path))
    assert len(strategy.rules) == 10_500
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output[:500]


def test_plain_nodes_are_bounded_by_the_file_size_alone(parser: str) -> None:
    n = 300_000
    doc = load_yaml("a: [" + ",".join(["1"] * n) + "]\n", "flat.yaml")
    assert len(doc["a"]) == n


def count_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the builder's node visits (the work done), from now on."""
    calls = [0]
    real = yamlsrc._Builder.build

    def build(self, node, depth):
        calls[0] += 1
        return real(self, node, depth)

    monkeypatch.setattr(yamlsrc._Builder, "build", build)
    return calls


def test_a_billion_laughs_is_refused_after_bounded_work(monkeypatch: pytest.MonkeyPatch, parser: str) -> None:
    calls = count_builds(monkeypatch)
    path = HERE / "malformed" / "yaml_billion_laughs.yaml"
    start = time.process_time()
    with pytest.raises(LocatedError) as info:
        load_yaml_file(str(path))
    assert "alias bomb" in info.value.message and str(MAX_ALIAS_NODES) in info.value.message
    assert info.value.loc.line > 1
    assert calls[0] <= MAX_ALIAS_NODES + 200  # the expansions allowed and the file's own nodes
    assert time.process_time() - start < 5  # CPU seconds; 9^9 nodes would take hours


@pytest.mark.parametrize("copies", [60, 2_000])
def test_one_large_anchor_repeated_is_refused_past_the_alias_limit(copies: int, parser: str) -> None:
    items = ", ".join(str(i) for i in range(2_000))
    text = f"a: &big [{items}]\nb: [" + ", ".join(["*big"] * copies) + "]\n"
    expanded = copies * 2_001
    if expanded <= MAX_ALIAS_NODES:
        doc = load_yaml(text, "a.yaml")
        assert len(doc["b"]) == copies and doc["b"][-1] == doc["a"]
        assert doc["b"][0] is not doc["a"]  # copies: a change to one never shows in another
    else:
        with pytest.raises(LocatedError, match="alias bomb"):
            load_yaml(text, "a.yaml")


def test_alias_expansions_are_counted_apart_from_plain_nodes() -> None:
    plain = ", ".join(["1"] * 150_000)  # far more plain nodes than aliases may add
    aliased = ", ".join(["*x"] * (MAX_ALIAS_NODES - 10))
    doc = load_yaml(f"a: [{plain}]\nx: &x 7\nb: [{aliased}]\n", "mixed.yaml")
    assert len(doc["a"]) == 150_000 and len(doc["b"]) == MAX_ALIAS_NODES - 10
    with pytest.raises(LocatedError, match="alias bomb"):
        load_yaml(f"x: &x 7\nb: [{aliased}, *x, *x, *x, *x, *x, *x, *x, *x, *x, *x, *x]\n", "mixed.yaml")


def test_a_recursive_alias_is_an_error_not_a_hang(parser: str) -> None:
    with pytest.raises(LocatedError, match="nested more than"):
        load_yaml("a: &a [1, *a]\n", "r.yaml")


def test_the_bundled_test_files_with_anchors_still_load() -> None:
    path = HERE.parent / "strategies" / "tests" / "derivatives-state.test.yaml"
    assert "*up" in path.read_text()
    doc = load_yaml_file(str(path))
    assert doc["tests"][1]["series"]["oi.close"] == doc["tests"][0]["series"]["oi.close"]


def test_deep_nesting_is_refused_before_the_composer_recurses(parser: str) -> None:
    with pytest.raises(LocatedError, match="nested more than 64 levels"):
        load_yaml("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "deep.yaml")
    assert load_yaml("a: " + "[" * 60 + "1" + "]" * 60 + "\n", "ok.yaml") is not None
