"""What a YAML syntax error most likely is, at the line that is really wrong.

PyYAML reports an indentation mistake where its scanner gave up, often a line late and with
wording about "mapping values" or "expected key". When a file fails to parse, :func:`diagnose`
walks its block structure line by line, as a reader sees it (a stack of open levels: the keys
of a mapping, the ``-`` items of a list), and names the first line that fits none of them, with
the indentation it has and the one expected there. It only looks at files that already failed
to parse, and a layout it does not follow (flow collections or quoted text over several lines,
complex keys, directives) makes it give up (None): the parser's own message then stands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEY = re.compile(r"""(?:"[^"]*"|'[^']*'|[^\s#'"\[\]{},:&*!|>%@`-][^#]*?|-[^\s#]+?)\s*:(?:\s|$)""")
_BLOCK_SCALAR = re.compile(r"^[|>][-+0-9]*$")
_PROPERTIES = re.compile(r"^(?:[&!]\S*\s*)+")  # an anchor or a tag before a value


@dataclass(frozen=True)
class Hint:
    """The line and column (1-based) that are wrong, and what was expected there."""

    line: int
    col: int
    message: str


@dataclass(frozen=True)
class _Level:
    indent: int
    kind: str  # "map": the keys of a mapping; "item": the keys of a '-' item; "seq": '-' items
    owner: str  # the key whose value this level is ("" at the top)

    def what(self) -> str:
        if self.kind == "seq":
            return f"the '-' items of `{self.owner}:`" if self.owner else "the '-' items"
        if self.kind == "item":
            return f"the keys of this `{self.owner}:` item" if self.owner else "the keys of this item"
        return f"the keys of `{self.owner}:`" if self.owner else "the top-level keys"


def _spaces(n: int) -> str:
    return f"{n} space{'' if n == 1 else 's'}"


def _scan(text: str) -> tuple[str, int, bool]:
    """``text`` without a trailing comment; the first ': ' outside brackets and quotes (or -1);
    whether every bracket and quote opened on the line is closed."""
    depth, quote, colon = 0, "", -1
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"" and (i == 0 or text[i - 1] in " [{,:"):
            quote = ch
        elif ch == "#" and i > 0 and text[i - 1] == " ":
            return text[:i].rstrip(), colon, depth == 0 and not quote
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == ":" and depth == 0 and colon < 0 and text[i + 1 : i + 2] in (" ", ""):
            colon = i
    return text.rstrip(), colon, depth == 0 and not quote


def diagnose(text: str, until: int) -> Hint | None:
    """The first line of ``text``, at or before line ``until`` (1-based), whose indentation or
    layout fits no open level of the block structure above it, or None."""
    stack: list[_Level] = []
    opens = False  # the line above ends with "key:": its value is the block below
    owner = ""  # the key of that line
    continues = False  # the line above ends with a plain value, which may go on deeper below
    block: int | None = None  # inside a block scalar (| or >) of a key at this indentation
    prev = 0
    for number, raw in enumerate(text.split("\n")[:until], start=1):
        stripped = raw.lstrip(" ")
        n = len(raw) - len(stripped)
        if not stripped.strip():
            continue
        if block is not None and n > block:
            continue
        block = None
        if stripped.startswith("\t"):
            return Hint(number, n + 1, "a tab indents this line; YAML is indented with spaces only")
        if stripped.startswith("#"):
            continue
        body, _, closed = _scan(stripped)
        if not closed or body.startswith(("---", "...", "%", "? ")):
            return None
        if re.match(r"-[A-Za-z_]\w*\s*:", body):
            return Hint(number, n + 1, f"a '-' item needs a space after the '-': write '- {body[1:]}'")
        item = body == "-" or body.startswith("- ")
        if not stack:
            stack.append(_Level(n, "seq" if item else "map", ""))
        top = stack[-1]
        popped: list[_Level] = []
        if n > top.indent:
            if opens and not item and _scan(body)[1] < 0:
                opens, continues, prev = False, True, n  # "key:" with its plain value on the lines below
                continue
            if opens:
                stack.append(_Level(n, "seq" if item else "map", owner))
            elif continues and not item and _scan(body)[1] < 0:
                continue  # a plain value going on from the line above
            else:
                return Hint(
                    number,
                    n + 1,
                    f"this line is indented {_spaces(n)}, too deep; {top.what()} are at {top.indent}",
                )
        elif n < top.indent:
            while stack and stack[-1].indent > n:
                popped.append(stack.pop())
            if not stack or stack[-1].indent != n:
                fits = [lv for lv in [*popped, *stack[-1:]] if (lv.kind == "seq") == item]
                want = min(fits or popped, key=lambda lv: abs(lv.indent - n))
                return Hint(
                    number, n + 1, f"this line is indented {_spaces(n)}; {want.what()} are at {want.indent}"
                )
        elif opens and item:
            stack.append(_Level(n, "seq", owner))  # "key:" with its list at the key's indentation
        if not item and len(stack) > 1 and stack[-1].kind == "seq" and stack[-2].indent == n:
            stack.pop()  # the next key after such a list
        top = stack[-1]
        if top.kind == "seq" and not item:
            keys = popped[-1].indent if n < prev and popped and popped[-1].kind == "item" else n + 2
            return Hint(
                number,
                n + 1,
                f"this line is indented {_spaces(n)}, as {top.what()} are; the keys of an item are at {keys}",
            )
        if top.kind != "seq" and item:
            return Hint(
                number, n + 1, f"a '-' item among {top.what()}: a list is the value of a key ending in ':'"
            )
        rest = body[2:].lstrip() if item else body
        at = n + len(body) - len(rest)
        _, colon, _ = _scan(rest)
        key = _KEY.match(rest) if colon >= 0 else None
        if item and key:
            stack.append(_Level(at, "item", top.owner))
        if item and (rest == "-" or rest.startswith("- ")):
            stack.append(_Level(at, "seq", top.owner))  # "- - a": a list in a list
            opens, continues, prev = False, False, n
            continue
        if not item and key is None:
            return Hint(
                number,
                n + 1,
                f"no ':' after the key on this line ({top.what()}, at {top.indent}, are written `key: value`); "
                "a value going on from the line above is indented deeper than its key",
            )
        value = _PROPERTIES.sub("", rest[key.end() :].strip()) if key else rest
        if key and _scan(value)[1] >= 0 and not value.startswith(("'", '"', "[", "{")):
            col = at + key.end() + 1
            return Hint(
                number, col, "this value holds ': ', which YAML reads as a key; put the value in quotes"
            )
        if key and value.startswith(("{", "[")) and _scan(value)[1] >= 0:
            col = at + key.end() + 1
            return Hint(
                number, col, "this value starts with a bracket but goes on after it; put it in quotes"
            )
        opens = bool(key) and not value
        owner = key.group(0).rstrip().rstrip(":").strip().strip("'\"") if key else owner
        continues = bool(value) and not value.startswith(("'", '"', "[", "{"))
        if key and _BLOCK_SCALAR.match(value):
            block, opens, continues = n, False, False
        prev = n
    return None
