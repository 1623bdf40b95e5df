"""Durable traces: spans wait in the store's outbox until the collector takes them. A collector
that is down delays them, a process SIGKILLed at any moment loses none; after a crash a span
may arrive twice, always with the ids SPEC section 8 derives from the MessageSid."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from tests.integration.service import Service
from tests.integration.test_crash_recovery import accepted_not_applied, stored
from tests.integration.test_pipeline_e2e import samples, value
from tests.integration.test_tracing_e2e import otlp_env
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan, _handler_for, _Servicer
from tests.support import callback_params, free_port, sid, wait_for

pytestmark = pytest.mark.integration

Callback = tuple[str, str]
FINAL = frozenset({"delivered", "undelivered", "failed", "read"})


class ReceiverOnPorts(OTLPReceiver):
    """An OTLP receiver that listens on ports chosen before it starts: the exporter is
    configured with an endpoint where nothing listens yet, and the collector comes up there."""

    def __init__(self, grpc_port: int, http_port: int) -> None:
        super().__init__()
        self.grpc_port, self.http_port = grpc_port, http_port

    def start(self) -> ReceiverOnPorts:
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), self._grpc)
        self._grpc.add_insecure_port(f"{self._host}:{self.grpc_port}")
        self._grpc.start()
        self._http = _HTTPServer((self._host, self.http_port), _handler_for(self))
        threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        return self

    def stop(self) -> None:
        super().stop()
        if isinstance(self._http, _HTTPServer):
            self._http.drop_connections()  # as a collector that went away would


class _HTTPServer(ThreadingHTTPServer):
    """Also drops its kept-alive connections when stopped (ThreadingHTTPServer's shutdown
    only stops accepting new ones)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        self._connections.add(request)
        super().process_request(request, client_address)

    def drop_connections(self) -> None:
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._connections.clear()


def trace_id(message_sid: str) -> str:
    return hashlib.sha256(f"twilio.message:{message_sid}".encode()).digest()[:16].hex()


def span_id(message_sid: str, stage: str) -> str:
    return hashlib.sha256(f"{message_sid}:{stage}".encode()).digest()[:8].hex()


def expected_spans(callbacks: Iterable[Callback]) -> dict[str, tuple[str, str]]:
    """span id -> (trace id, name): a stage span per distinct (message, status), and a root
    span per message that reached a final status."""
    expected: dict[str, tuple[str, str]] = {}
    for message_sid, status in set(callbacks):
        trace = trace_id(message_sid)
        expected[span_id(message_sid, status)] = (trace, f"twilio.message.{status}")
        if status in FINAL:
            expected[span_id(message_sid, "root")] = (trace, "twilio.message")
    return expected


def check_spans(received: list[ReceivedSpan], expected: dict[str, tuple[str, str]]) -> None:
    """Every expected span arrived (some perhaps twice), with the derived ids; nothing else."""
    got = {span.span_id: (span.trace_id, span.name) for span in received}
    missing = expected.keys() - got.keys()
    assert not missing, f"{len(missing)} of {len(expected)} spans never arrived"
    assert got == expected  # right trace and name for each id, and no span not asked for
    for span in received:
        message_sid = str(span.attributes["messaging.message.id"])
        if span.name != "twilio.message":
            assert span.parent_span_id == span_id(message_sid, "root")


def arrived(expected: dict[str, tuple[str, str]]) -> Callable[[list[ReceivedSpan]], bool]:
    return lambda spans: expected.keys() <= {span.span_id for span in spans}


def post_all(
    service: Service,
    callbacks: list[Callback],
    answered: dict[Callback, int],
    threads: int = 12,
    stop: threading.Event | None = None,
) -> dict[Callback, float]:
    """Post callbacks from several threads, in order, until `stop` is set; each one's status
    code lands in `answered` (0: no answer). Returns how long each took."""
    lock = threading.Lock()
    took: dict[Callback, float] = {}

    def send(callback: Callback) -> None:
        if stop is not None and stop.is_set():
            return
        started = time.perf_counter()
        try:
            code = service.post_callback(callback_params(*callback)).status_code
        except requests.RequestException:
            code = 0
        with lock:
            answered[callback] = code
            took[callback] = time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(send, callbacks))
    return took


def lifecycles(messages: int, first: int = 0) -> list[Callback]:
    """queued, sent, delivered for each message, the messages interleaved."""
    statuses = ("queued", "sent", "delivered")
    return [(sid("SM", first + n), status) for status in statuses for n in range(messages)]


def metric(service: Service, name: str) -> float:
    # Retried: a scrape can fail (500) while a process is creating its metrics file
    # (prometheus/client_python#1199), as a process starting under this test does.
    return value(samples(wait_for(service.scrape, timeout=10, what="a scrape")), name)


def send_while_down(service: Service, callbacks: list[Callback]) -> dict[str, tuple[str, str]]:
    """Post `callbacks` with the collector down: every one is answered at once, their spans
    stay queued (failed exports counted). Returns the spans expected of them."""
    failures = metric(service, "twilio_exporter_span_export_failures_total")
    answered: dict[Callback, int] = {}
    took = post_all(service, callbacks, answered)
    assert set(answered.values()) == {200}
    # Quickly: the request path only appends to the inbox (test_tracing_e2e.py compares the
    # latency with tracing off); generous, the box is shared.
    assert sorted(took.values())[int(len(took) * 0.95)] < 1.0, "callbacks waited for tracing"
    service.wait_applied()
    wait_for(  # a few attempts, the shipper's pause growing between them
        lambda: metric(service, "twilio_exporter_span_export_failures_total") >= failures + 2,
        timeout=20,
        what="failed exports to be counted",
    )
    expected = expected_spans(callbacks)
    backlog = metric(service, "twilio_exporter_span_export_backlog_spans")
    assert backlog == len(expected)  # every span queued, none gone
    return expected


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_collector_that_is_down_delays_spans_and_loses_none(
    service_factory: Callable[..., Service], protocol: str
) -> None:
    receiver = ReceiverOnPorts(free_port(), free_port())  # not started: the collector is down
    env = otlp_env(receiver.endpoint(protocol), protocol, OTEL_EXPORTER_OTLP_TIMEOUT="1")
    service = service_factory(workers=3, env=env)
    expected = send_while_down(service, lifecycles(60))  # down from the start

    with receiver:  # the collector comes up on the address configured
        receiver.wait_for_spans(arrived(expected), timeout=30)
        service.wait_applied(spans=True)  # the outbox is empty: nothing more is coming
        check_spans(receiver.spans(), expected)
    receiver.clear()
    expected = send_while_down(service, lifecycles(60, first=100))  # gone mid-way
    with receiver:  # and back
        receiver.wait_for_spans(arrived(expected), timeout=30)
        service.wait_applied(spans=True)
        check_spans(receiver.spans(), expected)
    assert metric(service, "twilio_exporter_spans_dropped_total") == 0
    assert metric(service, "twilio_exporter_spans_exported_total") >= 2 * len(expected)


def test_spans_still_queued_at_shutdown_are_shipped_after_the_restart(
    service_factory: Callable[..., Service],
) -> None:
    receiver = ReceiverOnPorts(free_port(), free_port())  # not started: the collector is down
    env = otlp_env(receiver.grpc_endpoint, "grpc", OTEL_EXPORTER_OTLP_TIMEOUT="1")
    first = service_factory(workers=2, env=env)
    callbacks = lifecycles(30)
    answered: dict[Callback, int] = {}
    post_all(first, callbacks, answered)
    assert set(answered.values()) == {200}
    first.wait_applied()
    first.stop()  # a clean shutdown with the spans still queued: nothing waits for them

    with receiver:
        second = service_factory(workers=2, env=env, store_url=first.store_url)
        expected = expected_spans(callbacks)
        receiver.wait_for_spans(arrived(expected), timeout=30)
        second.wait_applied(spans=True)
        check_spans(receiver.spans(), expected)


def ingester_pid(service: Service) -> int | None:
    """The master's child running `-m exporter.server.ingester` (spawned from a thread of the
    master, so looked for among every thread's children)."""
    master = service.process.pid
    for task in Path(f"/proc/{master}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended
            continue
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"exporter.server.ingester" in command:
                return int(child)
    return None


def applied_count(service: Service) -> int:
    with sqlite3.connect(service.store_url.removeprefix("sqlite:///")) as db:
        (count,) = db.execute("SELECT count(*) FROM status_events").fetchone()
    return int(count)


def test_spans_and_events_survive_sigkill_of_ingester_worker_and_service(
    service_factory: Callable[..., Service],
) -> None:
    with OTLPReceiver() as receiver:
        env = otlp_env(receiver.grpc_endpoint, "grpc")
        first = service_factory(workers=3, env=env)
        messages = [sid("SM", n) for n in range(5000)]
        stream = [(m, status) for m in messages for status in ("queued", "sent", "delivered")]
        answered: dict[Callback, int] = {}
        stop = threading.Event()
        loader = threading.Thread(target=post_all, args=(first, stream, answered, 6, stop))
        loader.start()
        killed: list[int] = []
        for _ in range(3):  # the ingester, three times, in the middle of its work
            pid = wait_for(
                lambda: (p := ingester_pid(first)) not in (None, *killed) and p,
                what="the master to (re)start its ingester",
            )
            wait_for(
                lambda p=pid: f"this process is the ingester (pid {p})" in first.log(),
                what="the new ingester to lead",
            )
            applied = applied_count(first)
            wait_for(lambda n=applied: applied_count(first) > n + 50, what="it to apply some")
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        os.kill(first.worker_pids()[0], signal.SIGKILL)  # a worker, mid-request
        progress = len(answered)
        wait_for(lambda: len(answered) > progress + 200, what="load to go on after the worker")
        first.kill()  # then everything at once: master, workers, ingester
        stop.set()
        loader.join(timeout=60)

        sent = [c for c in stream if c in answered]  # what reached (or tried to reach) it
        acknowledged = {c for c in sent if answered[c] == 200}
        assert len(acknowledged) > 500 and len(acknowledged) < len(sent)
        records = stored(first)
        assert len(records) == len(set(records))  # exactly once
        assert acknowledged <= set(records) | set(accepted_not_applied(first))

        # Restart on the same store; Twilio retries everything that did not get a 200.
        second = service_factory(workers=3, env=env, store_url=first.store_url)
        retried: dict[Callback, int] = {}
        post_all(second, [c for c in sent if answered[c] != 200], retried)
        assert set(retried.values()) == {200}

        expected = expected_spans(sent)
        receiver.wait_for_spans(arrived(expected), timeout=30)
        second.wait_applied(spans=True)
        assert sorted(stored(second)) == sorted(sent)  # every one, once
        check_spans(receiver.spans(), expected)  # at least once, same ids
