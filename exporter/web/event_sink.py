"""The Event Streams webhook sink: CloudEvents -> authentication -> the inbox.

Twilio discards an event answered with a 4xx (other than 429) and retries 5xx for hours, so:
a request whose events cannot all be used still gets a 200 for the good ones (the bad ones
are named in the answer, counted and logged: retrying them would not help). A request is
logged whole, as posted, in one insert: a store outage records none of its events and answers
503, so Twilio's redelivery brings them all.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import logging
from collections.abc import Callable
from urllib.parse import quote

import falcon

from exporter.inputs.callback_form import FormParams
from exporter.inputs.event_streams import MalformedDelivery, parse_delivery
from exporter.web.signature import (
    SETTINGS_HEADER,
    SIGNATURE_HEADER,
    body_hash_matches,
    callback_url,
)
from exporter.web.webhook import (
    UnreadableBody,
    WebhookResource,
    content_type_of,
    read_body,
)

log = logging.getLogger(__name__)
# CloudEvents' JSON media types (structured mode, single or batch), and plain JSON, which is
# what Twilio's sinks send. A missing type is let through rather than losing the events.
JSON_TYPES = frozenset(
    {"", "application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
)
CHALLENGE = 'Basic realm="twilio-status-exporter", charset="UTF-8"'
# Failures named in the log line of one request (all of them are in the answer's body).
LOGGED_FAILURES = 5
NO_PARAMS = FormParams()


class EventStreamResource(WebhookResource):
    """POST /twilio/events. A 200 is sent only once the delivery is durably logged."""

    @functools.cached_property
    def _credentials(self) -> list[bytes]:
        """The sink URL's `user:password` pairs that may authenticate a delivery."""
        return [f"{u}:{p}".encode() for u, p in self._settings.events_basic_auth]

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        received_at = self._clock()
        if content_type_of(req) not in JSON_TYPES:
            raise self._reject(falcon.HTTPUnsupportedMediaType, "Content-Type must be JSON")
        try:
            body = read_body(req, self._settings.events_max_body_bytes)
        except UnreadableBody as ex:
            raise self._reject(ex.error, ex.description) from None
        self._authenticate(req, body)
        try:
            items = parse_delivery(body, req.query_string, received_at)
        except MalformedDelivery as ex:
            raise self._reject(falcon.HTTPBadRequest, str(ex)) from None
        usable = [item for item in items if item.event is not None]
        failed = [
            {"index": item.index, "id": item.id, "reason": item.problem}
            for item in items
            if item.problem is not None
        ]
        if failed:
            log.info(
                "Event Streams delivery: %d of %d events unusable: %s",
                len(failed),
                len(items),
                "; ".join(
                    f"#{f['index']} {f['id'] or '-'}: {f['reason']}"
                    for f in failed[:LOGGED_FAILURES]
                ),
            )
        if failed and len(failed) == len(items):
            self._outcomes.delivery_refused("malformed")
            resp.status = falcon.HTTP_400
        else:
            self._intake.accept_delivery(body, req.query_string, received_at, items)
            resp.status = falcon.HTTP_200
        # Whether an event repeats one already recorded is known once it is applied: the
        # answer says what was taken (durably), ignored and refused.
        answer = {
            "accepted": len(usable),
            "ignored": sum(1 for item in items if item.ignored),
            "failed": failed,
        }
        resp.content_type = falcon.MEDIA_JSON
        resp.data = json.dumps(answer, separators=(",", ":")).encode()

    def _authenticate(self, req: falcon.Request, body: bytes) -> None:
        """Basic credentials when the sink URL carries them (configured), and Twilio's
        signature: over the URL, whose `bodySHA256` binds the body."""
        authorization = req.get_header("Authorization")
        user_info = self._basic_user_info(authorization)
        if self._credentials and user_info is None:
            self._outcomes.delivery_refused("invalid_signature")
            raise falcon.HTTPUnauthorized(
                title="Invalid credentials",
                description="The sink URL's user name and password are missing or wrong.",
                challenges=[CHALLENGE],
            )
        if self._checker is None:
            return
        signature = req.get_header(SIGNATURE_HEADER)
        if not signature and user_info is not None:
            return  # the sink's credentials authenticate it
        url = callback_url(req.env, self._settings.public_url, self._settings.trusted_proxies)
        if signature and body_hash_matches(url, body):
            settings_header = req.get_header(SETTINGS_HEADER)
            for candidate in _signed_url_candidates(url, user_info):
                if self._checker.is_valid(candidate, NO_PARAMS, signature, settings_header):
                    return
        log.info(
            "invalid Twilio signature on Event Streams delivery to %s from %s", url, req.remote_addr
        )
        self._outcomes.delivery_refused("invalid_signature")
        raise falcon.HTTPForbidden(
            title="Invalid signature",
            description=f"{SIGNATURE_HEADER} is missing or does not match this request "
            "(its URL with bodySHA256, the SHA-256 of the body).",
        )

    def _basic_user_info(self, authorization: str | None) -> str | None:
        """The configured `user:password` the request authenticates with, else None."""
        if not self._credentials or not authorization:
            return None
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        for expected in self._credentials:
            if hmac.compare_digest(given, expected):
                return expected.decode()
        return None

    def _reject(self, error: Callable[..., falcon.HTTPError], description: str) -> falcon.HTTPError:
        self._outcomes.delivery_refused("malformed")
        return error(title="Malformed Event Streams delivery", description=description)


def _signed_url_candidates(url: str, user_info: str | None) -> list[str]:
    """The URL as received, and (Twilio calls a sink URL with credentials in it, and may sign
    it as configured) with the credentials in its authority."""
    if user_info is None:
        return [url]
    scheme, sep, rest = url.partition("://")
    user, _, password = user_info.partition(":")
    safe = "!$&'()*+,;=-._~"
    return [url, f"{scheme}{sep}{quote(user, safe=safe)}:{quote(password, safe=safe)}@{rest}"]
