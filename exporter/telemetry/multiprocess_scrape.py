"""The gunicorn workers' metric files merged for a scrape, fast enough for thousands of series.

prometheus-client's MultiProcessCollector re-parses every series' JSON key from every
worker's file on every scrape and builds several tuples and dicts per sample: about 40 us per
series and worker, so 5,000 series from 4 workers took over 200 ms. The keys in those files
never change once written, so this collector parses each one once, for the life of the
process, and accumulates into plain dicts. Values and semantics are the library's (counters
and histogram parts summed, buckets made cumulative, gauges merged by their multiprocess mode);
tests/test_multiprocess_metrics.py checks the output against the library's collector.
"""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class _Key:
    """One parsed series key: which metric, which sample name, which labels."""

    metric: str
    sample: str
    help_text: str
    labels: Labels
    label_dict: dict[str, str]
    le: float | None  # the bucket bound of a histogram `_bucket` sample


@dataclass(slots=True)
class _Family:
    name: str
    kind: str
    help_text: str
    mode: str = ""
    values: dict[tuple[str, Labels], float] = field(default_factory=lambda: defaultdict(float))
    buckets: dict[Labels, dict[float, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    stamps: dict[tuple[str, Labels], float] = field(default_factory=dict)


class MergedFilesCollector(Collector):
    """Collects the multiprocess directory's files, like the library's MultiProcessCollector."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._keys: dict[str, _Key] = {}
        self._label_dicts: dict[Labels, dict[str, str]] = {}

    def collect(self) -> Iterator[Metric]:
        families: dict[str, _Family] = {}
        for path in glob.glob(os.path.join(self._path, "*.db")):
            kind, mode, pid = _file_kind(path)
            try:
                entries = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
            except FileNotFoundError:
                if mode.startswith("live"):
                    continue  # a dead worker's live gauges, removed since the glob
                raise
            for raw_key, value, timestamp, _ in entries:
                key = self._keys.get(raw_key) or self._parse(raw_key)
                family = families.get(key.metric)
                if family is None:
                    family = families[key.metric] = _Family(key.metric, kind, key.help_text, mode)
                _accumulate(family, key, value, timestamp, pid)
        for family in families.values():
            yield self._metric(family)

    def _parse(self, raw_key: str) -> _Key:
        metric, sample, labels, help_text = json.loads(raw_key)
        le = labels.pop("le", None) if sample.endswith("_bucket") else None
        label_tuple: Labels = tuple(sorted(labels.items()))
        key = _Key(
            metric,
            sample,
            help_text,
            label_tuple,
            self._labels(label_tuple),
            float(le) if le is not None else None,
        )
        self._keys[raw_key] = key
        return key

    def _labels(self, labels: Labels) -> dict[str, str]:
        # Shared, never mutated: one dict per label set for the life of the process.
        cached = self._label_dicts.get(labels)
        if cached is None:
            cached = self._label_dicts[labels] = dict(labels)
        return cached

    def _metric(self, family: _Family) -> Metric:
        metric = Metric(family.name, family.help_text, family.kind)
        samples = metric.samples
        for (sample, labels), value in family.values.items():
            samples.append(Sample(sample, self._labels(labels), value))
        for labels, bounds in family.buckets.items():
            cumulative = 0.0
            for bound, value in sorted(bounds.items()):
                cumulative += value
                with_le = (*labels, ("le", floatToGoString(bound)))  # type: ignore[no-untyped-call]
                samples.append(Sample(family.name + "_bucket", self._labels(with_le), cumulative))
            # As the library does: _count is the +Inf bucket (the files' _count is not kept).
            samples.append(Sample(family.name + "_count", self._labels(labels), cumulative))
        return metric


def _file_kind(path: str) -> tuple[str, str, str]:
    """`counter_123.db` -> (counter, "", 123); `gauge_livemax_123.db` -> (gauge, livemax, 123)."""
    parts = os.path.basename(path)[: -len(".db")].split("_")
    if parts[0] == "gauge":
        return "gauge", parts[1], parts[2]
    return parts[0], "", parts[-1]


def _accumulate(family: _Family, key: _Key, value: float, timestamp: float, pid: str) -> None:
    if key.le is not None:
        family.buckets[key.labels][key.le] += value
        return
    if family.kind == "histogram" and key.sample.endswith("_count"):
        return  # derived from the buckets, as the library does
    slot = (key.sample, key.labels)
    if family.kind != "gauge":
        family.values[slot] += value
        return
    mode = family.mode.removeprefix("live")
    if mode == "sum":
        family.values[slot] += value
    elif mode in ("min", "max"):
        current = family.values.get(slot)
        if current is None or (value < current if mode == "min" else value > current):
            family.values[slot] = value
    elif mode == "mostrecent":
        if timestamp > family.stamps.get(slot, -1.0):
            family.values[slot], family.stamps[slot] = value, timestamp
    else:  # all: one series per process
        family.values[(key.sample, (*key.labels, ("pid", pid)))] = value
