"""Reading the service's /metrics: sample values, backlog gauges, histogram quantiles."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from processes import http_get

INGEST_BACKLOG = "twilio_exporter_ingest_backlog_entries"
SPAN_BACKLOG = "twilio_exporter_span_export_backlog_spans"
INGEST_LAG = "twilio_exporter_ingest_lag_seconds"
CALLBACKS = "twilio_status_callbacks_total"

Samples = Mapping[str, float]  # "name{labels}" -> value, as exposed


def scrape(base_url: str) -> dict[str, float]:
    """Every sample of GET /metrics (Prometheus text format), keyed by "name{labels}"."""
    samples: dict[str, float] = {}
    for line in http_get(base_url + "/metrics").decode().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            samples[key] = float(value)
        except ValueError:
            continue
    return samples


def total(samples: Samples, name: str) -> float:
    """The sum of a metric over all its label sets (0 when absent)."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


@dataclass(frozen=True)
class Backlog:
    """The write path's backlog: callbacks answered 200 but not applied; spans not exported."""

    entries: float
    spans: float

    @property
    def empty(self) -> bool:
        return self.entries == 0 and self.spans == 0


def backlog(samples: Samples) -> Backlog:
    return Backlog(total(samples, INGEST_BACKLOG), total(samples, SPAN_BACKLOG))


def buckets(samples: Samples, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram by upper bound, summed over label sets."""
    found: dict[float, float] = {}
    prefix = name + "_bucket{"
    for key, value in samples.items():
        if not key.startswith(prefix):
            continue
        le = next(
            part.split("=", 1)[1].strip('"')
            for part in key[len(prefix) : -1].split(",")
            if part.startswith("le=")
        )
        bound = math.inf if le == "+Inf" else float(le)
        found[bound] = found.get(bound, 0.0) + value
    return found


def subtract(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Bucket counts observed between two scrapes."""
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def merge(histograms: list[dict[float, float]]) -> dict[float, float]:
    merged: dict[float, float] = {}
    for histogram in histograms:
        for le, count in histogram.items():
            merged[le] = merged.get(le, 0.0) + count
    return merged


def quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """The q-quantile from cumulative buckets, interpolated linearly inside the bucket it
    falls in, as Prometheus's histogram_quantile does (an upper bound of the truth's bucket).
    In the +Inf bucket: the largest finite bound. None when nothing was observed."""
    ordered = sorted(cumulative.items())
    count = ordered[-1][1] if ordered else 0.0
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for bound, cumulative_count in ordered:
        if cumulative_count >= rank:
            if math.isinf(bound):
                return lower
            if cumulative_count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cumulative_count - below)
        lower, below = bound, cumulative_count
    return lower
