"""Twilio's Messages API as reconcile uses it: the client, bounded retries, plain values.

Everything goes through `twilio.rest.Client`. Its `http_client` hook is the one place that
touches HTTP: it can point the client at another base URL (`--api-base`, the tests' fake API)
and remembers each thread's last response, because the library's exceptions drop the headers
and a 429 must be retried after its `Retry-After`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from exporter.inputs.rest_poll import ApiMessage
from exporter.settings import ApiCredentials

log = logging.getLogger(__name__)
TWILIO_API_BASE = "https://api.twilio.com"
MAX_RETRY_AFTER = 300.0  # a longer Retry-After is treated as this: the run must end some day
T = TypeVar("T")


class ApiError(RuntimeError):
    """A request to Twilio failed for good (after retries, or not worth retrying)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CredentialsRejected(ApiError):
    """Twilio refused the credentials (401/403): no later request can succeed either."""


class ApiHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The twilio client's HTTP layer, optionally sending to another base URL, and keeping the
    last status and Retry-After per thread (fetches run on several threads)."""

    def __init__(self, api_base: str | None = None, timeout: float = 30.0) -> None:
        super().__init__(timeout=timeout)
        self.api_base = api_base.rstrip("/") if api_base else None
        self._last = threading.local()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self.api_base and url.startswith(TWILIO_API_BASE):
            url = self.api_base + url[len(TWILIO_API_BASE) :]
        self._last.status, self._last.retry_after = None, None
        response = super().request(method, url, *args, **kwargs)
        self._last.status = response.status_code
        self._last.retry_after = (response.headers or {}).get("Retry-After")
        return response

    def last_status(self) -> int | None:
        status: int | None = getattr(self._last, "status", None)
        return status

    def last_retry_after(self) -> float | None:
        """This thread's last Retry-After in seconds (it may be seconds or an HTTP date)."""
        return parse_retry_after(getattr(self._last, "retry_after", None), time.time())


def parse_retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def make_client(credentials: ApiCredentials, http_client: ApiHttpClient) -> Client:
    return Client(
        credentials.username,
        credentials.password,
        account_sid=credentials.account_sid,
        http_client=http_client,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of 429 and 5xx responses and connection errors, with backoff."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0


class Retrier:
    """Runs one API request, retrying what Twilio asks us to retry (the library itself only
    retries connection errors, and only when told to): 429 after Retry-After, 5xx and
    connection failures with exponential backoff and jitter, so threads spread out."""

    def __init__(
        self,
        http_client: ApiHttpClient,
        policy: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._http = http_client
        self._policy = policy
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    def call(self, what: str, request: Callable[[], T]) -> T:
        for attempt in range(1, self._policy.attempts + 1):
            try:
                return request()
            except (TwilioException, requests.RequestException, ValueError) as ex:
                status = self._status_of(ex)
                retry_after = self._http.last_retry_after() if status == 429 else None
                if not _retryable(ex, status) or attempt == self._policy.attempts:
                    raise _api_error(what, ex, status, attempt) from ex
                delay = self.delay(attempt, retry_after)
                log.info("%s: HTTP %s, retrying in %.1fs", what, status or "error", delay)
                self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After plus up to 10 % jitter, else half the exponential step plus a random
        half: never zero, never more than the cap."""
        with self._rng_lock:
            spread = self._rng.random()
        if retry_after is not None:
            wait = min(retry_after, MAX_RETRY_AFTER)
            return wait + wait * 0.1 * spread
        step = min(self._policy.max_delay, self._policy.base_delay * 2.0 ** (attempt - 1))
        return step / 2 + step / 2 * spread

    def _status_of(self, ex: Exception) -> int | None:
        if isinstance(ex, TwilioRestException):
            return int(ex.status)
        if isinstance(ex, requests.RequestException):
            return None
        # A list page that failed (the library raises a bare TwilioException without the
        # status), or a body that is not JSON: take the status this thread just received.
        return self._http.last_status()


def _retryable(ex: Exception, status: int | None) -> bool:
    if status is None:
        return isinstance(ex, requests.ConnectionError | requests.Timeout)
    return status == 429 or status >= 500


def _api_error(what: str, ex: Exception, status: int | None, attempts: int) -> ApiError:
    detail = ex.msg if isinstance(ex, TwilioRestException) else type(ex).__name__
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if status in (401, 403):
        return CredentialsRejected(
            f"Twilio rejected the credentials (HTTP {status}): check TWILIO_ACCOUNT_SID and "
            "TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET",
            status,
        )
    failed = f"HTTP {status}" if status else "no response"
    return ApiError(f"{what}: {failed} ({detail}){tries}", status)


@dataclass(frozen=True)
class ListPage:
    """One page of the message list, and the URL of the next (None on the last)."""

    messages: list[ApiMessage]
    next_page_url: str | None


class MessagesApi:
    """The two questions reconcile asks Twilio: one message's status, and a day's list."""

    def __init__(self, client: Client, retrier: Retrier) -> None:
        self._client = client
        self._retrier = retrier
        self.account_sid: str = client.account_sid

    def fetch(self, message_sid: str) -> ApiMessage | None:
        """The message as Twilio has it now; None when Twilio does not know it (404)."""
        try:
            instance = self._retrier.call(
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
        # A page decodes its records lazily: iterate inside the retried call, so a broken
        # body is retried like a broken response.
        def read() -> ListPage:
            page = request()
            return ListPage([ApiMessage.from_instance(i) for i in page], page.next_page_url)

        return self._retrier.call(what, read)
