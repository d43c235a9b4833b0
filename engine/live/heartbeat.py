"""The heartbeat: an optional URL pinged after every good cycle, the healthchecks.io / Uptime Kuma
convention (a GET, or POST, of the URL; with ``fail: true`` a failed cycle pings ``URL/fail``).

A monitor that stops hearing from perpwatch alerts by itself, which catches what no alert from
inside can: a dead process, a host that went down. A ping runs beside the loop, never holding up a
cycle; one still in flight is not doubled (the next cycle's ping waits for none). A ping that fails
is logged once, and once more when pings succeed again. The URL is a secret (it identifies the
check): it is never logged, only its host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from perpwatch import __version__

log = logging.getLogger("perpwatch.live.runner")  # one logger for every part of the runner


class Heartbeat:
    """Pings ``url`` after each cycle (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        fail: bool = False,
        timeout: float = 10.0,
        transport: Any = None,
        redact: Callable[[str], str] = lambda s: s,
    ):
        self.url = url.rstrip("/")
        self.method = method
        self.fail = fail
        self.timeout = timeout
        self.transport = transport
        self.redact = redact
        self.task: asyncio.Task[bool] | None = None
        self.failing = False
        self.sent = 0  # pings answered with a 2xx

    @classmethod
    def from_config(
        cls, raw: Mapping[str, Any] | None, transport: Any = None, redact: Callable[[str], str] = lambda s: s
    ) -> Heartbeat | None:
        """From the config's ``heartbeat:`` block; None without a ``url``."""
        if not raw or not raw.get("url"):
            return None
        return cls(
            str(raw["url"]),
            method=str(raw.get("method", "GET")),
            fail=bool(raw.get("fail", False)),
            timeout=float(raw.get("timeout", 10)),
            transport=transport,
            redact=redact,
        )

    @property
    def host(self) -> str:
        try:
            return httpx.URL(self.url).host or "?"
        except Exception:
            return "?"

    def after_cycle(self, ok: bool) -> None:
        """Start a ping for a cycle that ended (``ok``: it had no failure); never waits."""
        if not ok and not self.fail:
            return
        if self.task is not None and not self.task.done():
            return
        self.task = asyncio.create_task(self.ping(ok), name="heartbeat")

    async def ping(self, ok: bool) -> bool:
        """One ping (``/fail`` for a failed cycle); True when answered with a 2xx."""
        url = self.url if ok else f"{self.url}/fail"
        try:
            async with httpx.AsyncClient(
                transport=self.transport,
                timeout=httpx.Timeout(self.timeout),
                headers={"User-Agent": f"perpwatch/{__version__}"},
                follow_redirects=True,
            ) as client:
                async with asyncio.timeout(self.timeout):
                    response = await client.request(self.method, url)
            good = response.is_success
            problem = f"HTTP {response.status_code}"
        except (httpx.HTTPError, TimeoutError, OSError) as e:
            good, problem = False, type(e).__name__
        if good:
            self.sent += 1
            if self.failing:
                log.info("heartbeat to %s answers again", self.host)
            self.failing = False
        elif not self.failing:
            self.failing = True
            log.warning("heartbeat to %s failed: %s", self.host, self.redact(problem))
        return good

    async def aclose(self) -> None:
        """Wait for a ping in flight (bounded by its timeout)."""
        if self.task is not None and not self.task.done():
            await asyncio.wait([self.task], timeout=self.timeout)
