"""Twilio Event Streams deliveries (CloudEvents, JSON) as the same typed events callbacks make.

A webhook sink receives a JSON array of CloudEvents in structured mode (a sink without
batching may send one bare event: both are accepted). Message status events carry the
`Messaging.MessageStatus` schema: camelCase fields, the status in upper case, the time the
status happened (`timestamp`), and the message's `tags`. Each event is read on its own, so
one unusable event never costs the rest of its batch.

The envelope is read here, not by the `cloudevents` SDK: the SDK parses one event, not a
batch; it rejects an event without `source` or with an odd `time`, where only `type` and
`data.messageSid` matter to us; and it sets a missing `time` to the moment of parsing, which
would pass for when the status happened (Twilio's own examples omit `time`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.inputs.callback_form import (
    MAX_TAG_VALUE,
    MAX_TAGS,
    SID,
    FormParams,
    MalformedCallback,
    channel_of,
    country_of,
    parse_context,
    parse_raw_dlr_done_date,
)
from exporter.model import CallbackContext, StatusEvent

SOURCE = "event_stream"
MESSAGE_STATUS_PREFIX = "com.twilio.messaging.message."
INBOUND_RECEIVED = "com.twilio.messaging.inbound-message.received"
SINK_TEST = "com.twilio.eventstreams.test-event"
# The message status events Event Streams publishes, and the status each one reports.
STATUS_OF_TYPE: Mapping[str, str] = {
    **{
        MESSAGE_STATUS_PREFIX + status: status
        for status in ("queued", "sent", "delivered", "undelivered", "failed", "read")
    },
    INBOUND_RECEIVED: "received",
}
# Label values of twilio_stream_events_total{type}: the types above and the sink's test event.
KNOWN_TYPES = frozenset({*STATUS_OF_TYPE, SINK_TEST})
OTHER = "other"
# A bound on the work one request can ask for: as many events as the largest accepted body
# can hold at their smallest (a real batch is far smaller, and never refused for its size).
MAX_EVENTS = 20_000
# Event fields never stored: the message text is the sender's content, not delivery data.
UNSTORED_FIELDS = frozenset({"body"})


class MalformedDelivery(ValueError):
    """The request body is not CloudEvents JSON at all (for a 400)."""


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One CloudEvent of a delivery: a status event, or why it is not recorded.

    Exactly one of `event` (record it), `ignored` (not a message status event) and `problem`
    (unusable: malformed) is set."""

    index: int
    id: str | None
    type_label: str
    event: StatusEvent | None = None
    ignored: bool = False
    problem: str | None = None


def type_label(event_type: object) -> str:
    """Bounded label for an event type: the known types, anything else `other`."""
    return event_type if isinstance(event_type, str) and event_type in KNOWN_TYPES else OTHER


def parse_delivery(body: bytes, query: str, received_at: float) -> list[StreamItem]:
    """Every CloudEvent of a webhook sink request; MalformedDelivery if the body is no JSON
    object or array of them."""
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise MalformedDelivery("body is not UTF-8") from None
    except (ValueError, RecursionError):
        raise MalformedDelivery("body is not JSON") from None
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise MalformedDelivery("body is neither a CloudEvent nor an array of CloudEvents")
    if len(document) > MAX_EVENTS:
        raise MalformedDelivery(f"more than {MAX_EVENTS} events in one request")
    return [_item(index, raw, query, received_at) for index, raw in enumerate(document)]


def _item(index: int, raw: object, query: str, received_at: float) -> StreamItem:
    if not isinstance(raw, dict):
        return StreamItem(index, None, OTHER, problem="event is not a JSON object")
    event_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    event_type = raw.get("type")
    label = type_label(event_type)
    if not isinstance(event_type, str) or not event_type:
        return StreamItem(index, event_id, label, problem="event has no type")
    if event_type not in STATUS_OF_TYPE:
        # The sink's test event, and whatever else the subscription brings: not ours to record.
        return StreamItem(index, event_id, label, ignored=True)
    try:
        event = status_event(raw, STATUS_OF_TYPE[event_type], query, received_at)
    except MalformedCallback as ex:
        return StreamItem(index, event_id, label, problem=str(ex))
    return StreamItem(index, event_id, label, event=event)


def status_event(
    cloud_event: Mapping[str, object], status: str, query: str, received_at: float
) -> StatusEvent:
    """The StatusEvent one message status CloudEvent reports; MalformedCallback if its data
    lacks a usable messageSid. The status comes from the event's type (what the sink is
    subscribed to); every other field is optional and read leniently."""
    data = cloud_event.get("data")
    if not isinstance(data, dict):
        raise MalformedCallback("event has no data object")
    sid = _text(data.get("messageSid"))
    if not sid:
        raise MalformedCallback("data.messageSid is missing")
    if not SID.match(sid):
        raise MalformedCallback("data.messageSid is not a Twilio SID")
    to, from_ = _text(data.get("to")), _text(data.get("from"))
    raw_dlr = _text(data.get("rawDlrDoneDate"))
    error_code = data.get("errorCode")
    context = _context(data, received_at)
    return StatusEvent(
        message_sid=sid,
        status=status,
        received_at=received_at,
        source=SOURCE,
        error_code=_text(error_code) if error_code not in (None, 0, "0") else None,
        channel=channel_of(_channel_hints(data, to, from_)),
        to=to,
        from_=from_,
        country=country_of(to),
        account_sid=_text(data.get("accountSid")),
        messaging_service_sid=_text(data.get("messagingServiceSid")),
        reported_at=_raw_dlr_time(raw_dlr),
        raw_dlr_done_date=raw_dlr,
        occurred_at=_event_time(data, cloud_event),
        context=context,
        params=_stored_params(cloud_event, data),
        query=query,
        segments=_count(data.get("numberOfSegments", data.get("numSegments"))),
        mcc=_text(data.get("mcc")),
        mnc=_text(data.get("mnc")),
    )


def _text(value: object) -> str | None:
    """A field as text: strings stripped, numbers as written, anything else absent."""
    if isinstance(value, str):
        return value.strip()[:MAX_TAG_VALUE] or None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < 10_000:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 5:
        return int(value)
    return None


def _channel_hints(data: Mapping[str, object], to: str | None, from_: str | None) -> FormParams:
    # Outbound statuses name the recipient in `to`; an inbound message's channel prefix is on
    # both addresses. Only inbound events carry numMedia.
    hints = FormParams({"To": [to or from_ or ""]})
    num_media = _text(data.get("numMedia"))
    if num_media:
        hints["NumMedia"] = [num_media]
    return hints


def parse_event_time(value: object) -> float | None:
    """ISO 8601 with a zone (Twilio sends UTC with a Z and milli- to nanoseconds)."""
    if not isinstance(value, str) or not 10 <= len(value) <= 64:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    head, dot, fraction = text.partition(".")
    if dot:  # Python reads at most microseconds: drop digits beyond six, keep the zone
        digits = len(fraction) - len(fraction.lstrip("0123456789"))
        text = f"{head}.{fraction[: min(digits, 6)]}{fraction[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _event_time(data: Mapping[str, object], cloud_event: Mapping[str, object]) -> float | None:
    """When the status happened: the data's `timestamp`, else its `dateUpdated`, else the
    CloudEvent's `time` (absent from some documentation examples)."""
    for value in (data.get("timestamp"), data.get("dateUpdated"), cloud_event.get("time")):
        parsed = parse_event_time(value)
        if parsed is not None and parsed > 0:
            return parsed
    return None


def _raw_dlr_time(value: str | None) -> float | None:
    # Callbacks use YYMMDDhhmm; Twilio's changelog shows the event field in ISO 8601.
    return parse_raw_dlr_done_date(value) or parse_event_time(value)


def _context(data: Mapping[str, object], received_at: float) -> CallbackContext:
    """The sender's context: the StatusCallback URL's query (traceparent, created, tag.*) when
    the event names it, and the message's `tags`, which take precedence."""
    url = data.get("statusCallBackUrl")
    query = url.partition("?")[2].partition("#")[0] if isinstance(url, str) else ""
    from_url = parse_context(query, received_at)
    tags = dict(from_url.tags)
    event_tags = data.get("tags")
    for name, value in event_tags.items() if isinstance(event_tags, dict) else ():
        text = _text(value)
        if isinstance(name, str) and 0 < len(name) <= 64 and text is not None:
            tags[name] = text
    bounded = dict(list(tags.items())[:MAX_TAGS])
    return CallbackContext(from_url.traceparent, from_url.created_at, bounded)


def _stored_params(
    cloud_event: Mapping[str, object], data: Mapping[str, object]
) -> dict[str, object]:
    """What the audit trail keeps: the envelope's identity and the data, without the text."""
    envelope = {k: cloud_event.get(k) for k in ("id", "type", "dataschema", "time", "source")}
    kept = {k: v for k, v in data.items() if k not in UNSTORED_FIELDS}
    return {**{k: v for k, v in envelope.items() if v is not None}, "data": kept}
