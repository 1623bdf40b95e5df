"""The simulator's live progress line and final summary (a table, or JSON)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from exporter.simulation.model import Outcome
from exporter.simulation.sender import RESPONSE_CLASSES, SendResults, Snapshot

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0.0 when it is empty."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100.0 * len(sorted_values)) - 1))
    return sorted_values[rank]


def unexpected(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    """Answers that mean something is wrong, by kind (all zero on a healthy run).

    5xx and connection errors are failures; so is a correctly signed callback that is
    rejected (wrong token?) and a wrongly signed one that is accepted (validation off?).
    """
    forged = Outcome.INVALID_SIGNATURE.value
    refused = ("403", "4xx")
    rejected = sum(n for (exp, resp), n in counts.items() if exp != forged and resp in refused)
    let_through = sum(n for (exp, resp), n in counts.items() if exp == forged and resp != "403")
    return {
        "server_errors": sum(n for (_, resp), n in counts.items() if resp == "5xx"),
        "connection_errors": sum(n for (_, resp), n in counts.items() if resp == "error"),
        "valid_rejected": rejected,
        "forged_not_rejected": let_through,
    }


def exit_code(results: SendResults) -> int:
    """0 when every callback got the answer the contract promises, else 1."""
    return 1 if any(unexpected(results.counts).values()) else 0


def summary_json(results: SendResults) -> dict[str, Any]:
    """The summary as plain data (for --summary-json and for tests)."""
    counts = results.counts
    sent = sum(counts.values())
    by_outcome = {o.value: _count(counts, outcome=o.value) for o in Outcome}
    by_response = {r: _count(counts, response=r) for r in RESPONSE_CLASSES}
    return {
        "elapsed_seconds": round(results.elapsed, 3),
        "sent": sent,
        "rate_per_second": round(sent / results.elapsed, 1) if results.elapsed > 0 else 0.0,
        "accepted": by_response["2xx"],
        "rejected": by_response["403"] + by_response["4xx"],
        "planned": by_outcome,
        "responses": by_response,
        "matrix": {f"{e}/{r}": n for (e, r), n in sorted(counts.items())},
        "latency_seconds": {
            f"p{pct:g}": round(percentile(results.latencies, pct), 6) for pct in PERCENTILES
        }
        | {"max": round(results.latencies[-1], 6) if results.latencies else 0.0},
        "unexpected": unexpected(counts),
        "interrupted": results.interrupted,
        "ok": exit_code(results) == 0,
    }


def summary_table(results: SendResults) -> str:
    """The final summary as a human-readable table."""
    data = summary_json(results)
    width = 19
    lines = [
        f"sent {data['sent']:,} callbacks in {data['elapsed_seconds']:.1f} s "
        f"({data['rate_per_second']:,.1f}/s){' (interrupted)' if results.interrupted else ''}",
        "",
        "planned outcome".ljust(width) + "".join(c.rjust(10) for c in ("sent", *RESPONSE_CLASSES)),
    ]
    for outcome in (*Outcome, None):
        name = outcome.value if outcome else None
        cells = [_count(results.counts, outcome=name)] + [
            _count(results.counts, outcome=name, response=resp) for resp in RESPONSE_CLASSES
        ]
        lines.append((name or "total").ljust(width) + "".join(f"{c:,}".rjust(10) for c in cells))
    latency = data["latency_seconds"]
    lines += [
        "",
        "latency".ljust(width) + "  ".join(f"{k} {_ms(v)}" for k, v in latency.items()),
    ]
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


def _count(
    counts: Counter[tuple[str, str]], outcome: str | None = None, response: str | None = None
) -> int:
    """Callbacks with this planned outcome and response class (None: any)."""
    return sum(
        n
        for (exp, resp), n in counts.items()
        if outcome in (None, exp) and response in (None, resp)
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
