"""YAML with a location for every node.

``yaml.safe_load`` semantics (no Python tags), plus: duplicate keys are errors, mapping keys are
text, only true/false are booleans (YAML 1.2: ``yes``/``no``/``on``/``off`` stay text), alias expansion
and nesting depth are capped (alias bombs and pathological nesting fail fast), NUL bytes are
refused, and timestamps stay strings. Mappings load as :class:`LDict` and sequences as
:class:`LList`, which remember where each key and item stood.
"""

from __future__ import annotations

from typing import Any

import yaml

from perpwatch.common.errors import Loc, LocatedError

MAX_NODES = 50_000  # nodes after alias expansion
MAX_DEPTH = 64
MAX_BYTES = 2_000_000

_BOOLS = {"true", "True", "TRUE", "false", "False", "FALSE"}  # YAML 1.2's booleans
_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}


class LDict(dict):
    """A mapping that knows where it, each key and each value stood."""

    loc: Loc
    key_locs: dict[Any, Loc]
    val_locs: dict[Any, Loc]

    def key_loc(self, key: Any) -> Loc:
        return self.key_locs.get(key, self.loc)

    def val_loc(self, key: Any) -> Loc:
        return self.val_locs.get(key, self.loc)


class LList(list):
    """A sequence that knows where it and each item stood."""

    loc: Loc
    locs: list[Loc]

    def item_loc(self, i: int) -> Loc:
        return self.locs[i] if 0 <= i < len(self.locs) else self.loc


def _loc(file: str, node: yaml.Node) -> Loc:
    m = node.start_mark
    col = m.column + 1
    if isinstance(node, yaml.ScalarNode) and node.style in ("'", '"'):
        col += 1  # point at the text, after the opening quote
    return Loc(file, m.line + 1, col)


def load_yaml(text: str | bytes, file: str) -> Any:
    """Parse one YAML document into plain values, LDicts and LLists; raise LocatedError."""
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
            raise LocatedError(Loc(file, line, col), f"file is not UTF-8 text (byte {e.start})") from None
    if len(text) > MAX_BYTES:
        raise LocatedError(Loc(file), f"file is larger than {MAX_BYTES} bytes")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise LocatedError(Loc(file, line, 1), "file contains a NUL byte")
    try:
        _check_depth(text, file)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Loc(file, mark.line + 1, mark.column + 1) if mark else Loc(file)
        raise LocatedError(loc, f"invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise LocatedError(Loc(file), f"invalid YAML: {e}") from None
    except RecursionError:
        raise LocatedError(Loc(file), f"YAML nested too deeply (limit {MAX_DEPTH} levels)") from None
    if node is None:
        return None
    return _Builder(file).build(node, 0)


_OPEN = (
    yaml.FlowSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.BlockMappingStartToken,
)
_CLOSE = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)


def _check_depth(text: str, file: str) -> None:
    """Refuse pathological nesting from the token stream, before the (recursive) composer runs."""
    depth = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                m = token.start_mark
                raise LocatedError(
                    Loc(file, m.line + 1, m.column + 1), f"nested more than {MAX_DEPTH} levels deep"
                )
        elif isinstance(token, _CLOSE):
            depth -= 1


def load_yaml_file(path: str) -> Any:
    """Read and parse a YAML file; an unreadable file is a LocatedError too."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise LocatedError(Loc(path), f"cannot read file: {e.strerror}") from None
    return load_yaml(data, path)


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.count = 0
        self.scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise LocatedError(
                _loc(self.file, node), f"document expands to more than {MAX_NODES} nodes (an alias bomb?)"
            )
        if depth > MAX_DEPTH:
            raise LocatedError(_loc(self.file, node), f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if isinstance(node, yaml.SequenceNode):
            self.check_tag(node, "tag:yaml.org,2002:seq")
            out = LList()
            out.loc, out.locs = _loc(self.file, node), []
            for item in node.value:
                out.append(self.build(item, depth + 1))
                out.locs.append(_loc(self.file, item))
            return out
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, depth)
        raise LocatedError(_loc(self.file, node), f"unsupported YAML node {type(node).__name__}")

    def check_tag(self, node: yaml.Node, expected: str) -> None:
        if node.tag != expected:
            raise LocatedError(_loc(self.file, node), f"YAML tag {node.tag!r} is not allowed here")

    def scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise LocatedError(
                _loc(self.file, node), f"YAML tag {node.tag!r} is not allowed (only plain YAML values are)"
            )
        if node.tag in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"):
            return node.value
        if node.tag == "tag:yaml.org,2002:bool" and node.value not in _BOOLS:
            return node.value  # YAML 1.2: yes/no/on/off are text (a label OFF must not become False)
        return self.scalars.construct_object(node)

    def mapping(self, node: yaml.MappingNode, depth: int) -> LDict:
        self.check_tag(node, "tag:yaml.org,2002:map")
        out = LDict()
        out.loc, out.key_locs, out.val_locs = _loc(self.file, node), {}, {}
        for key_node, val_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise LocatedError(_loc(self.file, key_node), "YAML merge keys (<<) are not supported")
            key = self.build(key_node, depth + 1)
            if isinstance(key, LDict | LList):
                raise LocatedError(_loc(self.file, key_node), "a mapping key must be a plain value")
            if not isinstance(key, str):
                shown = key_node.value or "null"
                raise LocatedError(
                    _loc(self.file, key_node), f"a mapping key must be text, not {shown}; quote it: '{shown}'"
                )
            if key in out:
                first = out.key_locs[key]
                raise LocatedError(
                    _loc(self.file, key_node), f"duplicate key {key!r} (first at line {first.line})"
                )
            out[key] = self.build(val_node, depth + 1)
            out.key_locs[key] = _loc(self.file, key_node)
            out.val_locs[key] = _loc(self.file, val_node)
        return out
