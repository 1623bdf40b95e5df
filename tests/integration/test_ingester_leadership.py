"""One ingester per deployment on PostgreSQL: a replica that dies hands the work to another
within seconds, and rows that commit out of id order (inbox entries, queued spans) are never
skipped by the ingester or the span shipper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import psycopg
import pytest
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

from exporter.ingest.applier import Applier
from exporter.ingest.ingester import Ingester
from exporter.ingest.outcomes import Outcomes
from exporter.inputs.callback_form import parse_callback, parse_form
from exporter.lifecycle import apply_all
from exporter.model import CALLBACK, InboxEntry, StatusEvent
from exporter.store.postgres import PostgresStore
from exporter.store.statements import APPEND, QUEUE_SPAN, for_psycopg
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing.outbox import SpanOutbox
from exporter.telemetry.tracing.shipper import SpanShipper
from exporter.telemetry.tracing.spans import span_id_for
from tests.integration.service import Service
from tests.integration.test_pipeline_e2e import samples, value
from tests.otlp_receiver import RecordingExporter
from tests.support import callback_params, sid, wait_for

pytestmark = pytest.mark.integration

TAKEOVER_LIMIT = 5.0  # seconds from the leader's death to the other replica leading


def scrape(replica: Service) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    # Retried: a scrape can fail (500) while a process is creating its metrics file
    # (prometheus/client_python#1199).
    return samples(wait_for(replica.scrape, timeout=10, what="a scrape"))


def leader_gauge(replica: Service) -> float:
    return value(scrape(replica), "twilio_exporter_ingester_leader")


def test_another_replica_takes_over_within_seconds_when_the_leader_dies(
    service_factory: Callable[..., Service], postgres_url: str
) -> None:
    replicas = [service_factory(workers=2, store_url=postgres_url) for _ in range(2)]

    def one_leader() -> list[float] | None:
        gauges = [leader_gauge(replica) for replica in replicas]
        return gauges if sorted(gauges) == [0, 1] else None

    gauges = wait_for(one_leader, timeout=15, what="exactly one replica to lead")
    leader, standby = (replicas[0], replicas[1]) if gauges[0] == 1 else (replicas[1], replicas[0])
    before = [(sid("SM", n), "sent") for n in range(20)]
    for message_sid, status in before:
        assert standby.post_callback(callback_params(message_sid, status)).status_code == 200
    standby.wait_applied()  # applied by the leader, in the other replica
    assert value(scrape(leader), "twilio_message_status_total") == len(before)
    assert leader_gauge(standby) == 0  # still standing by

    leader.kill()  # SIGKILL, master, workers and ingester: its lock's session ends with it
    killed_at = time.monotonic()
    after = [(sid("SM", n), "delivered") for n in range(20)]
    for message_sid, status in after:  # accepted while nobody ingests: they wait in the inbox
        assert standby.post_callback(callback_params(message_sid, status)).status_code == 200
    wait_for(lambda: leader_gauge(standby) == 1, timeout=15, what="the standby to take over")
    takeover = time.monotonic() - killed_at
    assert takeover < TAKEOVER_LIMIT, f"takeover took {takeover:.1f} s"

    standby.wait_applied(timeout=15)
    metrics = scrape(standby)
    assert value(metrics, "twilio_message_status_total", status="delivered") == len(after)
    assert value(metrics, "twilio_exporter_ingest_backlog_entries") == 0
    with psycopg.connect(postgres_url) as db:
        stored = db.execute("SELECT message_sid, status FROM status_events").fetchall()
    assert sorted(stored) == sorted(before + after)  # every callback once


# The outbox trap. PostgreSQL hands out identity values when rows are inserted, and the rows
# become visible when their transactions commit, in whatever order that is: a reader that
# remembered "everything up to id N is done" would skip a row with a smaller id that commits
# after it read N. The ingester and the shipper must read whatever is there, every time.


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_url)
    yield store
    store.close()


def callback_entry(message_sid: str, status: str, received_at: float = 1.7e9) -> InboxEntry:
    body = urlencode(callback_params(message_sid, status)).encode()
    return InboxEntry(CALLBACK, received_at, body, "")


def stored_statuses(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT message_sid, status FROM status_events ORDER BY id").fetchall()
    return [(sid_, status) for sid_, status in rows]


def test_an_inbox_entry_that_commits_after_later_ones_is_still_applied(
    postgres_store: PostgresStore, postgres_url: str
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ingester = Ingester(Applier(postgres_store, metrics, None), Outcomes(metrics))
    late = callback_entry(sid("SM", 1), "delivered")
    with psycopg.connect(postgres_url) as slow_worker:  # a transaction, open until commit()
        (late_id,) = slow_worker.execute(
            for_psycopg(APPEND) + " RETURNING id",
            (late.source, late.received_at, late.body, late.query),
        ).fetchone() or (None,)
        for n in range(2, 6):
            postgres_store.append(callback_entry(sid("SM", n), "delivered"))
        committed_ids = [entry.id for entry in postgres_store.pending(100)]
        assert late_id is not None and all(late_id < (id_ or 0) for id_ in committed_ids)

        assert ingester.apply_pending() == 4  # everything committed so far
        assert {s for s, _ in stored_statuses(postgres_url)} == {sid("SM", n) for n in range(2, 6)}
        assert ingester.apply_pending() == 0
        slow_worker.commit()

    assert ingester.apply_pending() == 1  # below every id applied before, and still found
    assert (sid("SM", 1), "delivered") in stored_statuses(postgres_url)
    counted = [
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "twilio_message_status_total" and sample.labels["status"] == "delivered"
    ]
    assert sum(counted) == 5  # each applied once
    assert postgres_store.backlog().entries == 0


def test_a_span_queued_by_a_late_commit_is_still_exported(
    postgres_store: PostgresStore, postgres_url: str
) -> None:
    metrics = Metrics(CollectorRegistry())
    exporter = RecordingExporter()
    shipper = SpanShipper(postgres_store, [exporter], Resource({}), metrics)
    applier = Applier(postgres_store, metrics, SpanOutbox())

    def ship_all() -> set[int]:
        while shipper.ship_once():
            pass
        shipped = {int(span.span_id, 16) for span in exporter.spans}
        exporter.spans.clear()
        return shipped

    def sent(message_sid: str) -> StatusEvent:
        return parse_callback(parse_form(callback_entry(message_sid, "sent").body), "", 1.7e9)

    early, later = sid("SM", 11), sid("SM", 12)
    recorded, _ = apply_all({}, [sent(early)])
    early_spans = SpanOutbox().encode([sent(early)], recorded)  # as record_all would queue it
    assert len(early_spans) == 1  # not final: a stage span, no root yet
    with psycopg.connect(postgres_url) as slow_writer:  # a transaction, open until commit()
        slow_writer.execute(for_psycopg(QUEUE_SPAN), (time.time(), early_spans[0]))
        applier.apply([sent(later)])  # committed at once, with an id above the open one's
        assert ship_all() == {span_id_for(later, "sent")}
        assert ship_all() == set()
        slow_writer.commit()

    assert ship_all() == {span_id_for(early, "sent")}  # below the ids shipped, and still found
    assert postgres_store.backlog().spans == 0
