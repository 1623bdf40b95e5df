"""The retention purge on every backend; SQLite walks in storage order (no updated_at index)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from exporter.store import Store
from exporter.store.sqlite import SQLiteStore
from tests.support import sid
from tests.test_store import T0, make_event


def _present(store: Store, *numbers: int) -> list[int]:
    return [n for n in numbers if store.history(sid("SM", n)) is not None]


def test_purge_skips_a_message_still_updated_and_deletes_the_expired_after_it(
    store: Store,
) -> None:
    store.record(make_event(1, "sent", T0))
    store.record(make_event(2, "delivered", T0 + 1))
    store.record(make_event(1, "delivered", T0 + 200))  # first seen long ago, updated since
    store.record(make_event(3, "delivered", T0 + 2))
    store.record(make_event(4, "delivered", T0 + 300))
    assert store.purge(updated_before=T0 + 100) == 2
    assert _present(store, 1, 2, 3, 4) == [1, 4]
    assert store.purge(updated_before=T0 + 100) == 0


def test_purge_deletes_at_most_limit_messages_a_call(store: Store) -> None:
    for n in range(5):
        store.record(make_event(n, "delivered", T0 + n))
    store.record(make_event(9, "delivered", T0 + 500))
    assert [store.purge(T0 + 100, limit=2) for _ in range(4)] == [2, 2, 1, 0]
    assert _present(store, 0, 1, 2, 3, 4, 9) == [9]


def test_a_message_recorded_after_a_fresh_one_waits_for_the_horizon_to_pass_it(
    sqlite_store: SQLiteStore,
) -> None:
    sqlite_store.record(make_event(1, "delivered", T0))
    sqlite_store.record(make_event(2, "delivered", T0 + 500))
    # Stored after message 2 but timed long before it (a poll reporting an old status).
    sqlite_store.record(make_event(3, "delivered", T0 + 10))
    assert sqlite_store.purge(updated_before=T0 + 100) == 1
    assert _present(sqlite_store, 1, 2, 3) == [2, 3]
    # Never early: once the horizon passes what was stored before it, it goes too.
    assert sqlite_store.purge(updated_before=T0 + 501) == 2
    assert _present(sqlite_store, 1, 2, 3) == []


def test_a_database_made_with_the_updated_at_index_loses_it(tmp_path: Path) -> None:
    path = tmp_path / "exporter.db"
    SQLiteStore(str(path)).close()
    with sqlite3.connect(path) as conn:  # as the releases at schema version 2 left it
        conn.execute("CREATE INDEX messages_updated_at ON messages (updated_at)")
        conn.execute("PRAGMA user_version = 2")
    store = SQLiteStore(str(path))
    try:
        store.record(make_event(1, "delivered", T0))
        indexes = {
            name
            for (name,) in sqlite3.connect(path).execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'"
            )
        }
        assert "messages_updated_at" not in indexes
        assert "messages_in_flight" in indexes
        assert store.purge(updated_before=T0 + 1) == 1
    finally:
        store.close()
