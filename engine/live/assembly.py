"""From strategies and the config to what the runner runs: a :class:`Job` per strategy and one plugin
instance per source, notifier and executor they name (with the trading layer when one executes)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perpwatch.api.interfaces import Executor, Notifier, PluginContext, Source
from perpwatch.api.registry import Registry
from perpwatch.common.errors import ErrorList, Loc, PerpwatchError
from perpwatch.common.symbols import normalise_symbols
from perpwatch.language.compiler import Strategy
from perpwatch.live.config import Config
from perpwatch.live.jobs import Job, rule_metrics
from perpwatch.live.routing import NotifyPolicy

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner

DEFAULT_NOTIFY = ("console",)


@dataclass
class Assembly:
    """The jobs and plugin instances for a set of strategies."""

    jobs: list[Job]
    sources: dict[str, Source]
    notifiers: dict[str, Notifier]
    executors: dict[str, Executor]
    trading: Any  # the trading layer, or None when no strategy executes (or it is not installed)
    policy: NotifyPolicy | None = None  # the config's routes, grouping, repeats and inhibitions


def load_trading() -> type | None:
    """The trading layer's class (``perpwatch.live.trading.Trading``), or None when it is not installed."""
    try:
        from perpwatch.live.trading import Trading
    except ModuleNotFoundError as e:
        if e.name == f"{__package__}.trading":
            return None
        raise
    return Trading


def _at(loc: Loc) -> Callable[[int], Loc]:
    """The same location for every item of a list (one built in code has none of its own)."""
    return lambda _: loc


def assemble(
    strategies: list[Strategy],
    cfg: Config,
    registry: Registry,
    ctx: PluginContext,
    redact: Callable[[str], str],
) -> Assembly:
    """Jobs and plugin instances for ``strategies`` (raises PerpwatchError, its message redacted).

    A plugin constructor's own exception is logged with its traceback at DEBUG level."""
    names = [s.name for s in strategies]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PerpwatchError(f"two strategy files have the same name: {', '.join(dup)}")

    def make(kind: str, name: str) -> Any:
        inst = getattr(cfg, kind[:-1])(name)
        table = getattr(registry, kind)
        plugin = table.get(inst.plugin)
        if plugin is None:
            listing = ", ".join(sorted(table)) or "none"
            raise PerpwatchError(f"no {kind[:-1]} plugin {inst.plugin!r} for {name!r} (installed: {listing})")
        try:
            return plugin(dict(inst.options), ctx)
        except Exception as e:
            log.debug("%s %r (plugin %s) could not be created", kind[:-1], name, inst.plugin, exc_info=True)
            raise PerpwatchError(redact(f"{kind[:-1]} {name!r}: {e}")) from None

    jobs, sources, notifiers = [], {}, {}
    policy = NotifyPolicy.from_config(cfg.notify, cfg.route, cfg.notifiers)
    if not cfg.route and all(s.notify is not None for s in strategies):
        # nothing is routed but the meta-alerts: they go where the strategies' alerts go
        policy.default = tuple(dict.fromkeys(n for s in strategies for n in s.notify or ())) or policy.default
    routed = policy.all_receivers()  # a strategy without notify: (and the meta-alerts) go through route:
    for n in routed:
        if n not in notifiers:
            if n not in cfg.notifiers and n not in registry.notifiers:
                known = ", ".join(sorted(cfg.notifiers)) or "none configured"
                raise PerpwatchError(f"route: no notifier named {n!r} ({known})")
            notifiers[n] = make("notifiers", n)
    for s in strategies:
        source = s.source or cfg.default_source()
        if source not in sources:
            sources[source] = make("sources", source)
        notify = list(s.notify) if s.notify is not None else list(routed)
        for n in notify:
            if n not in notifiers:
                if n not in cfg.notifiers and n not in registry.notifiers:
                    known = ", ".join(sorted(cfg.notifiers)) or "none configured"
                    raise PerpwatchError(f"strategy {s.name}: notify: no notifier named {n!r} ({known})")
                notifiers[n] = make("notifiers", n)
        deps = {r.name: rule_metrics(s, r) for r in s.rules}
        try:  # loaded files are normalised already; a Config or Strategy built in code may not be
            symbols = normalise_symbols(s.symbols or cfg.symbols, _at(Loc(f"strategy {s.name}: symbols")))
        except ErrorList as e:
            raise PerpwatchError(e.errors[0].format()) from None
        jobs.append(Job(s, source, symbols, notify, deps))
    trading, executors = None, {}
    trading_cls = load_trading()
    wanted = sorted({s.execute for s in strategies if s.execute})
    if wanted and trading_cls is None:
        log.warning("execute: %s ignored: the trading layer is not installed", ", ".join(wanted))
    elif wanted and trading_cls is not None:
        executors = {name: make("executors", name) for name in wanted}
        trading = trading_cls(ctx.store, executors, ctx.clock)
    return Assembly(jobs, sources, notifiers, executors, trading, policy)
