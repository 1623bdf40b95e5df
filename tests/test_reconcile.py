"""Reconcile against a local server that answers like Twilio's Messages API."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

from exporter.ingest.applier import Applier
from exporter.inputs.rest_poll import ApiMessage, poll_event, should_record
from exporter.model import CallbackContext, MessageState, Recorded, StatusEvent
from exporter.reconcile.api import ApiHttpClient, MessagesApi, RetryPolicy, make_client
from exporter.reconcile.engine import ReconcileOptions, Reconciler, RunSummary, Window
from exporter.settings import ApiCredentials, Settings
from exporter.store import SpanEncoder
from exporter.store.sqlite import SQLiteStore
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.tracing.outbox import ExportRequests, SpanOutbox
from exporter.web.app import Telemetry, create_app
from tests.apps import inline_client
from tests.fake_twilio_api import AUTH_TOKEN, FakeTwilioApi
from tests.otlp_receiver import spans_of
from tests.support import sid

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
YESTERDAY = Window(datetime(2026, 11, 22, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC))
STUCK_AFTER = 12 * 3600.0


def queued_spans(store: SQLiteStore) -> list[tuple[str, str, str]]:
    """(MessageSid, status, source) of the stage spans queued for export: polls must reach
    tracing like callbacks."""
    batch = ExportRequests(Resource({})).build([e for _, e in store.unexported_spans(1000)])
    return [
        (
            span.attributes["messaging.message.id"],
            span.attributes["twilio.message.status"],
            span.attributes.get("twilio.event.source", "callback"),
        )
        for span in spans_of(batch.request, "memory")
        if span.name != "twilio.message"
    ]


@pytest.fixture
def fake_api() -> Iterator[FakeTwilioApi]:
    fake = FakeTwilioApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def reconcile(
    sqlite_store: SQLiteStore,
    metrics: Metrics,
    fake_api: FakeTwilioApi,
) -> Callable[..., RunSummary]:
    """Run one reconcile at NOW; keyword arguments become ReconcileOptions. Retries back off
    by `backoff` seconds (none by default, so that only a Retry-After makes a test wait)."""

    def run(attempts: int = 3, backoff: float = 0.0, **options: object) -> RunSummary:
        policy = RetryPolicy(attempts=attempts, backoff=backoff, jitter=0.0)
        http_client = ApiHttpClient(api_base=fake_api.base_url, policy=policy)
        credentials = ApiCredentials(fake_api.account_sid, fake_api.account_sid, AUTH_TOKEN)
        api = MessagesApi(make_client(credentials, http_client))
        settings = ReconcileOptions(**{"window": None, "page_size": 50, **options})  # type: ignore[arg-type]
        applier = Applier(sqlite_store, metrics, SpanOutbox())
        return Reconciler(sqlite_store, applier, api, settings, clock=NOW.timestamp).run()

    return run


def callback(store: SQLiteStore, message_sid: str, status: str, at: datetime) -> None:
    """A status that arrived by callback at `at`."""
    store.record(
        StatusEvent(
            message_sid, status, at.timestamp(), to="+4915112345678", account_sid=sid("AC", 1)
        )
    )


def status_count(registry: CollectorRegistry, status: str, source_channel: str = "sms") -> float:
    value = registry.get_sample_value(
        "twilio_message_status_total",
        {"status": status, "channel": source_channel, "error_code": "", "country": "DE"},
    )
    return value or 0.0


def history(store: SQLiteStore, message_sid: str) -> list[tuple[str, str]]:
    recorded = store.history(message_sid)
    assert recorded is not None, f"{message_sid} is not in the store"
    return [(e.status, e.source) for e in recorded.events]


# -- stuck messages -----------------------------------------------------------------------


def test_stuck_message_is_polled_and_advanced(
    reconcile: Callable[..., RunSummary],
    sqlite_store: SQLiteStore,
    fake_api: FakeTwilioApi,
    registry: CollectorRegistry,
) -> None:
    stuck = sid("SM", 1)
    callback(sqlite_store, stuck, "sent", NOW - timedelta(hours=13))
    delivered_at = NOW - timedelta(hours=12, minutes=50)
    fake_api.add_message(
        stuck, "delivered", NOW - timedelta(hours=13), date_updated=delivered_at,
        date_created=NOW - timedelta(hours=13, seconds=2),
    )  # fmt: skip

    summary = reconcile()

    assert summary.figures == {
        "checked": 1, "updated": 1, "missed": 0, "still_stuck": 0, "not_found": 0, "error": 0,
    }  # fmt: skip
    assert summary.run.succeeded
    assert history(sqlite_store, stuck) == [("sent", "callback"), ("delivered", "poll")]
    assert status_count(registry, "delivered") == 1
    assert queued_spans(sqlite_store) == [(stuck, "delivered", "poll")]
    message = sqlite_store.history(stuck).message  # type: ignore[union-attr]
    assert message.status == "delivered"
    assert message.created_at == (NOW - timedelta(hours=13, seconds=2)).timestamp()
    # Timed by Twilio's date_updated, not by when we polled: the histogram shows the message.
    assert message.final_at == delivered_at.timestamp()
    assert registry.get_sample_value(
        "twilio_message_stage_duration_seconds_sum",
        {"from_status": "sent", "to_status": "delivered", "channel": "sms"},
    ) == pytest.approx(600)
    event = sqlite_store.history(stuck).events[-1]  # type: ignore[union-attr]
    assert event.params["price"] == "-0.07500"
    assert event.params["num_segments"] == "1"
    assert event.params["date_created"] == "2026-11-22T19:59:58Z"


def test_unchanged_status_records_nothing(
    reconcile: Callable[..., RunSummary],
    sqlite_store: SQLiteStore,
    fake_api: FakeTwilioApi,
    registry: CollectorRegistry,
) -> None:
    stuck = sid("SM", 1)
    callback(sqlite_store, stuck, "sent", NOW - timedelta(hours=13))
    fake_api.add_message(stuck, "sent", NOW - timedelta(hours=13))

    summary = reconcile()

    assert (summary.run.checked, summary.run.updated, summary.run.still_stuck) == (1, 0, 1)
    assert history(sqlite_store, stuck) == [("sent", "callback")]
    assert queued_spans(sqlite_store) == []
    assert registry.get_sample_value("twilio_status_callbacks_total", {"outcome": "duplicate"}) == 0


def test_messages_not_stuck_long_enough_are_not_polled(
    reconcile: Callable[..., RunSummary], sqlite_store: SQLiteStore, fake_api: FakeTwilioApi
) -> None:
    callback(sqlite_store, sid("SM", 1), "sent", NOW - timedelta(hours=11))
    callback(sqlite_store, sid("SM", 2), "delivered", NOW - timedelta(hours=20))

    assert reconcile().run.checked == 0
    assert fake_api.requested("fetch") == []


def test_a_message_that_stays_stuck_is_polled_once_per_stuck_after(
    reconcile: Callable[..., RunSummary], sqlite_store: SQLiteStore, fake_api: FakeTwilioApi
) -> None:
    stuck = sid("SM", 1)
    callback(sqlite_store, stuck, "sent", NOW - timedelta(hours=30))
    fake_api.add_message(stuck, "sent", NOW - timedelta(hours=30))

    reconcile()
    reconcile()

    assert fake_api.requested("fetch") == [stuck]


def test_message_twilio_does_not_know_is_counted_not_found(
    reconcile: Callable[..., RunSummary], sqlite_store: SQLiteStore
) -> None:
    callback(sqlite_store, sid("SM", 1), "queued", NOW - timedelta(hours=13))

    summary = reconcile()

    assert (summary.run.not_found, summary.run.errors, summary.run.succeeded) == (1, 0, True)


def test_polls_many_stuck_messages_in_batches_on_several_threads(
    reconcile: Callable[..., RunSummary], sqlite_store: SQLiteStore, fake_api: FakeTwilioApi
) -> None:
    sids = [sid("SM", n) for n in range(1, 26)]
    for message_sid in sids:
        callback(sqlite_store, message_sid, "sent", NOW - timedelta(hours=14))
        fake_api.add_message(message_sid, "delivered", NOW - timedelta(hours=14))

    summary = reconcile(batch_size=10, concurrency=4)

    assert summary.run.updated == 25
    assert sorted(fake_api.requested("fetch")) == sids
    assert sqlite_store.in_flight_counts() == {}


# -- rate limits and failures --------------------------------------------------------------


def test_rate_limit_waits_as_long_as_retry_after_says(
    reconcile: Callable[..., RunSummary], sqlite_store: SQLiteStore, fake_api: FakeTwilioApi
) -> None:
    stuck = sid("SM", 1)
    callback(sqlite_store, stuck, "sent", NOW - timedelta(hours=13))
    fake_api.add_message(stuck, "delivered", NOW - timedelta(hours=13))
    fake_api.fail("fetch", stuck, 429, retry_after="1")

    summary = reconcile()  # no backoff: only the Retry-After can make the client wait

    assert fake_api.requested("fetch") == [stuck, stuck]
    assert fake_api.gaps("fetch")[0] >= 1.0
    assert summary.run.updated == 1


def test_rate_limited_list_page_is_retried_after_retry_after(
    reconcile: Callable[..., RunSummary], fake_api: FakeTwilioApi
) -> None:
    fake_api.add_message(sid("SM", 1), "delivered", datetime(2026, 11, 22, 10, tzinfo=UTC))
    fake_api.fail("list", "0", 429, retry_after="1")

    summary = reconcile(window=YESTERDAY)

    assert fake_api.requested("list") == ["0", "0"]
    assert fake_api.gaps("list")[0] >= 1.0
    assert (summary.run.missed, summary.list_completed) == (1, True)


def test_server_error_is_retried_with_backoff_then_succeeds(
    reconcile: Callable[..., RunSummary], sqlite_store: SQLiteStore, fake_api: FakeTwilioApi
) -> None:
    stuck = sid("SM", 1)
    callback(sqlite_store, stuck, "sent", NOW - timedelta(hours=13))
    fake_api.add_message(stuck, "undelivered", NOW - timedelta(hours=13), error_code=30003)
    fake_api.fail("fetch", stuck, 500, times=2)

    summary = reconcile(attempts=3, backoff=0.2)

    assert fake_api.requested("fetch") == [stuck] * 3
    assert fake_api.gaps("fetch")[1] >= 0.2  # urllib3 retries once at once, then backs off
    assert summary.run.updated == 1 and summary.run.succeeded
    assert sqlite_store.history(stuck).message.error_code == "30003"  # type: ignore[union-attr]


def test_persistent_server_error_is_counted_and_the_run_goes_on(
    reconcile: Callable[..., RunSummary],
    sqlite_store: SQLiteStore,
    fake_api: FakeTwilioApi,
) -> None:
    broken, fine = sid("SM", 1), sid("SM", 2)
    for message_sid in (broken, fine):
        callback(sqlite_store, message_sid, "sent", NOW - timedelta(hours=13))
        fake_api.add_message(message_sid, "delivered", NOW - timedelta(hours=13))
    fake_api.fail("fetch", broken, 503, times=3)

    summary = reconcile(attempts=3)

    assert (summary.run.errors, summary.run.updated, summary.run.succeeded) == (1, 1, False)
    assert fake_api.requested("fetch").count(broken) == 3
    # Not marked as polled: the next run asks again, and this time it works.
    assert reconcile().run.updated == 1


def test_rejected_credentials_stop_the_run_without_retrying(
    reconcile: Callable[..., RunSummary], sqlite_store: SQLiteStore, fake_api: FakeTwilioApi
) -> None:
    callback(sqlite_store, sid("SM", 1), "sent", NOW - timedelta(hours=13))
    callback(sqlite_store, sid("SM", 2), "sent", NOW - timedelta(hours=13))
    fake_api.auth_token = "rotated"

    summary = reconcile(concurrency=1)

    assert summary.failure is not None and "TWILIO_AUTH_TOKEN" in summary.failure
    assert not summary.run.succeeded
    assert len(fake_api.requested("fetch")) <= 2  # no retries; the rest cancelled
    assert sqlite_store.reconcile_totals().runs_failed == 1


# -- the daily list ------------------------------------------------------------------------


def test_missed_message_is_added_and_counted(
    reconcile: Callable[..., RunSummary],
    sqlite_store: SQLiteStore,
    fake_api: FakeTwilioApi,
    registry: CollectorRegistry,
) -> None:
    seen, missed, inbound = sid("SM", 1), sid("SM", 2), sid("SM", 3)
    sent = datetime(2026, 11, 22, 10, tzinfo=UTC)
    callback(sqlite_store, seen, "delivered", sent + timedelta(seconds=5))
    fake_api.add_message(seen, "delivered", sent)
    fake_api.add_message(
        missed, "delivered", sent, to="whatsapp:+4915112345678",
        date_created=sent - timedelta(seconds=1), date_updated=sent + timedelta(seconds=9),
    )  # fmt: skip
    fake_api.add_message(inbound, "received", sent, direction="inbound")
    fake_api.add_message(sid("SM", 4), "delivered", datetime(2026, 11, 21, 10, tzinfo=UTC))

    summary = reconcile(window=YESTERDAY)

    assert (summary.run.checked, summary.run.missed, summary.run.updated) == (2, 1, 0)
    assert summary.missed_sids == [missed]
    assert summary.list_completed
    assert history(sqlite_store, missed) == [("delivered", "poll")]
    assert sqlite_store.history(inbound) is None
    assert status_count(registry, "delivered", "whatsapp") == 1
    assert registry.get_sample_value(
        "twilio_message_time_to_status_seconds_sum", {"status": "delivered", "channel": "whatsapp"}
    ) == pytest.approx(10)


def test_listing_applies_statuses_of_known_messages_without_fetching_them(
    reconcile: Callable[..., RunSummary], sqlite_store: SQLiteStore, fake_api: FakeTwilioApi
) -> None:
    stuck = sid("SM", 1)
    sent = datetime(2026, 11, 22, 10, tzinfo=UTC)
    callback(sqlite_store, stuck, "sent", sent)
    fake_api.add_message(stuck, "delivered", sent, date_updated=sent + timedelta(minutes=1))

    summary = reconcile(window=YESTERDAY)

    assert (summary.run.checked, summary.run.updated) == (1, 1)
    assert fake_api.requested("fetch") == []


def test_listing_walks_every_page(
    reconcile: Callable[..., RunSummary], sqlite_store: SQLiteStore, fake_api: FakeTwilioApi
) -> None:
    sids = [sid("SM", n) for n in range(1, 8)]
    for n, message_sid in enumerate(sids):
        fake_api.add_message(message_sid, "delivered", datetime(2026, 11, 22, n, tzinfo=UTC))

    summary = reconcile(window=YESTERDAY, page_size=3)

    assert (summary.pages, summary.run.missed) == (3, 7)
    assert fake_api.requested("list") == ["0", "1", "2"]
    assert all(sqlite_store.history(s) is not None for s in sids)


def test_crashed_listing_resumes_where_it_stopped_without_repeating_work(
    reconcile: Callable[..., RunSummary],
    sqlite_store: SQLiteStore,
    fake_api: FakeTwilioApi,
    registry: CollectorRegistry,
) -> None:
    sids = [sid("SM", n) for n in range(1, 6)]
    for n, message_sid in enumerate(sids):
        fake_api.add_message(message_sid, "delivered", datetime(2026, 11, 22, n, tzinfo=UTC))
    fake_api.fail("list", "1", 500, times=2)

    first = reconcile(window=YESTERDAY, page_size=2, attempts=2)
    second = reconcile(window=YESTERDAY, page_size=2, attempts=2)
    third = reconcile(window=YESTERDAY, page_size=2, attempts=2)

    assert (first.run.missed, first.run.errors, first.list_completed) == (2, 1, False)
    assert (second.run.missed, second.list_completed) == (3, True)
    assert fake_api.requested("list") == ["0", "1", "1", "1", "2"]  # page 0 never again
    assert third.list_skipped and third.pages == 0
    assert status_count(registry, "delivered") == 5
    assert sqlite_store.reconcile_totals().messages["missed"] == 5


def test_crash_mid_page_repeats_that_page_but_counts_nothing_twice(
    sqlite_store: SQLiteStore,
    reconcile: Callable[..., RunSummary],
    fake_api: FakeTwilioApi,
    tmp_path: Path,
    registry: CollectorRegistry,
) -> None:
    sids = [sid("SM", n) for n in range(1, 5)]
    for n, message_sid in enumerate(sids):
        fake_api.add_message(message_sid, "delivered", datetime(2026, 11, 22, n, tzinfo=UTC))
    crashing = CrashingStore(str(tmp_path / "exporter.db"), crash_after=3)
    http_client = ApiHttpClient(api_base=fake_api.base_url)
    credentials = ApiCredentials(fake_api.account_sid, fake_api.account_sid, fake_api.auth_token)
    api = MessagesApi(make_client(credentials, http_client))
    options = ReconcileOptions(window=YESTERDAY, page_size=2)
    applier = Applier(crashing, Metrics(CollectorRegistry()), None)
    with pytest.raises(SystemExit):  # the process dies mid-way through the second page
        Reconciler(crashing, applier, api, options, clock=NOW.timestamp).run()

    resumed = reconcile(window=YESTERDAY, page_size=2)

    assert fake_api.requested("list") == ["0", "1", "1"]
    assert resumed.run.missed == 1
    assert sqlite_store.reconcile_totals().messages["missed"] == 4  # 3 before the crash
    assert all(len(history(sqlite_store, s)) == 1 for s in sids)


class CrashingStore(SQLiteStore):
    """A store whose process dies right after its `crash_after`-th recorded event."""

    def __init__(self, path: str, crash_after: int) -> None:
        super().__init__(path)
        self._left = crash_after

    def record_all(
        self,
        events: Sequence[StatusEvent],
        *,
        consumed: Sequence[int] = (),
        spans: SpanEncoder | None = None,
    ) -> list[Recorded]:
        if self._left == 0:
            raise SystemExit("killed")
        self._left -= 1
        return super().record_all(events, consumed=consumed, spans=spans)


def test_listing_only_this_messaging_services_messages(
    reconcile: Callable[..., RunSummary], fake_api: FakeTwilioApi
) -> None:
    ours, theirs = sid("MG", 1), sid("MG", 2)
    sent = datetime(2026, 11, 22, 10, tzinfo=UTC)
    fake_api.add_message(sid("SM", 1), "delivered", sent, messaging_service_sid=ours)
    fake_api.add_message(sid("SM", 2), "delivered", sent, messaging_service_sid=theirs)

    summary = reconcile(window=YESTERDAY, messaging_service_sid=ours)

    assert summary.missed_sids == [sid("SM", 1)]


# -- figures for Prometheus ----------------------------------------------------------------


def test_service_metrics_show_reconcile_figures_from_the_store(
    reconcile: Callable[..., RunSummary],
    sqlite_store: SQLiteStore,
    fake_api: FakeTwilioApi,
    settings: Settings,
) -> None:
    fake_api.add_message(sid("SM", 1), "delivered", datetime(2026, 11, 22, 10, tzinfo=UTC))
    callback(sqlite_store, sid("SM", 2), "sent", NOW - timedelta(hours=13))
    fake_api.add_message(sid("SM", 2), "sent", NOW - timedelta(hours=13))
    reconcile(window=YESTERDAY)
    service_registry = CollectorRegistry()  # the service's, not reconcile's
    telemetry = Telemetry(service_registry, Metrics(service_registry))
    client = inline_client(settings, sqlite_store, telemetry)

    text = client.simulate_get("/metrics").text

    assert 'twilio_reconcile_messages_total{result="missed"} 1.0' in text
    assert 'twilio_reconcile_messages_total{result="still_stuck"} 1.0' in text
    assert 'twilio_reconcile_messages_total{result="error"} 0.0' in text
    assert 'twilio_reconcile_runs_total{outcome="success"} 1.0' in text
    sample = service_registry.get_sample_value
    assert sample("twilio_reconcile_last_success_timestamp_seconds") == NOW.timestamp()
    assert sample("twilio_reconcile_duration_seconds") == 0.0


def test_no_reconcile_run_yet_exposes_zero_counts_and_no_timestamps(
    sqlite_store: SQLiteStore, settings: Settings, registry: CollectorRegistry
) -> None:
    telemetry = Telemetry(registry, Metrics(registry))
    create_app(settings, sqlite_store, telemetry)

    assert registry.get_sample_value("twilio_reconcile_messages_total", {"result": "missed"}) == 0
    assert registry.get_sample_value("twilio_reconcile_last_success_timestamp_seconds") is None


# -- pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "recorded", "reported", "expected"),
    [
        ("sent", {"queued", "sent"}, "sent", False),  # nothing new
        ("sent", {"sent"}, "delivered", True),  # the lost callback
        ("delivered", {"delivered"}, "sent", False),  # the API lagging behind a callback
        ("read", {"delivered", "read"}, "delivered", False),  # already recorded
        ("undelivered", {"undelivered"}, "delivered", True),  # same rank: Twilio's word
        ("sent", {"sent"}, "Some_New_Status", True),  # unknown: recorded by its raw value
        ("sent", {"sent"}, "", False),
    ],
)
def test_what_counts_as_news(
    current: str, recorded: set[str], reported: str, expected: bool
) -> None:
    assert should_record(current, frozenset(recorded), reported) is expected


def test_poll_event_carries_what_the_api_reported() -> None:
    message = ApiMessage(
        sid=sid("SM", 1), status="undelivered", account_sid=sid("AC", 1),
        to="+4915112345678", direction="outbound-api", error_code=30005, num_media="1",
        date_created=datetime(2026, 11, 22, 10, tzinfo=UTC),
        date_updated=datetime(2026, 11, 22, 10, 5, tzinfo=UTC),
    )  # fmt: skip

    event = poll_event(message, NOW.timestamp())

    assert (event.source, event.status, event.channel, event.country) == (
        "poll", "undelivered", "mms", "DE",
    )  # fmt: skip
    assert event.error_code_label == "30005"
    assert event.context == CallbackContext(created_at=message.date_created.timestamp())  # type: ignore[union-attr]
    assert event.received_at == message.date_updated.timestamp()  # type: ignore[union-attr]
    assert event.params["polled_at"] == "2026-11-23T09:00:00Z"
    assert "body" not in event.params


def test_retry_policy_retries_rate_limits_and_server_errors_only() -> None:
    retry = RetryPolicy(attempts=4).retry()

    assert retry.total == 3
    assert all(retry.is_retry("GET", status, has_retry_after=False) for status in (429, 500, 503))
    assert not any(retry.is_retry("GET", status) for status in (400, 401, 403, 404))
    assert not retry.is_retry("POST", 503)  # reconcile only reads; a write is never repeated


def test_a_long_retry_after_is_capped_so_the_run_ends() -> None:
    retry = RetryPolicy(max_retry_after=300).retry()

    assert retry.parse_retry_after("86400") == 300
    assert retry.parse_retry_after("7") == 7


def test_stuck_messages_are_paged_by_sid_and_filtered_by_account(
    sqlite_store: SQLiteStore,
) -> None:
    for n in range(1, 4):
        callback(sqlite_store, sid("SM", n), "sent", NOW - timedelta(hours=13))
    sqlite_store.record(
        StatusEvent(sid("SM", 9), "sent", NOW.timestamp() - 50000, account_sid=sid("AC", 2))
    )
    cutoff = NOW.timestamp() - STUCK_AFTER

    first = sqlite_store.stuck_messages(cutoff, cutoff, account_sid=sid("AC", 1), limit=2)
    rest = sqlite_store.stuck_messages(
        cutoff, cutoff, account_sid=sid("AC", 1), after_sid=first[-1].message_sid
    )

    assert [_sid(m) for m in first + rest] == [sid("SM", n) for n in range(1, 4)]


def _sid(message: MessageState) -> str:
    return message.message_sid
