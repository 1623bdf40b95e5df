"""Sends planned callbacks over HTTP on a pool of threads, one persistent connection each."""

from __future__ import annotations

import hashlib
import http.client
import queue
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from exporter.simulation.model import Outcome, ScheduledCallback
from exporter.simulation.signing import Signer

RESPONSE_CLASSES = ("2xx", "403", "4xx", "5xx", "error")
QUEUE_DEPTH = 512  # per connection: bounds memory and keeps pacing honest
Batch = tuple[ScheduledCallback, ...]  # a callback, and duplicates sent at the same moment
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

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be an http(s) URL with a host, got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def post(self, target: str, body: bytes, headers: dict[str, str]) -> int:
        """POST and return the status; retries once if a reused connection went stale."""
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._conn or self._open()
            self._conn = None
            try:
                conn.request("POST", target, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
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
            return response.status
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class Tally:
    """What one connection sent: counts per (planned outcome, response class), latencies."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, expected: Outcome, response: str, latency: float) -> None:
        with self.lock:
            self.counts[(expected.value, response)] += 1
            self.latencies.append(latency)


@dataclass(frozen=True)
class Snapshot:
    """Totals so far; `recent` are the latencies since the previous snapshot."""

    elapsed: float
    counts: Counter[tuple[str, str]]
    recent: list[float]


@dataclass(frozen=True)
class SendResults:
    """Everything the run sent and how the server answered."""

    elapsed: float
    counts: Counter[tuple[str, str]]
    latencies: list[float]  # seconds, sorted
    interrupted: bool


class CallbackSender:
    """Signs and posts callbacks on `concurrency` connections.

    Callbacks of one message always use the same connection, in order, so the arrival
    order the plan intends is the order the server sees; only duplicates planned as
    simultaneous race their original on a second connection.
    """

    def __init__(self, url: str, token: str, concurrency: int, timeout: float = 10.0) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        Connection(url, timeout)  # validates the URL now rather than in every thread
        self.url = url
        self.concurrency = concurrency
        self.timeout = timeout
        self._signer = Signer(token)
        self._forger = Signer(token + "-not-the-auth-token")
        self._tallies = [Tally() for _ in range(concurrency)]
        self._seen = [0] * concurrency
        self._started = time.monotonic()

    def run(
        self,
        callbacks: Iterable[ScheduledCallback],
        *,
        paced: bool,
        duration: float | None = None,
        stop: threading.Event | None = None,
    ) -> SendResults:
        """Send until `callbacks` ends, `duration` real seconds pass, or `stop` is set."""
        stop = stop or threading.Event()
        inboxes: list[queue.Queue[Batch | None]] = [
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
            self._dispatch(callbacks, inboxes, paced, duration, stop)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for inbox in inboxes:
                inbox.put(None)
            for worker in workers:
                worker.join()
        elapsed = time.monotonic() - self._started
        counts: Counter[tuple[str, str]] = Counter()
        latencies: list[float] = []
        for tally in self._tallies:
            counts.update(tally.counts)
            latencies.extend(tally.latencies)
        latencies.sort()
        return SendResults(elapsed, counts, latencies, interrupted or stop.is_set())

    def snapshot(self) -> Snapshot:
        """Totals so far, for a progress line; safe to call from another thread."""
        counts: Counter[tuple[str, str]] = Counter()
        recent: list[float] = []
        for index, tally in enumerate(self._tallies):
            with tally.lock:
                counts.update(tally.counts)
                recent.extend(tally.latencies[self._seen[index] :])
                self._seen[index] = len(tally.latencies)
        return Snapshot(time.monotonic() - self._started, counts, recent)

    def _dispatch(
        self,
        callbacks: Iterable[ScheduledCallback],
        inboxes: list[queue.Queue[Batch | None]],
        paced: bool,
        duration: float | None,
        stop: threading.Event,
    ) -> None:
        stream = iter(callbacks)
        upcoming = next(stream, None)
        while upcoming is not None:
            callback, upcoming = upcoming, next(stream, None)
            now = time.monotonic() - self._started
            if duration is not None and max(now, callback.due if paced else 0.0) >= duration:
                stop.wait(max(0.0, duration - now))  # a --duration run lasts its duration
                return
            if paced and callback.due > now and stop.wait(callback.due - now):
                return
            if stop.is_set():
                return
            batch: Batch = (callback,)
            if upcoming is not None and upcoming.concurrent_copy:
                batch, upcoming = (callback, upcoming), next(stream, None)
            shard = int(callback.message_sid[-8:], 16) % self.concurrency
            inboxes[shard].put(batch)

    def _work(self, inbox: queue.Queue[Batch | None], tally: Tally) -> None:
        connection = Connection(self.url, self.timeout)
        racing = Connection(self.url, self.timeout)
        racer = ThreadPoolExecutor(1, thread_name_prefix="simulate-race")
        try:
            while (batch := inbox.get()) is not None:
                original, *copies = batch
                # A simultaneous duplicate races its original on a second connection; both
                # finish before this connection moves on, so the message's order holds.
                races = [racer.submit(self._send, racing, copy, tally) for copy in copies]
                self._send(connection, original, tally)
                for race in races:
                    race.result()
        finally:
            racer.shutdown()
            connection.close()
            racing.close()

    def _send(self, connection: Connection, callback: ScheduledCallback, tally: Tally) -> None:
        url = callback.url(self.url)
        forged = callback.expected is Outcome.INVALID_SIGNATURE
        signer = self._forger if forged else self._signer
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "X-Twilio-Signature": signer.sign(url, callback.params),
            "I-Twilio-Idempotency-Token": _idempotency_token(callback),
        }
        begin = time.perf_counter()
        try:
            response = response_class(connection.post(_target(url), callback.body(), headers))
        except (OSError, http.client.HTTPException):
            response = "error"
        tally.record(callback.expected, response, time.perf_counter() - begin)


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _idempotency_token(callback: ScheduledCallback) -> str:
    """Same for a callback and its retries, as Twilio's is."""
    digest = hashlib.blake2b(f"{callback.message_sid}:{callback.status}".encode(), digest_size=16)
    text = digest.hexdigest()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
