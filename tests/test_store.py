"""The store contract, run against every backend: idempotent per (MessageSid, status), atomic
across processes, lifecycle applied, stale sweep and retention."""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pytest

from exporter.inputs.callback_form import FormParams, parse_callback
from exporter.model import CALLBACK, EVENT_STREAM, InboxEntry, Recorded, StatusEvent
from exporter.store import Store, StoreUnavailable, open_store
from exporter.store.migrations import SchemaTooNew
from exporter.store.sqlite import MIGRATIONS, SQLiteStore
from tests.support import callback_params, sid

T0 = 1_790_000_000.0
SCHEMA_VERSION = len(MIGRATIONS)


def make_event(n: int, status: str, at: float, query: str = "", **extra: str) -> StatusEvent:
    params = callback_params(sid("SM", n), status, **extra)
    return parse_callback(FormParams({k: [v] for k, v in params.items()}), query, at)


def test_appended_requests_come_back_exactly_as_posted_in_order(store: Store) -> None:
    """The inbox keeps what was posted byte for byte (bodies need not be UTF-8: the door
    refuses those, but the inbox must not be where they break) and the arrival time exactly."""
    posted = [
        InboxEntry(
            CALLBACK, 1_733_000_000.123456789, b"MessageSid=SM1&Body=%E2%82%AC+\x00\xff", ""
        ),
        InboxEntry(
            EVENT_STREAM, 1e-7, b'[{"data": "\\ \'q\' \xe2\x82\xac"}]', "a=%27b%27&t=\u00fc\n"
        ),
        InboxEntry(CALLBACK, 1_700_000_000.0, b"", "traceparent=00-x"),
    ]
    for entry in posted:
        store.append(entry)
    pending = store.pending(10)
    assert [replace(entry, id=None) for entry in pending] == posted
    assert [entry.id for entry in pending] == sorted(entry.id for entry in pending)
    assert store.pending(2) == pending[:2]


def test_first_event_creates_the_message(store: Store) -> None:
    recorded = store.record(make_event(1, "sent", T0))
    assert recorded.transition is not None and not recorded.duplicate
    assert recorded.message.status == "sent"
    assert recorded.message.first_seen_at == T0
    assert store.in_flight_counts() == {"sent": 1}


def test_duplicate_writes_nothing_and_reports_duplicate(store: Store) -> None:
    store.record(make_event(1, "sent", T0))
    again = store.record(make_event(1, "sent", T0 + 5))
    assert again.duplicate
    history = store.history(sid("SM", 1))
    assert history is not None
    assert [(e.status, e.received_at) for e in history.events] == [("sent", T0)]


def test_out_of_order_is_recorded_but_never_moves_status_back(store: Store) -> None:
    store.record(make_event(1, "queued", T0))
    store.record(make_event(1, "delivered", T0 + 10))
    late = store.record(make_event(1, "sent", T0 + 20))
    assert late.transition is not None and late.transition.out_of_order
    assert (late.transition.from_status, late.transition.started_at) == ("queued", T0)
    assert late.message.status == "delivered"
    history = store.history(sid("SM", 1))
    assert history is not None
    assert [(e.status, e.out_of_order) for e in history.events] == [
        ("queued", False), ("delivered", False), ("sent", True)
    ]  # fmt: skip
    assert store.in_flight_counts() == {}


def test_final_status_stamps_final_at_once(store: Store) -> None:
    store.record(make_event(1, "sent", T0))
    delivered = store.record(make_event(1, "delivered", T0 + 3))
    read = store.record(make_event(1, "read", T0 + 9))
    assert delivered.transition is not None and delivered.transition.reached_final
    assert read.transition is not None and not read.transition.reached_final
    assert read.message.final_at == T0 + 3
    assert read.message.status == "read"


def test_first_sender_context_wins(store: Store) -> None:
    first = "created=1789999990&tag.campaign=a&traceparent=00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    store.record(make_event(1, "queued", T0, query=first))
    later = store.record(make_event(1, "sent", T0 + 1, query="created=1789999000&tag.campaign=b"))
    message = later.message
    assert message.created_at == 1789999990
    assert dict(message.tags) == {"campaign": "a"}
    assert message.traceparent is not None and message.traceparent.startswith("00-111")
    assert later.transition is not None and later.transition.started_at == T0


def test_sender_is_kept_with_the_message(store: Store) -> None:
    """twilio_sender_message_status_total counts a message's later statuses under the sender
    its first callbacks named: the messaging service and From are read back from the store."""
    service = sid("MG", 1)
    store.record(make_event(1, "sent", T0, MessagingServiceSid=service, From="MyBrand"))
    later = store.record(make_event(1, "delivered", T0 + 1, MessagingServiceSid="", From=""))
    history = store.history(sid("SM", 1))
    assert history is not None
    for message in (later.message, history.message):
        assert (message.messaging_service_sid, message.from_) == (service, "MyBrand")


def test_event_time_orders_the_lifecycle_not_arrival(store: Store) -> None:
    # Event Streams events arrive late and unordered but say when each status happened.
    sent = replace(make_event(1, "sent", T0 + 60), source="event_stream", occurred_at=T0 + 2)
    queued = replace(make_event(1, "queued", T0 + 90), source="event_stream", occurred_at=T0)
    first = store.record(sent)
    late = store.record(queued)
    assert first.message.first_seen_at == T0 + 2
    assert late.transition is not None and late.transition.out_of_order
    assert (late.transition.at, late.transition.started_at) == (T0, T0)
    delivered = store.record(make_event(1, "delivered", T0 + 120))  # a callback: arrival time
    assert delivered.transition is not None
    assert (delivered.transition.from_status, delivered.transition.started_at) == ("sent", T0 + 2)
    history = store.history(sid("SM", 1))
    assert history is not None
    assert [(e.status, e.received_at, e.occurred_at) for e in history.events] == [
        ("queued", T0 + 90, T0), ("sent", T0 + 60, T0 + 2), ("delivered", T0 + 120, None)
    ]  # in lifecycle order  # fmt: skip


def test_event_time_after_arrival_counts_as_arrival(store: Store) -> None:
    ahead = replace(make_event(1, "sent", T0), source="event_stream", occurred_at=T0 + 30)
    recorded = store.record(ahead)
    assert recorded.transition is not None and recorded.transition.at == T0


def test_history_keeps_every_posted_parameter(store: Store) -> None:
    store.record(make_event(1, "undelivered", T0, ErrorCode="30007", RawDlrDoneDate="2611231205"))
    history = store.history(sid("SM", 1))
    assert history is not None
    (event,) = history.events
    assert event.params["ErrorCode"] == "30007"
    assert event.params["RawDlrDoneDate"] == "2611231205"
    assert (event.source, event.error_code) == ("callback", "30007")
    assert history.message.error_code == "30007"
    assert store.history(sid("SM", 99)) is None


def test_parameters_tags_and_batches_keep_every_character(store: Store) -> None:
    """Quotes, backslashes, braces, commas, newlines and non-ASCII survive the store as posted
    (PostgreSQL writes a batch's rows as arrays, whose text form escapes exactly these)."""
    odd = "a \"quoted\", {braced} \\ back\\slash,\nnew line; ünï €, NULL, 'single'"
    events = [
        make_event(n, "sent", T0, query=f"tag.note={quote(odd)}", Body=odd, ErrorCode="")
        for n in (1, 2)
    ]
    store.record_all(events)
    for n in (1, 2):
        history = store.history(sid("SM", n))
        assert history is not None
        assert history.events[0].params["Body"] == odd
        assert history.message.tags == {"note": odd}


def test_stale_sweep_claims_each_message_once(store: Store) -> None:
    store.record(make_event(1, "sent", T0))
    store.record(make_event(2, "sent", T0 + 100))
    store.record(make_event(3, "delivered", T0))
    claimed = store.sweep_stale(updated_before=T0 + 50, now=T0 + 60)
    assert [m.message_sid for m in claimed] == [sid("SM", 1)]
    assert claimed[0].stale_at == T0 + 60
    assert store.sweep_stale(updated_before=T0 + 50, now=T0 + 70) == []
    assert store.in_flight_counts() == {"sent": 1}


def test_spans_past_retention_are_purged_and_counted(store: Store) -> None:
    store.record_all([make_event(1, "sent", T0)], spans=lambda events, recorded: ["{}", "{}"])
    assert store.purge_spans(queued_before=time.time() - 3600) == 0  # queued just now
    assert store.purge_spans(queued_before=time.time() + 1) == 2
    assert store.backlog().spans == 0


def test_purge_deletes_messages_and_events_past_retention(store: Store) -> None:
    store.record(make_event(1, "delivered", T0))
    store.record(make_event(2, "delivered", T0 + 100))
    assert store.purge(updated_before=T0 + 50) == 1
    assert store.history(sid("SM", 1)) is None
    assert store.history(sid("SM", 2)) is not None


def test_record_all_applies_events_in_order_in_one_transaction(store: Store) -> None:
    batch = [
        make_event(1, "sent", T0),
        make_event(1, "delivered", T0 + 5),
        make_event(1, "sent", T0 + 6),  # a copy within the batch
        make_event(2, "queued", T0),
    ]
    first, second, copy, other = store.record_all(batch)
    assert first.transition is not None and not first.duplicate
    assert second.transition is not None and second.transition.from_status == "sent"
    assert second.message.status == "delivered"
    assert copy.duplicate and not other.duplicate
    assert store.in_flight_counts() == {"queued": 1}


def test_record_all_records_none_when_one_event_fails(store: Store) -> None:
    # Fails while its row is built, after the first event's rows were written.
    broken = replace(make_event(2, "sent", T0), params={"unstorable": object()})
    with pytest.raises(TypeError):
        store.record_all([make_event(1, "sent", T0), broken])
    assert store.history(sid("SM", 1)) is None
    assert store.record(make_event(1, "sent", T0)).transition is not None


def test_batches_locking_the_same_messages_in_any_order_never_deadlock(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    messages = [make_event(n, status, T0) for n in range(30) for status in ("sent", "delivered")]

    def run(worker: int) -> list[bool]:
        order = random.Random(worker).sample(messages, len(messages))
        outcomes = []
        for start in range(0, len(order), 6):
            outcomes += [
                not r.duplicate for r in stores[worker].record_all(order[start : start + 6])
            ]
        return outcomes

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(4)))
    assert sum(sum(r) for r in results) == len(messages)  # each status recorded once
    for backend in stores:
        backend.close()


def test_check_writable_passes_on_a_healthy_store(store: Store) -> None:
    store.check_writable()


def _record_in_child(
    store_url: str,
    n: int,
    status: str,
    barrier: multiprocessing.Barrier,
    queue: multiprocessing.Queue,
) -> None:  # type: ignore[type-arg]
    child_store = open_store(store_url)
    barrier.wait()
    outcomes = []
    for message in range(n):
        recorded = child_store.record(make_event(message, status, T0))
        outcomes.append(not recorded.duplicate)
    queue.put(outcomes)


def test_simultaneous_copies_in_different_processes_are_recorded_once(store_url: str) -> None:
    open_store(store_url).close()  # schema exists before the race starts
    processes, messages = 4, 60
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(processes), context.Queue()
    children = [
        context.Process(target=_record_in_child, args=(store_url, messages, "sent", barrier, queue))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    accepted_per_message = [sum(r[m] for r in results) for m in range(messages)]
    assert accepted_per_message == [1] * messages


def test_unwritable_sqlite_location_is_store_unavailable_not_a_crash(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "missing-dir" / "x.db"))  # a worker must still boot
    with pytest.raises(StoreUnavailable):
        store.check_writable()
    with pytest.raises(StoreUnavailable):
        store.record(make_event(1, "sent", T0))


def test_store_that_comes_back_creates_its_schema_and_records(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "later" / "x.db"))
    with pytest.raises(StoreUnavailable):
        store.record(make_event(1, "sent", T0))
    (tmp_path / "later").mkdir()
    assert not store.record(make_event(1, "sent", T0)).duplicate


def test_sqlite_database_of_an_earlier_version_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = SQLiteStore(str(path))
    old.record(make_event(1, "sent", T0))
    old.close()
    with sqlite3.connect(path) as db:  # as release 1 left it: no occurred_at column
        db.execute("ALTER TABLE status_events DROP COLUMN occurred_at")
        db.execute("CREATE INDEX messages_updated_at ON messages (updated_at)")
        db.execute("PRAGMA user_version = 1")
    upgraded = SQLiteStore(str(path))
    assert upgraded.schema_version == SCHEMA_VERSION
    later = replace(make_event(1, "queued", T0 + 9), source="event_stream", occurred_at=T0 - 5)
    assert upgraded.record(make_event(1, "sent", T0 + 1)).duplicate
    assert upgraded.record(later).transition is not None
    history = upgraded.history(sid("SM", 1))
    assert history is not None
    assert [(e.status, e.occurred_at) for e in history.events] == [
        ("queued", T0 - 5),
        ("sent", None),
    ]
    upgraded.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {row[1] for row in db.execute("PRAGMA index_list(messages)")}
    assert "messages_updated_at" not in indexes


def test_new_sqlite_database_is_at_the_latest_schema_version(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "new.db"))
    assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    store.close()
    assert SQLiteStore(str(tmp_path / "new.db")).schema_version == SCHEMA_VERSION  # read back


def test_sqlite_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    SQLiteStore(str(path)).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SQLiteStore(str(path))
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, but this"):
        store.record(make_event(1, "sent", T0))
    store.close()


def test_migrate_verb_prints_the_sqlite_schema_version(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "migrate", "--store", f"sqlite:///{tmp_path}/m.db"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"at schema version {SCHEMA_VERSION}" in result.stdout


def test_sqlite_batch_decided_before_the_lock_is_decided_again_when_a_writer_came_first(
    tmp_path: Path,
) -> None:
    """SQLite decides a batch before taking the write lock; a reconcile run (another
    process, another connection) that records the same status in between must make the
    batch's copy a duplicate, never a second event."""
    path = str(tmp_path / "x.db")
    ingester, reconcile = SQLiteStore(path), SQLiteStore(path)
    ingester.record(make_event(1, "sent", T0))
    encoded: list[list[str]] = []

    def spans_meanwhile_recorded_elsewhere(
        events: Sequence[StatusEvent], recorded: Sequence[Recorded]
    ) -> list[str]:
        if not encoded:  # the first decision, made outside the lock
            reconcile.record(make_event(1, "delivered", T0 + 5))
        encoded.append([f"{e.status}:{r.duplicate}" for e, r in zip(events, recorded, strict=True)])
        return encoded[-1]

    [outcome] = ingester.record_all(
        [make_event(1, "delivered", T0 + 6)], spans=spans_meanwhile_recorded_elsewhere
    )
    assert outcome.duplicate
    assert encoded == [["delivered:False"], ["delivered:True"]]  # decided again, under the lock
    history = ingester.history(sid("SM", 1))
    assert history is not None
    assert [(e.status, e.received_at) for e in history.events] == [
        ("sent", T0),
        ("delivered", T0 + 5),
    ]
    assert [encoded for _, encoded in ingester.unexported_spans(10)] == ["delivered:True"]


def test_sqlite_checkpoint_that_fails_after_a_commit_does_not_fail_the_batch(
    tmp_path: Path,
) -> None:
    """The WAL checkpoint runs after the batch committed: raising there would make the
    ingester skip counting a batch that is recorded and gone from the inbox."""

    class CheckpointFails(SQLiteStore):
        @contextlib.contextmanager
        def _read(self) -> Iterator[sqlite3.Connection]:
            with super()._read() as conn:
                yield FailingCheckpoints(conn)

    class FailingCheckpoints:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if "wal_checkpoint" in sql:
                raise StoreUnavailable("disk I/O error")
            return self._conn.execute(sql, *args)

    store = CheckpointFails(str(tmp_path / "x.db"))
    assert store.record(make_event(1, "sent", T0)).transition is not None
    assert store.record(make_event(1, "sent", T0 + 1)).duplicate  # the first one is recorded
