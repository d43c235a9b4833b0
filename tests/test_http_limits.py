"""Responses the HTTP sources must not trust: bodies over the size limit (endless, announced too
large, gzip bombs, compressed padding), bodies that drip forever, and large bodies parsed off the
event loop; and ``perpwatch fetch`` against a dripping server.

Real local servers (``FakeMarket``'s streaming faults) for the sources, ``httpx.MockTransport`` for
the client's edge cases. Outcomes are asserted (the error, the requests made, the memory traced),
never the wall time."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from fakes.market import FakeMarket, gzip_zeros
from helpers import H, invoke

from perpwatch.api.interfaces import FetchRequest, PluginContext, SourceError
from perpwatch.common.clock import FakeClock
from perpwatch.plugins._http import PARSE_INLINE_BYTES, HttpClient, RequestError, RetryPolicy
from perpwatch.plugins.binance import BinanceSource
from perpwatch.plugins.coinglass import CoinGlassSource

OPEN_BAR = 1763136000000
NOW = (OPEN_BAR + H // 2) / 1000
START = OPEN_BAR - 47 * H
KEY = "cg-limits-key-777"
CG_OI = "/api/futures/open-interest/aggregated-history"
BN_KLINES = "/fapi/v1/klines"
METRICS = frozenset({"price.close", "oi.close"})
FAST = {"timeout": 5, "retries": 2, "backoff_base": 0.01, "backoff_max": 0.05}
LIMIT = 1 << 20
MIB = 1 << 20
#: Fault options that keep a client without a limit from eating the machine (it fails instead).
FUSED: dict[str, dict[str, Any]] = {
    "endless": {"max_bytes": 64 * MIB},
    "big": {"size": 64 * MIB},
    "gzip_bomb": {"size": 256 * MIB},
    "gzip_stuffing": {"max_bytes": 64 * MIB},
}
ENDPOINTS = [("coinglass", CG_OI, "oi.close"), ("binance", BN_KLINES, "price.close")]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def market(clock: FakeClock) -> Iterator[FakeMarket]:
    with FakeMarket(clock=clock, api_key=KEY) as m:
        m.generate("BTC", "1h", START, 48, seed=3)
        yield m


def source(kind: str, market: FakeMarket, clock: FakeClock, **options: Any) -> Any:
    ctx = PluginContext(clock=clock)
    if kind == "coinglass":
        return CoinGlassSource({"base_url": market.base_url, "api_key": KEY, **FAST, **options}, ctx)
    return BinanceSource({"base_url": market.base_url, **FAST, **options}, ctx)


def fetch(src: Any, metrics: frozenset[str] = METRICS, guard: float = 60.0) -> Any:
    """``src.fetch`` of the usual request; ``guard`` only stops a client that would hang forever."""

    async def go() -> Any:
        try:
            request = FetchRequest("BTC", "1h", metrics, START, OPEN_BAR)
            return await asyncio.wait_for(src.fetch(request), guard)
        finally:
            await src.aclose()

    return asyncio.run(go())


def traced_peak(run: Any) -> tuple[Any, int]:
    """``run()`` and the peak of the memory Python allocated meanwhile (every thread)."""
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- the sources against a real server ------------------------------------------------------------


@pytest.mark.parametrize(("plugin", "path", "metric"), ENDPOINTS)
@pytest.mark.parametrize("kind", list(FUSED))
def test_a_body_over_the_limit_is_one_error_naming_the_limit(plugin, path, metric, kind, market, clock):
    market.fail(path, kind, times=None, **FUSED[kind])
    src = source(plugin, market, clock, max_response_bytes=LIMIT)
    frame, peak = traced_peak(lambda: fetch(src))
    assert metric not in frame.columns
    [reason] = frame.problems
    assert f"over the limit of {LIMIT} bytes (max_response_bytes)" in reason, reason
    assert market.count(path) == 1  # refused, not retried: the next attempt would be the same
    assert peak < 8 * LIMIT, f"{peak} bytes traced"
    healthy = ({"price.close", "oi.close"} - {metric}).pop()
    assert len(frame.columns[healthy]) == 47


@pytest.mark.parametrize(("plugin", "path", "metric"), ENDPOINTS)
def test_an_endless_gzip_bomb_stops_at_the_limit_of_decompressed_bytes(plugin, path, metric, market, clock):
    market.fail(path, "gzip_bomb", times=None, size=None)  # never ends
    frame, peak = traced_peak(lambda: fetch(source(plugin, market, clock, max_response_bytes=LIMIT)))
    [reason] = frame.problems
    assert f"decompressed body over the limit of {LIMIT} bytes" in reason, reason
    assert peak < 8 * LIMIT
    assert market.sent_bytes < 64 * MIB  # the server was left, not read to its end


@pytest.mark.parametrize(("plugin", "path", "metric"), ENDPOINTS)
def test_a_body_that_drips_forever_ends_at_the_whole_response_timeout(plugin, path, metric, market, clock):
    # one byte every 0.02 s: httpx's read timeout (between two reads) never fires
    market.fail(path, "drip", times=None, interval=0.02)
    frame = fetch(source(plugin, market, clock, timeout=0.3, retries=1))
    assert metric not in frame.columns
    [reason] = frame.problems
    assert "no whole response within 0.3 s" in reason and "after 2 attempts" in reason, reason
    assert market.count(path) == 2


def test_the_default_limit_is_in_the_schema_and_serves_normal_data(market, clock):
    for cls in (CoinGlassSource, BinanceSource):
        assert cls.option_default("max_response_bytes") == 32 * MIB
    frame = fetch(source("binance", market, clock))
    assert frame.problems == [] and len(frame.columns["price.close"]) == 47


def test_everything_over_the_limit_raises_a_source_error(market, clock):
    market.fail("/api/", "endless", times=None, **FUSED["endless"])
    with pytest.raises(SourceError, match=f"over the limit of {LIMIT} bytes"):
        fetch(source("coinglass", market, clock, max_response_bytes=LIMIT))


# -- the client's reading of one body (MockTransport) ----------------------------------------------


class Body(httpx.AsyncByteStream):
    """A response body in pieces that counts how many of them were read."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.read += 1
            yield piece


def client(handler: Any, limit: int = 1000) -> HttpClient:
    return HttpClient(
        name="test",
        base_url="http://market.test",
        clock=FakeClock(NOW),
        policy=RetryPolicy(retries=2, backoff_base=0.0, backoff_max=0.0, max_retry_after=60),
        timeout=5,
        max_connections=4,
        max_response_bytes=limit,
        transport=httpx.MockTransport(handler),
    )


def get(http: HttpClient, decode: Any = lambda r: r.content) -> Any:
    async def go() -> Any:
        try:
            return await http.get("/x", {}, decode)
        finally:
            await http.aclose()

    return asyncio.run(go())


def deflate(data: bytes, wbits: int) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return z.compress(data) + z.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("", lambda b: b),
        ("identity", lambda b: b),
        ("gzip", lambda b: deflate(b, 31)),
        ("x-gzip", lambda b: deflate(b, 31)),
        ("deflate", lambda b: deflate(b, 15)),  # zlib-wrapped, as the RFC says
        ("deflate", lambda b: deflate(b, -15)),  # raw, as some servers send it
    ],
)
def test_the_limit_counts_decoded_bytes_exactly(encoding, encode):
    def handler(size: int) -> Any:
        def answer(request: httpx.Request) -> httpx.Response:
            headers = {"content-encoding": encoding} if encoding else {}
            return httpx.Response(200, headers=headers, stream=Body([encode(b"7" * size)]))

        return answer

    assert get(client(handler(1000))) == b"7" * 1000  # exactly the limit is fine
    with pytest.raises(RequestError, match="over the limit of 1000 bytes") as info:
        get(client(handler(1001)))
    assert not info.value.retryable


def test_a_too_large_content_length_is_refused_before_the_body_is_read():
    body = Body([b" " * 600, b" " * 600])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "1200"}, stream=body)

    with pytest.raises(RequestError, match="over the limit of 1000 bytes"):
        get(client(handler))
    assert body.read == 0


def test_raw_bytes_are_capped_even_when_they_decode_to_nothing():
    header = zlib.compressobj(6, zlib.DEFLATED, 31).compress(b"")
    pieces = [header or b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"] + [b"\x00\x00\x00\xff\xff" * 100] * 10
    body = Body(pieces)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=body)

    with pytest.raises(RequestError, match="body over the limit of 1000 bytes"):
        get(client(handler))
    assert body.read < len(pieces)


def test_an_unknown_content_encoding_is_refused_and_only_gzip_and_deflate_are_asked_for():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["accept-encoding"])
        return httpx.Response(200, headers={"content-encoding": "br"}, stream=Body([b"\x0b\x02\x80[]\x03"]))

    with pytest.raises(RequestError, match="unsupported Content-Encoding 'br'") as info:
        get(client(handler))
    assert not info.value.retryable and seen == ["gzip, deflate"]


def test_a_gzip_bomb_is_decoded_in_bounded_pieces():
    pieces = list(gzip_zeros(64 * MIB))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=Body(pieces))

    def attempt() -> None:
        with pytest.raises(RequestError, match=f"decompressed body over the limit of {MIB} bytes"):
            get(client(handler, limit=MIB))

    _, peak = traced_peak(attempt)
    assert peak < 6 * MIB, peak  # never the whole 64 MiB, nor one 64 MiB piece of it


def test_a_large_body_is_decoded_in_a_worker_thread_a_small_one_on_the_loop():
    def handler(size: int) -> Any:
        return lambda request: httpx.Response(200, content=b" " * size + b"[]")

    def where(response: httpx.Response) -> str:
        return threading.current_thread().name

    loop_thread = threading.current_thread().name
    assert get(client(handler(10), limit=10 * PARSE_INLINE_BYTES), where) == loop_thread
    assert get(client(handler(2 * PARSE_INLINE_BYTES), limit=10 * PARSE_INLINE_BYTES), where) != loop_thread


# -- perpwatch fetch ----------------------------------------------------------------------------


def fetch_cli(tmp_path: Path, market: FakeMarket, *extra: str, **options: Any) -> Result:
    """``perpwatch fetch`` of a day of BTC 1h klines from the market, in a thread: a command that
    hangs fails the test (after a minute) instead of hanging it."""
    settings = ", ".join(f"{k}: {v}" for k, v in {"base_url": market.base_url, **options}.items())
    config = tmp_path / "perpwatch.yaml"
    config.write_text(f"symbols: [BTC]\nsources:\n  binance: {{{settings}}}\n")
    out: list[Result] = []
    args = ["fetch", "--source", "binance", "--interval", "1h", "--metrics", "price.close"]
    args += ["--from", str(START), "--to", str(OPEN_BAR), "--out", str(tmp_path / "data")]
    worker = threading.Thread(target=lambda: out.append(invoke(*args, "--config", config, *extra)))
    worker.start()
    worker.join(60)
    assert out, "perpwatch fetch did not end"
    return out[0]


def test_fetch_from_a_dripping_server_ends_with_a_clear_error(tmp_path, market):
    market.fail(BN_KLINES, "drip", times=None, interval=0.02)
    result = fetch_cli(tmp_path, market, retries=0, timeout=0.3)
    assert result.exit_code == 1, result.output
    assert "error: BTC: " in result.stderr and "no whole response within 0.3 s" in result.stderr


def test_fetch_gives_each_request_an_overall_deadline(tmp_path, market):
    market.fail(BN_KLINES, "drip", times=None, interval=0.02)
    result = fetch_cli(tmp_path, market, "--timeout", "0.5", retries=0, timeout=30)
    assert result.exit_code == 1, result.output
    assert "timed out after 0.5 s (--timeout)" in result.stderr, result.stderr
    assert market.count(BN_KLINES) == 1  # the symbol stops at its first chunk that times out


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "1_000", "soon"])
def test_fetch_timeout_must_be_a_positive_finite_number(tmp_path, market, value):
    result = fetch_cli(tmp_path, market, "--timeout", value)
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.output and market.count() == 0
