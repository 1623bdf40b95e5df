"""Event Streams deliveries read into StatusEvents: Twilio's documented shapes, and bad ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from exporter.inputs.event_streams import (
    MAX_EVENTS,
    MalformedDelivery,
    parse_delivery,
    parse_event_time,
    type_label,
)
from exporter.model import StatusEvent
from tests.support import cloud_event, sid

ARRIVAL = datetime(2025, 1, 1, 0, 1, 30, tzinfo=UTC).timestamp()

# Twilio's documentation, Outbound Message -> Delivered (Messaging.MessageStatus v7), verbatim,
# quirks included: `datacontenttype` holds a time, `time` is missing, and the status field of
# this example says QUEUED although the event type is delivered.
DOCS_DELIVERED_V7 = """{
  "specversion" : "1.0",
  "type" : "com.twilio.messaging.message.delivered",
  "source" : "AB00000000000000000000000001",
  "id" : "NO00000000000000000000000001",
  "dataschema" : "https://events-schemas.twilio.com/Messaging.MessageStatus/7",
  "datacontenttype" : "2025-10-08T07:17:02.363Z",
  "data" : {
    "messageSid" : "SM0000000000000000000000000000001",
    "timestamp" : "2025-01-01T00:00:00.000Z",
    "accountSid" : "AC0000000000000000000000000000001",
    "eventName" : "com.twilio.messaging.message.delivered",
    "apiVersion" : "2010-04-01",
    "from" : "+11234567890",
    "to" : "+12345678901",
    "messageStatus" : "QUEUED",
    "messagingServiceSid" : "MG0000000000000000000000000000001",
    "body" : "Ahoy!",
    "statusCallBackUrl" : "https://mycompany.com/an-endpoint",
    "mnc" : "090",
    "mcc" : "310",
    "numberOfSegments" : 1,
    "dateUpdated" : "2025-01-01T00:01:00.000Z"
  }
}"""
# Twilio's changelog of 2024-11-21 (the schema with segments and dateUpdated): its `data`,
# verbatim, in an envelope. Note errorCode as a string and nanosecond timestamps.
CHANGELOG_DATA = """{
            "accountSid": "AC00000000000000000000000000000000",
            "apiVersion": "2010-04-01",
            "body": "58a93bfc-ef6f-4a12-8881-0064e1ad2a55",
            "dateUpdated": "2024-05-29T10:57:57.563495225Z",
            "errorCode": "400",
            "eventName": "com.twilio.messaging.message.sent",
            "from": "+14015551212",
            "messageSid": "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "messageStatus": "SENT",
            "messagingServiceSid": "MGMG9752274e9e519418a7406176694466fa",
            "numberOfSegments": 1,
            "rawDlrDoneDate": "2024-05-29T10:57:57.563495225Z",
            "statusCallBackUrl": "https://statusCallbackUrl",
            "tags":{},
            "timestamp": "2024-05-29T10:57:57.563495225Z",
            "to": "+14155555555"
        }"""
# The sink test event, from Twilio's blog on validating Event Streams webhooks.
SINK_TEST_EVENT = (
    '[{"specversion":"1.0","type":"com.twilio.eventstreams.test-event","source":"Sink",'
    '"id":"AC11111111111111111111111111111111","dataschema":"https://events-schemas.twilio.com/'
    'EventStreams.TestSink/1.json","datacontenttype":"application/json","time":'
    '"2026-06-10T06:02:54.377Z","data":{"test_id":"cae2f9e2-c277-4612-8ad3-93c1a7a3ef88"}}]'
)


def only_event(body: bytes | str, query: str = "") -> StatusEvent:
    items = parse_delivery(body.encode() if isinstance(body, str) else body, query, ARRIVAL)
    assert len(items) == 1 and items[0].event is not None, items
    return items[0].event


def test_documented_delivered_event_becomes_a_status_event() -> None:
    event = only_event(DOCS_DELIVERED_V7)
    assert (event.message_sid, event.status, event.source) == (
        "SM0000000000000000000000000000001", "delivered", "event_stream"
    )  # fmt: skip
    assert event.occurred_at == datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    assert event.at == event.occurred_at and event.received_at == ARRIVAL
    assert (event.to, event.from_, event.country, event.channel) == (
        "+12345678901", "+11234567890", "US", "sms"
    )  # fmt: skip
    assert event.account_sid == "AC0000000000000000000000000000001"
    assert event.messaging_service_sid == "MG0000000000000000000000000000001"
    assert (event.segments, event.mcc, event.mnc) == (1, "310", "090")
    assert event.error_code is None


def test_the_event_type_names_the_status_not_the_data_field() -> None:
    # The documented example's messageStatus disagrees with its type; the type is what the
    # sink subscribed to, so it wins (the field is kept in the record).
    event = only_event(DOCS_DELIVERED_V7)
    assert event.status == "delivered"
    data = event.params["data"]
    assert isinstance(data, dict) and data["messageStatus"] == "QUEUED"


def test_the_message_text_is_never_stored() -> None:
    event = only_event(DOCS_DELIVERED_V7)
    data = event.params["data"]
    assert isinstance(data, dict) and "body" not in data
    assert event.params["id"] == "NO00000000000000000000000001"
    assert event.params["type"] == "com.twilio.messaging.message.delivered"


def test_changelog_shape_reads_nanoseconds_and_iso_raw_dlr_date() -> None:
    envelope = {"specversion": "1.0", "type": "com.twilio.messaging.message.sent", "id": "EZ1"}
    body = json.dumps([{**envelope, "data": json.loads(CHANGELOG_DATA)}])
    event = only_event(body)
    expected = datetime(2024, 5, 29, 10, 57, 57, 563495, tzinfo=UTC).timestamp()
    assert event.occurred_at == pytest.approx(expected)
    assert event.reported_at == pytest.approx(expected)
    assert event.raw_dlr_done_date == "2024-05-29T10:57:57.563495225Z"
    assert event.error_code == "400"  # a string here, an integer in the schema: both read
    assert event.context.tags == {}


def test_integer_error_code_and_carrier_dlr_date_as_in_callbacks() -> None:
    raw = cloud_event(
        sid("SM", 1),
        "undelivered",
        "2026-11-23T12:05:30.250Z",
        errorCode=30007,
        rawDlrDoneDate="2611231205",
    )
    event = only_event(json.dumps([raw]))
    assert (event.status, event.error_code, event.error_code_label) == (
        "undelivered", "30007", "30007"
    )  # fmt: skip
    assert event.reported_at == datetime(2026, 11, 23, 12, 5, tzinfo=UTC).timestamp()
    assert event.occurred_at == datetime(2026, 11, 23, 12, 5, 30, 250000, tzinfo=UTC).timestamp()


def test_tags_and_the_status_callback_urls_context_are_the_messages_context() -> None:
    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    url = (
        f"https://example.com/twilio/status?traceparent={traceparent}&created=1735689000&tag.team=x"
    )
    raw = cloud_event(
        sid("SM", 1),
        "sent",
        "2026-01-01T00:00:00Z",
        statusCallBackUrl=url,
        tags={"campaign": "spring", "team": "y", "count": 3, "nested": {"no": 1}},
    )
    context = only_event(json.dumps([raw])).context
    assert context.traceparent == traceparent
    assert context.created_at == 1735689000
    assert dict(context.tags) == {"team": "y", "campaign": "spring", "count": "3"}


def test_whatsapp_and_read_events() -> None:
    raw = cloud_event(sid("SM", 1), "read", "2026-01-01T00:00:00Z", to="whatsapp:+447700900123")
    event = only_event(json.dumps([raw]))
    assert (event.status, event.channel, event.country) == ("read", "whatsapp", "GB")


def test_inbound_received_event() -> None:
    raw = cloud_event(sid("SM", 1), "sent", "2026-01-01T00:00:00Z", numMedia=2)
    raw["type"] = "com.twilio.messaging.inbound-message.received"
    event = only_event(json.dumps([raw]))
    assert (event.status, event.channel) == ("received", "mms")


def test_a_single_event_without_an_array_is_accepted() -> None:
    raw = cloud_event(sid("SM", 1), "sent", "2026-01-01T00:00:00Z")
    assert only_event(json.dumps(raw)).status == "sent"


def test_sink_test_event_and_unknown_types_are_ignored_not_failed() -> None:
    other = cloud_event(sid("SM", 1), "sent", "2026-01-01T00:00:00Z")
    other["type"] = "com.twilio.voice.insights.call-summary.complete"
    items = parse_delivery(SINK_TEST_EVENT.encode(), "", ARRIVAL)
    items += parse_delivery(json.dumps([other]).encode(), "", ARRIVAL)
    assert [(i.ignored, i.problem, i.type_label) for i in items] == [
        (True, None, "com.twilio.eventstreams.test-event"),
        (True, None, "other"),
    ]


def test_one_bad_event_does_not_cost_the_rest_of_the_batch() -> None:
    good = cloud_event(sid("SM", 1), "sent", "2026-01-01T00:00:00Z")
    no_sid = cloud_event(sid("SM", 2), "sent", "2026-01-01T00:00:00Z")
    del no_sid["data"]["messageSid"]  # type: ignore[attr-defined]
    bad_sid = cloud_event("not a sid", "delivered", "2026-01-01T00:00:00Z")
    no_data = {"type": "com.twilio.messaging.message.sent", "id": "EZ9"}
    items = parse_delivery(json.dumps([good, no_sid, "x", bad_sid, no_data, {}]).encode(), "", 0)
    assert items[0].event is not None
    assert [(i.index, i.problem) for i in items[1:]] == [
        (1, "data.messageSid is missing"),
        (2, "event is not a JSON object"),
        (3, "data.messageSid is not a Twilio SID"),
        (4, "event has no data object"),
        (5, "event has no type"),
    ]
    assert items[4].id == "EZ9"


def test_event_without_any_time_happened_at_arrival() -> None:
    raw = cloud_event(sid("SM", 1), "sent", "garbage")
    del raw["time"]
    event = only_event(json.dumps([raw]))
    assert event.occurred_at is None and event.at == ARRIVAL


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"\xff\xfe", b'"a string"', b"42", b"[" * 100_000 + b"]" * 100_000],
)
def test_a_body_that_is_no_cloudevents_json_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedDelivery):
        parse_delivery(body, "", ARRIVAL)


def test_too_many_events_in_one_request_is_malformed() -> None:
    with pytest.raises(MalformedDelivery, match="more than"):
        parse_delivery(json.dumps([{}] * (MAX_EVENTS + 1)).encode(), "", ARRIVAL)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-01T00:00:00.000Z", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01T00:00:00Z", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01T00:00:00.123456789Z", datetime(2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        ("2025-01-01T02:00:00+02:00", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01T00:00:00", datetime(2025, 1, 1, tzinfo=UTC)),  # no zone: UTC
    ],
)
def test_event_times(text: str, expected: datetime) -> None:
    assert parse_event_time(text) == pytest.approx(expected.timestamp())


@pytest.mark.parametrize("text", ["", "yesterday", 1735689600, None, "2025-13-01T00:00:00Z"])
def test_unreadable_event_times_are_none(text: object) -> None:
    assert parse_event_time(text) is None


def test_type_label_is_bounded() -> None:
    assert type_label("com.twilio.messaging.message.sent") == "com.twilio.messaging.message.sent"
    assert type_label("com.example.anything") == "other"
    assert type_label(None) == "other"
