"""``mute``, ``unmute``: notifications of a strategy or rule paused for a while (events are still
recorded), or, with matchers (``strategy=… rule=… symbol=… severity=…``), a silence that mutes
every alert it matches, with who set it and why; ``mute --list`` shows what is in force.

A target names a strategy or rule of the state database (the ones ``perpwatch run`` has
stepped); any other name is an error listing the valid ones (exit 2), never a mute of nothing.
Matchers are checked the same way: an unknown label, a severity that does not exist or a strategy
the database does not know is refused.
"""

from __future__ import annotations

import getpass
import json
import time
from typing import TYPE_CHECKING, Any

import click

from perpwatch.cli.common import EXIT_BAD_INPUT, report_errors, with_state_options
from perpwatch.cli.run import open_state
from perpwatch.common.errors import PerpwatchError, did_you_mean
from perpwatch.common.symbols import symbol_option
from perpwatch.common.text import printable
from perpwatch.common.timeutil import format_time, parse_duration

if TYPE_CHECKING:
    from perpwatch.live.state import StateStore

MATCHER_LABELS = ("strategy", "rule", "symbol", "severity")
MAX_TEXT = 500  # characters of an author or a comment


def register(cli: click.Group) -> None:
    for command in (mute, unmute):
        cli.add_command(command)


def resolve_target(store: StateStore, target: str, muted: frozenset[str] = frozenset()) -> str:
    """``strategy`` or ``strategy/rule`` from what ``mute`` and ``unmute`` are given (a bare rule name
    is looked up among the strategies' rules). The valid names are those of the state database: the
    strategies ``perpwatch run`` has stepped and their rules, plus the targets in ``muted`` (unmute:
    the mutes stored, so each can be lifted); any other name is an error listing the valid ones."""
    if target in muted:
        return target
    known = store.known_rules()
    strategy, slash, rule = target.partition("/")
    if slash and strategy in known and rule in known[strategy]:
        return target
    if not slash:
        if target in known:
            return target
        owners = sorted(s for s, rules in known.items() if target in rules)
        if len(owners) == 1:
            return f"{owners[0]}/{target}"
        if len(owners) > 1:
            choices = ", ".join(f"{s}/{target}" for s in owners)
            raise PerpwatchError(f"rule {target!r} is in several strategies; write one of {choices}")
    raise PerpwatchError(unknown_target(target, known, store.path))


#: At most this many strategies are listed in full by ``unknown_target``.
LISTED_STRATEGIES = 20


def unknown_target(target: str, known: dict[str, set[str]], state: str) -> str:
    """The error for a mute target that names no strategy or rule of the state database."""
    if not known:
        return (
            f"no strategy {target!r}: the state database {state} has none yet (mute names the strategies "
            "and rules that perpwatch run has stepped with this state database)"
        )
    strategy, slash, rule = target.partition("/")
    if slash and strategy in known:
        head = f"strategy {strategy!r} has no rule {rule!r}{did_you_mean(rule, known[strategy], n=1)}"
    else:
        names = {*known, *(r for rules in known.values() for r in rules)}
        head = f"no strategy or rule {target!r} in {state}{did_you_mean(strategy if slash else target, names, n=1)}"
    listed = sorted(known)[:LISTED_STRATEGIES]
    valid = "; ".join(f"{s} (rules: {', '.join(sorted(known[s]))})" for s in listed)
    more = len(known) - len(listed)
    return f"{head}; valid: {valid}" + (f"; and {more} more strategies" if more > 0 else "")


MAX_MUTE_DAYS = 365


def parse_matchers(items: tuple[str, ...], store: StateStore) -> dict[str, list[str]]:
    """``label=value[,value…]`` items as matchers; refused (PerpwatchError) when a label is not
    strategy, rule, symbol or severity, a severity does not exist, or a strategy or rule is not in
    the state database."""
    from perpwatch.evaluation.events import SEVERITIES
    from perpwatch.live.meta import META_RULES

    out: dict[str, list[str]] = {}
    known = store.known_rules()
    for item in items:
        label, eq, value = item.partition("=")
        label = label.strip()
        values = [v.strip() for v in value.split(",") if v.strip()]
        if not eq or label not in MATCHER_LABELS or not values:
            hint = did_you_mean(label, MATCHER_LABELS) if eq else ""
            raise PerpwatchError(
                f"matcher {item!r}: write LABEL=VALUE with LABEL one of {', '.join(MATCHER_LABELS)}"
                f" (several values: symbol=BTC,ETH){hint}"
            )
        if label == "severity":
            bad = [v for v in values if v not in SEVERITIES]
            if bad:
                raise PerpwatchError(f"severity={bad[0]}: not a severity; one of {', '.join(SEVERITIES)}")
        if label == "symbol":
            values = [symbol_option(v, "symbol=") or v for v in values]
        if label == "strategy":
            for v in values:
                if v not in known and v != "perpwatch" and not v.endswith("*"):
                    raise PerpwatchError(unknown_target(v, known, store.path))
        if label == "rule":
            rules = {r for rs in known.values() for r in rs}
            for v in values:
                if v not in rules and v not in META_RULES and not v.endswith("*"):
                    hint = did_you_mean(v, rules) or f" (rules: {', '.join(sorted(rules)) or 'none yet'})"
                    raise PerpwatchError(f"rule={v}: no such rule in {store.path}{hint}")
        out.setdefault(label, []).extend(values)
    return out


def _duration(duration: str | None) -> float:
    if duration is None:
        raise click.BadParameter("how long? write --for 30m, 2h, 1d", param_hint="--for")
    try:
        seconds = parse_duration(duration) / 1000
    except (ValueError, KeyError):
        raise click.BadParameter(
            f"{duration!r}: write a duration such as 30m, 2h, 1d", param_hint="--for"
        ) from None
    if seconds > MAX_MUTE_DAYS * 86_400:
        raise click.BadParameter(
            f"{duration!r} is too long; at most {MAX_MUTE_DAYS} days (unmute lifts a mute early)",
            param_hint="--for",
        )
    return seconds


@click.command("mute")
@click.argument("args", nargs=-1, metavar="[STRATEGY|STRATEGY/RULE|RULE] [LABEL=VALUE ...]")
@click.option("--symbol", help="Only this symbol (default: every symbol).")
@click.option("--for", "duration", metavar="DURATION", help="How long: 30m, 2h, 1d, 1w.")
@click.option("--author", help="Who mutes (default: your user name).")
@click.option("--comment", help="Why, for whoever reads --list.")
@click.option("--list", "listing", is_flag=True, help="List the mutes in force and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --list: print JSON.")
@with_state_options
@report_errors
def mute(
    args: tuple[str, ...],
    symbol: str | None,
    duration: str | None,
    author: str | None,
    comment: str | None,
    listing: bool,
    as_json: bool,
    config_path: str | None,
    state_opt: str | None,
) -> None:
    """Stop notifications for a while (events are still recorded): of a strategy or rule, or of
    every alert matching LABEL=VALUE matchers (strategy, rule, symbol, severity)."""
    if listing:
        _list(config_path, state_opt, as_json)
        return
    targets = [a for a in args if "=" not in a]
    items = tuple(a for a in args if "=" in a)
    if len(targets) > 1:
        raise click.BadParameter(f"one target at most, got {', '.join(targets)}", param_hint="TARGET")
    if not targets and not items:
        raise click.BadParameter(
            "name a strategy or rule, or give matchers such as severity=low", param_hint="TARGET"
        )
    seconds = _duration(duration)
    symbol = symbol_option(symbol, "--symbol")
    silence = bool(items) or author is not None or comment is not None  # else a plain mute, as before
    author = (author if author is not None else _user())[:MAX_TEXT]
    comment = (comment or "")[:MAX_TEXT]
    store = open_state(config_path, state_opt)
    try:
        until = time.time() + seconds
        if silence:
            from perpwatch.live.alertstate import AlertState

            matchers = parse_matchers(items, store)
            if targets:
                strategy, _, rule = resolve_target(store, targets[0]).partition("/")
                matchers = {"strategy": [strategy], **({"rule": [rule]} if rule else {}), **matchers}
            if symbol:
                matchers.setdefault("symbol", []).append(symbol)
            number = AlertState(store).add_silence(matchers, until, author, comment)
            shown = " ".join(f"{k}={','.join(v)}" for k, v in matchers.items())
            click.echo(printable(f"muted {shown} until {format_time(int(until * 1000))} (silence {number})"))
            return
        resolved = resolve_target(store, targets[0])
        store.mute(resolved, symbol, until)
    finally:
        store.close()
    click.echo(f"muted {resolved}{' ' + symbol if symbol else ''} until {format_time(int(until * 1000))}")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return ""


def _list(config_path: str | None, state_opt: str | None, as_json: bool) -> None:
    from perpwatch.live.alertstate import AlertState

    store = open_state(config_path, state_opt)
    try:
        now = time.time()
        mutes = store.mutes(now)
        silences = AlertState(store).silences(now)
    finally:
        store.close()
    rows: list[dict[str, Any]] = [
        {
            "id": None,
            "matchers": _target_matchers(m.target, m.symbol),
            "until": m.until,
            "author": "",
            "comment": "",
        }
        for m in mutes
    ] + [
        {"id": s.id, "matchers": s.matchers, "until": s.until, "author": s.author, "comment": s.comment}
        for s in silences
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no mutes in force")
        return
    for row in rows:
        shown = " ".join(f"{k}={','.join(v)}" for k, v in row["matchers"].items())
        ident = f"#{row['id']}" if row["id"] is not None else "mute"
        line = f"{ident:<6} {shown} until {format_time(int(row['until'] * 1000))}"
        if row["author"]:
            line += f" by {row['author']}"
        if row["comment"]:
            line += f": {row['comment']}"
        click.echo(printable(line))


def _target_matchers(target: str, symbol: str | None) -> dict[str, list[str]]:
    strategy, _, rule = target.partition("/")
    out = {"strategy": [strategy], **({"rule": [rule]} if rule else {})}
    return {**out, "symbol": [symbol]} if symbol else out


@click.command("unmute")
@click.argument("target", metavar="STRATEGY|STRATEGY/RULE|RULE|#ID", required=False)
@click.option("--symbol", help="Only this symbol's mute.")
@click.option("--id", "silence_id", type=int, help="Lift the silence with this number (mute --list).")
@with_state_options
@report_errors
def unmute(
    target: str | None,
    symbol: str | None,
    silence_id: int | None,
    config_path: str | None,
    state_opt: str | None,
) -> None:
    """Lift a mute (of a strategy or rule), or a silence by its number."""
    if target is not None and target.startswith("#") and target[1:].isdigit():
        silence_id, target = int(target[1:]), None
    if silence_id is not None:
        from perpwatch.live.alertstate import AlertState

        store = open_state(config_path, state_opt)
        try:
            lifted = AlertState(store).remove_silence(silence_id)
        finally:
            store.close()
        if not lifted:
            click.echo(f"no silence #{silence_id} (perpwatch mute --list shows them)", err=True)
            raise SystemExit(EXIT_BAD_INPUT)
        click.echo(f"unmuted silence #{silence_id}")
        return
    if target is None:
        raise click.BadParameter("name a strategy or rule, or --id N of a silence", param_hint="TARGET")
    symbol = symbol_option(symbol, "--symbol")
    store = open_state(config_path, state_opt)
    try:
        resolved = resolve_target(store, target, frozenset(m.target for m in store.mutes(0)))
        lifted = store.unmute(resolved, symbol)
    finally:
        store.close()
    if not lifted:
        click.echo(f"{resolved}{' ' + symbol if symbol else ''} was not muted", err=True)
        raise SystemExit(EXIT_BAD_INPUT)
    click.echo(f"unmuted {resolved}{' ' + symbol if symbol else ''}")
