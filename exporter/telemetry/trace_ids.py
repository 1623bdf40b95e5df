"""Which trace a message's telemetry names: the one id its spans and its exemplars share.

Kept apart from the span builder so that the metrics, imported by every web worker, can name
a message's trace without importing the OpenTelemetry SDK.
"""

from __future__ import annotations

import hashlib

from exporter.model import MessageState


def trace_id_hex_for(message_sid: str) -> str:
    """First 16 bytes of SHA-256("twilio.message:" + MessageSid), as 32 lower-case hex digits:
    every worker and replica derives the same trace id, with no coordination."""
    return hashlib.sha256(b"twilio.message:" + message_sid.encode()).hexdigest()[:32]


def message_trace_id_hex(message: MessageState) -> str:
    """The message's trace, as W3C and exemplars write it: the sender's, when a callback URL
    carried a `traceparent` (the message keeps the first one; lower-case hex, as parsing left
    it), else derived from the MessageSid."""
    if message.traceparent:
        return message.traceparent[3:35]
    return trace_id_hex_for(message.message_sid)


def message_trace_id(message: MessageState) -> int:
    """`message_trace_id_hex` as a number, as OpenTelemetry takes it."""
    return int(message_trace_id_hex(message), 16)
