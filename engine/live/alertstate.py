"""The notification pipeline's tables in the state database (beside :mod:`perpwatch.live.state`'s).

``bar_snapshots(strategy, symbol, time, lines, recorded_at)``  PK (strategy, symbol, time)
    The strategy's ``snapshot:`` lines at a bar (JSON list of [label, text]), written in the cycle
    that routes an alert of that bar, read when its group is delivered; rows older than
    ``SNAPSHOT_DAYS`` are pruned.
``repeats(strategy, rule, symbol, last_sent)``  PK (strategy, rule, symbol)
    The bar time of the last ``fired`` or ``repeat`` notification of a firing rule.
``silences(id PK, matchers, until, author, comment, created_at)``
    Mutes with matchers (JSON object label -> list of values); one holds while ``until`` (epoch
    seconds) is in the future; expired ones are pruned.
``meta_alerts(name, subject, status, since, count, detail, updated_at)``  PK (name, subject)
    The engine's own alerts (:mod:`perpwatch.live.meta`): ``status`` ``ok`` or ``firing``,
    ``count`` consecutive failures, ``since`` (epoch seconds) when the status began.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from perpwatch.live.routing import Matchers
from perpwatch.live.state import StateStore

SNAPSHOT_DAYS = 14

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bar_snapshots (
    strategy TEXT NOT NULL, symbol TEXT NOT NULL, time INTEGER NOT NULL, lines TEXT NOT NULL,
    recorded_at REAL NOT NULL, PRIMARY KEY (strategy, symbol, time)
);
CREATE TABLE IF NOT EXISTS repeats (
    strategy TEXT NOT NULL, rule TEXT NOT NULL, symbol TEXT NOT NULL, last_sent INTEGER NOT NULL,
    PRIMARY KEY (strategy, rule, symbol)
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT, matchers TEXT NOT NULL, until REAL NOT NULL,
    author TEXT NOT NULL DEFAULT '', comment TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta_alerts (
    name TEXT NOT NULL, subject TEXT NOT NULL, status TEXT NOT NULL, since REAL NOT NULL,
    count INTEGER NOT NULL, detail TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (name, subject)
);
"""


@dataclass
class Silence:
    """A mute with matchers, who set it and why."""

    id: int
    matchers: dict[str, list[str]]
    until: float
    author: str
    comment: str
    created_at: float

    def matches(self, labels: dict[str, str]) -> bool:
        return Matchers.of(self.matchers).matches(labels)

    def text(self) -> str:
        return Matchers.of(self.matchers).text()


@dataclass
class MetaState:
    name: str
    subject: str
    status: str  # ok | firing
    since: float
    count: int
    detail: str


class AlertState:
    """Reads and writes the pipeline's tables (inside the caller's transaction when there is one)."""

    def __init__(self, store: StateStore):
        self.store = store
        with store.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    store.conn.execute(statement)

    @property
    def conn(self) -> Any:
        return self.store.conn

    # -- snapshots ----------------------------------------------------------------------------

    def save_snapshot(
        self, strategy: str, symbol: str, bar: int, lines: list[tuple[str, str]], now: float
    ) -> None:
        self.conn.execute(
            "INSERT INTO bar_snapshots (strategy, symbol, time, lines, recorded_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (strategy, symbol, time) DO NOTHING",
            (strategy, symbol, int(bar), json.dumps(lines, ensure_ascii=False), now),
        )

    def snapshot(self, strategy: str, symbol: str, bar: int) -> list[tuple[str, str]]:
        row = self.conn.execute(
            "SELECT lines FROM bar_snapshots WHERE strategy = ? AND symbol = ? AND time = ?",
            (strategy, symbol, bar),
        ).fetchone()
        return [(str(a), str(b)) for a, b in json.loads(row[0])] if row else []

    def prune(self, now: float) -> None:
        """Drop snapshots recorded more than SNAPSHOT_DAYS ago and silences that expired."""
        self.conn.execute("DELETE FROM bar_snapshots WHERE recorded_at < ?", (now - SNAPSHOT_DAYS * 86_400,))
        self.conn.execute("DELETE FROM silences WHERE until <= ?", (now,))

    # -- repeats ------------------------------------------------------------------------------

    def last_sent(self, strategy: str, rule: str, symbol: str) -> int | None:
        row = self.conn.execute(
            "SELECT last_sent FROM repeats WHERE strategy = ? AND rule = ? AND symbol = ?",
            (strategy, rule, symbol),
        ).fetchone()
        return int(row[0]) if row else None

    def set_sent(self, strategy: str, rule: str, symbol: str, bar: int) -> None:
        self.conn.execute(
            "INSERT INTO repeats (strategy, rule, symbol, last_sent) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (strategy, rule, symbol) DO UPDATE SET last_sent = excluded.last_sent",
            (strategy, rule, symbol, int(bar)),
        )

    # -- silences -----------------------------------------------------------------------------

    def add_silence(
        self,
        matchers: dict[str, list[str]],
        until: float,
        author: str = "",
        comment: str = "",
        now: float | None = None,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO silences (matchers, until, author, comment, created_at) VALUES (?, ?, ?, ?, ?)",
            (
                json.dumps(matchers),
                float(until),
                author,
                comment,
                time.time() if now is None else now,
            ),
        )
        return int(cur.lastrowid or 0)

    def remove_silence(self, silence_id: int) -> int:
        return self.conn.execute("DELETE FROM silences WHERE id = ?", (silence_id,)).rowcount

    def silences(self, now: float) -> list[Silence]:
        """The silences in force at ``now``, oldest first."""
        rows = self.conn.execute(
            "SELECT id, matchers, until, author, comment, created_at FROM silences WHERE until > ? ORDER BY id",
            (now,),
        )
        return [Silence(i, json.loads(m), u, a, c, t) for i, m, u, a, c, t in rows]

    def silenced(self, labels: dict[str, str], now: float) -> Silence | None:
        """The first silence in force that matches ``labels``."""
        return next((s for s in self.silences(now) if s.matches(labels)), None)

    # -- meta-alerts --------------------------------------------------------------------------

    def meta(self, name: str, subject: str) -> MetaState | None:
        row = self.conn.execute(
            "SELECT name, subject, status, since, count, detail FROM meta_alerts WHERE name = ? AND subject = ?",
            (name, subject),
        ).fetchone()
        return MetaState(*row) if row else None

    def metas(self) -> list[MetaState]:
        rows = self.conn.execute(
            "SELECT name, subject, status, since, count, detail FROM meta_alerts ORDER BY name, subject"
        )
        return [MetaState(*row) for row in rows]

    def set_meta(self, state: MetaState, now: float) -> None:
        self.conn.execute(
            "INSERT INTO meta_alerts (name, subject, status, since, count, detail, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, subject) DO UPDATE SET status = excluded.status, "
            "since = excluded.since, count = excluded.count, detail = excluded.detail, "
            "updated_at = excluded.updated_at",
            (state.name, state.subject, state.status, state.since, state.count, state.detail, now),
        )

    def drop_meta(self, name: str, subject: str) -> None:
        self.conn.execute("DELETE FROM meta_alerts WHERE name = ? AND subject = ?", (name, subject))
