"""The HTTP server of ``run --http`` and ``serve``: uvicorn's ``Server.serve()`` as a task in the
caller's event loop (the runner's), with the Starlette app of :mod:`perpwatch.web.app`.

Nothing here imports the HTTP libraries at module level: :func:`require_http` names the extra
(``pip install 'perpwatch[http]'``) when one of them is missing, before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

from perpwatch.common.errors import Loc, LocatedError, PerpwatchError
from perpwatch.common.extras import EXTRAS, require

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
HTTP_MODULES = EXTRAS["http"]

#: The Host names a server bound to a loopback address answers (anything else: 400).
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]

log = logging.getLogger("perpwatch.web")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_http(purpose: str) -> None:
    """Import every library the HTTP side needs, or raise MissingExtra naming ``perpwatch[http]``."""
    for module in HTTP_MODULES:
        require(module, extra="http", purpose=purpose)


def parse_listen(text: str, where: str | Loc = "--http") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); ``[::1]:PORT`` for IPv6. A located
    error naming the bad part otherwise."""
    loc = Loc(where) if isinstance(where, str) else where
    raw = text.strip()
    host, port_text = DEFAULT_HOST, raw
    if raw.startswith("["):
        inside, _, rest = raw[1:].partition("]")
        host, port_text = inside, rest.removeprefix(":")
    elif ":" in raw:
        host, _, port_text = raw.rpartition(":")
        host = host or DEFAULT_HOST
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise LocatedError(
            loc, f"{text!r}: the port must be a number from 0 (any free port) to 65535 (write 127.0.0.1:9464)"
        )
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise LocatedError(
                loc,
                f"{text!r}: {host!r} is not an IP address (write 127.0.0.1:9464, or 0.0.0.0:9464 for every interface)",
            ) from None
    return host, int(port_text)


def make_server(backend: Any, host: str, port: int, own_signals: bool = False) -> Any:
    """A uvicorn ``Server`` for the app over ``backend`` (not started; ``serve()`` it in a task).
    ``own_signals``: SIGINT and SIGTERM stop it (``serve``); otherwise the runner's loop owns them."""
    import uvicorn

    from perpwatch.web.app import create_app

    config = uvicorn.Config(
        create_app(backend, LOOPBACK_HOSTS if _loopback(host) else None),
        host=host,
        port=port,
        log_config=None,  # perpwatch's own logging (redacted); uvicorn's loggers propagate to it
        access_log=False,  # no request lines: a mistyped token in a URL never reaches a log
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    if not own_signals:  # uvicorn would replace the loop's handlers with signal.signal ones
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server


async def start(server: Any) -> asyncio.Task[None]:
    """Start ``server`` in a task of the running loop; return once it listens (or raise why not)."""
    task = asyncio.create_task(server.serve(), name="perpwatch-http")
    while not server.started:
        if task.done():  # uvicorn logs why (the address in use) and exits
            where = f"{server.config.host}:{server.config.port}"
            try:
                task.result()
            except (SystemExit, OSError) as e:
                raise PerpwatchError(f"cannot serve HTTP on {where}: {_why(e)}") from None
            raise PerpwatchError(f"cannot serve HTTP on {where}")
        await asyncio.sleep(0.01)
    host, port = bound(server)
    log.info("serving /metrics, /healthz and the dashboard on http://%s:%d/", host, port)
    return task


def bound(server: Any) -> tuple[str, int]:
    """The address the server listens on (the port the system chose for port 0)."""
    for s in server.servers:
        for sock in s.sockets:
            name = sock.getsockname()
            return name[0], name[1]
    return server.config.host, server.config.port


async def stop(server: Any, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.shield(task), 5)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
    except Exception as e:  # stopping must not hide the run's outcome
        log.debug("stopping the HTTP server: %s", e)


def _why(e: BaseException) -> str:
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return "the address is in use or not available here (see the line above)"
