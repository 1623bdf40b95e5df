"""A live OTLP trace receiver for the benchmark, in its own process, counting spans.

    python bench/otlp_receiver.py        # prints {"grpc_port": ..., "stats_port": ..., ...}

A minimal gRPC trace servicer: gRPC decodes every request, as a collector would, and the
spans are counted, never kept. GET http://127.0.0.1:STATS_PORT/ answers
{"requests": N, "spans": M}.
"""

from __future__ import annotations

import json
import signal
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.spans = 0

    def add(self, spans: int) -> None:
        with self.lock:
            self.requests += 1
            self.spans += spans

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"requests": self.requests, "spans": self.spans}


def start_receiver(counter: Counter) -> tuple[int, str]:
    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(
            self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
        ) -> trace_service_pb2.ExportTraceServiceResponse:
            counter.add(sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return port, "bench/otlp_receiver.py (gRPC, counts spans)"


def main() -> None:
    counter = Counter()
    grpc_port, source = start_receiver(counter)

    class Stats(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(counter.stats()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    stats = ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    ready = {"grpc_port": grpc_port, "stats_port": stats.server_address[1], "source": source}
    print(json.dumps(ready), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stats.shutdown).start())
    stats.serve_forever()


if __name__ == "__main__":
    main()
