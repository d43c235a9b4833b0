"""A notifier reads a bounded answer in bounded time: an endless body, a gzip bomb or an answer
that never finishes ends in one retryable or final NotifierError, never in unbounded memory or a
hang (issue 12, item 8, for the HTTP notifiers as for the sources)."""

from __future__ import annotations

import asyncio
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from perpwatch.api.interfaces import NotifierError, PluginContext
from perpwatch.evaluation.events import Event
from perpwatch.plugins._notify import MAX_ANSWER_BYTES
from perpwatch.plugins.telegram import TelegramNotifier
from perpwatch.plugins.webhook import WebhookNotifier

EVENT = Event(
    kind="fired",
    strategy="s",
    rule="r",
    symbol="BTC",
    time=1722830400000,
    severity="high",
    message="m",
    values={},
)


async def endless(piece: bytes) -> AsyncIterator[bytes]:
    while True:
        yield piece


async def streamed(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    """``data`` as a network transport would hand it over: in pieces, not read ahead."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def gzip_bomb() -> bytes:
    """A few hundred KB of gzip that decodes to 256 MiB of zeros."""
    z = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 20)
    return b"".join(z.compress(block) for _ in range(256)) + z.flush()


def deliver(notifier, event: Event = EVENT) -> NotifierError:
    async def go() -> None:
        try:
            await notifier.send(event)
        finally:
            await notifier.aclose()

    with pytest.raises(NotifierError) as info:
        asyncio.run(go())
    return info.value


def webhook(handler, **options) -> WebhookNotifier:
    ctx = PluginContext(transport=httpx.MockTransport(handler))
    return WebhookNotifier({"url": "https://hooks.example/abc", **options}, ctx)


def telegram(handler) -> TelegramNotifier:
    ctx = PluginContext(transport=httpx.MockTransport(handler))
    return TelegramNotifier({"token": "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ", "chat_id": "42"}, ctx)


@pytest.mark.parametrize("status", [200, 500])
def test_an_endless_answer_stops_at_the_limit(status: int) -> None:
    notifier = webhook(lambda request: httpx.Response(status, content=endless(b"x" * 65536)))
    tracemalloc.start()
    try:
        error = deliver(notifier)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"over the limit of {MAX_ANSWER_BYTES} bytes" in str(error)
    assert error.retryable is False
    assert peak < 16 * MAX_ANSWER_BYTES


def test_a_gzip_bomb_answer_is_cut_at_the_decompressed_limit() -> None:
    bomb = gzip_bomb()
    assert len(bomb) < MAX_ANSWER_BYTES  # the wire bytes alone would pass
    notifier = telegram(
        lambda request: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=streamed(bomb))
    )
    tracemalloc.start()
    try:
        error = deliver(notifier)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "decompressed body over the limit" in str(error)
    assert peak < 16 * MAX_ANSWER_BYTES


def test_an_answer_that_never_finishes_times_out_as_a_whole() -> None:
    async def dribble() -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.Event().wait()  # the rest never comes
        yield b"}"

    notifier = webhook(lambda request: httpx.Response(200, content=dribble()), timeout=0.2)
    error = deliver(notifier)
    assert "timed out after 0.2s" in str(error)
    assert error.retryable is True


def test_a_small_gzip_answer_is_read_as_usual() -> None:
    answer = zlib.compress(b'{"ok": true, "result": {}}', wbits=zlib.MAX_WBITS | 16)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=answer)

    notifier = telegram(handler)

    async def go() -> None:
        await notifier.send(EVENT)
        await notifier.aclose()

    asyncio.run(go())
    assert len(seen) == 1
    assert seen[0].headers["accept-encoding"] == "gzip, deflate"
