"""Sends planned callbacks and event batches over HTTP on a pool of threads, each with its own
persistent connections."""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from exporter.simulation.batching import DEFAULT_BATCH, Delivery, Dispatch, dispatches
from exporter.simulation.model import Input, PlannedRequest, Scheduled
from exporter.simulation.requests import RequestBuilder, events_url_for

RESPONSE_CLASSES = ("2xx", "403", "4xx", "5xx", "error")
QUEUE_DEPTH = 512  # per connection: bounds memory and keeps pacing honest
_RETRYABLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def response_class(status: int) -> str:
    """The bucket a response status is counted in (see RESPONSE_CLASSES)."""
    if 200 <= status < 300:
        return "2xx"
    if status == 403:
        return "403"
    return "5xx" if status >= 500 else "4xx"


class Connection:
    """One keep-alive HTTP connection that reconnects when the server closes it.

    gunicorn's sync workers close after every response; threaded servers keep it open.
    """

    def __init__(self, url: str, timeout: float, option: str = "--url") -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{option} must be an http(s) URL with a host, got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def post(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST; the answer's status and body. Retries once if a reused connection went stale."""
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._conn or self._open()
            self._conn = None
            try:
                conn.request("POST", target, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
            except _RETRYABLE:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                self._conn = conn
            return response.status, answer
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Connections:
    """One thread's connections, one per origin (callbacks and events may go to different
    hosts)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._by_origin: dict[str, Connection] = {}

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST to the full `url`; the answer's status and body."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        connection = self._by_origin.get(origin)
        if connection is None:
            connection = self._by_origin[origin] = Connection(url, self._timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return connection.post(target, body, headers)

    def close(self) -> None:
        for connection in self._by_origin.values():
            connection.close()


@dataclass
class Tally:
    """What one connection sent: statuses per (input, planned outcome, response class),
    requests per (input, signed or forged, response class), latencies per input."""

    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    latencies: dict[str, array[float]] = field(
        default_factory=lambda: {i.value: array("d") for i in Input}
    )
    unusable: int = 0  # signed events a 2xx answer reported as failed or ignored
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self, request: PlannedRequest, response: str, latency: float, unusable: int = 0
    ) -> None:
        with self.lock:
            for expected in request.expected:
                self.counts[(request.input.value, expected.value, response)] += 1
            signing = "forged" if request.forged else "signed"
            self.requests[(request.input.value, signing, response)] += 1
            self.latencies[request.input.value].append(latency)
            self.unusable += unusable


@dataclass(frozen=True)
class Snapshot:
    """Totals so far; `recent` are the latencies since the previous snapshot."""

    elapsed: float
    counts: Counter[tuple[str, str, str]]
    recent: list[float]


@dataclass(frozen=True)
class SendResults:
    """Everything the run sent and how the server answered (see Tally for the keys)."""

    elapsed: float
    counts: Counter[tuple[str, str, str]]
    requests: Counter[tuple[str, str, str]]
    latencies: dict[str, list[float]]  # seconds per request, sorted, per input
    unusable: int
    interrupted: bool


class CallbackSender:
    """Signs and posts callbacks and Event Streams batches on `concurrency` connections.

    Deliveries of one message always use the same connection, in order, so the arrival
    order the plan intends is the order the server sees; only duplicates planned as
    simultaneous race their original on a second connection. Events go to `events_url`
    (default: next to `url`) in batches of at most `event_batch`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        concurrency: int,
        timeout: float = 10.0,
        *,
        events_url: str | None = None,
        event_batch: int = DEFAULT_BATCH,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if event_batch < 1:
            raise ValueError(f"--event-batch must be >= 1 events, got {event_batch}")
        events_url = events_url or events_url_for(url)
        # Validates the URLs now rather than in every thread.
        Connection(url, timeout)
        Connection(events_url, timeout, "--events-url")
        self.url = url
        self.events_url = events_url
        self.concurrency = concurrency
        self.timeout = timeout
        self.event_batch = event_batch
        self._builder = RequestBuilder(token, url, events_url)
        self._tallies = [Tally() for _ in range(concurrency)]
        self._seen: list[dict[str, int]] = [dict.fromkeys(Input, 0) for _ in range(concurrency)]
        self._started = time.monotonic()

    def run(
        self,
        traffic: Iterable[Scheduled],
        *,
        paced: bool,
        duration: float | None = None,
        stop: threading.Event | None = None,
    ) -> SendResults:
        """Send until `traffic` ends, `duration` real seconds pass, or `stop` is set."""
        stop = stop or threading.Event()
        inboxes: list[queue.Queue[Dispatch | None]] = [
            queue.Queue(QUEUE_DEPTH) for _ in range(self.concurrency)
        ]
        workers = [
            threading.Thread(target=self._work, args=(inbox, tally), daemon=True)
            for inbox, tally in zip(inboxes, self._tallies, strict=True)
        ]
        self._started = time.monotonic()
        for worker in workers:
            worker.start()
        interrupted = False
        try:
            self._dispatch(traffic, inboxes, paced, duration, stop)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for inbox in inboxes:
                inbox.put(None)
            for worker in workers:
                worker.join()
        elapsed = time.monotonic() - self._started
        counts: Counter[tuple[str, str, str]] = Counter()
        requests: Counter[tuple[str, str, str]] = Counter()
        latencies: dict[str, list[float]] = {i.value: [] for i in Input}
        unusable = 0
        for tally in self._tallies:
            counts.update(tally.counts)
            requests.update(tally.requests)
            for name, measured in tally.latencies.items():
                latencies[name].extend(measured)
            unusable += tally.unusable
        for values in latencies.values():
            values.sort()
        return SendResults(
            elapsed, counts, requests, latencies, unusable, interrupted or stop.is_set()
        )

    def snapshot(self) -> Snapshot:
        """Totals so far, for a progress line; safe to call from another thread."""
        counts: Counter[tuple[str, str, str]] = Counter()
        recent: list[float] = []
        for tally, seen in zip(self._tallies, self._seen, strict=True):
            with tally.lock:
                counts.update(tally.counts)
                for name, values in tally.latencies.items():
                    recent.extend(values[seen[name] :])
                    seen[name] = len(values)
        return Snapshot(time.monotonic() - self._started, counts, recent)

    def _dispatch(
        self,
        traffic: Iterable[Scheduled],
        inboxes: list[queue.Queue[Dispatch | None]],
        paced: bool,
        duration: float | None,
        stop: threading.Event,
    ) -> None:
        for dispatch in dispatches(traffic, self.concurrency, self.event_batch):
            now = time.monotonic() - self._started
            if duration is not None and max(now, dispatch.due if paced else 0.0) >= duration:
                stop.wait(max(0.0, duration - now))  # a --duration run lasts its duration
                return
            if paced and dispatch.due > now and stop.wait(dispatch.due - now):
                return
            if stop.is_set():
                return
            inboxes[dispatch.shard].put(dispatch)

    def _work(self, inbox: queue.Queue[Dispatch | None], tally: Tally) -> None:
        connections = Connections(self.timeout)
        racing = Connections(self.timeout)
        racer = ThreadPoolExecutor(1, thread_name_prefix="simulate-race")
        try:
            while (dispatch := inbox.get()) is not None:
                original, *copies = dispatch.deliveries
                # A simultaneous duplicate races its original on a second connection; both
                # finish before this connection moves on, so the message's order holds.
                races = [racer.submit(self._send, racing, copy, tally) for copy in copies]
                self._send(connections, original, tally)
                for race in races:
                    race.result()
        finally:
            racer.shutdown()
            connections.close()
            racing.close()

    def _send(self, connections: Connections, delivery: Delivery, tally: Tally) -> None:
        request = self._builder.build(delivery)
        begin = time.perf_counter()
        answer = b""
        try:
            status, answer = connections.post(request.url, request.body, request.headers)
            response = response_class(status)
        except (OSError, http.client.HTTPException):
            response = "error"
        latency = time.perf_counter() - begin
        unusable = 0
        if request.input is Input.EVENTS and response == "2xx" and not request.forged:
            unusable = unusable_events(answer)
        tally.record(request, response, latency, unusable)


def unusable_events(answer: bytes) -> int:
    """Events an Event Streams sink's 200 answer reports as not recorded (`failed`, `ignored`);
    0 when the answer is not such a summary."""
    try:
        summary = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return 0
    if not isinstance(summary, dict):
        return 0
    failed, ignored = summary.get("failed"), summary.get("ignored")
    return (len(failed) if isinstance(failed, list) else 0) + (
        ignored if isinstance(ignored, int) and not isinstance(ignored, bool) else 0
    )
