"""What every Twilio webhook route shares: its collaborators, reading the body within a
limit, and the answer that tells Twilio to retry (mapped once, for the whole app)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import falcon

from exporter.ingest.intake import Intake
from exporter.settings import Settings
from exporter.store import StoreUnavailable
from exporter.web.signature import SignatureChecker

log = logging.getLogger(__name__)
# Twilio retries a request answered 503; a short hint keeps its retries (and ours) cheap.
RETRY_AFTER_SECONDS = 5


class WebhookResource:
    """A POST-only route that hands what Twilio sends to the intake."""

    def __init__(
        self,
        settings: Settings,
        intake: Intake,
        checker: SignatureChecker | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._intake = intake
        self._outcomes = intake.outcomes
        self._checker = checker  # None only with EXPORTER_INSECURE_SKIP_SIGNATURE=1
        self._clock = clock

    def on_options(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Falcon answers OPTIONS by itself; these routes take POST and nothing else.
        raise falcon.HTTPMethodNotAllowed(["POST"])


class UnreadableBody(Exception):
    """The body is too large, late, cut short or broken: answer with `error` (a 4xx)."""

    def __init__(self, error: Callable[..., falcon.HTTPError], description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _request_timeout(title: str, description: str) -> falcon.HTTPError:
    return falcon.HTTPError(falcon.HTTP_408, title=title, description=description)


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes; a declared length over the limit is refused
    before a byte is read."""
    length = req.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    if length is None and "chunked" not in (req.get_header("Transfer-Encoding") or ""):
        return b""
    stream = req.bounded_stream if length is not None else req.stream
    try:
        body: bytes = stream.read(limit + 1)
    except TimeoutError:  # the worker's socket read timeout: a slow or silent client
        raise UnreadableBody(_request_timeout, "the body did not arrive in time") from None
    except Exception:  # a broken chunked encoding, a client gone mid-body
        raise UnreadableBody(falcon.HTTPBadRequest, "the body could not be read") from None
    if length is not None and len(body) < length:
        raise UnreadableBody(falcon.HTTPBadRequest, "the body is shorter than Content-Length")
    if len(body) > limit:
        raise too_large(limit)
    return body


def too_large(limit: int) -> UnreadableBody:
    return UnreadableBody(falcon.HTTPContentTooLarge, f"body is larger than {limit} bytes")


def store_unavailable(
    req: falcon.Request, resp: falcon.Response, ex: StoreUnavailable, params: object
) -> None:
    """Falcon error handler: 503 with Retry-After. Nothing was recorded (the intake counted
    and logged it); Twilio's retry will land the request."""
    raise falcon.HTTPServiceUnavailable(
        title="Store unavailable",
        description="The request was not recorded; retry later.",
        retry_after=RETRY_AFTER_SECONDS,
    )


def unexpected_error(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: object
) -> None:
    """Falcon error handler for a bug: a clear 500, never a traceback (the log has it)."""
    log.error("unexpected error answering %s %s", req.method, req.path, exc_info=ex)
    raise falcon.HTTPInternalServerError(
        title="Internal error", description="The request was not recorded; retry later."
    )


def content_type_of(req: falcon.Request) -> str:
    """The media type without its parameters, lower case ("" when absent)."""
    return (req.content_type or "").partition(";")[0].strip().lower()
