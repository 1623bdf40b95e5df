"""Exemplars on the latency histograms' buckets: the trace of the latest message observed in
each, so a dashboard can jump from a latency spike to one message's trace.

prometheus-client keeps a bucket's exemplar in the value object of the process that observed
it, and its multiprocess values drop exemplars altogether: under gunicorn the process that
observes (the ingester) is never the one that answers the scrape (a web worker). So exemplars
are kept here instead, per process, as plain data: the latest one of every (histogram, label
values, bucket), replaced in place, so they never outnumber the buckets. With a multiprocess
directory each process saves its own to `exemplars_<pid>.json` there (written whole, then
renamed into place), at most once per `save_interval` and when it stops; a scrape reads every
process's file and attaches the most recent exemplar of each bucket to the merged histogram's
bucket sample (`attach`). In one process the scrape attaches this process's own. A dead
process's file stays: its exemplars remain the latest of their buckets until newer ones come,
and `serve` removes every file when it starts.

Only OpenMetrics carries exemplars; the Prometheus text format stays as it was.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from exporter.model import MessageState
from exporter.telemetry.label_cache import LabelCache
from exporter.telemetry.trace_ids import message_trace_id_hex

log = logging.getLogger(__name__)
# The exemplar label the provisioned Grafana datasource links to the tracing datasource.
TRACE_ID = "trace_id"
# A scrape sees exemplars this much later than the ingester kept them, at worst; writing more
# often would only cost the ingester more.
SAVE_INTERVAL = 1.0
FILE_PREFIX = "exemplars_"
FILE_SUFFIX = ".json"

# A bucket of a histogram: its series' labels but `le`, sorted by name; and its `le`.
Bucket = tuple[tuple[tuple[str, str], ...], str]
# The exemplar of each bucket, by histogram name.
BucketExemplars = dict[str, dict[Bucket, Exemplar]]


class Exemplars:
    """The latest exemplar of every bucket of this process's traced histograms; with a
    multiprocess `directory`, saved there for the scrape. Not for concurrent writers: one
    thread observes (the ingester's, or reconcile's), any thread may read `latest`."""

    def __init__(
        self,
        directory: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        save_interval: float = SAVE_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._clock = clock
        self._save_interval = save_interval
        self._monotonic = monotonic
        # Per histogram: its label names and its buckets' `le` values, for the scrape's keys.
        self._histograms: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._bounds: dict[str, tuple[float, ...]] = {}  # the buckets' upper bounds, +Inf too
        # (histogram, label values, bucket index) -> (trace id, value, timestamp)
        self._latest: dict[tuple[str, tuple[str, ...], int], tuple[str, float, float]] = {}
        self._unsaved = False
        self._saved_at = -math.inf
        self._save_failed = False
        # The last message kept: its trace id, and when (its callback's observations share
        # both).
        self._message: MessageState | None = None
        self._trace_id = ""
        self._kept_at = 0.0

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> TracedHistogram:
        """A labelled histogram, registered on `registry`, whose observations keep exemplars
        here."""
        histogram = Histogram(name, documentation, labelnames, buckets=buckets, registry=registry)
        bounds = (*(float(bound) for bound in buckets), math.inf)
        les = tuple(floatToGoString(bound) for bound in bounds)  # type: ignore[no-untyped-call]
        self._histograms[name] = (tuple(labelnames), les)
        self._bounds[name] = bounds
        return TracedHistogram(self, name, histogram)

    def keep(
        self, name: str, labelvalues: tuple[str, ...], value: float, message: MessageState
    ) -> None:
        """A series of histogram `name` observed `value` for `message`: the exemplar of the
        bucket the value fell in is now the message's trace."""
        # The bucket the library counts it in: the first whose upper bound is >= value.
        bucket = bisect_left(self._bounds[name], value)
        if message is not self._message:  # a callback's observations share its message
            self._message, self._trace_id = message, message_trace_id_hex(message)
            self._kept_at = self._clock()
        self._latest[(name, labelvalues, bucket)] = (self._trace_id, value, self._kept_at)
        self._unsaved = True

    def latest(self) -> BucketExemplars:
        """This process's exemplars, as `attach` takes them."""
        # One C-level copy, atomic under the GIL: a scrape thread never iterates the dict
        # while the observing thread changes it.
        kept = self._latest.copy()
        found: BucketExemplars = {}
        for (name, labelvalues, bucket), (trace_id, value, timestamp) in kept.items():
            labelnames, les = self._histograms[name]
            labels = tuple(sorted(zip(labelnames, labelvalues, strict=True)))
            exemplar = Exemplar({TRACE_ID: trace_id}, value, timestamp)
            found.setdefault(name, {})[(labels, les[bucket])] = exemplar
        return found

    def save_if_due(self) -> None:
        """Save when something changed and the last save is `save_interval` old: the
        observing process calls this often (after each batch, when idle)."""
        if self._unsaved and self._monotonic() - self._saved_at >= self._save_interval:
            self.save()

    def save(self) -> None:
        """Write this process's exemplars to its file, if there is a directory and anything
        changed since the last save. A failure is logged: exemplars never stop the work."""
        if self._directory is None or not self._unsaved:
            return
        self._unsaved = False
        self._saved_at = self._monotonic()
        # Written as kept (label values, bucket number), each histogram's label names and
        # `le` values once: the scrape, not the ingester, turns them into its keys.
        entries: dict[str, list[object]] = {name: [] for name in self._histograms}
        for (name, labelvalues, bucket), kept in self._latest.copy().items():
            entries[name].append((labelvalues, bucket, *kept))
        saved = {
            name: {"labels": labelnames, "le": les, "exemplars": entries[name]}
            for name, (labelnames, les) in self._histograms.items()
        }
        path = os.path.join(self._directory, f"{FILE_PREFIX}{os.getpid()}{FILE_SUFFIX}")
        partial = path + ".tmp"
        try:
            # Written whole, then renamed into place: a scrape reads the old file or the new.
            with open(partial, "w", encoding="utf-8") as file:
                # dumps, not dump: one call of the C encoder instead of a write per chunk.
                file.write(json.dumps(saved, separators=(",", ":")))
            os.replace(partial, path)
        except OSError as ex:  # a full disk, the directory removed under us
            self._unsaved = True  # tried again one interval later, logged once
            if not self._save_failed:
                log.warning("could not save exemplars to %s: %s", path, ex)
            self._save_failed = True
        else:
            self._save_failed = False


class TracedHistogram:
    """A labelled histogram (children found through a LabelCache) whose observations name
    their message's trace, kept as their bucket's exemplar."""

    def __init__(self, exemplars: Exemplars, name: str, histogram: Histogram) -> None:
        self._exemplars = exemplars
        self._name = name
        self._children = LabelCache(histogram)

    def __call__(self, *labelvalues: str) -> Histogram:
        """The child for these label values, as `histogram.labels(...)`."""
        return self._children(*labelvalues)

    def observe(self, labelvalues: tuple[str, ...], value: float, message: MessageState) -> None:
        self._children(*labelvalues).observe(value)
        self._exemplars.keep(self._name, labelvalues, value, message)


def read_directory(directory: str) -> BucketExemplars:
    """Every process's saved exemplars in a multiprocess directory; the most recent of each
    bucket wins, whichever process kept it."""
    found: BucketExemplars = {}
    for path in glob.glob(os.path.join(directory, f"{FILE_PREFIX}*{FILE_SUFFIX}")):
        try:
            with open(path, encoding="utf-8") as file:
                saved = json.load(file)
            for name, histogram in saved.items():
                labelnames, les = histogram["labels"], histogram["le"]
                buckets = found.setdefault(name, {})
                for labelvalues, bucket, trace_id, value, timestamp in histogram["exemplars"]:
                    key = (tuple(sorted(zip(labelnames, labelvalues, strict=True))), les[bucket])
                    current = buckets.get(key)
                    if current is None or (current.timestamp or 0.0) < timestamp:
                        buckets[key] = Exemplar({TRACE_ID: trace_id}, value, timestamp)
        except (OSError, ValueError, TypeError, AttributeError, KeyError, IndexError) as ex:
            # Removed since it was listed (its process marked dead), or not one of ours:
            # the scrape goes on without it.
            log.debug("exemplars in %s skipped: %s", path, ex)
    return found


def attach(
    families: Iterable[Metric], exemplars: Mapping[str, Mapping[Bucket, Exemplar]]
) -> Iterator[Metric]:
    """The families, each bucket sample of a histogram in `exemplars` carrying its bucket's
    exemplar."""
    for family in families:
        buckets = exemplars.get(family.name) if family.type == "histogram" else None
        if buckets:
            family.samples = [_with_exemplar(family.name, s, buckets) for s in family.samples]
        yield family


def _with_exemplar(name: str, sample: Sample, buckets: Mapping[Bucket, Exemplar]) -> Sample:
    if sample.name != name + "_bucket":
        return sample
    labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
    exemplar = buckets.get((labels, sample.labels["le"]))
    return sample if exemplar is None else sample._replace(exemplar=exemplar)


class WithExemplars(Collector):
    """A collector's metrics with `exemplars()` attached: the one-process scrape."""

    def __init__(self, source: Collector, exemplars: Callable[[], BucketExemplars]) -> None:
        self._source = source
        self._exemplars = exemplars

    def collect(self) -> Iterable[Metric]:
        return attach(self._source.collect(), self._exemplars())


def remove_files(directory: str) -> None:
    """Remove every process's saved exemplars (a previous run's, at start)."""
    for path in glob.glob(os.path.join(directory, f"{FILE_PREFIX}*")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
