"""``perpwatch plugins`` and ``metrics``: what the installed plugins register, and the metric namespace."""

from __future__ import annotations

import json
from typing import Any

import click

from perpwatch.cli.common import EXIT_FAILED, get_registry, report_errors
from perpwatch.common.text import printable


def register(cli: click.Group) -> None:
    for command in (plugins, metrics):
        cli.add_command(command)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show the traceback of each plugin's failure.")
@report_errors
def plugins(as_json: bool, verbose: bool) -> None:
    """List every plugin found, where it came from and what it registers.

    Exits 2 when two plugins register one name, else 1 when a plugin failed to load or a hook of
    it raised (after the whole listing, on stdout; the failure's summary on stderr), else 0."""
    reg = get_registry(check=False)
    rows: list[dict[str, Any]] = [
        {"name": p.name, "version": p.version, "origin": p.origin, "registers": p.registers, "error": p.error}
        | ({"traceback": p.traceback} if verbose else {})
        for p in reg.plugins
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            what = (
                "; ".join(f"{k}: {', '.join(v) if v else '(yes)'}" for k, v in row["registers"].items())
                or "nothing"
            )
            click.echo(f"{row['name']} {row['version']}  [{row['origin']}]  {what}")
            if row["error"]:
                click.echo(printable(f"  error: {row['error']}"))
            if row.get("traceback"):
                trace = printable(row["traceback"].rstrip(), multiline=True)
                click.echo("\n".join(f"    {line}" for line in trace.splitlines()))
    get_registry()  # after the listing, two plugins registering one name: each conflict, exit 2
    failed = [p.name for p in reg.plugins if p.error]
    if failed:
        names = ", ".join(repr(name) for name in failed)
        click.echo(
            printable(
                f"error: {'plugins' if len(failed) > 1 else 'plugin'} {names} failed to load "
                f"(the others work; perpwatch plugins -v shows where it went wrong)"
            ),
            err=True,
        )
        raise SystemExit(EXIT_FAILED)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@report_errors
def metrics(as_json: bool) -> None:
    """The metric namespace: names, units and which sources provide each."""
    cat = get_registry().catalogue()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"name": n, "unit": m.unit, "kind": m.kind, "meaning": m.meaning, "sources": src}
                    for n, (m, src) in cat.items()
                ],
                indent=2,
            )
        )
        return
    width = max(len(n) for n in cat)
    for name, (m, src) in cat.items():
        click.echo(
            f"{name:<{width}}  {m.unit:<28} {', '.join(src) or '(no installed source)':<22} {m.meaning}"
        )
