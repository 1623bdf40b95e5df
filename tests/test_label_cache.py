"""LabelCache: the library's own children, found by label values. It relies on labels()
returning one child per label values for the life of the metric: these tests fail if the
library ever stops doing so."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from exporter.telemetry.label_cache import LabelCache


def test_cached_children_are_the_librarys_children() -> None:
    counter = Counter("calls", "Calls.", ["status", "channel"], registry=CollectorRegistry())
    cache = LabelCache(counter)
    first = cache("sent", "sms")
    assert first is cache("sent", "sms") is counter.labels("sent", "sms")
    assert cache("sent", "whatsapp") is not first
    first.inc()
    cache("sent", "sms").inc(2)
    assert counter.labels("sent", "sms")._value.get() == 3


def test_the_library_keeps_one_child_per_label_values() -> None:
    counter = Counter("calls", "Calls.", ["status"], registry=CollectorRegistry())
    child = counter.labels("sent")
    for status in map(str, range(1000)):
        counter.labels(status)
    assert counter.labels("sent") is child


def test_histogram_children_observe_into_the_metric() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("lag", "Lag.", ["status"], buckets=(1.0,), registry=registry)
    LabelCache(histogram)("delivered").observe(0.5)
    assert registry.get_sample_value("lag_count", {"status": "delivered"}) == 1


def test_known_label_values_are_exported_at_zero_before_any_update() -> None:
    registry = CollectorRegistry()
    counter = Counter("calls", "Calls.", ["outcome"], registry=registry)
    LabelCache(counter, known=[("accepted",), ("error",)])
    assert registry.get_sample_value("calls_total", {"outcome": "error"}) == 0
    assert registry.get_sample_value("calls_total", {"outcome": "other"}) is None
