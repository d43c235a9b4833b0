"""Regenerate the generated parts of ``docs/reference.md``; ``--check`` only says whether they are current.

Two blocks, each between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``:

* ``functions`` — every built-in expression function, from its docstring (``perpwatch functions
  --markdown``, without plugins: what a plain ``pip install perpwatch`` has);
* ``metrics`` — the metric catalogue (``perpwatch metrics``) with the built-in sources of each name.

Run ``python docs/gen_reference.py`` after changing a function's docstring or the catalogue;
``tests/test_reference.py`` fails while the file is out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent / "reference.md"
BUILTIN_DIST = "entry point (perpwatch)"  # the origin of the plugins perpwatch itself ships


def functions_block() -> str:
    from perpwatch.cli.functions import all_functions, function_doc, render_markdown

    return render_markdown([function_doc(s) for s in all_functions()])


def metrics_block() -> str:
    from perpwatch.api.registry import load_registry

    reg = load_registry()
    builtin = {p.name for p in reg.plugins if p.origin == BUILTIN_DIST}
    rows = ["| name | unit | kind | meaning | built-in sources |", "|---|---|---|---|---|"]
    for name, (metric, sources) in reg.catalogue().items():
        ours = [s for s in sources if reg.owners.get(("sources", s)) in builtin]
        if not ours and "." in name and name.split(".")[0] not in _core_prefixes():
            continue  # a third-party plugin's own metric: not part of perpwatch's reference
        kind = "text" if metric.kind == "str" else "number"
        rows.append(
            f"| `{name}` | {metric.unit} | {kind} | {metric.meaning} | {', '.join(ours) or '(none)'} |"
        )
    return "\n".join(rows) + "\n"


def _core_prefixes() -> frozenset[str]:
    from perpwatch.language.metrics import CORE_PREFIXES

    return CORE_PREFIXES


BLOCKS = {"functions": functions_block, "metrics": metrics_block}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated: {name} [^\n]*-->\n)(.*?)(<!-- end generated: {name} -->)", re.S)


def current(text: str, name: str) -> str | None:
    """The block ``name`` as it stands in ``text`` (None when its markers are missing)."""
    m = _pattern(name).search(text)
    return m.group(2) if m else None


def regenerate(text: str) -> str:
    """``text`` with every block replaced by its generated content (markers must exist)."""
    for name, make in BLOCKS.items():
        if current(text, name) is None:
            raise SystemExit(f"{REFERENCE}: the markers of the generated block {name!r} are missing")
        content = make()
        text = _pattern(name).sub(lambda m, c=content: m.group(1) + "\n" + c + "\n" + m.group(3), text)
    return text


def main(argv: list[str]) -> int:
    text = REFERENCE.read_text(encoding="utf-8")
    new = regenerate(text)
    if "--check" in argv:
        if new != text:
            stale = [n for n in BLOCKS if current(new, n) != current(text, n)]
            print(f"{REFERENCE}: out of date: {', '.join(stale)}; run python docs/gen_reference.py")
            return 1
        print(f"{REFERENCE}: up to date")
        return 0
    if new != text:
        REFERENCE.write_text(new, encoding="utf-8")
        print(f"{REFERENCE}: regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
