"""Pre-signed requests for wrk, written by the simulator's own generator."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from exporter.simulation import ScheduledCallback, Signer, TrafficProfile, generate_callbacks
from exporter.simulation.lifecycles import regions_for

# Every (MessageSid, status) distinct: the bench measures first copies, the expensive path.
DISTINCT = TrafficProfile(
    rate=0.0, duplicate_rate=0.0, out_of_order_rate=0.0, initial_status_rate=0.0
)


def distinct_callbacks(seed: int, countries: str | None = None) -> Iterator[ScheduledCallback]:
    """An endless stream of distinct callbacks (all regions when `countries` == 'all')."""
    profile = DISTINCT
    if countries == "all":
        profile = TrafficProfile(
            rate=0.0,
            duplicate_rate=0.0,
            out_of_order_rate=0.0,
            initial_status_rate=0.0,
            regions=regions_for("all"),
        )
    return generate_callbacks(seed, None, profile)


def write_requests(
    path: Path, callbacks: Iterator[ScheduledCallback], count: int, base_url: str, token: str
) -> int:
    """Write `count` signed requests as "target<TAB>body<TAB>signature" lines; return bytes."""
    signer = Signer(token)
    with path.open("w", encoding="ascii") as out:
        for callback in itertools.islice(callbacks, count):
            url = callback.url(base_url)
            parts = urlsplit(url)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            body = callback.body().decode("ascii")
            out.write(f"{target}\t{body}\t{signer.sign(url, callback.params)}\n")
    return path.stat().st_size
