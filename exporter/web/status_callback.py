"""The StatusCallback resource: form -> signature -> event -> store -> telemetry.

Checks run cheapest first (method, content type, size, signature, required fields) so that
hostile or unsigned traffic is turned away before any parsing work or database access.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import falcon

from exporter.inputs.callback_form import FormParams, MalformedCallback, parse_callback, parse_form
from exporter.store import StoreUnavailable
from exporter.web.signature import SETTINGS_HEADER, SIGNATURE_HEADER, callback_url
from exporter.web.webhook import (
    UnreadableBody,
    WebhookResource,
    content_type_of,
    read_body,
    store_unavailable,
)

log = logging.getLogger(__name__)
FORM = "application/x-www-form-urlencoded"


class StatusCallbackResource(WebhookResource):
    """POST /twilio/status. A 200 is sent only once the callback is committed."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        started = time.perf_counter()
        try:
            self._handle(req, resp)
        finally:
            self._metrics.request_duration.observe(time.perf_counter() - started)

    def _handle(self, req: falcon.Request, resp: falcon.Response) -> None:
        received_at = self._clock()
        if content_type_of(req) != FORM:
            raise self._reject(falcon.HTTPUnsupportedMediaType, f"Content-Type must be {FORM}")
        try:
            body = read_body(req, self._settings.max_body_bytes)
        except UnreadableBody as ex:
            raise self._reject(ex.error, ex.description) from None
        signature = req.get_header(SIGNATURE_HEADER)
        if self._checker is not None and not signature:
            raise self._forbidden()
        try:
            params = parse_form(body)
        except MalformedCallback as ex:
            raise self._reject(falcon.HTTPBadRequest, str(ex)) from None
        if self._checker is not None and not self._signed(req, params, signature):
            raise self._forbidden()
        try:
            event = parse_callback(params, req.query_string, received_at)
        except MalformedCallback as ex:
            raise self._reject(falcon.HTTPBadRequest, str(ex)) from None
        try:
            self._ingestor.ingest(event)
        except StoreUnavailable as ex:
            log.error("callback for %s not recorded, answering 503: %s", event.message_sid, ex)
            self._metrics.callbacks("error").inc()
            self._metrics.store_errors("record").inc()
            raise store_unavailable("callback") from None
        except Exception:
            log.exception("callback for %s not recorded: unexpected error", event.message_sid)
            self._metrics.callbacks("error").inc()
            raise falcon.HTTPInternalServerError(
                title="Internal error",
                description="The callback was not recorded; retry later.",
            ) from None
        resp.status = falcon.HTTP_200
        resp.content_type = falcon.MEDIA_TEXT
        resp.data = b""

    def _signed(self, req: falcon.Request, params: FormParams, signature: str | None) -> bool:
        assert self._checker is not None
        url = callback_url(req.env, self._settings.public_url, self._settings.trusted_proxies)
        if self._checker.is_valid(url, params, signature, req.get_header(SETTINGS_HEADER)):
            return True
        log.info("invalid Twilio signature for %s from %s", url, req.remote_addr)
        return False

    def _forbidden(self) -> falcon.HTTPError:
        self._metrics.callbacks("invalid_signature").inc()
        return falcon.HTTPForbidden(
            title="Invalid signature",
            description=f"{SIGNATURE_HEADER} is missing or does not match this request.",
        )

    def _reject(self, error: Callable[..., falcon.HTTPError], description: str) -> falcon.HTTPError:
        self._metrics.callbacks("malformed").inc()
        return error(title="Malformed callback", description=description)
