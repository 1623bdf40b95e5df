"""What each replacement of a library internal saves today, against the library's own code.

    python bench/library_hooks.py [--rounds 9]

Each comparison runs both variants in the same process, interleaved round by round, and
reports medians: the machine is shared, so only ratios taken in one run mean anything.
Multiprocess-mode measurements run in a child process with PROMETHEUS_MULTIPROC_DIR set before
prometheus_client is imported, as under gunicorn.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import timeit
from collections.abc import Callable

Variants = dict[str, Callable[[], object]]


def interleaved(variants: Variants, number: int, rounds: int) -> dict[str, float]:
    """Median microseconds per call of each variant, over `rounds` interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            times[name].append(timeit.timeit(call, number=number) / number * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


VALUE_UPDATES = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[2])
    from bench.library_hooks import interleaved
    from prometheus_client import CollectorRegistry, Counter, Histogram, values
    from exporter.telemetry import multiprocess_values

    classes = {
        "library (os.getpid per update)": values.MultiProcessValue(),
        "cached pid": values.MultiProcessValue(process_identifier=multiprocess_values.cached_pid),
    }
    variants = {"os.getpid()": os.getpid, "cached_pid()": multiprocess_values.cached_pid}
    for name, value_class in classes.items():
        values.ValueClass = value_class
        registry = CollectorRegistry()
        counter = Counter("c" + str(len(variants)), "C.", ["s"], registry=registry).labels("a")
        histogram = Histogram("h" + str(len(variants)), "H.", ["s"], registry=registry).labels("a")
        variants[name + ": counter.inc"] = counter.inc
        variants[name + ": histogram.observe"] = lambda h=histogram: h.observe(0.3)
    print(json.dumps(interleaved(variants, 50_000, int(sys.argv[1]))))
    """
)


def value_updates(rounds: int, directory: str) -> dict[str, float]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output = subprocess.run(
        [sys.executable, "-c", VALUE_UPDATES, str(rounds), root],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def label_lookup(rounds: int) -> dict[str, float]:
    """One lookup with four labels, and the five lookups Metrics.record_outcome makes for a
    new status (outcome; status, channel, error_code, country; from, to, channel; status,
    channel; status)."""
    from prometheus_client import CollectorRegistry, Counter

    from exporter.telemetry.label_cache import LabelCache

    registry = CollectorRegistry()
    per_callback = [
        (Counter("_".join(names), "M.", names, registry=registry), key)
        for names, key in [
            (["outcome"], ("accepted",)),
            (["status", "channel", "error_code", "country"], ("delivered", "sms", "", "US")),
            (["from_status", "to_status", "channel"], ("sent", "delivered", "sms")),
            (["status", "channel"], ("delivered", "sms")),
            (["lag_status"], ("delivered",)),
        ]
    ]
    caches = [(LabelCache(metric), key) for metric, key in per_callback]
    counter, key = per_callback[1]
    cache = caches[1][0]
    prebound = {key: counter.labels(*key)}

    def labels_per_callback() -> None:
        for metric, values in per_callback:
            metric.labels(*values)

    def cached_per_callback() -> None:
        for cached, values in caches:
            cached(*values)

    return interleaved(
        {
            "metric.labels(4 values)": lambda: counter.labels(*key),
            "LabelCache(4 values)": lambda: cache(*key),
            "dict of pre-bound children": lambda: prebound[key],
            "per callback, labels()": labels_per_callback,
            "per callback, LabelCache": cached_per_callback,
        },
        100_000,
        rounds,
    )


SCRAPE_WORKER = textwrap.dedent(
    """
    import sys
    from prometheus_client import Counter, Histogram
    statuses = Counter("twilio_message_status_total", "S.",
                       ["status", "channel", "error_code", "country"])
    lag = Histogram("twilio_callback_lag_seconds", "L.", ["status", "country"],
                    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200))
    for n in range(int(sys.argv[1])):
        country = "C%03d" % n
        for status in ("queued", "sent", "delivered", "undelivered", "failed"):
            statuses.labels(status, "sms", "", country).inc()
        lag.labels("delivered", country).observe(n % 40)
    """
)


def scrape(rounds: int, directory: str, workers: int, countries: int) -> dict[str, float]:
    """The library's multiprocess scrape (the exporter's own merge was removed: see
    bench/results/20261202-library-hooks.md for what it saved)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
    for _ in range(workers):
        subprocess.run([sys.executable, "-c", SCRAPE_WORKER, str(countries)], env=env, check=True)

    def collect() -> object:
        return list(MultiProcessCollector(None, path=directory).collect())  # type: ignore[no-untyped-call]

    def scrape_once() -> bytes:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    lines = len(scrape_once().splitlines()) - 2 * 2  # HELP and TYPE of two metrics
    result = interleaved({"merge (ms)": collect, "merge + exposition (ms)": scrape_once}, 3, rounds)
    return {"series per worker": lines, **{k: v / 1000 for k, v in result.items()}}


def span_shipping(rounds: int) -> dict[str, float]:
    """What the request exporters (exporter/telemetry/tracing/request_exporters.py) save the
    shipper: a batch of queued spans put into a request as they were encoded, against
    giving the SDK exporter `ReadableSpan`s to encode (what it would do with each batch)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags
    from opentelemetry.util.types import AttributeValue

    from exporter.telemetry.tracing import service_resource
    from exporter.telemetry.tracing.outbox import ExportRequests, encode_span

    resource = service_resource()
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "twilio",
        "twilio.message.status": "delivered",
        "twilio.channel": "sms",
        "twilio.destination.country": "DE",
        "twilio.callback.out_of_order": False,
        "twilio.message.from_status": "sent",
    }
    spans = [
        ReadableSpan(
            name="twilio.message.delivered",
            context=SpanContext(n + 1, n + 1, False, TraceFlags(1)),
            resource=resource,
            attributes={**attributes, "messaging.message.id": f"SM{n:032x}"},
            start_time=1,
            end_time=2,
        )
        for n in range(512)
    ]
    request = encode_spans(spans)
    queued = [encode_span(span) for span in request.resource_spans[0].scope_spans[0].spans]
    requests = ExportRequests(resource)
    per_batch = interleaved(
        {
            "SDK exporter: encode 512 ReadableSpans (per span)": lambda: encode_spans(
                spans
            ).SerializePartialToString(),
            "request exporter: 512 queued spans (per span)": lambda: requests.build(
                queued
            ).request.SerializePartialToString(),
        },
        5,
        rounds,
    )
    return {name: us / 512 for name, us in per_batch.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--countries", type=int, default=200, help="sets the series per worker")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        results["multiprocess value update (us)"] = value_updates(args.rounds, directory)
    results["label lookup (us)"] = label_lookup(args.rounds)
    with tempfile.TemporaryDirectory() as directory:
        results["scrape"] = scrape(args.rounds, directory, args.workers, args.countries)
    results["span shipping (us)"] = span_shipping(args.rounds)
    for section, figures in results.items():
        print(f"## {section}")
        for name, value in figures.items():
            print(f"  {name}: {value:,.3f}")


if __name__ == "__main__":
    main()
