"""POST /twilio/events through the real app: authentication, answers, records and counts."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import falcon.testing
import pytest
from prometheus_client import CollectorRegistry
from twilio.request_validator import RequestValidator

from exporter.model import InboxEntry
from exporter.settings import Settings
from exporter.store import StoreUnavailable
from exporter.store.sqlite import SQLiteStore
from exporter.web.app import Telemetry, create_app
from tests.apps import inline_client, inline_ingester
from tests.support import (
    AUTH_TOKEN,
    callback_params,
    cloud_event,
    sid,
    signed_events_request,
    signed_request,
)

HOST = "http://falconframework.org"  # falcon.testing's default Host
PATH = "/twilio/events"
SID = sid("SM", 1)
T = "2026-11-23T12:00:00.000Z"
T_EPOCH = 1795435200.0


def deliver(
    client: falcon.testing.TestClient,
    events: object,
    token: str = AUTH_TOKEN,
    headers: dict[str, str] | None = None,
) -> falcon.testing.Result:
    query, body, signed = signed_events_request(f"{HOST}{PATH}", events, token)
    return client.simulate_post(
        PATH, body=body, query_string=query, headers={**signed, **(headers or {})}
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def events_count(registry: CollectorRegistry, status: str, outcome: str) -> float:
    event_type = f"com.twilio.messaging.message.{status}"
    return sample(registry, "twilio_stream_events_total", type=event_type, outcome=outcome)


def statuses(registry: CollectorRegistry, status: str) -> float:
    labels = {"status": status, "channel": "sms", "error_code": "", "country": "DE"}
    return sample(registry, "twilio_message_status_total", **labels)


def test_signed_delivery_is_committed_before_the_200(
    client: falcon.testing.TestClient, sqlite_store: SQLiteStore, registry: CollectorRegistry
) -> None:
    result = deliver(client, [cloud_event(SID, "sent", T)])
    assert result.status_code == 200
    assert result.json == {"accepted": 1, "ignored": 0, "failed": []}
    history = sqlite_store.history(SID)
    assert history is not None
    [event] = history.events
    assert (event.status, event.source, event.occurred_at) == ("sent", "event_stream", T_EPOCH)
    assert events_count(registry, "sent", "accepted") == 1
    assert statuses(registry, "sent") == 1
    assert sample(registry, "twilio_stream_requests_total", outcome="accepted") == 1
    # Event Streams deliveries are not StatusCallback requests.
    assert sample(registry, "twilio_status_callbacks_total", outcome="accepted") == 0


def test_stage_times_and_lag_come_from_the_events_own_timestamps(
    client: falcon.testing.TestClient, sqlite_store: SQLiteStore, registry: CollectorRegistry
) -> None:
    # Delivered first (out of order, as Event Streams may), each reporting when it happened.
    deliver(client, [cloud_event(SID, "delivered", "2026-11-23T12:00:07.500Z")])
    deliver(client, [cloud_event(SID, "sent", "2026-11-23T12:00:02.000Z")])
    history = sqlite_store.history(SID)
    assert history is not None
    assert [(e.status, e.occurred_at) for e in history.events] == [
        ("sent", T_EPOCH + 2), ("delivered", T_EPOCH + 7.5)
    ]  # fmt: skip
    labels = {"from_status": "sent", "to_status": "delivered", "channel": "sms"}
    # The stage was observed when delivered arrived first: from first sight (its own time).
    assert sample(registry, "twilio_message_stage_duration_seconds_count", **labels) == 0
    assert sample(registry, "twilio_callback_lag_seconds_count", status="delivered") == 1


def test_a_status_reported_by_both_inputs_counts_once(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    body, headers = signed_request(f"{HOST}/twilio/status", callback_params(SID, "delivered"))
    assert client.simulate_post("/twilio/status", body=body, headers=headers).status_code == 200
    result = deliver(client, [cloud_event(SID, "delivered", T), cloud_event(SID, "sent", T)])
    assert result.json == {"accepted": 2, "ignored": 0, "failed": []}
    assert statuses(registry, "delivered") == 1
    assert events_count(registry, "delivered", "duplicate") == 1
    assert events_count(registry, "sent", "accepted") == 1


def test_redelivered_batch_is_all_duplicates(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    batch = [cloud_event(SID, "sent", T), cloud_event(sid("SM", 2), "sent", T)]
    deliver(client, batch)
    again = deliver(client, batch)
    assert again.json == {"accepted": 2, "ignored": 0, "failed": []}  # taken, then applied
    assert statuses(registry, "sent") == 2
    assert events_count(registry, "sent", "duplicate") == 2


def test_bad_events_are_named_and_the_good_ones_recorded(
    client: falcon.testing.TestClient, sqlite_store: SQLiteStore, registry: CollectorRegistry
) -> None:
    bad = cloud_event("SM-1", "failed", T)
    result = deliver(client, [bad, cloud_event(SID, "sent", T)])
    assert result.status_code == 200
    assert result.json["failed"] == [
        {"index": 0, "id": bad["id"], "reason": "data.messageSid is not a Twilio SID"}
    ]
    assert sqlite_store.history(SID) is not None
    assert events_count(registry, "failed", "malformed") == 1


def test_a_delivery_with_no_usable_event_is_a_400(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    result = deliver(client, [{"type": "com.twilio.messaging.message.sent"}])
    assert result.status_code == 400
    assert result.json["failed"][0]["reason"] == "event has no data object"
    assert sample(registry, "twilio_stream_requests_total", outcome="malformed") == 1


def test_sink_test_event_is_answered_200_and_ignored(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    test_event = {"specversion": "1.0", "type": "com.twilio.eventstreams.test-event", "data": {}}
    result = deliver(client, [test_event])
    assert result.json == {"accepted": 0, "ignored": 1, "failed": []}
    labels = {"type": "com.twilio.eventstreams.test-event", "outcome": "ignored"}
    assert sample(registry, "twilio_stream_events_total", **labels) == 1


@pytest.mark.parametrize(
    "tamper",
    ["wrong token", "no signature", "body changed", "no bodySHA256", "hash of another body"],
)
def test_unauthenticated_deliveries_are_403_and_record_nothing(
    client: falcon.testing.TestClient,
    sqlite_store: SQLiteStore,
    registry: CollectorRegistry,
    tamper: str,
) -> None:
    events = [cloud_event(SID, "sent", T)]
    token = "wrong" if tamper == "wrong token" else AUTH_TOKEN
    query, body, headers = signed_events_request(f"{HOST}{PATH}", events, token)
    if tamper == "no signature":
        del headers["X-Twilio-Signature"]
    elif tamper == "body changed":
        body = body.replace(b"+4915", b"+4916")
    elif tamper == "no bodySHA256":
        query = ""
        headers["X-Twilio-Signature"] = RequestValidator(AUTH_TOKEN).compute_signature(
            f"{HOST}{PATH}", {}
        )
    elif tamper == "hash of another body":
        other = hashlib.sha256(b"[]").hexdigest()
        query = f"bodySHA256={other}"
        headers["X-Twilio-Signature"] = RequestValidator(AUTH_TOKEN).compute_signature(
            f"{HOST}{PATH}?{query}", {}
        )
    result = client.simulate_post(PATH, body=body, query_string=query or None, headers=headers)
    assert result.status_code == 403
    assert sqlite_store.history(SID) is None
    assert sample(registry, "twilio_stream_requests_total", outcome="invalid_signature") == 1
    assert statuses(registry, "sent") == 0


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def basic_client(
    settings: Settings, sqlite_store: SQLiteStore, telemetry: Telemetry
) -> falcon.testing.TestClient:
    configured = replace(settings, events_basic_auth=(("twilio", "s3cret"), ("next", "other")))
    return inline_client(configured, sqlite_store, telemetry)


@pytest.mark.parametrize("headers", [{}, basic("twilio", "wrong"), {"Authorization": "Bearer x"}])
def test_sink_credentials_are_required_when_configured(
    basic_client: falcon.testing.TestClient, headers: dict[str, str]
) -> None:
    result = deliver(basic_client, [cloud_event(SID, "sent", T)], headers=headers)
    assert result.status_code == 401
    assert result.headers["WWW-Authenticate"].startswith("Basic ")


def test_sink_credentials_alone_authenticate(basic_client: falcon.testing.TestClient) -> None:
    body = json.dumps([cloud_event(SID, "sent", T)]).encode()
    headers = {"Content-Type": "application/json", **basic("next", "other")}
    assert basic_client.simulate_post(PATH, body=body, headers=headers).status_code == 200


def test_signature_over_the_sink_url_with_its_credentials_is_accepted(
    basic_client: falcon.testing.TestClient,
) -> None:
    # Twilio may sign the sink URL as configured, user info included.
    query, body, headers = signed_events_request(
        "http://twilio:s3cret@falconframework.org/twilio/events", [cloud_event(SID, "sent", T)]
    )
    headers |= basic("twilio", "s3cret")
    result = basic_client.simulate_post(PATH, body=body, query_string=query, headers=headers)
    assert result.status_code == 200


def test_signature_still_checked_with_valid_credentials(
    basic_client: falcon.testing.TestClient,
) -> None:
    result = deliver(
        basic_client,
        [cloud_event(SID, "sent", T)],
        token="wrong",
        headers=basic("twilio", "s3cret"),
    )
    assert result.status_code == 403


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/x-www-form-urlencoded", 415),
        ("text/plain", 415),
        ("application/cloudevents-batch+json", 200),
        ("application/json; charset=utf-8", 200),
    ],
)
def test_content_types(client: falcon.testing.TestClient, content_type: str, status: int) -> None:
    result = deliver(client, [cloud_event(SID, "sent", T)], headers={"Content-Type": content_type})
    assert result.status_code == status


def test_body_over_the_limit_is_413_unread(
    settings: Settings, sqlite_store: SQLiteStore, telemetry: Telemetry
) -> None:
    small = replace(settings, events_max_body_bytes=1024)
    client = inline_client(small, sqlite_store, telemetry)
    events = [cloud_event(sid("SM", n), "sent", T) for n in range(10)]
    assert deliver(client, events).status_code == 413


def test_body_that_is_not_json_is_400(client: falcon.testing.TestClient) -> None:
    result = deliver(client, b"<xml/>")
    assert result.status_code == 400
    assert "not JSON" in result.json["description"]


def test_store_outage_is_503_and_records_none_of_the_delivery(
    settings: Settings, sqlite_store: SQLiteStore, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    class Unwritable(SQLiteStore):
        def append(self, entry: InboxEntry) -> None:
            raise StoreUnavailable("disk I/O error")

    client = inline_client(settings, Unwritable(sqlite_store.path), telemetry)
    batch = [cloud_event(SID, "sent", T), cloud_event(sid("SM", 2), "sent", T)]
    result = deliver(client, batch)
    assert (result.status_code, result.headers["Retry-After"]) == (503, "5")
    assert sqlite_store.history(SID) is None
    assert events_count(registry, "sent", "error") == 2
    assert sample(registry, "twilio_stream_requests_total", outcome="error") == 1
    # Twilio's redelivery brings the whole request again.
    assert deliver(inline_client(settings, sqlite_store, telemetry), batch).status_code == 200
    assert events_count(registry, "sent", "accepted") == 2


def test_a_delivery_is_applied_all_or_none(
    settings: Settings, sqlite_store: SQLiteStore, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    class FailsAfterRecording(SQLiteStore):
        """The disk fails once, after a batch's events were written, before its commit."""

        calls = 0

        def _write_batch(
            self, conn: sqlite3.Connection, batch: Any, consumed: Sequence[int]
        ) -> None:
            super()._write_batch(conn, batch, consumed)
            self.calls += 1
            if self.calls == 1:
                raise sqlite3.OperationalError("disk I/O error")

    store = FailsAfterRecording(sqlite_store.path)
    client = falcon.testing.TestClient(create_app(settings, store, telemetry))
    batch = [cloud_event(SID, "sent", T), cloud_event(sid("SM", 2), "sent", T)]
    assert deliver(client, batch).status_code == 200  # durable in the inbox
    ingester = inline_ingester(store, telemetry)
    with pytest.raises(StoreUnavailable):
        ingester.apply_pending()
    assert sqlite_store.history(SID) is None  # the first event was rolled back with the rest
    assert sqlite_store.backlog().entries == 1  # and the delivery waits for the next attempt
    assert ingester.apply_pending() == 1
    assert events_count(registry, "sent", "accepted") == 2
    assert sqlite_store.backlog().entries == 0


def test_insecure_mode_accepts_unsigned_deliveries(
    settings: Settings, sqlite_store: SQLiteStore, telemetry: Telemetry
) -> None:
    insecure = replace(settings, insecure_skip_signature=True)
    client = inline_client(insecure, sqlite_store, telemetry)
    body = json.dumps([cloud_event(SID, "sent", T)]).encode()
    result = client.simulate_post(PATH, body=body, headers={"Content-Type": "application/json"})
    assert result.status_code == 200


def test_other_methods_are_405(client: falcon.testing.TestClient) -> None:
    assert client.simulate_get(PATH).status_code == 405
    assert client.simulate_options(PATH).status_code == 405
