"""Turns planned deliveries into signed HTTP requests: a callback's form, an event batch's JSON."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit, urlunsplit

from exporter.simulation.batching import Delivery, EventBatch
from exporter.simulation.model import Input, Outcome, PlannedRequest, ScheduledCallback, with_query
from exporter.simulation.signing import Signer

STATUS_PATH = "/twilio/status"
EVENTS_PATH = "/twilio/events"
DEFAULT_EVENTS_URL = "http://127.0.0.1:8080" + EVENTS_PATH
USER_AGENT = "TwilioProxy/1.1"
NO_PARAMS: dict[str, str] = {}


def events_url_for(callback_url: str) -> str:
    """The Event Streams sink next to a callback URL: its `/twilio/status` path replaced by
    `/twilio/events` (query dropped); the local default when the path is another one."""
    parts = urlsplit(callback_url)
    if not parts.path.endswith(STATUS_PATH):
        return DEFAULT_EVENTS_URL
    path = parts.path.removesuffix(STATUS_PATH) + EVENTS_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def signed_events_url(events_url: str, body: bytes) -> str:
    """The URL Twilio posts an Event Streams batch to, and signs: the sink URL with the
    body's SHA-256 in `bodySHA256`, which binds the body to the signature."""
    return with_query(events_url, {"bodySHA256": hashlib.sha256(body).hexdigest()})


class RequestBuilder:
    """Builds and signs each request; forgeries are signed with a wrong token."""

    def __init__(self, token: str, callback_url: str, events_url: str) -> None:
        self.callback_url = callback_url
        self.events_url = events_url
        self._signer = Signer(token)
        self._forger = Signer(token + "-not-the-auth-token")

    def build(self, delivery: Delivery) -> PlannedRequest:
        """The request that makes `delivery`."""
        if isinstance(delivery, EventBatch):
            return self._events(delivery)
        return self._callback(delivery)

    def _callback(self, callback: ScheduledCallback) -> PlannedRequest:
        url = callback.url(self.callback_url)
        forged = callback.expected is Outcome.INVALID_SIGNATURE
        signer = self._forger if forged else self._signer
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": USER_AGENT,
            "X-Twilio-Signature": signer.sign(url, callback.params),
            "I-Twilio-Idempotency-Token": idempotency_token(callback),
        }
        return PlannedRequest(Input.CALLBACKS, url, callback.body(), headers, (callback.expected,))

    def _events(self, batch: EventBatch) -> PlannedRequest:
        events = [event.cloud_event(self.callback_url) for event in batch.events]
        body = json.dumps(events, separators=(",", ":")).encode()
        url = signed_events_url(self.events_url, body)
        signer = self._forger if batch.forged else self._signer
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            # JSON bodies are signed as a URL with no parameters: bodySHA256 stands for them.
            "X-Twilio-Signature": signer.sign(url, NO_PARAMS),
        }
        expected = tuple(event.expected for event in batch.events)
        return PlannedRequest(Input.EVENTS, url, body, headers, expected)


def idempotency_token(callback: ScheduledCallback) -> str:
    """Same for a callback and its retries, as Twilio's is."""
    digest = hashlib.blake2b(f"{callback.message_sid}:{callback.status}".encode(), digest_size=16)
    text = digest.hexdigest()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
