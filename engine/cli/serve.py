"""``perpwatch serve``: ``/metrics``, ``/healthz`` and the dashboard, read-only, over a state database
(after a simulation, or beside a running ``perpwatch run`` on the same host); and what ``run --http``
shares with it: the address and the backend options from ``--http`` and the config's ``http:``."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import click

from perpwatch.cli.common import get_registry, log_level, report_errors, with_state_options
from perpwatch.common.errors import PerpwatchError

if TYPE_CHECKING:
    from perpwatch.live.config import Config


def register(cli: click.Group) -> None:
    cli.add_command(serve)


def http_address(option: str | None, cfg: Config) -> tuple[str, int] | None:
    """Where to serve: ``--http``, else the config's ``http.listen``, else None (not at all)."""
    from perpwatch.web.server import parse_listen

    if option is not None:
        return parse_listen(option, "--http")
    listen = cfg.http.get("listen")
    if listen:
        return parse_listen(str(listen), f"{cfg.file or 'config'}: http.listen")
    return None


def http_settings(cfg: Config) -> dict[str, Any]:
    """The backend's token and health grace from the config's ``http:`` block."""
    from perpwatch.web.backend import DEFAULT_HEALTH_GRACE

    return {
        "token": cfg.http.get("token") or None,
        "health_grace": float(cfg.http.get("health_grace", DEFAULT_HEALTH_GRACE)),
    }


@click.command("serve")
@click.option(
    "--http",
    "http_opt",
    metavar="HOST:PORT",
    help="Where to listen (default: the config's http.listen, else 127.0.0.1:9464).",
)
@click.option(
    "--executor",
    "executor_names",
    multiple=True,
    metavar="NAME",
    help="Show this executor's positions and PnL too (a config instance or plugin; repeatable). "
    "Default: the config's executors.",
)
@with_state_options
@report_errors
def serve(
    http_opt: str | None, executor_names: tuple[str, ...], config_path: str | None, state_opt: str | None
) -> None:
    """Serve /metrics, /healthz and the dashboard (read-only) over a state database."""
    import asyncio

    from perpwatch.live.config import find_config, load_config
    from perpwatch.web.server import DEFAULT_HOST, DEFAULT_PORT, require_http

    require_http("perpwatch serve")
    registry = get_registry()
    cfg = load_config(find_config(config_path), registry)
    address = http_address(http_opt, cfg) or (DEFAULT_HOST, DEFAULT_PORT)
    path = cfg.state if state_opt is None else state_opt
    if path != ":memory:" and not os.path.exists(path):
        raise PerpwatchError(f"no state database at {path} (perpwatch run creates it; or pass --state)")
    chosen = log_level()
    logging.basicConfig(
        level=chosen if chosen is not None else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    names = list(dict.fromkeys([*cfg.executors, *executor_names]))
    try:
        asyncio.run(_serve(cfg, registry, path, address, names))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


async def _serve(cfg: Config, registry: Any, path: str, address: tuple[str, int], names: list[str]) -> None:
    import asyncio
    import contextlib

    from perpwatch.api.interfaces import PluginContext
    from perpwatch.common.clock import Clock
    from perpwatch.common.redact import redact
    from perpwatch.live.state import StateStore
    from perpwatch.web import server as http
    from perpwatch.web.backend import Backend

    clock = Clock()
    store = StateStore(path)
    executors: dict[str, Any] = {}
    try:
        ctx = PluginContext(clock=clock, state_path=path, secrets=cfg.secrets, store=store)
        for name in names:
            inst = cfg.executor(name)
            plugin = registry.executors.get(inst.plugin)
            if plugin is None:
                installed = ", ".join(sorted(registry.executors)) or "none"
                raise PerpwatchError(
                    f"--executor {name}: no executor plugin {inst.plugin!r} (installed: {installed})"
                )
            try:
                executors[name] = plugin(dict(inst.options), ctx)
            except Exception as e:
                raise PerpwatchError(redact(f"executor {name!r}: {e}", cfg.secrets)) from None
        backend = Backend(store, clock, read_only=True, executors=executors, **http_settings(cfg))
        server = http.make_server(backend, *address, own_signals=True)  # Ctrl-C, SIGTERM: stop serving
        task = await http.start(server)
        host, port = http.bound(server)
        click.echo(f"perpwatch serve: {path} on http://{host}:{port}/ (read-only)", err=True)
        try:
            await asyncio.shield(task)
        finally:
            await http.stop(server, task)
    finally:
        for executor in executors.values():
            with contextlib.suppress(Exception):  # closing must not hide the outcome
                await executor.aclose()
        store.close()
