"""YAML with a location for every node, for every perpwatch YAML file (strategies, test files, the config).

``yaml.safe_load`` semantics (no Python tags), plus:

* plain values resolve as in YAML 1.2's core schema: only true/false are booleans (``yes``/``no``/
  ``on``/``off`` stay text), numbers are ``12``, ``-2``, ``0.1``, ``1e-3``, ``0x1F``, ``0o17``
  (``1_000`` and ``1:30`` are text), and timestamps stay text;
* every number is finite and an integer is at most :data:`~perpwatch.common.numbers.MAX_INT` in
  size: ``.nan``, ``.inf``, ``1e309`` and a 5,000-digit integer are located errors;
* duplicate keys are errors and mapping keys are text;
* a file is at most :data:`MAX_BYTES` bytes (larger is an error, never a truncated read), NUL
  bytes are refused, nesting is at most :data:`MAX_DEPTH` levels, and aliases may expand to at
  most :data:`MAX_ALIAS_NODES` nodes in all (an alias bomb fails fast; plain nodes are bounded
  by the file size alone).

Mappings load as :class:`LDict` and sequences as :class:`LList`, which remember where each key
and item stood. libyaml's parser is used when PyYAML has it (the same documents, several times
faster), else PyYAML's own.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from perpwatch.common.errors import Loc, LocatedError
from perpwatch.common.numbers import int_from_digits, shown, too_large_float, too_large_int
from perpwatch.language.yamlhints import diagnose

MAX_BYTES = 2_000_000  # bytes of one file
MAX_DEPTH = 64  # levels of nesting
MAX_ALIAS_NODES = 100_000  # nodes reached again through aliases, in one document

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP}

_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_DECIMAL = re.compile(r"[-+]?[0-9]+\Z")
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_OCTAL = re.compile(r"0o[0-7]+\Z")
_FLOAT_TEXT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_NOT_FINITE = re.compile(r"[-+]?\.(?:inf|Inf|INF)\Z|\.(?:nan|NaN|NAN)\Z")


def loader_class(base: type[yaml.SafeLoader] | type[yaml.CSafeLoader]) -> type:
    """``base`` (PyYAML's safe loader, in Python or libyaml) resolving plain values by YAML 1.2's core schema."""

    class Loader(base):  # type: ignore[valid-type, misc]
        yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    for tag, regexp, first in [
        (_BOOL, r"(?:true|True|TRUE|false|False|FALSE)\Z", "tTfF"),
        (_NULL, r"(?:~|null|Null|NULL|)\Z", ["~", "n", "N", ""]),
        (_INT, r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z", "-+0123456789"),
        (_FLOAT, rf"{_FLOAT_TEXT.pattern}|{_NOT_FINITE.pattern}", "-+.0123456789"),
        ("tag:yaml.org,2002:merge", r"<<\Z", "<"),
    ]:
        Loader.add_implicit_resolver(tag, re.compile(regexp), list(first))
    return Loader


_Loader = loader_class(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


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


def _byte_loc(file: str, raw: bytes, offset: int) -> Loc:
    """Line and column (in characters) of byte ``offset`` of ``raw``."""
    start = raw.rfind(b"\n", 0, offset) + 1
    col = len(raw[start:offset].decode("utf-8", "replace")) + 1
    return Loc(file, raw.count(b"\n", 0, offset) + 1, col)


def load_yaml(text: str | bytes, file: str) -> Any:
    """Parse one YAML document into plain values, LDicts and LLists; raise LocatedError."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_BYTES:
        raise LocatedError(
            _byte_loc(file, raw, MAX_BYTES), f"file larger than {MAX_BYTES} bytes (the limit for a YAML file)"
        )
    if isinstance(text, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise LocatedError(
                _byte_loc(file, raw, e.start), f"file is not UTF-8 text (byte {e.start})"
            ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise LocatedError(Loc(file, line, 1), "file contains a NUL byte")
    try:
        _check_depth(text, file)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Loc(file, mark.line + 1, mark.column + 1) if mark else Loc(file)
        if "maximum nesting depth" in str(e.problem):  # libyaml's own limit (1000), met while scanning ahead
            raise LocatedError(loc, f"nested more than {MAX_DEPTH} levels deep") from None
        hint = diagnose(text, mark.line + 1) if mark else None
        if hint is not None:  # the line that is really wrong, and what was expected there
            raise LocatedError(Loc(file, hint.line, hint.col), f"invalid YAML: {hint.message}") from None
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
    for token in yaml.scan(text, Loader=_Loader):
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
    """Read and parse a YAML file; an unreadable or oversize file is a LocatedError too."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)  # one byte more than allowed: enough to know it is too large
    except OSError as e:
        raise LocatedError(Loc(path), f"cannot read file: {e.strerror}") from None
    return load_yaml(data, path)


class _Builder:
    """Plain values from the node graph; a node reached a second time came through an alias."""

    def __init__(self, file: str):
        self.file = file
        self.seen: set[int] = set()
        self.expanded = 0

    def build(self, node: yaml.Node, depth: int) -> Any:
        if id(node) in self.seen:
            self.expanded += 1
            if self.expanded > MAX_ALIAS_NODES:
                raise LocatedError(
                    _loc(self.file, node),
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)",
                )
        else:
            self.seen.add(id(node))
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
        tag, text = node.tag, node.value
        if tag not in _SCALAR_TAGS:
            raise LocatedError(
                _loc(self.file, node), f"YAML tag {tag!r} is not allowed (only plain YAML values are)"
            )
        if tag == _INT:
            return self.integer(node)
        if tag == _FLOAT:
            return self.float(node)
        if tag == _BOOL:
            return _BOOLS.get(text, text)  # !!bool yes stays text: a label OFF must not become False
        if tag == _NULL:
            return None
        return text  # str, and timestamps stay text

    def integer(self, node: yaml.ScalarNode) -> int:
        text = node.value.strip()
        if _DECIMAL.match(text):
            value = int_from_digits(text)
        elif _HEX.match(text) or _OCTAL.match(text):
            value = int_from_digits(text[2:], 16 if text[1] == "x" else 8)
        else:
            raise LocatedError(_loc(self.file, node), f"{shown(text)} is not an integer")
        if value is None:
            raise LocatedError(_loc(self.file, node), too_large_int(text))
        return value

    def float(self, node: yaml.ScalarNode) -> float:
        text = node.value.strip()
        if _NOT_FINITE.match(text):
            raise LocatedError(
                _loc(self.file, node),
                f"{text} is not a finite number: NaN and infinities are not allowed "
                "(an unknown value in a test file is _ or null)",
            )
        try:
            value = float(text) if _FLOAT_TEXT.match(text) else math.nan
        except ValueError:
            value = math.nan
        if value != value:
            raise LocatedError(_loc(self.file, node), f"{shown(text)} is not a number")
        if math.isinf(value):
            raise LocatedError(_loc(self.file, node), too_large_float(text))
        return value

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
                shown_key = key_node.value or "null"
                raise LocatedError(
                    _loc(self.file, key_node),
                    f"a mapping key must be text, not {shown_key}; quote it: '{shown_key}'",
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
