"""Coverage-guided fuzzing (atheris) of the Event Streams path: the body hash and signature
over the rebuilt URL, then CloudEvents JSON into status events and labels.

    python fuzz/fuzz_events.py -atheris_runs=200000      # or -max_total_time=60

Any exception other than MalformedDelivery, or a label outside its bounded set, is a crash.
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports():
    from exporter.inputs.callback_form import CHANNELS, FormParams
    from exporter.inputs.event_streams import KNOWN_TYPES, MalformedDelivery, parse_delivery
    from exporter.model import KNOWN_STATUSES
    from exporter.web.signature import SignatureChecker, body_hash_matches, callback_url

CHECKER = SignatureChecker(["12345"], {})
ERROR_CODE = re.compile(r"^(\d{5}|other|)$")
# Seeds the fuzzer's dictionary-free search with the shape of a real delivery.
PREFIX = b'[{"type":"com.twilio.messaging.message.delivered","data":{"messageSid":"SM1'


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    query = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 100))
    environ = {"QUERY_STRING": query, "HTTP_HOST": fdp.ConsumeUnicodeNoSurrogates(20)}
    prefixed = fdp.ConsumeBool()
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    if prefixed:
        body = PREFIX + body
    url = callback_url(environ, None, ())
    if body_hash_matches(url, body):
        CHECKER.is_valid(url, FormParams(), "x", None)
    try:
        items = parse_delivery(body, query, 1_790_000_000.0)
    except MalformedDelivery:
        return
    for item in items:
        assert item.type_label in KNOWN_TYPES | {"other"}
        assert (item.event is not None) + item.ignored + (item.problem is not None) == 1
        event = item.event
        if event is None:
            continue
        assert event.status_label in KNOWN_STATUSES | {"other"}
        assert event.channel in CHANNELS | {"other"}
        assert ERROR_CODE.match(event.error_code_label)
        assert event.country == "" or (len(event.country) == 2 and event.country.isupper())
        assert event.at <= event.received_at


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
