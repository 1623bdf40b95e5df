"""A metric's labelled children by their label values, found with one dict lookup.

prometheus-client's `labels()` checks and converts every value, builds a tuple and takes a
lock on each call, several times per callback. The exporter's label values come from bounded
sets (see exporter/telemetry/metrics.py), so the children are few, and the library keeps every
one of them for the life of the process anyway: this only remembers where they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


# Kept because labels() costs several times a dict lookup on each of a callback's updates;
# tests/test_label_cache.py fails if the library stops keeping one child per label values.
class LabelCache(Generic[M]):
    """`cache(*values)` is `metric.labels(*values)`, cached. Values must be strings (as the
    library would make them): `labels(1)` and `labels("1")` are one child, but two keys here.
    Safe across threads: a race only makes `labels()` return the same child twice.

    `known` label values get their children at once, so their series are exported (at zero)
    before the first update: rate() and absent() see them from the start."""

    def __init__(self, metric: M, known: Iterable[tuple[str, ...]] = ()) -> None:
        self._labels = metric.labels
        self._children: dict[tuple[str, ...], M] = {}
        for values in known:
            self(*values)

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._labels(*values)
        return child
