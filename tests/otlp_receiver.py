"""A real OTLP trace receiver for tests and benchmarks: gRPC and HTTP/protobuf on free ports.

with OTLPReceiver() as receiver:
    ...  # export to receiver.grpc_endpoint or receiver.http_endpoint
    receiver.wait_for_spans(lambda spans: len(spans) >= 3, timeout=10)
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from exporter.telemetry.tracing.outbox import Batch

# opentelemetry.proto.trace.v1.Status.StatusCode
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived over the wire (ids as lower-case hex, as W3C writes them)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)
    transport: str = ""


class OTLPReceiver:
    """Collects every span exported to it, over gRPC and over HTTP (`POST /v1/traces`)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.requests = 0

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self._host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL: the exporter appends /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://{self._host}:{self.http_port}"

    def endpoint(self, protocol: str) -> str:
        return self.grpc_endpoint if protocol == "grpc" else self.http_endpoint

    def start(self) -> OTLPReceiver:
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port(f"{self._host}:0")
        self._grpc.start()
        self._http = ThreadingHTTPServer((self._host, 0), _handler_for(self))
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def spans(self) -> list[ReceivedSpan]:
        with self._changed:
            return list(self._spans)

    def clear(self) -> None:
        with self._changed:
            self._spans.clear()

    def wait_for_spans(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """Block until `predicate(all spans so far)` holds; TimeoutError after `timeout` s."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self._spans), timeout):
                raise TimeoutError(
                    f"OTLP receiver: condition not met within {timeout} s "
                    f"({len(self._spans)} spans received)"
                )
            return list(self._spans)

    def collect(self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> None:
        received = list(spans_of(request, transport))
        with self._changed:
            self.requests += 1
            self._spans.extend(received)
            self._changed.notify_all()


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.collect(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def _handler_for(receiver: OTLPReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/traces":
                self._answer(404, b"")
                return
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request = trace_service_pb2.ExportTraceServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception:
                self._answer(400, b"")
                return
            receiver.collect(request, "http")
            self._answer(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

        def _answer(self, code: int, payload: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


def spans_of(
    request: trace_service_pb2.ExportTraceServiceRequest, transport: str
) -> Iterable[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None,
                    name=span.name,
                    kind=span.kind,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes={kv.key: _value(kv.value) for kv in span.attributes},
                    status_code=span.status.code,
                    status_message=span.status.message,
                    resource=resource,
                    transport=transport,
                )


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


class RecordingExporter:
    """A span exporter of the shipper's kind that keeps what it was sent, read as the receiver
    reads it; `failing` makes it refuse every batch, as a collector that is down does."""

    def __init__(self) -> None:
        self.failing = False
        self.spans: list[ReceivedSpan] = []

    def export_batch(self, batch: Batch) -> bool:
        if self.failing:
            return False
        self.spans.extend(spans_of(batch.request, "memory"))
        return True

    def shutdown(self) -> None:
        pass
