"""Twilio's Messages API as reconcile uses it: the client, bounded retries, plain values.

Everything goes through `twilio.rest.Client`. Its `http_client` hook is the one place that
touches HTTP: it can point the client at another base URL (`--api-base`, the tests' fake API),
and its requests session retries through urllib3's `Retry`, which waits out a 429's
`Retry-After` and backs off on 5xx and broken connections before twilio sees a response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.util import Retry

from exporter.inputs.rest_poll import ApiMessage
from exporter.settings import ApiCredentials

TWILIO_API_BASE = "https://api.twilio.com"
# Twilio asks to slow down with 429; a 5xx is its side failing, worth another try.
RETRIED_STATUSES = frozenset({429, *range(500, 600)})
T = TypeVar("T")


class ApiError(RuntimeError):
    """A request to Twilio failed for good (after retries, or not worth retrying)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CredentialsRejected(ApiError):
    """Twilio refused the credentials (401/403): no later request can succeed either."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of 429 and 5xx responses and connection errors.

    A `Retry-After` is waited out (up to `max_retry_after`, so a run ends some day); without
    one, urllib3 retries once at once, then waits `backoff` seconds, doubling each time up to
    `max_backoff`, plus up to `jitter` seconds so that the fetch threads spread out."""

    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    jitter: float = 1.0
    max_retry_after: int = 300

    def retry(self) -> Retry:
        return Retry(
            total=self.attempts - 1,
            status_forcelist=RETRIED_STATUSES,
            allowed_methods=frozenset({"GET"}),  # reconcile only reads
            backoff_factor=self.backoff / 2,  # urllib3 waits factor * 2 ** (retry - 1)
            backoff_max=self.max_backoff,
            backoff_jitter=self.jitter,
            respect_retry_after_header=True,
            retry_after_max=self.max_retry_after,
            # The last answer goes to twilio, whose exception names Twilio's error message.
            raise_on_status=False,
        )


class ApiHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The twilio client's HTTP layer, retrying as `policy` says, optionally sending to
    another base URL."""

    def __init__(
        self,
        api_base: str | None = None,
        timeout: float = 30.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(timeout=timeout, max_retries=(policy or RetryPolicy()).retry())
        # twilio mounts its retrying adapter for https only; a plain-http --api-base (a local
        # stand-in for Twilio) must retry alike.
        self.session.mount("http://", self.session.get_adapter(TWILIO_API_BASE))
        self.api_base = api_base.rstrip("/") if api_base else None

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self.api_base and url.startswith(TWILIO_API_BASE):
            url = self.api_base + url[len(TWILIO_API_BASE) :]
        return super().request(method, url, *args, **kwargs)


def make_client(credentials: ApiCredentials, http_client: ApiHttpClient) -> Client:
    return Client(
        credentials.username,
        credentials.password,
        account_sid=credentials.account_sid,
        http_client=http_client,
    )


def call(what: str, request: Callable[[], T]) -> T:
    """Run one API request (retried below, in the HTTP client); ApiError when it failed."""
    try:
        return request()
    except (TwilioException, requests.RequestException, ValueError) as ex:
        raise api_error(what, ex) from ex


def status_of(ex: Exception) -> int | None:
    """The HTTP status a failure carries: a TwilioRestException's, or that of the response a
    failed list page hands to its bare TwilioException; None when no response came."""
    if isinstance(ex, TwilioRestException):
        return int(ex.status)
    response = next((arg for arg in ex.args if isinstance(arg, Response)), None)
    return None if response is None else int(response.status_code)


def api_error(what: str, ex: Exception) -> ApiError:
    status = status_of(ex)
    if status in (401, 403):
        return CredentialsRejected(
            f"Twilio rejected the credentials (HTTP {status}): check TWILIO_ACCOUNT_SID and "
            "TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET",
            status,
        )
    if isinstance(ex, TwilioRestException):
        detail = ex.msg
    elif isinstance(ex, requests.RequestException):
        detail = f"{type(ex).__name__}: {ex}"
    elif isinstance(ex, TwilioException) and ex.args and isinstance(ex.args[0], str):
        detail = ex.args[0]
    else:
        detail = type(ex).__name__
    retried = status in RETRIED_STATUSES or isinstance(ex, requests.RequestException)
    failed = f"HTTP {status}" if status else "no usable response"
    return ApiError(f"{what}: {failed} ({detail}){' after retries' if retried else ''}", status)


@dataclass(frozen=True)
class ListPage:
    """One page of the message list, and the URL of the next (None on the last)."""

    messages: list[ApiMessage]
    next_page_url: str | None


class MessagesApi:
    """The two questions reconcile asks Twilio: one message's status, and a day's list."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.account_sid: str = client.account_sid

    def fetch(self, message_sid: str) -> ApiMessage | None:
        """The message as Twilio has it now; None when Twilio does not know it (404)."""
        try:
            instance = call(
                f"fetch {message_sid}", lambda: self._client.messages(message_sid).fetch()
            )
        except ApiError as ex:
            if ex.status == 404:
                return None
            raise
        return ApiMessage.from_instance(instance)

    def first_page(self, sent_after: datetime, sent_before: datetime, page_size: int) -> ListPage:
        return self._list_page(
            "list messages",
            lambda: self._client.messages.page(
                date_sent_after=sent_after, date_sent_before=sent_before, page_size=page_size
            ),
        )

    def page(self, url: str) -> ListPage:
        """A later page, by the URL Twilio gave (it carries the filters and a page token)."""
        return self._list_page("list messages", lambda: self._client.messages.get_page(url))

    def _list_page(self, what: str, request: Callable[[], Any]) -> ListPage:
        # A page decodes its records lazily: iterate inside the call, so a broken body is an
        # ApiError like a broken response.
        def read() -> ListPage:
            page = request()
            return ListPage([ApiMessage.from_instance(i) for i in page], page.next_page_url)

        return call(what, read)
