"""Reading a webhook's body within its size limit, for every route that takes one."""

from __future__ import annotations

from collections.abc import Callable

import falcon

# Twilio retries a request answered 503; a short hint keeps its retries (and ours) cheap.
RETRY_AFTER_SECONDS = 5


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
