"""A metric's labelled children by their label values, found with one dict lookup.

prometheus-client's `labels()` checks and converts every value, builds a tuple and takes a
lock on each call: about a microsecond with four labels, paid several times per callback. The
exporter's label values come from bounded sets (see exporter/telemetry/metrics.py), so the
children are few, and the library keeps every one of them for the life of the process anyway.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class LabelCache(Generic[M]):
    """`cache(*values)` is `metric.labels(*values)`, cached. Values must be strings (as the
    library would make them): `labels(1)` and `labels("1")` are one child, but two keys here.
    Safe across threads: a race only makes `labels()` return the same child twice."""

    def __init__(self, metric: M) -> None:
        self._labels = metric.labels
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._labels(*values)
        return child
