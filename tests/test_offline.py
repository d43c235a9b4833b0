"""Offline is diagnosed once, clearly (issue 13, item 2).

A source that cannot be reached at all (no name resolution, connection refused, TLS failure) is one
``cannot reach HOST: CAUSE`` reason, retried at most ``CONNECT_RETRIES`` times and quietly; the
runner says it once, summarises it while it lasts and says once when the source answers again;
``run --once`` exits 1 with that one line. "No network" is simulated by a resolver that fails every
name but the local ones (nothing leaves the machine); "connection refused" is a local port bound
without listening; a TLS failure is a local server that does not speak TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes.market import FakeMarket
from helpers import ROOT, H

from perpwatch.api.registry import load_registry
from perpwatch.common.clock import FakeClock
from perpwatch.language.compiler import load_strategy
from perpwatch.live import fetching
from perpwatch.live.config import Config, Instance
from perpwatch.live.runner import Runner, RunnerOptions
from perpwatch.live.state import StateStore
from perpwatch.plugins._http import CONNECT_RETRIES, HttpClient, RequestError, RetryPolicy

#: Run before perpwatch in a subprocess: a machine without network (every name but a local one
#: fails to resolve, as getaddrinfo does offline), counting the look-ups on stderr.
NO_NETWORK = r"""
import ipaddress, socket, sys

def _offline(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        if name != "localhost":
            sys.stderr.write(f"offline: resolving {name}\n")  # one write: threads do not split it
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution") from None
    return _real(host, *args, **kwargs)

_real, socket.getaddrinfo = socket.getaddrinfo, _offline
"""


def offline_perpwatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERPWATCH_", "COINGLASS_"))}
    env.update(HOME=str(cwd), XDG_CONFIG_HOME=str(cwd / ".config"))  # no user config is read
    code = NO_NETWORK + "from perpwatch.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_run_once_offline_exits_1_with_one_line_naming_the_host_and_the_cause(tmp_path):
    """The README's command on a machine without network: one line, exit 1, no traceback."""
    done = offline_perpwatch(
        "run",
        str(ROOT / "strategies" / "derivatives-monitor.yaml"),
        "--once",
        "--state",
        "s.db",
        cwd=tmp_path,
    )
    log = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("offline: "))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    about_the_host = [line for line in log.splitlines() if "fapi.binance.com" in line]
    assert len(about_the_host) == 1, log
    assert "WARNING" in about_the_host[0]
    assert "cannot reach fapi.binance.com: name resolution failed — no network?" in about_the_host[0]
    assert "retry" not in log.lower().replace("retrying in", "")  # no line per retried request
    # each endpoint (4 for BTC and ETH each) is looked up at most 1 + CONNECT_RETRIES times
    lookups = done.stderr.count("offline: resolving fapi.binance.com")
    assert 0 < lookups <= 8 * (1 + CONNECT_RETRIES)


# --- the client: each cause named, few attempts ----------------------------------------------------


def client(base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> HttpClient:
    return HttpClient(
        name="src",
        base_url=base_url,
        clock=FakeClock(),  # backoffs pass at once
        policy=RetryPolicy(retries=5, backoff_base=0.5, backoff_max=30, max_retry_after=60),
        timeout=20,
        max_connections=4,
        max_response_bytes=1 << 20,
        transport=transport,
    )


def get(http: HttpClient) -> RequestError:
    async def main() -> RequestError:
        try:
            await http.get("/x", {}, lambda r: r.json())
        except RequestError as e:
            return e
        finally:
            await http.aclose()
        raise AssertionError("the request succeeded")

    return asyncio.run(main())


@pytest.fixture
def resolver(monkeypatch) -> dict[str, str | None]:
    """getaddrinfo offline for every name in the returned dict mapped to None, and resolving a
    name mapped to an address there; the look-ups of each name are counted in ``counts``."""
    real = socket.getaddrinfo
    names: dict[str, str | None] = {}
    counts: dict[str, int] = {}

    def fake(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in names:
            counts[name] = counts.get(name, 0) + 1
            if names[name] is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real(names[name], *args, **kwargs)
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(name)
            return real(host, *args, **kwargs)
        raise AssertionError(f"a test tried to resolve {name}")

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    names["counts"] = counts  # type: ignore[assignment]
    return names


def test_name_resolution_failure_is_one_reason_retried_once_quietly(resolver, caplog):
    resolver["nowhere.invalid"] = None
    with caplog.at_level(logging.DEBUG):
        error = get(client("https://nowhere.invalid"))
    assert str(error) == "cannot reach nowhere.invalid: name resolution failed — no network?"
    assert error.unreachable and error.retryable
    assert resolver["counts"]["nowhere.invalid"] == 1 + CONNECT_RETRIES  # not 1 + retries (5)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("perpwatch")]


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A local port bound without listening: a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_connection_refused_names_host_and_port():
    with refused_port() as port:
        error = get(client(f"http://127.0.0.1:{port}"))
    assert str(error) == f"cannot reach 127.0.0.1:{port}: connection refused (nothing listening there?)"
    assert error.unreachable


@contextlib.contextmanager
def not_tls_server() -> Iterator[tuple[int, list[int]]]:
    """A local server that answers a TLS hello with plain HTTP; yields its port and a connection count."""
    server = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections.append(1)
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], connections
    finally:
        server.close()
        thread.join(10)


def test_a_tls_handshake_failure_is_named():
    with not_tls_server() as (port, connections):
        error = get(client(f"https://127.0.0.1:{port}"))
    assert str(error).startswith(f"cannot reach 127.0.0.1:{port}: TLS handshake failed (")
    assert "WRONG_VERSION_NUMBER" in str(error) or "wrong version number" in str(error).lower()
    assert len(connections) == 1 + CONNECT_RETRIES


def test_an_untrusted_certificate_is_named_and_not_retried():
    """The shape httpx gives a certificate that does not verify (httpx wraps httpcore, which
    wraps the ssl error); it will not change by itself, so it is tried once."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
        cause.verify_message = "self-signed certificate"
        try:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]", request=request) from cause
        except httpx.ConnectError as e:
            raise e

    error = get(client("https://api.example.test", httpx.MockTransport(handler)))
    assert (
        str(error) == "cannot reach api.example.test: TLS certificate not accepted (self-signed certificate)"
    )
    assert not error.retryable and len(calls) == 1


def test_a_connection_reset_after_connecting_is_still_retried_in_full():
    """Only failures to connect are cut short: a reset on a connection that was made is retried."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadError("reset", request=request) from OSError(errno.ECONNRESET, "reset")

    error = get(client("https://api.example.test", httpx.MockTransport(handler)))
    assert not error.unreachable and "connection failed (ReadError)" in str(error)
    assert len(calls) == 6


# --- the runner: once, summarised, recovered ---------------------------------------------------------

T0 = 1_722_470_400_000  # 2024-08-01T00:00Z
STRATEGY = """
version: 1
name: up
interval: 1h
source: binance
rules:
  - name: up
    when: price.close > 0
notify: [file]
"""


def test_the_runner_says_a_failure_once_summarises_it_and_says_when_it_is_over(tmp_path, resolver, caplog):
    clock = FakeClock(T0 / 1000)
    with FakeMarket(clock=clock) as market:
        market.generate("BTC", "1h", T0 - 400 * H, bars=500, seed=1)
        port = market.base_url.rsplit(":", 1)[1]
        resolver["market.invalid"] = None  # offline
        (tmp_path / "up.yaml").write_text(STRATEGY)
        cfg = Config(
            symbols=["BTC"],
            sources={
                "binance": Instance("binance", "binance", {"base_url": f"http://market.invalid:{port}"})
            },
            notifiers={"file": Instance("file", "jsonl", {"path": str(tmp_path / "events.jsonl")})},
        )
        store = StateStore(str(tmp_path / "state.db"))

        async def main() -> list[bool]:
            runner = Runner.build(
                [load_strategy(str(tmp_path / "up.yaml"))],
                cfg,
                load_registry(),
                store,
                clock,
                options=RunnerOptions(settle_seconds=0),
            )
            failed = []
            for n in range(10):  # a cycle per bar: offline for 9, then the network is back
                if n == 9:
                    resolver["market.invalid"] = "127.0.0.1"
                clock.now = (T0 + n * H) / 1000 + 1
                failed.append((await runner.run_cycle()).failed)
            await runner.aclose()
            return failed

        with caplog.at_level(logging.INFO, logger="perpwatch.live.runner"):
            failed = asyncio.run(main())
        store.close()
    assert failed == [True] * 9 + [False]
    said = [r.getMessage() for r in caplog.records if "source binance" in r.getMessage()]
    reason = f"cannot reach market.invalid:{port}: name resolution failed — no network?"
    assert said == [
        f"source binance failed for BTC 1h: {reason} (rules needing it are held this cycle)",
        f"source binance still failing since 00:00 UTC, 2 cycles, for BTC 1h: {reason} "
        "(rules needing it are held this cycle)",
        f"source binance still failing since 00:00 UTC, 4 cycles, for BTC 1h: {reason} "
        "(rules needing it are held this cycle)",
        f"source binance still failing since 00:00 UTC, 8 cycles, for BTC 1h: {reason} "
        "(rules needing it are held this cycle)",
        "source binance answers again after 9 failed cycles (failing since 00:00 UTC)",
    ]
    # every cycle looked the name up a bounded number of times: its endpoints, one retry each
    assert resolver["counts"]["market.invalid"] <= 10 * 4 * (1 + CONNECT_RETRIES)


def test_failure_log_spacing_and_what_counts_as_the_same_failure(caplog):
    """Summaries after 2, 4, 8… failed cycles, then every SUMMARY_EVERY; numbers in a reason do not
    make it another failure; another reason is said in full; a recovery once."""
    flog = fetching.FailureLog()
    with caplog.at_level(logging.INFO, logger="perpwatch.live.runner"):
        for n in range(1, 300):
            flog.cycle(n * 60.0, {"s"}, {("s", f"paused for another {300 - n} s"): ["BTC 1h"]})
    lines = [r.getMessage() for r in caplog.records]
    counts = [int(m.split(", ")[1].split()[0]) for m in lines[1:]]
    assert counts == [2, 4, 8, 16, 32, 64, 128, 192, 256]
    assert lines[0].startswith("source s failed for BTC 1h: paused for another 299 s")
    assert "still failing since 00:01 UTC, 299" not in " ".join(lines)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="perpwatch.live.runner"):
        flog.cycle(400 * 60.0, {"s"}, {("s", "HTTP 401, unauthorized"): ["BTC 1h"]})
        flog.cycle(401 * 60.0, {"other"}, {})  # s not asked this cycle: nothing to say about it
        flog.cycle(402 * 60.0, {"s"}, {})
    assert [r.getMessage() for r in caplog.records] == [
        "source s failed for BTC 1h: HTTP 401, unauthorized (rules needing it are held this cycle)",
        "source s answers again after 1 failed cycle (failing since 06:40 UTC)",
    ]


def test_a_connect_timeout_is_named_as_such_not_as_the_tls_read_it_interrupted():
    """httpx's ConnectTimeout during a TLS handshake is raised from an SSLWantReadError: the cause
    to name is the timeout."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        try:
            raise ssl.SSLWantReadError(2, "The operation did not complete (read)")
        except ssl.SSLWantReadError as e:
            raise httpx.ConnectTimeout("", request=request) from e

    error = get(client("https://api.example.test", httpx.MockTransport(handler)))
    assert str(error) == "cannot reach api.example.test: no connection within the timeout"
    assert error.retryable and len(calls) == 1 + CONNECT_RETRIES
