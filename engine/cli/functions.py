"""``perpwatch functions``: every expression function, built-in or from a plugin, documented from
its docstring (text, ``--json`` or ``--markdown``; ``docs/reference.md`` is generated from it).

A function's docstring is its documentation, in this format (the built-ins all follow it; a
plugin's free-form docstring is shown as it is, with what the registry knows filled in)::

    sma(x, n) -> number

    Simple moving average: the mean of the last n values of x, bar t included.

    Unit: the unit of x.
    Lookback: n - 1 bars.
    Unknown: until n values exist, and wherever one of the last n values is unknown.
    Example: sma(price.close, 20) > sma(price.close, 60)
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import click

from perpwatch.cli.common import get_registry, report_errors
from perpwatch.common.errors import PerpwatchError, did_you_mean
from perpwatch.language.functions import BUILTINS, FunctionSpec

#: The fields of a function's docstring, after its meaning, in this order.
FIELDS = ("Unit", "Lookback", "Unknown", "Example")
_FIELD = re.compile(rf"^({'|'.join(FIELDS)}):\s*(.*)$")
_SIGNATURE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\((?P<args>[^()]*)\)\s*(?:->\s*(?P<returns>.+))?$")
_RETURNS = {"num": "number", "bool": "condition"}
WIDTH = 100  # the terminal width of a function's entry


@dataclass(frozen=True)
class FunctionDoc:
    """One function's reference entry."""

    name: str
    signature: str  # lag(x, n=1)
    returns: str  # number | condition | same kind as x
    summary: str  # the first sentence of the meaning
    meaning: str  # every paragraph before the fields, each joined into one line
    unit: str
    lookback: str  # as documented; else computed from the registered lookback
    unknown: str
    example: str
    origin: str  # "perpwatch" for a built-in, else the plugin's name
    documented: bool  # the function has a docstring at all
    doc_signature: str  # the docstring's own first line when it is a signature, else ""

    @property
    def missing_fields(self) -> list[str]:
        """The format's fields the docstring leaves out (all of them when it has none)."""
        return [f for f in FIELDS if not getattr(self, f.lower())]


def signature_of(spec: FunctionSpec) -> str:
    """``name(param, param=default, ...)`` as the registry knows it."""
    args = [f"{p}={spec.defaults[i]}" if i in spec.defaults else p for i, p in enumerate(spec.params)]
    if spec.variadic:
        args.append("...")
    return f"{spec.name}({', '.join(args)})"


def returns_of(spec: FunctionSpec) -> str:
    """What the function gives: a number, a condition, or the kind of its first argument."""
    if spec.returns == "same":
        return f"same kind as {spec.params[0]}"
    return _RETURNS.get(spec.returns, spec.returns)


def lookback_formula(spec: FunctionSpec) -> str:
    """The function's own lookback in bars as a formula of its window (``4n - 1 bars``), computed
    from the registered lookback; nested calls add theirs to it."""
    names = [spec.params[i] for i in spec.windows]
    try:
        if not names:
            return _bars(spec.bars_back([]))
        if len(names) == 1:
            probes = (1, 2, 3, 10, 100)
            values = [spec.bars_back([k]) for k in probes]
            slope, offset = values[1] - values[0], values[0] - (values[1] - values[0])
            if all(v == slope * k + offset for k, v in zip(probes, values, strict=True)):
                return _linear(names[0], slope, offset)
        elif spec.lookback is None:
            return f"max({', '.join(names)}) - 1 bars"
    except Exception:  # a plugin's lookback that cannot be probed: say so, do not fail the listing
        pass
    return f"depends on {', '.join(names)} (the plugin's lookback)"


def _bars(k: int) -> str:
    return "1 bar" if k == 1 else f"{k} bars"


def _linear(name: str, slope: int, offset: int) -> str:
    if slope == 0:
        return _bars(offset)
    term = name if slope == 1 else f"{slope}{name}"
    if offset == 0:
        return f"{term} bars"
    return f"{term} {'+' if offset > 0 else '-'} {abs(offset)} bars"


def function_doc(spec: FunctionSpec) -> FunctionDoc:
    """Parse ``spec``'s documentation into its reference entry."""
    lines = spec.documentation.splitlines()
    doc_signature = ""
    returns = returns_of(spec)
    m = _SIGNATURE.match(lines[0].strip()) if lines else None
    if m and m.group("name") == spec.name:
        doc_signature = lines[0].strip()
        returns = (m.group("returns") or returns).strip()
        lines = lines[1:]
    paragraphs: list[list[str]] = [[]]
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        text = line.strip()
        field = _FIELD.match(text)
        if field:
            current = fields.setdefault(field.group(1), [])
            current.append(field.group(2))
        elif not text:
            current = None
            if paragraphs[-1]:
                paragraphs.append([])
        elif current is not None:
            current.append(text)
        else:
            paragraphs[-1].append(text)
    meaning = "\n\n".join(" ".join(p) for p in paragraphs if p)
    first = meaning.split("\n\n", 1)[0]
    summary = re.split(r"(?<=\.)\s+", first, maxsplit=1)[0] if first else ""
    value = {name: " ".join(parts).strip() for name, parts in fields.items()}
    return FunctionDoc(
        name=spec.name,
        signature=signature_of(spec),
        returns=returns,
        summary=summary,
        meaning=meaning,
        unit=value.get("Unit", ""),
        lookback=value.get("Lookback", "") or lookback_formula(spec),
        unknown=value.get("Unknown", ""),
        example=value.get("Example", ""),
        origin=spec.origin,
        documented=bool(spec.documentation.strip()),
        doc_signature=doc_signature,
    )


def undocumented(specs: Iterable[FunctionSpec]) -> list[str]:
    """The names of the functions without any documentation."""
    return [s.name for s in specs if not s.documentation.strip()]


def all_functions(plugin_functions: Mapping[str, FunctionSpec] | None = None) -> list[FunctionSpec]:
    """The built-ins in their documented order, then the plugins' functions by name."""
    extra = plugin_functions or {}
    return [*BUILTINS.values(), *(extra[n] for n in sorted(extra) if n not in BUILTINS)]


# --- rendering -------------------------------------------------------------------------------------


def render_text(docs: Iterable[FunctionDoc]) -> str:
    """One line per function: signature, lookback, origin and summary."""
    docs = list(docs)
    sig_w = max(len(d.signature) for d in docs)
    lb_w = max(len(_short_lookback(d)) for d in docs)
    org_w = max(len(d.origin) for d in docs)
    return "\n".join(
        f"{d.signature:<{sig_w}}  {_short_lookback(d):<{lb_w}}  {d.origin:<{org_w}}  "
        f"{d.summary or '(undocumented)'}".rstrip()
        for d in docs
    )


def _short_lookback(d: FunctionDoc) -> str:
    return d.lookback.split(" (")[0].rstrip(".")


def render_entry(d: FunctionDoc) -> str:
    """A function's whole entry, for ``perpwatch functions NAME``."""
    origin = "built-in" if d.origin == "perpwatch" else f"plugin {d.origin}"
    out = [f"{d.signature} -> {d.returns}    [{origin}]"]
    for p in (d.meaning or "(no documentation)").split("\n\n"):
        out += ["", textwrap.fill(p, WIDTH, initial_indent="  ", subsequent_indent="  ")]
    out.append("")
    for field in FIELDS:
        text = getattr(d, field.lower())
        if text:
            out.append(
                textwrap.fill(text, WIDTH, initial_indent=f"  {field + ':':<10}", subsequent_indent=" " * 12)
            )
    return "\n".join(out)


def render_markdown(docs: Iterable[FunctionDoc], heading: str = "###") -> str:
    """A summary table and one section per function (``docs/reference.md``, *Functions*)."""
    docs = list(docs)
    out = ["| function | gives | lookback | meaning |", "|---|---|---|---|"]
    for d in docs:
        out.append(
            f"| [`{d.signature}`](#{d.name}) | {d.returns} | {_short_lookback(d)} | {_cell(d.summary)} |"
        )
    for d in docs:
        origin = "" if d.origin == "perpwatch" else f" (plugin `{d.origin}`)"
        out += ["", f"{heading} {d.name}", "", f"`{d.signature}` → {d.returns}{origin}", ""]
        out += [p + "\n" for p in (d.meaning or "(no documentation)").split("\n\n")]
        for field in FIELDS:
            text = getattr(d, field.lower())
            if text:
                shown = f"`{text}`" if field == "Example" else text
                out.append(f"- **{field}:** {shown}")
    return "\n".join(out).replace("\n\n\n", "\n\n") + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# --- the command -----------------------------------------------------------------------------------


def register(cli: click.Group) -> None:
    cli.add_command(functions)


@click.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every field of every entry).")
@click.option("--markdown", is_flag=True, help="Print the Markdown of docs/reference.md's Functions section.")
@report_errors
def functions(names: tuple[str, ...], as_json: bool, markdown: bool) -> None:
    """The expression functions (built-in and from plugins): signature, lookback, origin, meaning.

    With NAMES, each one's whole entry: meaning, unit, lookback, unknown values, an example.
    """
    if as_json and markdown:
        raise click.UsageError("--json and --markdown: choose one")
    specs = all_functions(get_registry().functions)
    if names:
        by_name = {s.name: s for s in specs}
        for name in names:
            if name not in by_name:
                raise PerpwatchError(
                    f"no function {name!r}{did_you_mean(name, by_name)}; `perpwatch functions` lists them all"
                )
        specs = [by_name[n] for n in dict.fromkeys(names)]
    docs = [function_doc(s) for s in specs]
    if as_json:
        rows = []
        for d, s in zip(docs, specs, strict=True):
            row = asdict(d)
            del row["doc_signature"]
            row |= {"params": list(s.params), "windows": [s.params[i] for i in s.windows]}
            rows.append(row)
        click.echo(json.dumps(rows, indent=2))
    elif markdown:
        click.echo(render_markdown(docs), nl=False)
    elif names:
        click.echo("\n\n".join(render_entry(d) for d in docs))
    else:
        click.echo(render_text(docs))
