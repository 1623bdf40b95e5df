"""Twilio messaging error codes: what each means and what kind of failure it is.

The class tells an operator what to do about a failure: `transient` may succeed if sent again
later, `permanent` will fail again for this recipient or sender until something is changed, and
`compliance` is a registration, consent or content-policy problem to fix before sending more.
Meanings are paraphrased from Twilio's error dictionary (https://www.twilio.com/docs/api/errors),
which Twilio revises; codes not listed here get a generic description pointing there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class ErrorClass(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    COMPLIANCE = "compliance"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class TwilioError:
    """One Twilio error code with its meaning and class."""

    code: str
    meaning: str
    error_class: ErrorClass

    @property
    def description(self) -> str:
        """`30007: Message filtered ...`: the code and its meaning, for span statuses and logs."""
        return f"{self.code}: {self.meaning}" if self.code else self.meaning


_T, _P, _C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.COMPLIANCE
_TABLE = (
    ("21211", "Invalid 'To' phone number", _P),
    ("21408", "Sending to this region is not enabled (Messaging Geographic Permissions)", _P),
    ("21610", "Recipient has opted out (replied STOP) of messages from this sender", _C),
    ("21612", "Twilio cannot route a message between this 'To' and 'From' combination", _P),
    ("21614", "'To' number is not a valid mobile number", _P),
    ("21617", "Message body exceeds the 1600 character limit", _P),
    ("30001", "Queue overflow: too many messages queued for this sender", _T),
    ("30002", "Account suspended", _P),
    ("30003", "Unreachable destination handset (off, out of coverage or roaming)", _T),
    ("30004", "Message blocked by the recipient or the carrier", _P),
    ("30005", "Unknown destination handset: the number is unknown or no longer in service", _P),
    ("30006", "Landline or unreachable carrier: the number cannot receive SMS", _P),
    ("30007", "Message filtered by the carrier as spam or disallowed content", _C),
    ("30008", "Unknown error reported by the carrier", _T),
    ("30009", "Missing segment: part of a multi-part message did not arrive", _T),
    ("30010", "Message price exceeds the MaxPrice set for it", _P),
    ("30011", "MMS is not supported by the destination", _P),
    ("30022", "US A2P 10DLC throughput limit exceeded", _T),
    ("30032", "Toll-free number has not been verified", _C),
    ("30034", "US A2P 10DLC: message from an unregistered number", _C),
    ("30035", "US A2P 10DLC: message from a number still being configured", _C),
    ("30036", "Validity period expired before the message could be sent", _T),
    ("30038", "OTP message body filtered", _C),
    ("63001", "Channel could not authenticate the request (check the sender's credentials)", _P),
    ("63003", "Channel could not find the 'To' address", _P),
    ("63016", "Outside the channel's messaging window: use an approved template", _C),
    ("63018", "Rate limit exceeded for the channel", _T),
    ("63024", "Invalid message recipient for the channel", _P),
    ("63032", "Channel limitation: this user cannot be sent this message", _P),
)
ERRORS: Mapping[str, TwilioError] = MappingProxyType(
    {code: TwilioError(code, meaning, error_class) for code, meaning, error_class in _TABLE}
)


def describe(code: str | None) -> TwilioError:
    """The table's entry for `code`, or a generic one (codes are never rejected)."""
    if not code:
        return TwilioError("", "no ErrorCode was reported", ErrorClass.UNKNOWN)
    known = ERRORS.get(code)
    if known is not None:
        return known
    if code.isdigit() and len(code) == 5:
        meaning = f"Twilio error {code}; see https://www.twilio.com/docs/api/errors/{code}"
        return TwilioError(code, meaning, ErrorClass.UNKNOWN)
    return TwilioError(code[:32], "not a Twilio error code", ErrorClass.UNKNOWN)
