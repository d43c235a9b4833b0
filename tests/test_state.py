"""The state store: rule states, events, the outbox with backoff, mutes, flags, transactions."""

from __future__ import annotations

import sqlite3

import pytest

from perpwatch.evaluation.events import Event, OrderIntent
from perpwatch.evaluation.rules import FIRING, RuleState
from perpwatch.live.state import BACKOFF_CAP, SCHEMA_VERSION, StateError, StateStore, backoff


def ev(kind: str = "fired", t: int = 3_600_000, rule: str = "r", symbol: str = "BTC", **kw) -> Event:
    return Event(kind=kind, strategy="s", rule=rule, symbol=symbol, time=t, **kw)


def test_wal_and_schema_version(store, tmp_path):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )
    store.conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StateError, match="newer"):
        StateStore(str(tmp_path / "state.db"))


def test_memory_store_and_unreadable_file(tmp_path):
    s = StateStore(":memory:")
    assert s.rule_status("s", "r", "BTC") == "inactive"
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="cannot open"):
        StateStore(str(bad))


def test_rule_state_roundtrip(store):
    assert store.load_rule_state("s", "r", "BTC") == RuleState()
    st = RuleState(status=FIRING, count=3, last_fired=7, episode_suppressed=True, last_bar=9)
    store.save_rule_state("s", "r", "BTC", st)
    assert store.load_rule_state("s", "r", "BTC") == st
    assert store.rule_status("s", "r", "BTC") == "firing"
    assert store.rule_status("s", "r", "ETH") == "inactive"
    assert store.load_rule_states("s", "BTC") == {"r": st}
    st.count = 4
    store.save_rule_state("s", "r", "BTC", st)
    assert store.load_rule_state("s", "r", "BTC").count == 4
    assert store.known_rules() == {"s": {"r"}}


def test_events_unique_by_key_and_any_kind(store):
    e = ev(
        values={"x": 1.5, "nan": float("nan"), "label": "HOT", "flag": True},
        signal=OrderIntent("long", 100.0),
    )
    first = store.record_event(e)
    assert isinstance(first, int)
    assert store.record_event(e) is None  # a replayed bar never duplicates
    assert store.event_id(e.key) == first
    got = store.get_event(first)
    assert got.values == {"x": 1.5, "nan": None, "label": "HOT", "flag": True}
    assert got.signal == OrderIntent("long", 100.0)
    rejected = ev("rejected", message="max_open_positions reached")
    assert store.record_event(rejected) is not None
    assert store.record_event(ev("order")) is not None
    assert [x.kind for x in store.events()] == ["fired", "rejected", "order"]
    assert [x.message for x in store.events(kind="rejected")] == ["max_open_positions reached"]


def test_transaction_commits_together_or_not_at_all(store, tmp_path):
    with pytest.raises(RuntimeError), store.transaction():
        store.record_event(ev(t=1))
        store.save_rule_state("s", "r", "BTC", RuleState(count=1))
        raise RuntimeError("crash")
    assert store.events() == [] and store.load_rule_state("s", "r", "BTC") == RuleState()
    with store.transaction():
        store.record_event(ev(t=2))
        with store.transaction():  # nested: joins the outer one
            store.record_event(ev(t=3))
        other = sqlite3.connect(str(tmp_path / "state.db"))
        assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0  # not yet committed
    assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2
    other.close()


def test_nested_failure_rolls_back_the_outer(store):
    with pytest.raises(ValueError), store.transaction():
        store.record_event(ev(t=1))
        with store.transaction():
            raise ValueError
    assert store.events() == []
    assert not store.in_transaction


def test_outbox_delivery_and_backoff(store):
    eid = store.record_event(ev())
    store.enqueue(eid, "console", now=100.0)
    store.enqueue(eid, "console", now=100.0)  # once only
    store.enqueue(eid, "ops", now=100.0)
    assert [(i.notifier, i.event.key) for i in store.due(100.0)] == [("console", ev().key), ("ops", ev().key)]
    assert store.due(99.0) == []
    store.mark_delivered(eid, "console", now=101.0)
    assert [i.notifier for i in store.due(200.0)] == ["ops"]
    t1 = store.mark_failed(eid, "ops", "HTTP 500", now=101.0)
    assert t1 == 101.0 + backoff(1) == 106.0
    assert store.due(105.0) == [] and store.next_due() == t1
    t2 = store.mark_failed(eid, "ops", "HTTP 500", now=t1)
    assert t2 - t1 == backoff(2) == 10.0
    t3 = store.mark_failed(eid, "ops", "HTTP 429", now=t2, retry_after=120)
    assert t3 - t2 == 120
    item = store.due(t3)[0]
    assert (item.attempts, item.last_error) == (3, "HTTP 429")
    t4 = store.mark_failed(eid, "ops", "HTTP 400", now=t3, retryable=False)
    assert t4 - t3 == BACKOFF_CAP  # kept, tried again much later
    assert backoff(30) == BACKOFF_CAP
    store.mark_delivered(eid, "ops", now=t4)
    assert store.due(1e12) == [] and store.next_due() is None and store.pending_count() == 0
    (row,) = store.recent_events()
    assert {d["notifier"]: d["status"] for d in row["deliveries"]} == {
        "console": "delivered",
        "ops": "delivered",
    }
    assert row["deliveries"][1]["attempts"] == 5


def test_recent_events_newest_first_and_by_strategy(store):
    for t in range(5):
        store.record_event(ev(t=t))
    store.record_event(Event("fired", "other", "r", "BTC", 9))
    rows = store.recent_events(3)
    assert [r["time"] for r in rows] == [9, 4, 3]
    assert [r["time"] for r in store.recent_events(10, strategy="s")] == [4, 3, 2, 1, 0]
    eid = store.event_id(ev(t=4).key)
    store.enqueue(eid, "tg", now=0)
    store.mark_failed(eid, "tg", "down", now=0)
    d = store.recent_events(10, strategy="s")[0]["deliveries"][0]
    assert d["status"] == "retrying" and d["last_error"] == "down" and d["next_try"] == 5.0


def test_mutes_expire_and_scope(store):
    store.mute("s", None, until=1000)
    assert store.is_muted("s", "r", "BTC", now=999)
    assert not store.is_muted("s", "r", "BTC", now=1000)  # expired
    assert not store.is_muted("t", "r", "BTC", now=0)
    store.mute("s/r", "ETH", until=2000)
    assert store.is_muted("s", "r", "ETH", now=1500)
    assert not store.is_muted("s", "r", "BTC", now=1500)
    assert not store.is_muted("s", "q", "ETH", now=1500)
    assert [(m.target, m.symbol) for m in store.mutes(500)] == [("s", None), ("s/r", "ETH")]
    store.mute("s/r", "ETH", until=3000)  # extends
    assert store.is_muted("s", "r", "ETH", now=2500)
    assert store.unmute("s/r", "BTC") == 0
    assert store.unmute("s/r") == 1
    assert not store.is_muted("s", "r", "ETH", now=2500)


def test_flags_and_progress(store):
    assert store.get_flag("kill") is None
    store.set_flag("kill", "1")
    assert store.get_flag("kill") == "1"
    store.set_flag("kill", None)
    assert store.get_flag("kill") is None
    assert store.last_processed("s") is None
    store.set_processed("s", 200)
    store.set_processed("s", 100)  # never goes back
    assert store.last_processed("s") == 200


def test_concurrent_reader_sees_only_committed(store, tmp_path):
    reader = StateStore(str(tmp_path / "state.db"))
    with store.transaction():
        store.record_event(ev())
        assert reader.recent_events() == []
    assert len(reader.recent_events()) == 1
    reader.close()
