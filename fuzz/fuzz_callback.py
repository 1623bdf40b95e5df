"""Coverage-guided fuzzing (atheris) of the path hostile bytes take: form parsing, signature
validation over the rebuilt URL, and callback parsing into labels.

    python fuzz/fuzz_callback.py -atheris_runs=200000      # or -max_total_time=60

Any exception other than MalformedCallback, or a label outside its bounded set, is a crash.
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports():
    from exporter.inputs.callback_form import (
        CHANNELS,
        MalformedCallback,
        parse_callback,
        parse_form,
    )
    from exporter.model import KNOWN_STATUSES
    from exporter.web.signature import SignatureChecker, callback_url

CHECKER = SignatureChecker(["12345"], {"k": "secret"})
ERROR_CODE = re.compile(r"^(\d{5}|other|)$")


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    query = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
    signature = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    settings_header = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40)) or None
    environ = {
        "QUERY_STRING": query,
        "HTTP_HOST": fdp.ConsumeUnicodeNoSurrogates(20),
        "RAW_URI": fdp.ConsumeUnicodeNoSurrogates(30),
        "REMOTE_ADDR": "10.0.0.1",
        "HTTP_X_FORWARDED_PROTO": fdp.ConsumeUnicodeNoSurrogates(8),
    }
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        params = parse_form(body)
    except MalformedCallback:
        return
    url = callback_url(environ, None, ())
    CHECKER.is_valid(url, params, signature, settings_header)
    try:
        event = parse_callback(params, query, 1_790_000_000.0)
    except MalformedCallback:
        return
    assert event.status_label in KNOWN_STATUSES | {"other"}
    assert event.channel in CHANNELS | {"other"}
    assert ERROR_CODE.match(event.error_code_label)
    assert event.country == "" or (len(event.country) == 2 and event.country.isupper())


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
