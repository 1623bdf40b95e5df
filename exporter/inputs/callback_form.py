"""A status callback as a typed event: the form and the callback URL's query, parsed and checked."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import phonenumbers
from falcon.util.uri import parse_query_string

from exporter.model import OTHER, CallbackContext, StatusEvent, normalize_status

SID = re.compile(r"^[A-Za-z]{2}[A-Za-z0-9]{1,62}$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
CHANNELS = frozenset({"sms", "mms", "whatsapp", "messenger", "rcs"})
MAX_TAGS = 32
MAX_TAG_VALUE = 256


class MalformedCallback(ValueError):
    """The request is not a status callback we can record; the message says why (for a 400)."""


class FormParams(dict[str, list[str]]):
    """Form parameters with every value of a repeated key, as Twilio signs them.

    `getall` lets twilio's RequestValidator read the values directly instead of probing
    three container protocols per parameter.
    """

    def getall(self, name: str) -> list[str]:
        return self[name]

    def first(self, name: str) -> str | None:
        values = self.get(name)
        return values[0] if values else None

    def flat(self) -> dict[str, str | list[str]]:
        """A JSON-friendly copy: single values as strings, repeated keys as lists."""
        return {k: v[0] if len(v) == 1 else list(v) for k, v in self.items()}


def parse_form(body: bytes, max_fields: int = 1000) -> FormParams:
    """Parse an application/x-www-form-urlencoded body; MalformedCallback if it is not one.

    Falcon's compiled parser decodes exactly as urllib's parse_qsl does (`+`, escapes, invalid
    UTF-8 in escapes), much faster; the checks parse_qsl's strict mode made are done here.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedCallback("body is not UTF-8") from None
    if text.count("&") >= max_fields:
        raise MalformedCallback(f"body has more than {max_fields} fields")
    if any("=" not in field for field in text.split("&") if field):
        raise MalformedCallback("body is not an application/x-www-form-urlencoded form")
    parsed = parse_query_string(text, keep_blank=True, csv=False)
    return FormParams({k: v if isinstance(v, list) else [v] for k, v in parsed.items()})


def parse_callback(params: FormParams, query: str, received_at: float) -> StatusEvent:
    """Build the event from a signed callback's form and URL query; MalformedCallback if the
    required fields (MessageSid, MessageStatus or SmsStatus) are missing or unusable."""
    sid, raw_status = required_fields(params)
    status = normalize_status(raw_status)
    to = params.first("To")
    raw_dlr = params.first("RawDlrDoneDate")
    return StatusEvent(
        message_sid=sid,
        status=status,
        received_at=received_at,
        error_code=(params.first("ErrorCode") or "").strip() or None,
        channel=channel_of(params),
        to=to,
        from_=params.first("From"),
        country=country_of(to),
        account_sid=params.first("AccountSid"),
        messaging_service_sid=params.first("MessagingServiceSid"),
        reported_at=parse_raw_dlr_done_date(raw_dlr),
        raw_dlr_done_date=raw_dlr,
        context=parse_context(query, received_at),
        params=params.flat(),
        query=query,
    )


def required_fields(params: FormParams) -> tuple[str, str]:
    """MessageSid and the raw status (MessageStatus, else SmsStatus; `read` for WhatsApp's
    READ event); MalformedCallback if either is missing or the SID is not one."""
    sid = (params.first("MessageSid") or params.first("SmsSid") or "").strip()
    if not sid:
        raise MalformedCallback("MessageSid is missing")
    if not SID.match(sid):
        raise MalformedCallback("MessageSid is not a Twilio SID")
    raw_status = params.first("MessageStatus") or params.first("SmsStatus") or ""
    if (params.first("EventType") or "").strip().upper() == "READ":
        raw_status = "read"
    if not raw_status.strip():
        raise MalformedCallback("MessageStatus (or SmsStatus) is missing")
    return sid, raw_status


def channel_of(params: FormParams) -> str:
    """`ChannelPrefix` names the channel; without one it is sms, or mms when media was sent."""
    prefix = (params.first("ChannelPrefix") or "").strip().lower()
    if not prefix:
        to = params.first("To") or ""
        prefix = to.partition(":")[0].lower() if ":" in to else ""
    if prefix:
        return prefix if prefix in CHANNELS else OTHER
    num_media = params.first("NumMedia") or "0"
    return "mms" if num_media.isdigit() and int(num_media) > 0 else "sms"


def bare_number(address: str | None) -> str | None:
    """`whatsapp:+4917...` -> `+4917...`: the phone number without its channel prefix."""
    if not address:
        return None
    return address.rpartition(":")[2].strip() or None


def country_of(address: str | None) -> str:
    """ISO 3166 region of a phone number, "" when it is not a recognisable E.164 number."""
    number = bare_number(address)
    if not number or not number.startswith("+") or len(number) > 20:
        return ""
    # Regions are told apart by a number's leading digits (country code, area code, operator
    # prefix) and its length, never by the subscriber's last four digits: cache on the rest,
    # since parsing a number is the dearest step of reading a callback.
    key = (number[:-4], len(number))
    region = _REGIONS.get(key)
    if region is None:
        if len(_REGIONS) >= _REGION_CACHE_SIZE:
            _REGIONS.clear()
        region = _REGIONS[key] = _region(number)
    return region


_REGIONS: dict[tuple[str, int], str] = {}
_REGION_CACHE_SIZE = 65536


def _region(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return ""
    region = phonenumbers.region_code_for_number(parsed)
    if region is None:
        # Not a valid number of any region (test ranges, new number blocks): its calling
        # code still names the country it was sent to.
        region = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    return "" if region in (None, phonenumbers.UNKNOWN_REGION) else region


def parse_raw_dlr_done_date(value: str | None) -> float | None:
    """YYMMDDhhmm from the carrier's delivery receipt, read as UTC (it carries no zone)."""
    if not value or len(value) != 10 or not value.isascii() or not value.isdigit():
        return None
    year, month, day, hour, minute = (int(value[i : i + 2]) for i in range(0, 10, 2))
    try:  # two-digit years are 20xx
        return datetime(2000 + year, month, day, hour, minute, tzinfo=UTC).timestamp()
    except ValueError:
        return None


def parse_context(query: str, received_at: float) -> CallbackContext:
    """`traceparent`, `created` and `tag.<name>` from the callback URL; bad values are ignored
    (the sender chose them, and a callback is never refused for them)."""
    if not query:
        return CallbackContext()
    traceparent = None
    created_at = None
    tags: dict[str, str] = {}
    # The request line limit (gunicorn: 4094 bytes) already bounds how much there is to read.
    for name, values in parse_query_string(query, keep_blank=True, csv=False).items():
        value = values[0] if isinstance(values, list) else values
        if name == "traceparent" and traceparent is None:
            traceparent = valid_traceparent(value)
        elif name == "created" and created_at is None:
            created_at = parse_created(value, received_at)
        elif name.startswith("tag.") and len(tags) < MAX_TAGS:
            tag = name[4:]
            if tag and len(tag) <= 64 and tag not in tags:
                tags[tag] = value[:MAX_TAG_VALUE]
    return CallbackContext(traceparent=traceparent, created_at=created_at, tags=tags)


def valid_traceparent(value: str) -> str | None:
    match = TRACEPARENT.match(value.strip().lower())
    if not match or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(0)


def parse_created(value: str, received_at: float) -> float | None:
    """RFC 3339 or Unix seconds; None if unreadable or after the callback itself arrived."""
    value = value.strip()
    try:
        created = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        created = parsed.timestamp()
    if created != created or created <= 0 or created > received_at + 300:
        return None  # NaN, nonsense, or in the future beyond a little clock skew
    return created
