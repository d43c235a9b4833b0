"""The jsonl notifier on a failing disk: every line whole, once.

A full disk is simulated by injection (``os.write`` raising ``ENOSPC`` after some bytes, or
``os.fsync`` failing), and a crash mid-write by a file that ends in a torn line. After each
failure the file holds only whole lines, and the outbox's retry writes the missing line once.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

import pytest

from perpwatch.api.interfaces import NotifierError
from perpwatch.evaluation.events import Event
from perpwatch.plugins._notify import dumps, event_record
from perpwatch.plugins.jsonl import JsonlNotifier


def event(symbol: str = "BTC", kind: str = "fired", message: str = "funding high") -> Event:
    return Event(
        kind=kind,
        strategy="s",
        rule="r",
        symbol=symbol,
        time=1_722_830_400_000,
        severity="high",
        message=message,
        values={"funding.rate": 0.0005},
        interval="1h",
    )


def send(notifier: JsonlNotifier, *events: Event) -> None:
    async def go() -> None:
        for e in events:
            await notifier.send(e)

    asyncio.run(go())


def send_error(notifier: JsonlNotifier, e: Event) -> NotifierError:
    with pytest.raises(NotifierError) as info:
        send(notifier, e)
    return info.value


def whole_lines(path: Path) -> list[dict]:
    """The records of ``path``; fails unless every line is whole JSON ending in a newline."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"torn last line: {data[-80:]!r}"
    return [json.loads(line) for line in data.decode().splitlines()]


def line_size(e: Event) -> int:
    return len(dumps(event_record(e)).encode()) + 1


def keys(path: Path) -> list[str]:
    return [f"{r['strategy']}/{r['rule']}/{r['symbol']}/{r['time']}/{r['kind']}" for r in whole_lines(path)]


class FullDisk:
    """``os.write`` that writes at most ``room`` more bytes to ``path``, then raises ENOSPC."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path, room: int):
        self.room = room
        self.path = path
        self.real_write = os.write
        monkeypatch.setattr(os, "write", self.write)

    def ours(self, fd: int) -> bool:
        try:
            return os.path.samefile(f"/proc/self/fd/{fd}", self.path)
        except OSError:
            return False

    def write(self, fd: int, data) -> int:
        if not self.ours(fd):
            return self.real_write(fd, data)
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real_write(fd, bytes(data)[: self.room])
        self.room -= n
        return n


@pytest.mark.parametrize("room", [0, 1, 17, 60])
def test_a_full_disk_leaves_no_torn_line_and_the_retry_writes_it_once(tmp_path, monkeypatch, room):
    path = tmp_path / "events.jsonl"
    notifier = JsonlNotifier({"path": str(path)})
    send(notifier, event("BTC"))
    before = path.read_bytes()
    disk = FullDisk(monkeypatch, path, room)
    exc = send_error(notifier, event("ETH", message="x" * 200))
    assert exc.retryable and "jsonl: cannot append to" in str(exc) and "space" in str(exc).lower()
    assert path.read_bytes() == before  # cut back to the last whole line
    disk.room = 10**9  # space again: the outbox retries
    send(notifier, event("ETH", message="x" * 200), event("SOL"))
    assert keys(path) == [
        "s/r/BTC/1722830400000/fired",
        "s/r/ETH/1722830400000/fired",
        "s/r/SOL/1722830400000/fired",
    ]


def test_a_failed_fsync_takes_the_line_back(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    notifier = JsonlNotifier({"path": str(path)})
    send(notifier, event("BTC"))
    real_fsync = os.fsync
    fail = {"on": True}

    def fsync(fd: int) -> None:
        if fail["on"]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    exc = send_error(notifier, event("ETH"))
    assert exc.retryable
    assert keys(path) == ["s/r/BTC/1722830400000/fired"]  # not on disk for sure: not in the file
    fail["on"] = False
    send(notifier, event("ETH"))
    assert keys(path) == ["s/r/BTC/1722830400000/fired", "s/r/ETH/1722830400000/fired"]


def test_a_failed_cut_is_repaired_before_the_next_line(tmp_path, monkeypatch):
    """If even the truncation fails, the next send repairs the torn tail before writing."""
    path = tmp_path / "events.jsonl"
    notifier = JsonlNotifier({"path": str(path)})
    send(notifier, event("BTC"))
    disk = FullDisk(monkeypatch, path, 25)
    real_truncate = os.ftruncate

    def broken_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "ftruncate", broken_truncate)
    send_error(notifier, event("ETH"))
    assert not path.read_bytes().endswith(b"\n")  # torn, for now
    monkeypatch.setattr(os, "ftruncate", real_truncate)
    disk.room = 10**9
    send(notifier, event("ETH"))
    assert keys(path) == ["s/r/BTC/1722830400000/fired", "s/r/ETH/1722830400000/fired"]


def torn_file(path: Path, whole: list[Event], torn: Event, cut: int) -> None:
    """``whole`` as lines, then the first ``cut`` bytes of ``torn``'s line: a crash mid-write."""
    probe = path.with_suffix(".probe")
    send(JsonlNotifier({"path": str(probe)}), *whole, torn)
    lines = probe.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:cut])
    probe.unlink()


@pytest.mark.parametrize("cut", [1, 30, -2])
def test_a_torn_last_line_from_a_crash_is_cut_at_start_up(tmp_path, cut):
    """A line cut short (kill -9 mid-write, or an older version on a full disk) is not a delivered
    event: it is removed at the first send, which then writes the event once, on its own line."""
    path = tmp_path / "events.jsonl"
    torn_file(path, [event("BTC")], event("ETH"), cut)
    notifier = JsonlNotifier({"path": str(path)})
    send(notifier, event("ETH"))  # the outbox resends the event whose line was torn
    assert keys(path) == ["s/r/BTC/1722830400000/fired", "s/r/ETH/1722830400000/fired"]


def test_a_last_line_missing_only_its_newline_counts_once(tmp_path):
    """A whole record without its newline is a written event: it gets its newline, not a twin."""
    path = tmp_path / "events.jsonl"
    torn_file(path, [event("BTC")], event("ETH"), -1)
    assert not path.read_bytes().endswith(b"\n")
    send(JsonlNotifier({"path": str(path)}), event("ETH"), event("SOL"))
    assert keys(path) == [
        "s/r/BTC/1722830400000/fired",
        "s/r/ETH/1722830400000/fired",
        "s/r/SOL/1722830400000/fired",
    ]


def test_a_torn_line_is_repaired_even_when_the_next_event_is_a_repeat(tmp_path):
    path = tmp_path / "events.jsonl"
    torn_file(path, [event("BTC")], event("ETH"), 10)
    send(JsonlNotifier({"path": str(path)}), event("BTC"))  # already there: nothing to write
    assert keys(path) == ["s/r/BTC/1722830400000/fired"]


def test_only_a_torn_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"kind":"fi')
    send(JsonlNotifier({"path": str(path)}), event("BTC"))
    assert keys(path) == ["s/r/BTC/1722830400000/fired"]


def test_a_full_disk_through_the_runner_loses_nothing(tmp_path, monkeypatch):
    """The outbox view: the event that met the full disk is retried, then delivered exactly once."""
    from perpwatch.common.clock import FakeClock
    from perpwatch.live.delivery import Delivery
    from perpwatch.live.jobs import RunnerOptions
    from perpwatch.live.state import StateStore

    path = tmp_path / "events.jsonl"
    notifier = JsonlNotifier({"path": str(path)})
    clock = FakeClock(1_722_830_400.0)

    async def go() -> StateStore:
        store = StateStore(str(tmp_path / "state.db"))
        delivery = Delivery(
            {"file": notifier}, store, clock, RunnerOptions(), lambda s: s, asyncio.Lock(), asyncio.Event()
        )
        with store.transaction():
            for e in (event("BTC"), event("ETH"), event("SOL")):
                event_id = store.record_event(e, clock.time())
                assert event_id is not None
                store.enqueue(event_id, "file", clock.time())
        disk = FullDisk(monkeypatch, path, line_size(event("BTC")) + 40)  # one and a bit lines
        await delivery.flush(5)
        assert store.pending_count("file") == 2
        whole_lines(path)
        disk.room = 10**9
        clock.now += 3600
        await delivery.flush(5)
        return store

    store = asyncio.run(go())
    assert store.pending_count("file") == 0
    store.close()
    assert keys(path) == [
        "s/r/BTC/1722830400000/fired",
        "s/r/ETH/1722830400000/fired",
        "s/r/SOL/1722830400000/fired",
    ]
