"""POST /twilio/status through the real app: answers, what is recorded, what is counted."""

from __future__ import annotations

from collections.abc import Mapping

import falcon.testing
import pytest
from prometheus_client import CollectorRegistry

from exporter.model import InboxEntry, Recorded, StatusEvent
from exporter.settings import Settings
from exporter.store import StoreUnavailable
from exporter.store.sqlite import SQLiteStore
from exporter.telemetry.metrics import Metrics
from exporter.web.app import Telemetry, create_app
from tests.apps import inline_client
from tests.support import callback_params, sid, signed_request

HOST = "http://falconframework.org"  # falcon.testing's default Host
PATH = "/twilio/status"
SID = sid("SM", 1)


def post(
    client: falcon.testing.TestClient,
    params: Mapping[str, str],
    query: str = "",
    token: str = "12345",
    headers: Mapping[str, str] | None = None,
) -> falcon.testing.Result:
    url = f"{HOST}{PATH}?{query}" if query else f"{HOST}{PATH}"
    body, signed_headers = signed_request(url, params, token)
    return client.simulate_post(
        PATH, body=body, query_string=query or None, headers={**signed_headers, **(headers or {})}
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def status_count(registry: CollectorRegistry, status: str, **labels: str) -> float:
    defaults = {"channel": "sms", "error_code": "", "country": "DE"}
    return sample(registry, "twilio_message_status_total", status=status, **{**defaults, **labels})


def test_accepted_callback_is_committed_before_the_200(
    client: falcon.testing.TestClient, sqlite_store: SQLiteStore, registry: CollectorRegistry
) -> None:
    result = post(client, callback_params(SID, "sent"))
    assert (result.status_code, result.content) == (200, b"")
    history = sqlite_store.history(SID)
    assert history is not None and [e.status for e in history.events] == ["sent"]
    assert sample(registry, "twilio_status_callbacks_total", outcome="accepted") == 1
    assert status_count(registry, "sent") == 1


def test_duplicate_callback_counts_once(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    for _ in range(3):
        assert post(client, callback_params(SID, "delivered")).status_code == 200
    assert status_count(registry, "delivered") == 1
    assert sample(registry, "twilio_status_callbacks_total", outcome="duplicate") == 2


def test_out_of_order_callback_is_accepted_and_counted(
    client: falcon.testing.TestClient, registry: CollectorRegistry, sqlite_store: SQLiteStore
) -> None:
    post(client, callback_params(SID, "delivered"))
    assert post(client, callback_params(SID, "sent")).status_code == 200
    assert sample(registry, "twilio_status_callbacks_out_of_order_total", status="sent") == 1
    assert sample(registry, "twilio_status_callbacks_total", outcome="accepted") == 2
    assert status_count(registry, "sent") == 1
    history = sqlite_store.history(SID)
    assert history is not None and history.message.status == "delivered"


def test_bad_signature_is_403_and_records_nothing(
    client: falcon.testing.TestClient, sqlite_store: SQLiteStore, registry: CollectorRegistry
) -> None:
    result = post(client, callback_params(SID, "sent"), token="wrong")
    assert result.status_code == 403
    assert sqlite_store.history(SID) is None
    assert status_count(registry, "sent") == 0
    assert sample(registry, "twilio_status_callbacks_total", outcome="invalid_signature") == 1


def test_missing_signature_is_403_before_the_body_is_parsed(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    result = client.simulate_post(
        PATH, body=b"\xff\xfe", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert result.status_code == 403


def test_signature_covers_the_query_string(client: falcon.testing.TestClient) -> None:
    url = f"{HOST}{PATH}?tag.campaign=a"
    body, headers = signed_request(url, callback_params(SID, "sent"))
    forged = client.simulate_post(PATH, body=body, query_string="tag.campaign=b", headers=headers)
    assert forged.status_code == 403


@pytest.mark.parametrize(
    ("params", "reason"),
    [({"MessageStatus": "sent"}, "MessageSid"), ({"MessageSid": SID}, "MessageStatus")],
)
def test_missing_required_fields_is_400_with_a_reason(
    client: falcon.testing.TestClient, params: dict[str, str], reason: str
) -> None:
    result = post(client, params)
    assert result.status_code == 400
    assert reason in result.json["description"]


def test_wrong_content_type_is_415(client: falcon.testing.TestClient) -> None:
    result = client.simulate_post(PATH, json={"MessageSid": SID})
    assert result.status_code == 415


def test_oversized_body_is_413_before_anything_else(client: falcon.testing.TestClient) -> None:
    result = client.simulate_post(
        PATH,
        body=b"a=" + b"x" * (64 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert result.status_code == 413


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(client: falcon.testing.TestClient, method: str) -> None:
    result = client.simulate_request(method, PATH)
    assert result.status_code == 405
    assert "POST" in result.headers["allow"]


def test_unknown_status_is_accepted_with_label_other(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    assert post(client, callback_params(SID, "teleported")).status_code == 200
    assert status_count(registry, "other") == 1


def test_error_code_channel_and_country_labels(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    params = callback_params(
        SID, "undelivered", ErrorCode="63016", ChannelPrefix="whatsapp",
        To="whatsapp:+447700900123",
    )  # fmt: skip
    post(client, params)
    assert (
        status_count(registry, "undelivered", channel="whatsapp", error_code="63016", country="GB")
        == 1
    )


def test_time_to_status_and_stage_duration_use_creation_and_previous_stage(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    post(client, callback_params(SID, "sent"), query="created=1")
    post(client, callback_params(SID, "delivered"))
    assert (
        sample(
            registry,
            "twilio_message_time_to_status_seconds_count",
            status="delivered",
            channel="sms",
        )
        == 1
    )
    assert sample(
        registry, "twilio_message_stage_duration_seconds_count",
        from_status="sent", to_status="delivered", channel="sms",
    ) == 1  # fmt: skip


def test_callback_lag_from_raw_dlr_done_date(
    client: falcon.testing.TestClient, registry: CollectorRegistry
) -> None:
    post(client, callback_params(SID, "delivered", RawDlrDoneDate="2001010000"))
    assert sample(registry, "twilio_callback_lag_seconds_count", status="delivered") == 1
    assert sample(registry, "twilio_callback_lag_seconds_sum", status="delivered") > 1e8


def test_metrics_endpoint_serves_in_flight_from_the_store(
    client: falcon.testing.TestClient,
) -> None:
    post(client, callback_params(sid("SM", 1), "sent"))
    post(client, callback_params(sid("SM", 2), "sent"))
    post(client, callback_params(sid("SM", 3), "delivered"))
    text = client.simulate_get("/metrics").text
    assert 'twilio_messages_in_flight{status="sent"} 2.0' in text
    assert 'twilio_messages_in_flight{status="queued"} 0.0' in text


def test_metrics_endpoint_negotiates_openmetrics(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert result.headers["content-type"].startswith("application/openmetrics-text")
    assert result.text.rstrip().endswith("# EOF")


def test_health_and_readiness(client: falcon.testing.TestClient) -> None:
    assert client.simulate_get("/healthz").status_code == 200
    assert client.simulate_get("/readyz").status_code == 200


class UnavailableStore(SQLiteStore):
    """A real store whose writes fail, as when the disk is full or the database is down."""

    def append(self, entry: InboxEntry) -> None:
        raise StoreUnavailable("disk I/O error")

    def check_writable(self) -> None:
        raise StoreUnavailable("disk I/O error")


def test_store_unavailable_is_503_with_retry_after(
    settings: Settings, telemetry: Telemetry, registry: CollectorRegistry, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    client = falcon.testing.TestClient(
        create_app(settings, UnavailableStore(str(tmp_path / "x.db")), telemetry)
    )
    result = post(client, callback_params(SID, "sent"))
    assert result.status_code == 503
    assert result.headers["retry-after"] == "5"
    assert "Traceback" not in result.text
    assert sample(registry, "twilio_status_callbacks_total", outcome="error") == 1
    assert status_count(registry, "sent") == 0
    assert client.simulate_get("/readyz").status_code == 503


def test_insecure_mode_accepts_unsigned_callbacks(
    sqlite_store: SQLiteStore, telemetry: Telemetry
) -> None:
    settings = Settings(insecure_skip_signature=True)
    client = inline_client(settings, sqlite_store, telemetry)
    result = client.simulate_post(
        PATH,
        body=f"MessageSid={SID}&MessageStatus=sent".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert result.status_code == 200


class BrokenStore(SQLiteStore):
    """A store with a bug: anything but StoreUnavailable."""

    def append(self, entry: InboxEntry) -> None:
        raise RuntimeError("a bug")


def test_unexpected_error_is_a_clear_500_and_counted(
    settings: Settings, telemetry: Telemetry, registry: CollectorRegistry, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    client = falcon.testing.TestClient(
        create_app(settings, BrokenStore(str(tmp_path / "x.db")), telemetry)
    )
    result = post(client, callback_params(SID, "sent"))
    assert result.status_code == 500
    assert result.json["description"] == "The request was not recorded; retry later."
    assert sample(registry, "twilio_status_callbacks_total", outcome="error") == 1


class BrokenMetrics(Metrics):
    def record_outcome(self, event: StatusEvent, recorded: Recorded) -> None:
        raise RuntimeError("a reporting bug")


def test_applied_callback_stays_committed_even_if_reporting_fails(
    settings: Settings, sqlite_store: SQLiteStore, registry: CollectorRegistry
) -> None:
    telemetry = Telemetry(registry, BrokenMetrics(registry))
    client = inline_client(settings, sqlite_store, telemetry)
    assert post(client, callback_params(SID, "sent")).status_code == 200
    assert sqlite_store.history(SID) is not None
    assert sqlite_store.backlog().entries == 0
