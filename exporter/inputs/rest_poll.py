"""A message as Twilio's REST API reports it, and the status event a poll makes of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter import model
from exporter.inputs.callback_form import FormParams, channel_of, country_of
from exporter.model import CallbackContext, StatusEvent

# Messages that get StatusCallbacks. Inbound ones (`inbound`) never do, so a listed inbound
# message the store never saw is not a missed callback.
OUTBOUND_DIRECTIONS = frozenset({"outbound-api", "outbound-call", "outbound-reply"})


@dataclass(frozen=True, slots=True)
class ApiMessage:
    """The Message resource fields reconcile uses (never the body: the record needs none)."""

    sid: str
    status: str
    account_sid: str | None = None
    messaging_service_sid: str | None = None
    to: str | None = None
    from_: str | None = None
    direction: str | None = None
    error_code: int | None = None
    num_segments: str | None = None
    num_media: str | None = None
    price: str | None = None
    price_unit: str | None = None
    date_created: datetime | None = None
    date_sent: datetime | None = None
    date_updated: datetime | None = None

    @classmethod
    def from_instance(cls, instance: Any) -> ApiMessage:
        """From a twilio `MessageInstance` (fields the API left out are None)."""
        return cls(
            sid=str(instance.sid),
            status=str(instance.status or ""),
            account_sid=instance.account_sid,
            messaging_service_sid=instance.messaging_service_sid,
            to=instance.to,
            from_=instance.from_,
            direction=None if instance.direction is None else str(instance.direction),
            error_code=instance.error_code,
            num_segments=instance.num_segments,
            num_media=instance.num_media,
            price=instance.price,
            price_unit=instance.price_unit,
            date_created=_utc(instance.date_created),
            date_sent=_utc(instance.date_sent),
            date_updated=_utc(instance.date_updated),
        )

    @property
    def outbound(self) -> bool:
        return self.direction in OUTBOUND_DIRECTIONS

    def params(self, polled_at: float) -> dict[str, str]:
        """What the poll saw, stored with the event as a callback's form is."""
        fields = {
            "sid": self.sid,
            "status": self.status,
            "account_sid": self.account_sid,
            "messaging_service_sid": self.messaging_service_sid,
            "to": self.to,
            "from": self.from_,
            "direction": self.direction,
            "error_code": None if self.error_code is None else str(self.error_code),
            "num_segments": self.num_segments,
            "num_media": self.num_media,
            "price": self.price,
            "price_unit": self.price_unit,
            "date_created": _iso(self.date_created),
            "date_sent": _iso(self.date_sent),
            "date_updated": _iso(self.date_updated),
            "polled_at": _iso(datetime.fromtimestamp(polled_at, UTC)),
        }
        return {name: value for name, value in fields.items() if value is not None}


def poll_event(message: ApiMessage, polled_at: float) -> StatusEvent:
    """The status event a poll reports, for the same ingest path as a callback.

    Its time is Twilio's `date_updated` (when the status last changed), not the poll's: a
    message polled 12 hours after its delivery was delivered then, and time-to-status, stage
    durations and spans must show that rather than our polling delay. `date_created` is the
    message's true creation time.
    """
    form = FormParams({"To": [message.to or ""], "NumMedia": [message.num_media or "0"]})
    changed = message.date_updated.timestamp() if message.date_updated else polled_at
    created = message.date_created.timestamp() if message.date_created else None
    return StatusEvent(
        message_sid=message.sid,
        status=model.normalize_status(message.status),
        received_at=min(changed, polled_at),
        source="poll",
        error_code=None if message.error_code is None else str(message.error_code),
        channel=channel_of(form),
        to=message.to,
        from_=message.from_,
        country=country_of(message.to),
        account_sid=message.account_sid,
        messaging_service_sid=message.messaging_service_sid,
        context=CallbackContext(created_at=created),
        params=message.params(polled_at),
    )


def should_record(current: str, recorded: frozenset[str], reported: str) -> bool:
    """Whether the API's status is news for a message whose current status is `current`.

    Not when it is already recorded (the store would call it a duplicate), and not when it
    ranks below the current status: the API lagging a callback we already have is no event.
    """
    status = model.normalize_status(reported)
    if not status.strip() or status in recorded:
        return False
    rank, current_rank = model.RANKS.get(status), model.RANKS.get(current)
    return rank is None or current_rank is None or rank >= current_rank


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")
