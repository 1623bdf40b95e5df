"""What the latency histograms' exemplars cost the ingester, per callback, in one process.

    python bench/exemplars.py [--callbacks 5000] [--rounds 7] [--series 250] [--json]

Distinct, realistic callbacks (the simulator's, as the throughput runs send them, with
`created`, `traceparent` and tags in the query) are applied from a SQLite inbox by the
ingester's own classes (Ingester, Applier; no spans), in rounds that alternate two variants:
the service's Metrics, saving its exemplars to a multiprocess directory as the ingester does
(at most once a second), and the same Metrics with an exemplar store that keeps nothing
(the histograms still count). Reported, medians over rounds:

- the ingester's rows/s with and without (the whole apply: decode, store, count);
- `Metrics.record_outcome` per callback with and without, measured apart from the store,
  whose noise would hide a few microseconds;
- one save of the exemplar file as the run left it, and that cost spread over the callbacks
  of one second at the measured rate (a save happens at most once a second);
- one save with an exemplar in every bucket of `--series` stage-duration series (a file holds
  at most one per bucket of each series: this is its size for that many series).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

from prometheus_client import CollectorRegistry
from workload import distinct_callbacks

from exporter.ingest.applier import Applier
from exporter.ingest.ingester import Ingester
from exporter.ingest.outcomes import Outcomes
from exporter.inputs.callback_form import parse_callback, parse_form
from exporter.model import CALLBACK, InboxEntry, MessageState, Recorded, StatusEvent
from exporter.store.sqlite import SQLiteStore
from exporter.telemetry.exemplars import Exemplars
from exporter.telemetry.metrics import LIFECYCLE_BUCKETS, Metrics


class KeepNothing(Exemplars):
    """An exemplar store that keeps nothing: the histograms as they were without exemplars."""

    def keep(
        self, name: str, labelvalues: tuple[str, ...], value: float, message: MessageState
    ) -> None:
        pass


@dataclass(frozen=True)
class Result:
    callbacks: int
    rounds: int
    rows_per_second_with: float
    rows_per_second_without: float
    rows_ratio: float  # with / without, median of the rounds' ratios
    record_us_with: float
    record_us_without: float
    record_us: float  # the exemplars' cost on the observe path: median of the rounds' differences
    save_ms: float
    saved_exemplars: int
    full_save_ms: float
    full_exemplars: int

    @property
    def save_us_per_callback(self) -> float:
        """One save a second, spread over a second's callbacks at the measured rate."""
        return self.save_ms * 1000 / self.rows_per_second_with

    @property
    def full_save_us_per_callback(self) -> float:
        return self.full_save_ms * 1000 / self.rows_per_second_with

    @property
    def total_us(self) -> float:
        return self.record_us + self.save_us_per_callback


def inbox_entries(count: int, seed: int) -> list[InboxEntry]:
    now = time.time()
    return [
        InboxEntry(CALLBACK, now, callback.body(), urlencode(callback.query))
        for callback in itertools.islice(distinct_callbacks(seed), count)
    ]


def apply_all(directory: Path, entries: list[InboxEntry], metrics: Metrics) -> float:
    """Seconds the ingester takes to apply `entries` from a fresh SQLite inbox."""
    store = SQLiteStore(str(directory / f"{time.monotonic_ns()}.db"))
    try:
        for entry in entries:
            store.append(entry)
        ingester = Ingester(Applier(store, metrics, None), Outcomes(metrics))
        started = time.perf_counter()
        applied = ingester.apply_pending()
        elapsed = time.perf_counter() - started
        assert applied == len(entries), (applied, len(entries))
        return elapsed
    finally:
        store.close()


def recorded_outcomes(
    directory: Path, entries: list[InboxEntry]
) -> list[tuple[StatusEvent, Recorded]]:
    """What the store makes of the entries: record_outcome's input."""
    events = [parse_callback(parse_form(e.body), e.query, e.received_at) for e in entries]
    store = SQLiteStore(str(directory / "outcomes.db"))
    try:
        return list(zip(events, store.record_all(events), strict=True))
    finally:
        store.close()


def record_seconds(metrics: Metrics, outcomes: list[tuple[StatusEvent, Recorded]]) -> float:
    record = metrics.record_outcome
    started = time.perf_counter()
    for event, recorded in outcomes:
        record(event, recorded)
    return time.perf_counter() - started


def interleaved(
    rounds: int, with_: Callable[[], float], without: Callable[[], float]
) -> list[tuple[float, float]]:
    """(with, without) of each round, run back to back, which first alternating: the machine
    is shared, so only figures of one round compare."""
    pairs = []
    for n in range(rounds):
        if n % 2 == 0:
            first = with_()
            pairs.append((first, without()))
        else:
            second = without()
            pairs.append((with_(), second))
    return pairs


def save_seconds(exemplars: Exemplars, rounds: int, keep_one: Callable[[], object]) -> float:
    """Median seconds of one save, something new kept before each."""
    saves = []
    for _ in range(rounds):
        keep_one()
        started = time.perf_counter()
        exemplars.save()
        saves.append(time.perf_counter() - started)
    return statistics.median(saves)


def full_store(directory: Path, series: int) -> tuple[Exemplars, Callable[[], object]]:
    """An exemplar in every bucket of `series` stage-duration series; and a function that
    keeps one more."""
    exemplars = Exemplars(str(directory))
    histogram = Metrics(CollectorRegistry(), exemplars=exemplars).stage_duration
    bounds = (*LIFECYCLE_BUCKETS, LIFECYCLE_BUCKETS[-1] * 2)  # +Inf's bucket too
    message = MessageState("SM" + "0" * 32, "delivered", first_seen_at=0.0, updated_at=0.0)
    for n in range(series):
        message = MessageState(f"SM{n:032x}", "delivered", first_seen_at=0.0, updated_at=0.0)
        for bound in bounds:
            histogram.observe((f"from{n}", "delivered", "sms"), bound, message)
    return exemplars, partial(histogram.observe, ("from0", "delivered", "sms"), 1.0, message)


def measure(callbacks: int, rounds: int, series: int, seed: int = 7) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-exemplars-") as tmp:
        root = Path(tmp)
        (root / "metrics").mkdir()
        entries = inbox_entries(callbacks, seed)
        kept = Exemplars(str(root / "metrics"))
        metrics = {
            "with": Metrics(CollectorRegistry(), exemplars=kept),
            "without": Metrics(CollectorRegistry(), exemplars=KeepNothing()),
        }
        applied = interleaved(
            rounds, *(partial(apply_all, root, entries, m) for m in metrics.values())
        )
        outcomes = recorded_outcomes(root, entries)
        recorded = interleaved(
            rounds * 3, *(partial(record_seconds, m, outcomes) for m in metrics.values())
        )
        keep_one = partial(record_seconds, metrics["with"], outcomes[:1])
        save = save_seconds(kept, max(rounds, 5), keep_one)
        saved = sum(len(buckets) for buckets in kept.latest().values())
        (root / "full").mkdir()
        full, keep_another = full_store(root / "full", series)
        full_save = save_seconds(full, max(rounds, 5), keep_another)
        full_saved = sum(len(buckets) for buckets in full.latest().values())
    per_callback = [(w / callbacks * 1e6, wo / callbacks * 1e6) for w, wo in recorded]
    return Result(
        callbacks=callbacks,
        rounds=rounds,
        rows_per_second_with=callbacks / statistics.median(w for w, _ in applied),
        rows_per_second_without=callbacks / statistics.median(wo for _, wo in applied),
        rows_ratio=statistics.median(wo / w for w, wo in applied),
        record_us_with=statistics.median(w for w, _ in per_callback),
        record_us_without=statistics.median(wo for _, wo in per_callback),
        record_us=statistics.median(w - wo for w, wo in per_callback),
        save_ms=save * 1000,
        saved_exemplars=saved,
        full_save_ms=full_save * 1000,
        full_exemplars=full_saved,
    )


def report(result: Result) -> str:
    with_, without = result.rows_per_second_with, result.rows_per_second_without
    return "\n".join(
        [
            f"exemplars in the ingester: {result.callbacks} callbacks, {result.rounds} rounds",
            f"  ingester rows/s         with {with_:,.0f}   without {without:,.0f}"
            f"   (with / without, per round: {result.rows_ratio:.3f})",
            f"  record_outcome us/cb    with {result.record_us_with:.2f}"
            f"   without {result.record_us_without:.2f}   difference per round"
            f" {result.record_us:.2f}",
            f"  one save                {result.save_ms:.2f} ms ({result.saved_exemplars}"
            f" exemplars) = {result.save_us_per_callback:.3f} us/cb at one save a second",
            f"  exemplars per callback  {result.total_us:.2f} us",
            f"  one save, full series   {result.full_save_ms:.2f} ms ({result.full_exemplars}"
            f" exemplars) = {result.full_save_us_per_callback:.3f} us/cb at one save a second",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callbacks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--series", type=int, default=250, help="series filled for the full-series save"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = measure(args.callbacks, args.rounds, args.series)
    if args.json:
        print(json.dumps({**asdict(result), "exemplars_us_per_callback": result.total_us}))
    else:
        print(report(result))


if __name__ == "__main__":
    main()
