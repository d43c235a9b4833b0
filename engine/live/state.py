"""The state database: one SQLite file (WAL) holding everything ``perpwatch run`` must remember.

Tables (schema version in ``meta``; other modules may add their own tables through ``store.conn``):

``meta(key PK, value)``
    ``schema_version``.
``rule_state(strategy, rule, symbol, status, state, updated_at)``  PK (strategy, rule, symbol)
    ``state`` is ``RuleState.to_dict()`` as JSON; ``status`` is copied out for queries.
``events(id PK, key UNIQUE, kind, strategy, rule, symbol, time, severity, message, values_json,
signal_json, interval, recorded_at)``
    Every event: fired, suppressed, resolved, and whatever else the trading layer records
    ("rejected" with the reason in ``message``, "order"). ``key`` (``Event.key``) is unique, so a
    replayed bar never records an event twice.
``outbox(event_id, notifier, attempts, next_try, last_error, delivered_at, created_at)``
    PK (event_id, notifier): one row per event and notifier that must receive it; delivered once
    ``delivered_at`` is set; ``next_try`` (epoch seconds) is when a failed one is tried again.
``mutes(target, symbol, until)``  PK (target, symbol)
    ``target`` is ``strategy`` or ``strategy/rule``; ``symbol`` '' means every symbol; a mute
    holds while ``until`` (epoch seconds) is in the future.
``flags(name PK, value)``
    Named switches (the trading kill switch).
``progress(strategy PK, last_bar)``
    The newest bar the runner processed for each strategy (resuming a simulated run).
``snapshots(name PK, value, saved_at)``
    JSON documents replaced whole, such as the runner's telemetry after each cycle
    (``perpwatch.live.telemetry``), which ``perpwatch serve`` reads.

Writes outside ``with store.transaction():`` commit at once; inside, they commit together at the
end of the outermost block (nested blocks join it), or none do.

Only one ``perpwatch run`` may use a database: it opens the store with ``run_lock=True``, which
holds :class:`RunLock` on ``<db>.lock`` for the process's life. The short commands (``mute``,
``halt``, ``events``, …) take no run-lock; SQLite's own locking serialises their transactions with
the run's. :meth:`StateStore.check_file` tells a run that its file was deleted or replaced.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from perpwatch.common.errors import PerpwatchError
from perpwatch.evaluation.events import Event, OrderIntent
from perpwatch.evaluation.rules import INACTIVE, RuleState

SCHEMA_VERSION = 2  # 2: symbols are stored upper case (see _upper_case_symbols)
BACKOFF_BASE = 5.0  # seconds before the first retry of a failed delivery
BACKOFF_CAP = 3600.0  # the longest wait between two tries

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rule_state (
    strategy TEXT NOT NULL, rule TEXT NOT NULL, symbol TEXT NOT NULL,
    status TEXT NOT NULL, state TEXT NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (strategy, rule, symbol)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL, strategy TEXT NOT NULL, rule TEXT NOT NULL, symbol TEXT NOT NULL,
    time INTEGER NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL,
    values_json TEXT NOT NULL, signal_json TEXT, interval TEXT NOT NULL, recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_strategy ON events (strategy, id);
CREATE TABLE IF NOT EXISTS outbox (
    event_id INTEGER NOT NULL REFERENCES events(id), notifier TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL, last_error TEXT,
    delivered_at REAL, created_at REAL NOT NULL,
    PRIMARY KEY (event_id, notifier)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (delivered_at, next_try);
CREATE TABLE IF NOT EXISTS mutes (
    target TEXT NOT NULL, symbol TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (target, symbol)
);
CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS progress (strategy TEXT PRIMARY KEY, last_bar INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (name TEXT PRIMARY KEY, value TEXT NOT NULL, saved_at REAL NOT NULL);
"""


class StateError(PerpwatchError):
    """The state database cannot be opened or is of an unknown schema version."""


class StateBusy(StateError):
    """Another process holds the run-lock of the state database."""


class StateLost(StateError):
    """The state database was deleted or replaced under the process that has it open."""


MEMORY = ":memory:"  # SQLite's private in-memory database: nothing kept, nothing to lock


def state_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a state database (empty, a directory, a NUL), or None.

    Whether its directory exists is left to opening it (the config may be read elsewhere)."""
    if not path.strip():
        return "the state path is empty; name a database file, such as perpwatch.db"
    if "\0" in path:
        return f"the state path {path!r} contains a NUL character"
    if path == MEMORY:
        return None
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        inside = os.path.join(path, "perpwatch.db")
        return f"the state path {path} is a directory; name a database file in it, such as {inside}"
    return None


class RunLock:
    """An exclusive ``flock`` on ``<db>.lock`` (next to the database's real path), held until
    :meth:`release` or the process's end, however it ends: the kernel drops the lock with the last
    descriptor, so a SIGKILLed run leaves nothing stuck. The file holds the holder's PID, for the
    refusal message. It is never deleted: a process that had opened the old file would hold a lock
    no one else sees. (``flock`` is POSIX; perpwatch runs on Linux and macOS.)"""

    def __init__(self, db_path: str):
        self.db_path = db_path
        self.path = os.path.realpath(db_path) + ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StateBusy` naming the database and the holder's PID."""
        try:
            import fcntl
        except ImportError:  # not POSIX
            raise StateError("perpwatch run needs flock() to lock its state database") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StateError(f"cannot create the lock file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StateError(f"cannot lock {self.path}: {e.strerror}") from None
            holder = _read_pid(self.path)
            raise StateBusy(
                f"the state database {os.path.abspath(self.db_path)} is in use by another perpwatch run"
                f"{f' (pid {holder})' if holder else ''}; stop that run, or give this one its own --state"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def problem(self) -> str | None:
        """Why the lock no longer guards the database (its file deleted or replaced), or None."""
        if self.fd is None:
            return None
        held = os.fstat(self.fd)
        try:
            now = os.stat(self.path)
        except OSError:
            return f"its lock file {self.path} was deleted, so another run could start on it"
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            return f"its lock file {self.path} was replaced, so another run could start on it"
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@dataclass
class OutboxItem:
    """One pending delivery: an event and the notifier that must receive it."""

    event_id: int
    notifier: str
    attempts: int
    next_try: float
    last_error: str | None
    event: Event
    created_at: float = 0.0  # the cycle that queued it (grouping keeps a cycle's alerts together)


@dataclass
class Mute:
    target: str
    symbol: str | None
    until: float


def backoff(attempts: int) -> float:
    """Seconds before try ``attempts + 1``: 5 s, 10 s, 20 s, … at most an hour."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))


def _upper_case_symbols(conn: sqlite3.Connection, path: str) -> None:
    """Schema 1 -> 2: symbols were stored as written (``btc``); now they are upper case, so the
    rule states and mutes of ``btc`` become ``BTC``'s. One coin with rule states under two
    spellings is refused, naming them: which state is right is the trader's call."""
    clashes = conn.execute(
        "SELECT a.strategy, a.rule, a.symbol, b.symbol FROM rule_state a JOIN rule_state b "
        "ON b.strategy = a.strategy AND b.rule = a.rule AND b.symbol = upper(a.symbol) "
        "WHERE a.symbol != upper(a.symbol) ORDER BY 1, 2, 3"
    ).fetchall()
    if clashes:
        shown = ", ".join(f"{s}/{r}: {low!r} and {up!r}" for s, r, low, up in clashes[:5])
        raise StateError(
            f"{path}: rule states for one coin under two spellings ({shown}), written before perpwatch "
            "upper-cased symbols; keep the upper-case ones with: sqlite3 "
            f'{path} "DELETE FROM rule_state WHERE symbol != upper(symbol)"'
        )
    conn.execute("UPDATE rule_state SET symbol = upper(symbol) WHERE symbol != upper(symbol)")
    conn.execute("UPDATE OR REPLACE mutes SET symbol = upper(symbol) WHERE symbol != upper(symbol)")


class StateStore:
    """Rule states, events, the notification outbox, mutes, flags and run progress."""

    def __init__(self, path: str, *, run_lock: bool = False):
        """Open (or create) the database at ``path``; with ``run_lock``, first take the run-lock
        (:class:`StateBusy` when another run holds it), kept until :meth:`close`."""
        problem = state_path_problem(path)
        if problem:
            raise StateError(problem)
        folder = os.path.dirname(os.path.abspath(path))
        if path != MEMORY and not os.path.isdir(folder):
            raise StateError(f"cannot create the state database {path}: no directory {folder}")
        self.path = path
        self.lock: RunLock | None = None
        if run_lock and path != MEMORY:
            self.lock = RunLock(path)
            self.lock.acquire()
        try:
            self._open(path)
        except BaseException:
            self.close()
            raise
        # The file's identity, for check_file: SQLite keeps the file open, so its inode cannot be
        # reused for another file while this store lives.
        self._where = os.path.abspath(path)  # checked by this name, whatever the cwd becomes
        self._identity = _identity(self._where) if path != MEMORY else None

    def _open(self, path: str) -> None:
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout = 10000")
            if path != ":memory:":
                self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._depth = 0
            self._savepoints = 0
            with self.transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    self.conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                    )
                elif int(row[0]) < SCHEMA_VERSION:
                    _upper_case_symbols(self.conn, path)
                    self.conn.execute(
                        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
                    )
                elif int(row[0]) > SCHEMA_VERSION:
                    raise StateError(
                        f"{path}: state schema version {row[0]} is newer than this perpwatch "
                        f"understands ({SCHEMA_VERSION}); upgrade perpwatch"
                    )
        except sqlite3.Error as e:
            raise StateError(f"cannot open the state database {path}: {e}") from None

    def close(self) -> None:
        """Close the database, then release the run-lock (if held)."""
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()
        if self.lock is not None:
            self.lock.release()

    def check_file(self) -> None:
        """Raise :class:`StateLost` when :meth:`file_problem` finds one."""
        problem = self.file_problem()
        if problem:
            raise StateLost(problem)

    def file_problem(self) -> str | None:
        """Why this store can no longer keep what it writes, or None: ``path`` no longer names the
        file it has open (deleted, moved away or replaced), or the run-lock's file went (another run
        could start). One ``stat`` (two with the run-lock): cheap enough for every cycle."""
        if self._identity is None:
            return None
        where = self._where
        try:
            now = _identity(where)
        except (FileNotFoundError, NotADirectoryError):
            return (
                f"the state database {where} was moved or deleted while perpwatch had it open; "
                "stopping (everything recorded since would be lost)"
            )
        except OSError as e:
            return f"the state database {where} cannot be looked at any more ({e.strerror}); stopping"
        if now != self._identity:
            return (
                f"the state database {where} was replaced by another file while perpwatch had it open; "
                "stopping (everything recorded since would be lost)"
            )
        problem = self.lock.problem() if self.lock is not None else None
        return f"the state database {where}: {problem}; stopping" if problem else None

    # -- transactions -------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def transaction(self) -> Iterator[StateStore]:
        """All writes in the block commit together, or none do; a nested block joins the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    @contextmanager
    def savepoint(self) -> Iterator[StateStore]:
        """Inside a transaction: the block's writes are undone if it raises; the transaction goes on."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        finally:
            self._savepoints -= 1
        self.conn.execute(f"RELEASE {name}")

    # -- rule states --------------------------------------------------------------------------

    def load_rule_state(self, strategy: str, rule: str, symbol: str) -> RuleState:
        row = self.conn.execute(
            "SELECT state FROM rule_state WHERE strategy = ? AND rule = ? AND symbol = ?",
            (strategy, rule, symbol),
        ).fetchone()
        return RuleState.from_dict(json.loads(row[0])) if row else RuleState()

    def load_rule_states(self, strategy: str, symbol: str) -> dict[str, RuleState]:
        """Every stored rule state of one strategy and symbol, by rule name."""
        rows = self.conn.execute(
            "SELECT rule, state FROM rule_state WHERE strategy = ? AND symbol = ?", (strategy, symbol)
        )
        return {rule: RuleState.from_dict(json.loads(state)) for rule, state in rows}

    def load_strategy_states(self, strategy: str) -> dict[tuple[str, str], RuleState]:
        """Every stored rule state of one strategy, by (rule, symbol): one query per cycle."""
        rows = self.conn.execute("SELECT rule, symbol, state FROM rule_state WHERE strategy = ?", (strategy,))
        return {(rule, symbol): RuleState.from_dict(json.loads(state)) for rule, symbol, state in rows}

    def save_rule_state(self, strategy: str, rule: str, symbol: str, state: RuleState) -> None:
        self.conn.execute(
            "INSERT INTO rule_state (strategy, rule, symbol, status, state, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (strategy, rule, symbol) DO UPDATE SET "
            "status = excluded.status, state = excluded.state, updated_at = excluded.updated_at",
            (strategy, rule, symbol, state.status, json.dumps(vars(state)), time.time()),  # flat fields
        )

    def rule_status(self, strategy: str, rule: str, symbol: str) -> str:
        """``inactive``, ``pending`` or ``firing`` (inactive when never stepped)."""
        row = self.conn.execute(
            "SELECT status FROM rule_state WHERE strategy = ? AND rule = ? AND symbol = ?",
            (strategy, rule, symbol),
        ).fetchone()
        return row[0] if row else INACTIVE

    def known_rules(self) -> dict[str, set[str]]:
        """Strategy name -> the rule names with a stored state."""
        out: dict[str, set[str]] = {}
        for strategy, rule in self.conn.execute("SELECT DISTINCT strategy, rule FROM rule_state"):
            out.setdefault(strategy, set()).add(rule)
        return out

    # -- events -------------------------------------------------------------------------------

    def record_event(self, event: Event, now: float | None = None) -> int | None:
        """Store ``event``; its id, or None when an event with the same key is already stored."""
        cur = self.conn.execute(
            "INSERT INTO events (key, kind, strategy, rule, symbol, time, severity, message, "
            "values_json, signal_json, interval, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            (
                event.key,
                event.kind,
                event.strategy,
                event.rule,
                event.symbol,
                int(event.time),
                event.severity,
                event.message,
                _dumps(event.values),
                _dumps(event.to_dict()["signal"]) if event.signal is not None else None,
                event.interval,
                time.time() if now is None else now,
            ),
        )
        return cur.lastrowid if cur.rowcount else None

    def event_id(self, key: str) -> int | None:
        row = self.conn.execute("SELECT id FROM events WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def get_event(self, event_id: int) -> Event | None:
        row = self.conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
        return _event(row) if row else None

    def events(self, strategy: str | None = None, kind: str | None = None) -> list[Event]:
        """Every stored event in the order recorded (optionally of one strategy and/or kind)."""
        sql, args = f"SELECT {_EVENT_COLUMNS} FROM events WHERE 1", list[str]()
        if strategy is not None:
            sql, args = sql + " AND strategy = ?", [*args, strategy]
        if kind is not None:
            sql, args = sql + " AND kind = ?", [*args, kind]
        return [_event(row) for row in self.conn.execute(sql + " ORDER BY id", args)]

    def recent_events(self, limit: int = 20, strategy: str | None = None) -> list[dict[str, Any]]:
        """The newest events first, each with ``deliveries``: one dict per notifier it was routed to."""
        sql = f"SELECT id, recorded_at, {_EVENT_COLUMNS} FROM events"
        args: list[Any] = []
        if strategy is not None:
            sql, args = sql + " WHERE strategy = ?", [strategy]
        rows = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, int(limit)]).fetchall()
        out = []
        for row in rows:
            event = _event(row[2:])
            deliveries = [
                {
                    "notifier": notifier,
                    "status": "delivered"
                    if delivered_at is not None
                    else ("retrying" if attempts else "pending"),
                    "attempts": attempts,
                    "delivered_at": delivered_at,
                    "next_try": None if delivered_at is not None else next_try,
                    "last_error": last_error,
                }
                for notifier, attempts, next_try, last_error, delivered_at in self.conn.execute(
                    "SELECT notifier, attempts, next_try, last_error, delivered_at FROM outbox "
                    "WHERE event_id = ? ORDER BY notifier",
                    (row[0],),
                )
            ]
            out.append(
                {
                    "id": row[0],
                    "key": event.key,
                    "recorded_at": row[1],
                    **event.to_dict(),
                    "deliveries": deliveries,
                }
            )
        return out

    # -- the outbox ---------------------------------------------------------------------------

    def enqueue(self, event_id: int, notifier_name: str, now: float | None = None) -> None:
        """Have ``notifier_name`` deliver the event (once; enqueuing again changes nothing)."""
        now = time.time() if now is None else now
        self.conn.execute(
            "INSERT INTO outbox (event_id, notifier, next_try, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (event_id, notifier) DO NOTHING",
            (event_id, notifier_name, now, now),
        )

    def due(self, now: float, notifier: str | None = None, limit: int | None = None) -> list[OutboxItem]:
        """Undelivered items whose ``next_try`` has come, oldest event first."""
        sql = (
            f"SELECT o.event_id, o.notifier, o.attempts, o.next_try, o.last_error, o.created_at, {_EVENT_COLUMNS_E} "
            "FROM outbox o JOIN events e ON e.id = o.event_id WHERE o.delivered_at IS NULL AND o.next_try <= ?"
        )
        args: list[Any] = [now]
        if notifier is not None:
            sql, args = sql + " AND o.notifier = ?", [*args, notifier]
        sql += " ORDER BY o.event_id, o.notifier"
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, int(limit)]
        return [
            OutboxItem(r[0], r[1], r[2], r[3], r[4], _event(r[6:]), r[5])
            for r in self.conn.execute(sql, args)
        ]

    def next_due(self, notifier: str | None = None) -> float | None:
        """When the earliest undelivered item (of one notifier) may be tried; None when nothing is pending."""
        sql, args = "SELECT MIN(next_try) FROM outbox WHERE delivered_at IS NULL", []
        if notifier is not None:
            sql, args = sql + " AND notifier = ?", [notifier]
        return self.conn.execute(sql, args).fetchone()[0]

    def pending_count(self, notifier: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL", []
        if notifier is not None:
            sql, args = sql + " AND notifier = ?", [notifier]
        return self.conn.execute(sql, args).fetchone()[0]

    def mark_delivered(self, event_id: int, notifier: str, now: float | None = None) -> None:
        self.conn.execute(
            "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
            "WHERE event_id = ? AND notifier = ? AND delivered_at IS NULL",
            (time.time() if now is None else now, event_id, notifier),
        )

    def mark_failed(
        self,
        event_id: int,
        notifier: str,
        error: str,
        now: float | None = None,
        retry_after: float | None = None,
        retryable: bool = True,
    ) -> float:
        """Count a failed try; return when the next try is due.

        The wait is exponential (:func:`backoff`), at least ``retry_after``; a failure that is not
        retryable waits the longest (an hour): the item is kept, never dropped.
        """
        now = time.time() if now is None else now
        row = self.conn.execute(
            "SELECT attempts FROM outbox WHERE event_id = ? AND notifier = ?", (event_id, notifier)
        ).fetchone()
        attempts = (row[0] if row else 0) + 1
        wait = backoff(attempts) if retryable else BACKOFF_CAP
        if retry_after is not None and math.isfinite(retry_after):
            wait = max(wait, float(retry_after))
        next_try = now + wait
        self.conn.execute(
            "UPDATE outbox SET attempts = ?, next_try = ?, last_error = ? "
            "WHERE event_id = ? AND notifier = ? AND delivered_at IS NULL",
            (attempts, next_try, error, event_id, notifier),
        )
        return next_try

    # -- mutes --------------------------------------------------------------------------------

    def mute(self, target: str, symbol: str | None, until: float) -> None:
        """Mute ``strategy`` or ``strategy/rule`` (one symbol, or all when None) until ``until``."""
        self.conn.execute(
            "INSERT INTO mutes (target, symbol, until) VALUES (?, ?, ?) "
            "ON CONFLICT (target, symbol) DO UPDATE SET until = excluded.until",
            (target, symbol or "", float(until)),
        )

    def unmute(self, target: str, symbol: str | None = None) -> int:
        """Lift the mutes of ``target`` (of one symbol, or all of them); how many were lifted."""
        if symbol is None:
            cur = self.conn.execute("DELETE FROM mutes WHERE target = ?", (target,))
        else:
            cur = self.conn.execute("DELETE FROM mutes WHERE target = ? AND symbol = ?", (target, symbol))
        return cur.rowcount

    def is_muted(self, strategy: str, rule: str, symbol: str, now: float) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM mutes WHERE target IN (?, ?) AND symbol IN ('', ?) AND until > ? LIMIT 1",
            (strategy, f"{strategy}/{rule}", symbol, now),
        ).fetchone()
        return row is not None

    def mutes(self, now: float) -> list[Mute]:
        """The mutes in force at ``now``."""
        rows = self.conn.execute(
            "SELECT target, symbol, until FROM mutes WHERE until > ? ORDER BY target, symbol", (now,)
        )
        return [Mute(target, symbol or None, until) for target, symbol, until in rows]

    # -- flags and progress -------------------------------------------------------------------

    def get_flag(self, name: str) -> str | None:
        row = self.conn.execute("SELECT value FROM flags WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_flag(self, name: str, value: str | None) -> None:
        """Set a flag; None clears it."""
        if value is None:
            self.conn.execute("DELETE FROM flags WHERE name = ?", (name,))
        else:
            self.conn.execute(
                "INSERT INTO flags (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, str(value)),
            )

    def last_processed(self, strategy: str) -> int | None:
        """The newest bar (open time, ms) the runner processed for ``strategy``."""
        row = self.conn.execute("SELECT last_bar FROM progress WHERE strategy = ?", (strategy,)).fetchone()
        return row[0] if row else None

    def set_processed(self, strategy: str, bar_time: int) -> None:
        self.conn.execute(
            "INSERT INTO progress (strategy, last_bar) VALUES (?, ?) "
            "ON CONFLICT (strategy) DO UPDATE SET last_bar = MAX(last_bar, excluded.last_bar)",
            (strategy, int(bar_time)),
        )

    # -- snapshots and read helpers (the dashboard, /metrics) ---------------------------------

    def save_snapshot(self, name: str, value: str, now: float | None = None) -> None:
        """Replace the JSON document ``name`` (inside the caller's transaction, if any)."""
        self.conn.execute(
            "INSERT INTO snapshots (name, value, saved_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, saved_at = excluded.saved_at",
            (name, value, time.time() if now is None else now),
        )

    def load_snapshot(self, name: str) -> str | None:
        row = self.conn.execute("SELECT value FROM snapshots WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def rule_states(self) -> list[tuple[str, str, str, RuleState]]:
        """Every stored (strategy, rule, symbol, state), in that order."""
        rows = self.conn.execute(
            "SELECT strategy, rule, symbol, state FROM rule_state ORDER BY strategy, rule, symbol"
        )
        return [(s, r, sym, RuleState.from_dict(json.loads(st))) for s, r, sym, st in rows]

    def last_event_times(self, kinds: tuple[str, ...]) -> dict[tuple[str, str, str], int]:
        """(strategy, rule, symbol) -> the bar time of its newest event of one of ``kinds``."""
        marks = ", ".join("?" for _ in kinds)
        rows = self.conn.execute(
            f"SELECT strategy, rule, symbol, MAX(time) FROM events WHERE kind IN ({marks}) "
            "GROUP BY strategy, rule, symbol",
            kinds,
        )
        return {(s, r, sym): int(t) for s, r, sym, t in rows}

    def event_counts(self, after_id: int = 0) -> tuple[list[tuple[str, str, str, int]], int]:
        """(strategy, rule, kind, how many events) of the events with an id above ``after_id`` (a
        range of the primary key: a caller adds up what is new), and the newest id seen."""
        rows = self.conn.execute(
            "SELECT strategy, rule, kind, COUNT(*), MAX(id) FROM events WHERE id > ? "
            "GROUP BY strategy, rule, kind ORDER BY strategy, rule, kind",
            (int(after_id),),
        ).fetchall()
        newest = max((r[4] for r in rows), default=after_id)
        return [(s, r, k, n) for s, r, k, n, _ in rows], newest

    def outbox_stats(self) -> list[tuple[str, int, float | None, int]]:
        """Per notifier: (name, undelivered items, creation time of the oldest of them, failed tries
        recorded over the whole outbox)."""
        return [
            (name, pending or 0, oldest, failures or 0)
            for name, pending, oldest, failures in self.conn.execute(
                "SELECT notifier, SUM(delivered_at IS NULL), MIN(CASE WHEN delivered_at IS NULL "
                "THEN created_at END), SUM(attempts - (delivered_at IS NOT NULL)) FROM outbox "
                "GROUP BY notifier ORDER BY notifier"
            )
        ]

    def find_events(
        self,
        limit: int,
        strategy: str | None = None,
        rule: str | None = None,
        symbol: str | None = None,
        kind: str | None = None,
        severity: str | None = None,
    ) -> list[Event]:
        """The newest events first, at most ``limit``, each filter an exact match when given."""
        sql, args = f"SELECT {_EVENT_COLUMNS} FROM events WHERE 1", list[Any]()
        for column, value in (
            ("strategy", strategy),
            ("rule", rule),
            ("symbol", symbol),
            ("kind", kind),
            ("severity", severity),
        ):
            if value:
                sql, args = sql + f" AND {column} = ?", [*args, value]
        rows = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, int(limit)])
        return [_event(row) for row in rows]


_EVENT_COLUMNS = "kind, strategy, rule, symbol, time, severity, message, values_json, signal_json, interval"
_EVENT_COLUMNS_E = ", ".join(f"e.{c.strip()}" for c in _EVENT_COLUMNS.split(","))


def _event(row: tuple) -> Event:
    kind, strategy, rule, symbol, t, severity, message, values, signal, interval = row
    sig = json.loads(signal) if signal else None
    return Event(
        kind=kind,
        strategy=strategy,
        rule=rule,
        symbol=symbol,
        time=int(t),
        severity=severity,
        message=message,
        values=json.loads(values),
        signal=OrderIntent(**sig) if sig else None,
        interval=interval,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _dumps(value: Any) -> str:
    return json.dumps(_plain(value), separators=(",", ":"), allow_nan=False)
