"""What every Twilio webhook route shares: its collaborators, reading the body within a
limit, and the answers that tell Twilio to retry."""

from __future__ import annotations

import time
from collections.abc import Callable

import falcon

from exporter.ingest import Ingestor
from exporter.settings import Settings
from exporter.web.signature import SignatureChecker

# Twilio retries a request answered 503; a short hint keeps its retries (and ours) cheap.
RETRY_AFTER_SECONDS = 5


class WebhookResource:
    """A POST-only route that records what Twilio sends through the ingestor."""

    def __init__(
        self,
        settings: Settings,
        ingestor: Ingestor,
        checker: SignatureChecker | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._ingestor = ingestor
        self._metrics = ingestor.metrics
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


def store_unavailable(what: str) -> falcon.HTTPError:
    """503 with Retry-After: nothing was lost, the sender's retry will land it."""
    return falcon.HTTPServiceUnavailable(
        title="Store unavailable",
        description=f"The {what} was not recorded; retry later.",
        retry_after=RETRY_AFTER_SECONDS,
    )


def content_type_of(req: falcon.Request) -> str:
    """The media type without its parameters, lower case ("" when absent)."""
    return (req.content_type or "").partition(";")[0].strip().lower()
