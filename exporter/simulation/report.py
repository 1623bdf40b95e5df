"""The simulator's live progress line and final summary (a table, or JSON)."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from typing import Any

from exporter.simulation.expectations import expected_metrics
from exporter.simulation.model import Input, Outcome
from exporter.simulation.sender import RESPONSE_CLASSES, SendResults, Snapshot

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
NOUNS = {Input.CALLBACKS.value: "callbacks", Input.EVENTS.value: "events"}


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0.0 when it is empty."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100.0 * len(sorted_values)) - 1))
    return sorted_values[rank]


def unexpected(counts: Counter[tuple[str, str, str]], unusable: int = 0) -> dict[str, int]:
    """Answers that mean something is wrong, by kind, counted per status (all zero on a
    healthy run).

    5xx and connection errors are failures; so is a correctly signed callback or event that
    is rejected (wrong token?), a wrongly signed one that is accepted (validation off?), and
    a signed event a 200 answer reports as unusable (`unusable`: a shape the sink rejects).
    """
    forged = Outcome.INVALID_SIGNATURE.value
    refused = ("403", "4xx")
    rejected = sum(n for (_, exp, resp), n in counts.items() if exp != forged and resp in refused)
    let_through = sum(n for (_, exp, resp), n in counts.items() if exp == forged and resp != "403")
    return {
        "server_errors": sum(n for (_, _, resp), n in counts.items() if resp == "5xx"),
        "connection_errors": sum(n for (_, _, resp), n in counts.items() if resp == "error"),
        "valid_rejected": rejected,
        "forged_not_rejected": let_through,
        "valid_unusable": unusable,
    }


def exit_code(results: SendResults) -> int:
    """0 when every status got the answer the contract promises, else 1."""
    return 1 if any(unexpected(results.counts, results.unusable).values()) else 0


def summary_json(results: SendResults) -> dict[str, Any]:
    """The summary as plain data (for --summary-json and for tests).

    The top-level counts are per status delivered (a callback, or one event of a batch, with
    its request's answer); `inputs` has each input's requests; `expected` the exporter's
    counter increases the run should cause (see `expected_metrics`)."""
    counts = results.counts
    sent = sum(counts.values())
    by_response = {r: _count(counts, response=r) for r in RESPONSE_CLASSES}
    return {
        "elapsed_seconds": round(results.elapsed, 3),
        "sent": sent,
        "rate_per_second": round(sent / results.elapsed, 1) if results.elapsed > 0 else 0.0,
        "accepted": by_response["2xx"],
        "rejected": by_response["403"] + by_response["4xx"],
        "planned": {o.value: _count(counts, outcome=o.value) for o in Outcome},
        "responses": by_response,
        "matrix": {f"{i}/{e}/{r}": n for (i, e, r), n in sorted(counts.items())},
        "latency_seconds": _latency(list(heapq.merge(*results.latencies.values()))),
        "inputs": {
            name: _input_summary(results, name) for name in NOUNS if _requests(results, name)
        },
        "expected": expected_metrics(results),
        "unexpected": unexpected(counts, results.unusable),
        "interrupted": results.interrupted,
        "ok": exit_code(results) == 0,
    }


def summary_table(results: SendResults) -> str:
    """The final summary as a human-readable table."""
    data = summary_json(results)
    width = 19
    sent = " and ".join(
        f"{block['sent']:,} {NOUNS[name]}"
        + (f" in {block['requests']:,} requests" if name == Input.EVENTS else "")
        for name, block in data["inputs"].items()
    )
    lines = [
        f"sent {sent or 'nothing'} in {data['elapsed_seconds']:.1f} s "
        f"({data['rate_per_second']:,.1f} statuses/s)"
        f"{' (interrupted)' if results.interrupted else ''}",
        "",
        "planned outcome".ljust(width) + "".join(c.rjust(10) for c in ("sent", *RESPONSE_CLASSES)),
    ]
    for outcome in (*Outcome, None):
        name = outcome.value if outcome else None
        cells = [_count(results.counts, outcome=name)] + [
            _count(results.counts, outcome=name, response=resp) for resp in RESPONSE_CLASSES
        ]
        lines.append((name or "total").ljust(width) + "".join(f"{c:,}".rjust(10) for c in cells))
    if len(data["inputs"]) > 1 or Input.EVENTS.value in data["inputs"]:
        lines += ["", "requests".ljust(width) + "".join(c.rjust(10) for c in RESPONSE_CLASSES)]
        for name, block in data["inputs"].items():
            cells = [block["responses"][resp] for resp in RESPONSE_CLASSES]
            lines.append(name.ljust(width) + "".join(f"{c:,}".rjust(10) for c in cells))
    lines.append("")
    for name, block in data["inputs"].items():
        latency = block["latency_seconds"]
        label = f"latency {name}"
        lines.append(label.ljust(width) + "  ".join(f"{k} {_ms(v)}" for k, v in latency.items()))
    lines.append("")
    for index, (metric, value) in enumerate(data["expected"].items()):
        label = "expected increase" if index == 0 else ""
        lines.append(label.ljust(width) + f"{metric} {_increase(value)}")
    problems = {k: v for k, v in data["unexpected"].items() if v}
    verdict = "FAILED: " + ", ".join(f"{k}={v}" for k, v in problems.items()) if problems else "OK"
    lines.append("result".ljust(width) + verdict)
    return "\n".join(lines)


def progress_line(snapshot: Snapshot) -> str:
    """One line of live progress: totals, the rate so far and recent latencies."""
    counts = snapshot.counts
    sent = sum(counts.values())
    rate = sent / snapshot.elapsed if snapshot.elapsed > 0 else 0.0
    by_response = {r: _count(counts, response=r) for r in RESPONSE_CLASSES}
    recent = sorted(snapshot.recent)
    return (
        f"[{snapshot.elapsed:7.1f}s] sent {sent:,} ({rate:,.1f}/s) "
        + " ".join(f"{r} {n:,}" for r, n in by_response.items())
        + f"  p50 {_ms(percentile(recent, 50))} p99 {_ms(percentile(recent, 99))}"
    )


def _input_summary(results: SendResults, name: str) -> dict[str, Any]:
    """One input's statuses sent, its requests by answer, its planned outcomes, latencies."""
    counts = results.counts
    return {
        "requests": _requests(results, name),
        "sent": _count(counts, input_=name),
        "responses": {r: _requests(results, name, r) for r in RESPONSE_CLASSES},
        "planned": {o.value: _count(counts, input_=name, outcome=o.value) for o in Outcome},
        "latency_seconds": _latency(results.latencies[name]),
    }


def _latency(sorted_values: Sequence[float]) -> dict[str, float]:
    return {f"p{pct:g}": round(percentile(sorted_values, pct), 6) for pct in PERCENTILES} | {
        "max": round(sorted_values[-1], 6) if sorted_values else 0.0
    }


def _requests(results: SendResults, name: str, response: str | None = None) -> int:
    return sum(
        n
        for (input_, _, resp), n in results.requests.items()
        if input_ == name and response in (None, resp)
    )


def _count(
    counts: Counter[tuple[str, str, str]],
    input_: str | None = None,
    outcome: str | None = None,
    response: str | None = None,
) -> int:
    """Statuses over this input with this planned outcome and response class (None: any)."""
    return sum(
        n
        for (inp, exp, resp), n in counts.items()
        if input_ in (None, inp) and outcome in (None, exp) and response in (None, resp)
    )


def _increase(value: dict[str, int] | int) -> str:
    if isinstance(value, int):
        return f"+{value:,}"
    return ", ".join(f"{outcome} +{n:,}" for outcome, n in value.items())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
