"""Clocks: the real one, and a fake one that tests advance by hand (a day of bars in seconds)."""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Wall-clock time in seconds since the epoch, and sleeping."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock(Clock):
    """Time moves only when someone sleeps: ``sleep(s)`` advances the clock by ``s`` at once."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = float(start)
        self._mono = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.now += seconds
        self._mono += seconds
        await asyncio.sleep(0)
