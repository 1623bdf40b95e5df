"""The SDK's span exporters, sending export requests the outbox already encoded.

The SDK's exporters take `ReadableSpan`s and encode them on every export. Our spans are
encoded once, when their event is applied, and kept encoded in the store until they leave;
building `ReadableSpan`s again only to encode them again would cost the ingester more than
applying the event did. So each exporter here is the SDK's own (same endpoint, headers,
TLS, compression, timeout and retries, all from the OTEL_* variables) with the encoding step
skipped. tests/test_tracing.py and the durable-traces tests send through both OTLP
transports to a real receiver, so a change in the SDK that moves these hooks fails there.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult

from exporter.telemetry.tracing.outbox import Batch


class GrpcRequestExporter(GrpcSpanExporter):
    """OTLP/gRPC: the SDK exporter's send-and-retry loop (`_export`), given the request
    through its `_translate_data` hook, the step that would encode it."""

    def export_batch(self, batch: Batch) -> bool:
        return self._export(batch) is SpanExportResult.SUCCESS  # type: ignore[arg-type]

    def _translate_data(self, data: Any) -> ExportTraceServiceRequest:
        batch: Batch = data
        return batch.request

    def _count_data(self, data: Any) -> int:
        batch: Batch = data
        return batch.spans


class HttpRequestExporter(HttpSpanExporter):
    """OTLP/HTTP (protobuf): the SDK exporter's HTTP client (compression, retries with
    back-off) given the serialized request."""

    def export_batch(self, batch: Batch) -> bool:
        if self._shutdown:
            return False
        return bool(self._client.export(batch.request.SerializePartialToString()).success)


class ConsoleRequestExporter:
    """Prints each request as OTLP JSON (for a look at what would be sent)."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out

    def export_batch(self, batch: Batch) -> bool:
        self._out.write(json_format.MessageToJson(batch.request) + "\n")
        self._out.flush()
        return True

    def shutdown(self) -> None:
        pass
