"""twilio_sender_message_status_total: final statuses per sender, bounded and sanitised."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from exporter.ingest.applier import Applier
from exporter.inputs.callback_form import FormParams, parse_callback
from exporter.inputs.event_streams import parse_delivery
from exporter.inputs.rest_poll import ApiMessage, poll_event
from exporter.model import MessageState, StatusEvent
from exporter.settings import Settings
from exporter.store.sqlite import SQLiteStore
from exporter.telemetry.metrics import Metrics
from exporter.telemetry.senders import sender_value
from tests.support import callback_params, cloud_event, sid

T0 = 1_790_000_000.0
NAME = "twilio_sender_message_status_total"
NUMBER = "+14155550100"  # callback_params' From
SERVICE = sid("MG", 1)


def callback(n: int, status: str, **extra: str) -> StatusEvent:
    params = callback_params(sid("SM", n), status, **extra)
    return parse_callback(FormParams({k: [v] for k, v in params.items()}), "", T0 + n)


def count(registry: CollectorRegistry, sender: str, status: str, **labels: str) -> float:
    wanted = {"sender": sender, "status": status, "error_code": "", "channel": "sms", **labels}
    return registry.get_sample_value(NAME, wanted) or 0.0


def senders(registry: CollectorRegistry) -> set[str]:
    return {
        sample.labels["sender"]
        for family in registry.collect()
        if family.name == NAME.removesuffix("_total")
        for sample in family.samples
        if sample.name == NAME
    }


@pytest.fixture
def apply(sqlite_store: SQLiteStore, metrics: Metrics) -> Applier:
    return Applier(sqlite_store, metrics, None)


def test_each_final_status_counts_once_per_sender(
    apply: Applier, registry: CollectorRegistry
) -> None:
    apply.apply([callback(1, "queued"), callback(1, "sent"), callback(1, "delivered")])
    apply.apply([callback(1, "delivered"), callback(1, "delivered")])  # Twilio retried

    assert count(registry, NUMBER, "delivered") == 1
    assert count(registry, NUMBER, "sent") == 0  # not final: only twilio_message_status_total
    assert senders(registry) == {NUMBER}


def test_delivered_then_read_and_canceled_count_but_inbound_received_does_not(
    apply: Applier, registry: CollectorRegistry
) -> None:
    whatsapp = {"From": "whatsapp:+14155238886", "ChannelPrefix": "whatsapp"}
    apply.apply([callback(1, "delivered", **whatsapp), callback(1, "read", **whatsapp)])
    apply.apply([callback(2, "canceled")])
    # An inbound message's From is the person who wrote in, never a label value.
    apply.apply([callback(3, "received", From="+4915112345678", To=NUMBER)])

    for status in ("delivered", "read"):
        assert count(registry, "whatsapp:+14155238886", status, channel="whatsapp") == 1
    assert count(registry, NUMBER, "canceled") == 1
    assert senders(registry) == {"whatsapp:+14155238886", NUMBER}


def test_messaging_service_wins_over_from(apply: Applier, registry: CollectorRegistry) -> None:
    apply.apply([callback(1, "delivered", MessagingServiceSid=SERVICE)])
    # Its first callback named the service: a later one without it still counts there.
    apply.apply([callback(2, "sent", MessagingServiceSid=SERVICE), callback(2, "failed")])

    assert count(registry, SERVICE, "delivered") == 1
    assert count(registry, SERVICE, "failed") == 1
    assert senders(registry) == {SERVICE}


def test_error_code_has_the_per_status_counters_meaning(
    apply: Applier, registry: CollectorRegistry
) -> None:
    apply.apply(
        [
            callback(1, "undelivered", ErrorCode="30007"),
            callback(2, "failed", ErrorCode="not-a-code"),
            callback(3, "failed"),
        ]
    )

    assert count(registry, NUMBER, "undelivered", error_code="30007") == 1
    assert count(registry, NUMBER, "failed", error_code="other") == 1
    assert count(registry, NUMBER, "failed", error_code="") == 1
    per_status = registry.get_sample_value(
        "twilio_message_status_total",
        {"status": "undelivered", "channel": "sms", "error_code": "30007", "country": "DE"},
    )
    assert per_status == 1


def test_senders_past_the_cap_are_other(sqlite_store: SQLiteStore) -> None:
    registry = CollectorRegistry()
    apply = Applier(sqlite_store, Metrics(registry, senders_max=2), None)
    first, second, third = "+14155550101", "+14155550102", "+14155550103"

    apply.apply([callback(n, "delivered", From=f) for n, f in enumerate((first, second, third))])
    apply.apply([callback(9, "delivered", From=first)])  # a named sender stays named

    assert senders(registry) == {first, second, "other"}
    assert count(registry, first, "delivered") == 2
    assert count(registry, "other", "delivered") == 1


def test_a_cap_of_zero_names_no_sender(sqlite_store: SQLiteStore) -> None:
    registry = CollectorRegistry()
    apply = Applier(sqlite_store, Metrics(registry, senders_max=0), None)
    apply.apply([callback(1, "delivered"), callback(2, "failed", MessagingServiceSid=SERVICE)])
    assert senders(registry) == {"other"}


def test_values_that_are_no_sender_take_no_place_under_the_cap(
    sqlite_store: SQLiteStore,
) -> None:
    registry = CollectorRegistry()
    apply = Applier(sqlite_store, Metrics(registry, senders_max=1), None)
    apply.apply([callback(1, "delivered", From="<script>"), callback(2, "delivered")])
    assert senders(registry) == {"other", NUMBER}


def test_the_cap_comes_from_exporter_senders_max(sqlite_store: SQLiteStore) -> None:
    settings = Settings.from_env({"EXPORTER_SENDERS_MAX": "1"}, require_auth_token=False)
    registry = CollectorRegistry()
    apply = Applier(sqlite_store, Metrics.for_settings(registry, settings), None)
    apply.apply([callback(1, "delivered"), callback(2, "delivered", From="+14155550102")])
    assert senders(registry) == {NUMBER, "other"}


@pytest.mark.parametrize(
    "sender",
    [
        NUMBER,
        "12345",  # short code
        "MyBrand",  # alphanumeric sender ID
        "Shop 24",
        "whatsapp:+14155238886",
        "messenger:106544352183952",
        "rcs:acme_notifications_agent",
        SERVICE,
    ],
)
def test_sender_addresses_are_kept_as_they_are(sender: str) -> None:
    assert sender_value(state(from_=sender)) == sender


@pytest.mark.parametrize(
    "value",
    [
        "+0123456",  # no country code starts with 0
        "+1415555010012345678",  # longer than E.164 allows
        "TwelveLetter",  # an alphanumeric sender ID has 11 characters at most
        "123 456",  # no letter: not an alphanumeric ID, not a number
        'x"}\nevil{a="1',
        "whatsapp:+1 415",
        "sms:+14155550100",  # not a channel with addresses of its own
        "rcs:" + "a" * 65,
        "mg" + "0" * 32,
        "MG" + "0" * 31 + "g",
        "MGMG9752274e9e519418a7406176694466fa",
    ],
)
def test_values_of_no_sender_shape_are_other(value: str) -> None:
    assert sender_value(state(from_=value)) == "other"
    assert sender_value(state(messaging_service_sid=value, from_=NUMBER)) == "other"


def test_a_message_without_sender_is_empty() -> None:
    assert sender_value(state()) == ""
    assert sender_value(state(from_="  ", messaging_service_sid="")) == ""


def test_event_streams_and_polls_name_the_sender_too(
    apply: Applier, registry: CollectorRegistry
) -> None:
    event = cloud_event(
        sid("SM", 1), "delivered", "2026-11-23T10:00:00.000Z", messagingServiceSid=SERVICE
    )
    (item,) = parse_delivery(json.dumps([event]).encode(), "", T0)
    assert item.event is not None
    polled = ApiMessage(sid("SM", 2), "undelivered", from_="MyBrand", error_code=30003)

    apply.apply([item.event, poll_event(polled, T0)])

    assert count(registry, SERVICE, "delivered") == 1
    assert count(registry, "MyBrand", "undelivered", error_code="30003") == 1


def state(**fields: str) -> MessageState:
    return replace(MessageState(sid("SM", 1), "delivered", T0, T0), **fields)
