"""HashedResource keeps the SDK's Resource semantics and only remembers its hash. These tests
fail when the SDK changes what the cache relies on: immutable attributes, and OTLP encoding
that hashes each span's resource to group the spans."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from exporter.telemetry.tracing import HashedResource, service_resource


class CountingResource(Resource):
    hashes = 0

    def __hash__(self) -> int:
        CountingResource.hashes += 1
        return super().__hash__()


def spans(resource: Resource, count: int) -> list[ReadableSpan]:
    return [
        ReadableSpan(
            name="twilio.message.sent",
            context=SpanContext(n + 1, n + 1, False, TraceFlags(TraceFlags.SAMPLED)),
            resource=resource,
            start_time=1,
            end_time=2,
        )
        for n in range(count)
    ]


def test_the_service_resource_caches_its_hash() -> None:
    assert isinstance(service_resource(), HashedResource)


def test_resource_attributes_cannot_change_under_the_cached_hash() -> None:
    resource = HashedResource(Resource({"service.name": "a"}))
    with pytest.raises(TypeError):
        resource.attributes["service.name"] = "b"  # type: ignore[index]
    assert hash(resource) == hash(Resource({"service.name": "a"}))


def test_otlp_encoding_hashes_the_resource_of_every_span() -> None:
    # Were the encoder to stop hashing per span, the cached hash would save nothing.
    resource = CountingResource({"service.name": "a"})
    CountingResource.hashes = 0
    request = encode_spans(spans(resource, 5))
    assert CountingResource.hashes >= 5
    assert len(request.resource_spans) == 1
