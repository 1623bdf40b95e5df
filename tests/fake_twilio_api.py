"""A local HTTP server that answers like Twilio's Messages API (2010-04-01), for tests.

Shapes follow Twilio's documentation: the Message resource (RFC 2822 dates, string counts),
list pages (`messages`, `page`, `page_size`, `next_page_uri` with a `PageToken`, ...), and
error bodies (`code`, `message`, `more_info`, `status`). Tests add messages, script failures
(429 with Retry-After, 5xx) for fetches or list pages, and read back every request made.
The twilio client reaches it through its own `http_client` hook, never a patched library.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support import sid

ACCOUNT_SID = sid("AC", 1)
AUTH_TOKEN = "fake-api-auth-token"
API_VERSION = "2010-04-01"


@dataclass(frozen=True)
class ApiRequest:
    """One request the fake received: `kind` is fetch or list; `target` the sid or page;
    `at` when it arrived (time.monotonic)."""

    method: str
    path: str
    query: dict[str, str]
    kind: str
    target: str
    at: float


@dataclass
class Failure:
    status: int
    retry_after: str | None = None


@dataclass
class FakeTwilioApi:
    """The fake API's state; `start()` serves it on 127.0.0.1 at a free port."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[ApiRequest] = field(default_factory=list)
    _failures: dict[str, deque[Failure]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeTwilioApi:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        threading.Thread(
            target=server.serve_forever, args=(0.05,), name="fake-twilio", daemon=True
        ).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def add_message(
        self,
        message_sid: str,
        status: str,
        date_sent: datetime | None,
        *,
        date_created: datetime | None = None,
        date_updated: datetime | None = None,
        to: str = "+4915112345678",
        direction: str = "outbound-api",
        error_code: int | None = None,
        messaging_service_sid: str | None = None,
        num_media: str = "0",
        price: str | None = "-0.07500",
    ) -> dict[str, Any]:
        """A Message resource as Twilio returns it (dates in RFC 2822, counts as strings)."""
        created = date_created or date_sent or datetime.now(UTC)
        resource = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": "Your code is 123456",
            "date_created": _rfc2822(created),
            "date_sent": _rfc2822(date_sent),
            "date_updated": _rfc2822(date_updated or date_sent or created),
            "direction": direction,
            "error_code": error_code,
            "error_message": None,
            "from": "+14155550100",
            "messaging_service_sid": messaging_service_sid,
            "num_media": num_media,
            "num_segments": "1",
            "price": price,
            "price_unit": "USD",
            "sid": message_sid,
            "status": status,
            "subresource_uris": {
                "media": f"{self._messages_uri()}/{message_sid}/Media.json",
                "feedback": f"{self._messages_uri()}/{message_sid}/Feedback.json",
            },
            "to": to,
            "uri": f"{self._messages_uri()}/{message_sid}.json",
        }
        with self._lock:
            self.messages[message_sid] = resource
        return resource

    def set_status(self, message_sid: str, status: str, date_updated: datetime) -> None:
        with self._lock:
            self.messages[message_sid].update(status=status, date_updated=_rfc2822(date_updated))

    def fail(
        self,
        kind: str,
        target: str = "*",
        status: int = 500,
        *,
        times: int = 1,
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `times` requests of `kind` (fetch, list) for `target` (a sid, a
        page number, or * for any) with `status` instead."""
        with self._lock:
            queue = self._failures.setdefault(f"{kind}:{target}", deque())
            queue.extend(Failure(status, retry_after) for _ in range(times))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def requested(self, kind: str) -> list[str]:
        """The targets of every `kind` request, in order."""
        with self._lock:
            return [r.target for r in self.requests if r.kind == kind]

    def gaps(self, kind: str) -> list[float]:
        """Seconds between consecutive `kind` requests: how long the client waited."""
        with self._lock:
            times = [r.at for r in self.requests if r.kind == kind]
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    # -- serving ------------------------------------------------------------------------

    def _messages_uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages"

    def answer(
        self, method: str, url: str, authorization: str | None
    ) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        kind, target = self._route(parts.path, query)
        with self._lock:
            request = ApiRequest(method, parts.path, query, kind, target, time.monotonic())
            self.requests.append(request)
            failure = self._next_failure(kind, target)
        if not self._authorized(authorization):
            return 401, {}, _error(401, 20003, "Authenticate")
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            body = _error(failure.status, 20001, "Scripted failure")
            return failure.status, headers, body
        if kind == "fetch":
            return self._fetch(target)
        if kind == "list":
            return 200, {}, self._list_page(parts.path, query)
        return 404, {}, _error(404, 20404, f"The requested resource {parts.path} was not found")

    def _route(self, path: str, query: dict[str, str]) -> tuple[str, str]:
        base = self._messages_uri()
        if path == f"{base}.json":
            return "list", query.get("Page", "0")
        if path.startswith(f"{base}/") and path.endswith(".json") and path.count("/") == 5:
            return "fetch", path[len(base) + 1 : -len(".json")]
        return "other", path

    def _next_failure(self, kind: str, target: str) -> Failure | None:
        for key in (f"{kind}:{target}", f"{kind}:*"):
            queue = self._failures.get(key)
            if queue:
                return queue.popleft()
        return None

    def _authorized(self, authorization: str | None) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return authorization == f"Basic {expected}"

    def _fetch(self, message_sid: str) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            resource = self.messages.get(message_sid)
        if resource is None:
            uri = f"{self._messages_uri()}/{message_sid}.json"
            return 404, {}, _error(404, 20404, f"The requested resource {uri} was not found")
        return 200, {}, resource

    def _list_page(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        """Newest first; `DateSent>`/`DateSent<` are inclusive, as Twilio documents them."""
        after, before = _parse_filter(query.get("DateSent>")), _parse_filter(query.get("DateSent<"))
        with self._lock:
            listed = [m for m in self.messages.values() if _sent_within(m, after, before)]
        listed.sort(key=lambda m: (_sent(m), m["sid"]), reverse=True)
        page_size, page = int(query.get("PageSize", "50")), int(query.get("Page", "0"))
        start = _start_of(listed, query.get("PageToken"), page * page_size)
        records = listed[start : start + page_size]
        filters = {k: v for k, v in query.items() if k.startswith("DateSent")}

        def uri(number: int, token: str | None = None) -> str:
            params = {**filters, "PageSize": str(page_size), "Page": str(number)}
            if token:
                params["PageToken"] = token
            return f"{path}?{urlencode(params)}"

        more = start + page_size < len(listed)
        return {
            "messages": records,
            "page": page,
            "page_size": page_size,
            "start": start,
            "end": start + len(records) - 1,
            "uri": uri(page, query.get("PageToken")),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1, f"PASM{records[-1]['sid']}") if more else None,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
        }


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        fake: FakeTwilioApi = self.server.fake  # type: ignore[attr-defined]
        status, headers, body = fake.answer("GET", self.path, self.headers.get("Authorization"))
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _rfc2822(moment: datetime | None) -> str | None:
    return None if moment is None else format_datetime(moment.astimezone(UTC))


def _sent(message: dict[str, Any]) -> datetime:
    return parsedate_to_datetime(message["date_sent"])


def _parse_filter(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sent_within(message: dict[str, Any], after: datetime | None, before: datetime | None) -> bool:
    if message["date_sent"] is None:
        return False
    sent = _sent(message)
    return (after is None or sent >= after) and (before is None or sent <= before)


def _start_of(listed: list[dict[str, Any]], token: str | None, default: int) -> int:
    """Where a page starts: after the message its PageToken names, else at Page*PageSize."""
    if token and token.startswith("PASM"):
        sids: Iterator[str] = (m["sid"] for m in listed)
        for index, message_sid in enumerate(sids):
            if message_sid == token[4:]:
                return index + 1
    return default
