"""What only the PostgreSQL store has to get right: migrations under concurrent starts, a pool
that never crosses a fork, sweeps shared by replicas, and a fast 503 when the server is gone."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from exporter.model import CALLBACK, InboxEntry
from exporter.store import StoreUnavailable
from exporter.store.migrations import SchemaTooNew
from exporter.store.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresStore
from tests.postgres_server import TEST_DATABASE, PostgresServer
from tests.support import free_port, sid
from tests.test_store import T0, make_event

pytestmark = pytest.mark.usefixtures("postgres_server")


def test_concurrent_starts_migrate_the_schema_once(postgres_url: str) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        stores = list(pool.map(lambda _: PostgresStore(postgres_url), range(6)))
    assert {store.schema_version for store in stores} == {SCHEMA_VERSION}
    with psycopg.connect(postgres_url) as db:
        versions = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert versions == [(step.version,) for step in MIGRATIONS]  # each applied exactly once
    for store in stores:
        store.close()


def test_older_schema_is_upgraded_in_place_keeping_its_records(postgres_url: str) -> None:
    first = PostgresStore(postgres_url)
    first.record(make_event(1, "sent", T0))
    first.close()
    with psycopg.connect(postgres_url) as db:  # back to how release 1 left the database
        db.execute("DROP TABLE reconcile_polls, reconcile_checkpoints, reconcile_runs")
        db.execute("ALTER TABLE status_events DROP COLUMN occurred_at")
        db.execute("DELETE FROM schema_version WHERE version > 1")
    upgraded = PostgresStore(postgres_url)
    assert upgraded.schema_version == SCHEMA_VERSION
    assert upgraded.record(make_event(1, "sent", T0 + 1)).duplicate
    assert upgraded.load_checkpoint("list:x") is None  # the new tables are there
    upgraded.close()
    assert PostgresStore(postgres_url).schema_version == SCHEMA_VERSION  # read back


def test_database_from_a_newer_release_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as db:
        db.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (%s, 0)",
            (SCHEMA_VERSION + 1,),
        )
    store = PostgresStore(postgres_url)
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, but this"):
        store.record(make_event(1, "sent", T0))
    store.close()


def test_migrate_verb_creates_the_schema(postgres_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "migrate", "--store", postgres_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"schema version {SCHEMA_VERSION}" in result.stdout
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM status_events").fetchone() == (0,)


def _record_in_forked_child(store: PostgresStore, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(store.record(make_event(2, "sent", T0)).duplicate)


def test_pool_is_never_shared_across_fork(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    store.record(make_event(1, "sent", T0))  # the parent's pool is open and holds a connection
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_record_in_forked_child, args=(store, queue))
    child.start()
    assert queue.get(timeout=30) is False
    child.join(timeout=30)
    assert child.exitcode == 0
    # The parent's pooled connection was not touched (or closed) by the child.
    assert store.record(make_event(3, "sent", T0)).duplicate is False
    assert store.in_flight_counts() == {"sent": 3}
    store.close()


def test_concurrent_sweeps_claim_each_stale_message_once(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    for n in range(120):
        store.record(make_event(n, "sent", T0))
    sweepers = [PostgresStore(postgres_url, migrate=False) for _ in range(4)]

    def sweep(sweeper: PostgresStore) -> list[str]:
        claimed: list[str] = []
        while batch := sweeper.sweep_stale(updated_before=T0 + 1, now=T0 + 2, limit=7):
            claimed += [message.message_sid for message in batch]
        return claimed

    with ThreadPoolExecutor(max_workers=4) as pool:
        claims = list(pool.map(sweep, sweepers))
    everything = [message_sid for claim in claims for message_sid in claim]
    assert sorted(everything) == sorted(sid("SM", n) for n in range(120))
    assert store.in_flight_counts() == {}
    for each in (store, *sweepers):
        each.close()


def test_unreachable_server_is_store_unavailable_quickly() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    started = time.monotonic()
    store = PostgresStore(url)  # a worker started during an outage still boots
    with pytest.raises(StoreUnavailable, match="Connection refused"):
        store.record(make_event(1, "sent", T0))
    pooled = PostgresStore(url, migrate=False, pool_timeout=0.5)
    with pytest.raises(StoreUnavailable, match=r"no connection within 0\.5 s"):
        pooled.check_writable()
    assert time.monotonic() - started < 5
    store.close()
    pooled.close()


def test_store_created_during_an_outage_migrates_when_the_server_returns(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.stop()
    try:
        store = PostgresStore(postgres_server.url(TEST_DATABASE) + "?options=-csearch_path%3Dlate")
        with pytest.raises(StoreUnavailable):
            store.check_writable()
    finally:
        postgres_server.start()
    with psycopg.connect(postgres_server.url(TEST_DATABASE), autocommit=True) as admin:
        admin.execute("CREATE SCHEMA late")
    try:
        assert not store.record(make_event(1, "sent", T0)).duplicate
        assert store.schema_version == SCHEMA_VERSION
    finally:
        store.close()
        with psycopg.connect(postgres_server.url(TEST_DATABASE), autocommit=True) as admin:
            admin.execute("DROP SCHEMA late CASCADE")


def test_records_written_on_postgres_read_back_like_sqlite(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    query = "tag.campaign=spring&created=1789999990"
    store.record(make_event(1, "failed", T0, query=query, ErrorCode="30008"))
    history = store.history(sid("SM", 1))
    assert history is not None
    assert dict(history.message.tags) == {"campaign": "spring"}
    (event,) = history.events
    assert event.params["ErrorCode"] == "30008" and event.query == query
    assert event.out_of_order is False and isinstance(event.received_at, float)
    store.close()


def test_first_call_after_a_server_restart_succeeds_on_a_fresh_connection(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    store = PostgresStore(postgres_url)
    store.record(make_event(1, "sent", T0))  # the pool now holds a connection to the old server
    postgres_server.stop()
    postgres_server.start()
    assert not store.record(make_event(1, "delivered", T0 + 1)).duplicate  # no 503 needed
    store.check_writable()
    store.close()


def test_appends_prepare_their_statement_again_on_a_connection_that_lost_it(
    postgres_url: str,
) -> None:
    """The append runs a statement prepared once per connection; a connection without it
    (a new one, or one whose session was reset) prepares it on first use, and a real error
    still comes out as StoreUnavailable, naming the problem."""
    store = PostgresStore(postgres_url)
    entry = InboxEntry(CALLBACK, T0, b"MessageSid=SM1&MessageStatus=sent", "")
    store.append(entry)
    store._run(lambda conn: conn.execute("DEALLOCATE ALL"))  # what a session reset does
    store.append(entry)
    assert [e.body for e in store.pending(10)] == [entry.body] * 2
    store._run(lambda conn: conn.execute("ALTER TABLE inbox RENAME TO inbox_moved"))
    try:
        with pytest.raises(StoreUnavailable, match="inbox"):
            store.append(entry)
    finally:
        store._run(lambda conn: conn.execute("ALTER TABLE inbox_moved RENAME TO inbox"))
    store.append(entry)
    assert len(store.pending(10)) == 3
    store.close()


def test_serve_against_an_unreachable_server_fails_with_one_clear_line() -> None:
    url = f"postgresql://exporter:s3cret@127.0.0.1:{free_port()}/exporter"
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "--bind", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TWILIO_AUTH_TOKEN": "x", "EXPORTER_STORE": url},
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("twilio-status-exporter: error: EXPORTER_STORE: cannot open ")
    assert "Connection refused" in line and "s3cret" not in line
