"""The JSON Schemas shipped with perpwatch, and validation with located, readable errors.

Every validation (the shipped schemas and the plugins' ``options_schema``) goes through
:func:`schema_validator`: JSON Schema's Draft 2020-12 whose ``pattern``, ``patternProperties``
and ``additionalProperties`` read patterns as ECMA-262 regular expressions, as the standard
says (``$`` is the very end, so ``"name\\n"`` does not pass ``^[a-z]+$``; ``\\d`` is ASCII) —
jsonschema itself hands them to Python's ``re.search`` (only ``unevaluatedProperties`` next to
``patternProperties`` keeps that reading; no shipped or built-in plugin schema uses it). Its
``number`` and ``integer`` are finite and within ``perpwatch.common.numbers``' bounds
(jsonschema's own accept Python's NaN and infinities), and a boolean is neither.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perpwatch.common.errors import Loc, LocatedError, did_you_mean
from perpwatch.common.numbers import is_number
from perpwatch.language.ecma_regex import ecma_regex
from perpwatch.language.yamlsrc import LDict, LList

if TYPE_CHECKING:  # jsonschema is imported when a document is first validated
    import jsonschema
    from jsonschema.exceptions import ValidationError

NAMES = ("strategy", "strategy-test", "config")


def resource_dir(name: str) -> Path:
    """A data folder shipped in the wheel (``perpwatch/<name>``) or, in a checkout, the repo's own."""
    here = Path(__file__).resolve().parent  # .../perpwatch/language or .../engine/language
    for candidate in (here.parent / name, here.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"perpwatch is missing its {name}/ folder (broken install?)")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema ``<name>.schema.json``."""
    with open(resource_dir("schemas") / f"{name}.schema.json", encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    return schema_validator(load_schema(name))


def schema_validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """A Draft 2020-12 validator for ``schema`` that reads its patterns as ECMA-262."""
    return _ecma_validator_class()(schema)


@functools.cache
def _ecma_validator_class() -> type[jsonschema.protocols.Validator]:
    import jsonschema
    from jsonschema.exceptions import ValidationError

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if validator.is_type(instance, "string") and not ecma_regex(patrn).search(instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(
        validator: Any, patterns: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for k, v in instance.items():
                if ecma_regex(patrn).search(k):
                    yield from validator.descend(v, subschema, path=k, schema_path=patrn)

    def additional_properties(
        validator: Any, ap: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        known = schema.get("properties", {})
        patterns = [ecma_regex(p) for p in schema.get("patternProperties", {})]
        extras = [k for k in instance if k not in known and not any(p.search(k) for p in patterns)]
        if validator.is_type(ap, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], ap, path=extra)
        elif not ap and extras:
            listing = ", ".join(repr(k) for k in sorted(extras, key=str))
            yield ValidationError(f"Additional properties are not allowed ({listing} unexpected)")

    def number(checker: Any, instance: Any) -> bool:  # finite, within bounds, never a bool
        return isinstance(instance, int | float) and is_number(instance)

    def integer(checker: Any, instance: Any) -> bool:
        return number(checker, instance) and (isinstance(instance, int) or float(instance).is_integer())

    types = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({"number": number, "integer": integer})
    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        {
            "pattern": pattern,
            "patternProperties": pattern_properties,
            "additionalProperties": additional_properties,
        },
        type_checker=types,
    )


def validate(doc: Any, name: str, file: str, *, root: str = "") -> list[LocatedError]:
    """Check ``doc`` against schema ``name``; one located error per problem, in file order."""
    return validate_with(_validator(name), doc, file, root=root)


def validate_with(
    validator: jsonschema.protocols.Validator, doc: Any, file: str, *, root: str = ""
) -> list[LocatedError]:
    """Like :func:`validate` for any validator (plugin options schemas)."""
    errors: list[LocatedError] = []
    seen: set[str] = set()
    for err in validator.iter_errors(doc):
        for located in _explain(err, doc, file, root):
            if located.format() not in seen:
                seen.add(located.format())
                errors.append(located)
    errors.sort(key=lambda e: (e.loc.line if e.loc else 0, e.loc.col if e.loc else 0))
    return errors


def locate(doc: Any, path: Iterable[Any], file: str, *, key: bool = False) -> Loc:
    """The location of the value (or, with ``key``, the key) at ``path`` inside ``doc``."""
    node, loc = doc, getattr(doc, "loc", Loc(file, 1, 1))
    path = list(path)
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, LDict) and step in node:
            loc = node.key_loc(step) if (last and key) else node.val_loc(step)
            node = node[step]
        elif isinstance(node, LList) and isinstance(step, int) and 0 <= step < len(node):
            loc = node.item_loc(step)
            node = node[step]
        else:
            break
    return loc


def _path_text(path: Iterable[Any], root: str) -> str:
    out = root
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "the document"


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _explain(err: ValidationError, doc: Any, file: str, root: str) -> list[LocatedError]:
    if err.validator in ("anyOf", "oneOf") and err.context:
        best = _best_branch(err)
        if best is not None:
            return _explain(best, doc, file, root)
    path = list(err.absolute_path)
    where = _path_text(path, root)
    v = err.validator
    inst: Any = err.instance
    schema: Mapping[str, Any] = err.schema if isinstance(err.schema, Mapping) else {}
    value: Any = err.validator_value
    if v == "additionalProperties" and isinstance(inst, dict):
        known = list(schema.get("properties", {}))
        listing = ", ".join(known)
        return [
            LocatedError(
                locate(doc, [*path, k], file, key=True),
                f"unknown key {k!r} in {where}{did_you_mean(str(k), known) or f' (valid keys: {listing})'}",
            )
            for k in inst
            if k not in known
        ]
    loc = locate(doc, path, file)
    if v == "required":
        missing = [k for k in value if k not in inst]
        msg = f"{where} is missing the required key {', '.join(map(repr, missing))}"
    elif v == "type":
        want = value if isinstance(value, str) else " or ".join(value)
        msg = f"{where} must be {_article(want)}, not {_show(inst)}"
    elif v == "enum":
        msg = f"{where}: {_show(inst)} is not valid; choose one of: {', '.join(map(str, value))}"
    elif v == "const":
        msg = f"{where}: {_show(inst)} is not valid; it must be {_show(value)}"
    elif v == "pattern":
        desc = schema.get("description")
        naming = len(err.schema_path) >= 2 and list(err.schema_path)[-2] == "propertyNames"
        if naming:  # a mapping key: point at it, not at the mapping
            loc = locate(doc, [*path, inst], file, key=True)
        odd = _odd_character(inst)
        if odd is not None and "\n" not in inst[:odd]:
            loc = loc.shift(odd)  # at the character (the key or value is on one line up to it)
        msg = f"{where}: {'name ' if naming else ''}{_show(inst)} is not valid" + (
            f"; expected {desc}" if desc else f" (must match {value})"
        )
        if odd is not None:
            msg += f" (it contains {_character(inst[odd])})"
    elif v == "propertyNames":
        msg = f"{where}: name {_show(inst)} is not valid; names are letters, digits and _, not starting with a digit"
    elif v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        msg = f"{where}: {_show(inst)} is out of range; it must be {op} {value}"
    elif v in ("minItems", "minProperties"):
        msg = f"{where} must not be empty"
    elif v == "uniqueItems" and isinstance(inst, list):
        first, second = _first_duplicate(inst)
        loc = locate(doc, [*path, second], file)
        at = locate(doc, [*path, first], file)
        msg = f"{where}[{second}]: duplicate entry {_show(inst[second])} (first at line {at.line}, column {at.col})"
    elif v == "oneOf" and isinstance(inst, dict) and "when" in inst:
        msg = f"{where} needs exactly one of 'then' (a literal) or 'value' (an expression)"
    elif v in ("anyOf", "oneOf"):
        desc = schema.get("description")
        msg = f"{where}: {_show(inst)} is not valid" + (f"; expected {desc}" if desc else "")
    else:
        msg = f"{where}: {err.message}"
    return [LocatedError(loc, msg)]


def _odd_character(text: Any) -> int | None:
    """The index of the first non-ASCII or control character of ``text``, if any."""
    if not isinstance(text, str):
        return None
    return next((i for i, ch in enumerate(text) if not " " <= ch <= "~"), None)


def _character(ch: str) -> str:
    """A character as a reader can identify it: ``the non-ASCII character 'ｈ' (U+FF48)``."""
    kind = "non-ASCII character" if ord(ch) > 127 else "control character"
    return f"the {kind} {ch!r} (U+{ord(ch):04X})"


def _first_duplicate(items: list[Any]) -> tuple[int, int]:
    """The indexes of the first item that repeats and of its first repetition."""
    for j, item in enumerate(items):
        for i in range(j):
            if _same(items[i], item):
                return i, j
    return 0, 0


def _same(a: Any, b: Any) -> bool:
    """JSON equality (as uniqueItems compares): ``1`` and ``True`` differ, ``1`` and ``1.0`` do not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _best_branch(err: ValidationError) -> ValidationError | None:
    """Of an anyOf's failed branches, the one that got furthest (the user's evident intent)."""
    inst = err.instance
    candidates = list(err.context or [])
    if isinstance(inst, dict):
        # prefer branches whose required key is present (e.g. 'cases' or 'lookup')
        keyed = [c for c in candidates if c.validator != "required" and c.validator != "type"]
        if keyed:
            return max(keyed, key=lambda c: len(c.absolute_path))
        return None
    if isinstance(inst, str | bool | int | float):
        typed = [c for c in candidates if c.validator != "type"]
        return typed[0] if typed else None
    return None


def _article(word: str) -> str:
    word = {"object": "mapping", "array": "list"}.get(word, word)
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"
