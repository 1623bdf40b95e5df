"""A live OTLP/gRPC trace receiver for the benchmark, in its own process, counting spans.

    python bench/otlp_receiver.py        # prints {"grpc_port": ..., "stats_port": ..., ...}

It decodes every export request (the protobuf the service sends) and keeps, per span, only its
lag: arrival here minus the span's end time. A stage span ends when its callback arrived (the
request the service answered 200), a root span when its final status's callback arrived, so the
lag is the time from the 200 to the span at the collector.

GET http://127.0.0.1:STATS_PORT/ answers {"requests": N, "spans": M, "lag_count": K,
"lag_p50": s, "lag_p99": s, "lag_max": s} (lags since the last GET /reset).
"""

from __future__ import annotations

import json
import signal
import statistics
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Counter:
    """Export requests, spans and span lags, shared by the gRPC and the stats threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.spans = 0
        self.lags: list[float] = []

    def add(self, end_times_ns: list[int]) -> None:
        now = time.time_ns()
        lags = [(now - end) / 1e9 for end in end_times_ns]
        with self.lock:
            self.requests += 1
            self.spans += len(end_times_ns)
            self.lags.extend(lags)

    def reset_lags(self) -> None:
        with self.lock:
            self.lags = []

    def stats(self) -> dict[str, float]:
        with self.lock:
            lags = sorted(self.lags)
            found: dict[str, float] = {
                "requests": self.requests,
                "spans": self.spans,
                "lag_count": len(lags),
            }
        if lags:
            found["lag_p50"] = statistics.median(lags)
            found["lag_p99"] = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
            found["lag_max"] = lags[-1]
        return found


def start_grpc(counter: Counter) -> tuple[grpc.Server, int]:
    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(
            self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
        ) -> trace_service_pb2.ExportTraceServiceResponse:
            counter.add(
                [
                    span.end_time_unix_nano
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                    for span in scope.spans
                ]
            )
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def main() -> None:
    counter = Counter()
    grpc_server, grpc_port = start_grpc(counter)

    class Stats(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/reset":
                counter.reset_lags()
            body = json.dumps(counter.stats()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    stats = ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    ready = {
        "grpc_port": grpc_port,
        "stats_port": stats.server_address[1],
        "source": "bench/otlp_receiver.py (OTLP/gRPC, decodes every span)",
    }
    print(json.dumps(ready), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stats.shutdown).start())
    stats.serve_forever()
    grpc_server.stop(grace=1)


if __name__ == "__main__":
    main()
