"""Pre-signed requests for wrk, written by the simulator's own generator."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import phonenumbers

from exporter.simulation import ScheduledCallback, Signer, TrafficProfile, generate_callbacks

# Every (MessageSid, status) distinct: the bench measures first copies, the expensive path.
DISTINCT = TrafficProfile(
    rate=0.0, duplicate_rate=0.0, out_of_order_rate=0.0, initial_status_rate=0.0
)


def every_region() -> tuple[tuple[str, float], ...]:
    """Every ISO region phonenumbers has a mobile example number for, equally weighted."""
    mobile = phonenumbers.PhoneNumberType.MOBILE
    return tuple(
        (code, 1.0)
        for code in sorted(phonenumbers.SUPPORTED_REGIONS)
        if phonenumbers.example_number_for_type(code, mobile)
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
            regions=every_region(),
        )
    return generate_callbacks(seed, None, profile)


def write_requests(
    path: Path,
    callbacks: Iterator[ScheduledCallback],
    count: int,
    base_url: str,
    token: str,
    signed_url: str | None = None,
) -> int:
    """Write `count` signed requests as "target<TAB>body<TAB>signature" lines; return bytes.

    With `signed_url`, every request goes to that URL's path (no query) and is signed for
    exactly that URL: what a handler validating against one fixed URL expects.
    """
    signer = Signer(token)
    with path.open("w", encoding="ascii") as out:
        for callback in itertools.islice(callbacks, count):
            url = signed_url or callback.url(base_url)
            parts = urlsplit(url)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            body = callback.body().decode("ascii")
            out.write(f"{target}\t{body}\t{signer.sign(url, callback.params)}\n")
    return path.stat().st_size
