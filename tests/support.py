"""Helpers shared by unit and integration tests: signed callbacks, free ports, waiting."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

AUTH_TOKEN = "12345"  # the token of twilio-python's own signature test vectors
T = TypeVar("T")


def sid(prefix: str, n: int) -> str:
    """A well-formed, deterministic Twilio SID: `sid("SM", 7)` -> SM000...0007."""
    return f"{prefix}{n:032x}"


def callback_params(message_sid: str, status: str, **extra: str) -> dict[str, str]:
    """A form as Twilio posts it for an outbound SMS."""
    params = {
        "MessageSid": message_sid,
        "SmsSid": message_sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": sid("AC", 1),
        "From": "+14155550100",
        "To": "+4915112345678",
        "ApiVersion": "2010-04-01",
    }
    params.update(extra)
    return params


def signed_request(
    url: str, params: Mapping[str, str], token: str = AUTH_TOKEN
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a callback to `url` (full URL, query included) signed like Twilio."""
    signature = RequestValidator(token).compute_signature(url, dict(params))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature,
    }
    return urlencode(params).encode(), headers


def cloud_event(message_sid: str, status: str, timestamp: str, **data: object) -> dict[str, object]:
    """A Messaging.MessageStatus CloudEvent shaped like Twilio's documentation's examples."""
    event_type = f"com.twilio.messaging.message.{status}"
    return {
        "specversion": "1.0",
        "type": event_type,
        "source": f"/2010-04-01/Accounts/{sid('AC', 1)}/Messages/{message_sid}.json",
        "id": "EZ" + hashlib.sha256(f"{message_sid}:{status}".encode()).hexdigest()[:32],
        "dataschema": "https://events-schemas.twilio.com/Messaging.MessageStatus/7",
        "datacontenttype": "application/json",
        "time": timestamp,
        "data": {
            "messageSid": message_sid,
            "timestamp": timestamp,
            "accountSid": sid("AC", 1),
            "eventName": event_type,
            "apiVersion": "2010-04-01",
            "from": "+14155550100",
            "to": "+4915112345678",
            "messageStatus": status.upper(),
            **data,
        },
    }


def signed_events_request(
    url: str, events: object, token: str = AUTH_TOKEN
) -> tuple[str, bytes, dict[str, str]]:
    """Query string, body and headers of an Event Streams delivery to `url` signed like
    Twilio: the body's SHA-256 goes in the URL as bodySHA256, and the URL alone is signed."""
    body = events if isinstance(events, bytes) else json.dumps(events).encode()
    query = f"bodySHA256={hashlib.sha256(body).hexdigest()}"
    signed_url = f"{url}&{query}" if "?" in url else f"{url}?{query}"
    signature = RequestValidator(token).compute_signature(signed_url, {})
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature}
    return signed_url.partition("?")[2], body, headers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: Callable[[], T | None], timeout: float = 15.0, what: str = "") -> T:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as ex:  # the thing waited for may not be up yet
            last_error = ex
        else:
            if result:
                return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what or condition}: {last_error}")
