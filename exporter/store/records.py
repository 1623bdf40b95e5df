"""Backend-neutral pieces of the record: the message row's columns and how an event updates them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from exporter.lifecycle import in_flight
from exporter.model import EventRecord, MessageState, Recorded, StatusEvent, Transition

# json.dumps with options builds a new encoder on every call; this one is built once, and
# writes exactly what json.dumps(..., separators, ensure_ascii) would.
_params_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
MESSAGE_COLUMNS = (
    "message_sid",
    "status",
    "first_seen_at",
    "updated_at",
    "created_at",
    "final_at",
    "stale_at",
    "channel",
    "country",
    "to_number",
    "from_number",
    "account_sid",
    "messaging_service_sid",
    "error_code",
    "traceparent",
    "tags",
)
EVENT_COLUMNS = (
    "status",
    "received_at",
    "source",
    "out_of_order",
    "error_code",
    "reported_at",
    "occurred_at",
    "params",
    "query",
)


def message_row(state: MessageState) -> tuple[Any, ...]:
    """Column values in MESSAGE_COLUMNS order."""
    return (
        state.message_sid,
        state.status,
        state.first_seen_at,
        state.updated_at,
        state.created_at,
        state.final_at,
        state.stale_at,
        state.channel,
        state.country,
        state.to,
        state.from_,
        state.account_sid,
        state.messaging_service_sid,
        state.error_code,
        state.traceparent,
        json.dumps(dict(state.tags), separators=(",", ":")) if state.tags else None,
    )


def message_from_row(row: Sequence[Any]) -> MessageState:
    """Inverse of `message_row`, for a row selected with MESSAGE_COLUMNS."""
    values = dict(zip(MESSAGE_COLUMNS, row, strict=True))
    tags = values.pop("tags")
    return MessageState(
        message_sid=values["message_sid"],
        status=values["status"],
        first_seen_at=values["first_seen_at"],
        updated_at=values["updated_at"],
        created_at=values["created_at"],
        final_at=values["final_at"],
        stale_at=values["stale_at"],
        channel=values["channel"],
        country=values["country"],
        to=values["to_number"],
        from_=values["from_number"],
        account_sid=values["account_sid"],
        messaging_service_sid=values["messaging_service_sid"],
        error_code=values["error_code"],
        traceparent=values["traceparent"],
        tags=json.loads(tags) if tags else {},
    )


def event_row(event: StatusEvent, transition: Transition) -> tuple[Any, ...]:
    """Column values in EVENT_COLUMNS order (after message_sid)."""
    return (
        event.status,
        event.received_at,
        event.source,
        transition.out_of_order,
        event.error_code,
        event.reported_at,
        event.occurred_at,
        _params_json(dict(event.params)),
        event.query,
    )


def written_rows(
    events: Sequence[StatusEvent],
    recorded: Sequence[Recorded],
    changed: Mapping[str, MessageState],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What a batch writes: a status_events row (message_sid first) per event that was not a
    duplicate, and a messages row (in_flight last) per message it changed."""
    event_rows = [
        (event.message_sid, *event_row(event, outcome.transition))
        for event, outcome in zip(events, recorded, strict=True)
        if outcome.transition is not None  # a retry or a copy writes nothing
    ]
    message_rows = [(*message_row(state), in_flight(state)) for state in changed.values()]
    return event_rows, message_rows


def event_from_row(row: Sequence[Any]) -> EventRecord:
    values: Mapping[str, Any] = dict(zip(EVENT_COLUMNS, row, strict=True))
    return EventRecord(
        status=values["status"],
        received_at=values["received_at"],
        source=values["source"],
        out_of_order=bool(values["out_of_order"]),
        error_code=values["error_code"],
        reported_at=values["reported_at"],
        occurred_at=values["occurred_at"],
        params=json.loads(values["params"])
        if isinstance(values["params"], str)
        else values["params"],
        query=values["query"],
    )
