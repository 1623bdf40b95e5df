"""The simulator: realistic lifecycles, reproducible traffic, valid signatures, real HTTP."""

from __future__ import annotations

import argparse
import json
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from urllib.parse import parse_qsl

import phonenumbers
import pytest
from twilio.request_validator import RequestValidator

from exporter import simulate
from exporter.simulation import (
    STATUS_RANK,
    CallbackSender,
    Outcome,
    ScheduledCallback,
    TrafficProfile,
    generate_callbacks,
    sign,
    summary_json,
)

TOKEN = "test-auth-token-0123456789abcdef"
BASE_URL = "https://exporter.example.com/twilio/status"
SID = re.compile(r"^(SM|MM)[0-9a-f]{32}$")


def _generate(messages: int = 400, seed: int = 7, **profile: object) -> list[ScheduledCallback]:
    return list(generate_callbacks(seed, messages, TrafficProfile(**profile)))  # type: ignore[arg-type]


def _by_message(callbacks: list[ScheduledCallback]) -> dict[str, list[ScheduledCallback]]:
    grouped: dict[str, list[ScheduledCallback]] = defaultdict(list)
    for callback in callbacks:
        grouped[callback.message_sid].append(callback)
    return grouped


def test_same_seed_generates_the_same_traffic() -> None:
    first, again, other = _generate(seed=11), _generate(seed=11), _generate(seed=12)

    assert [(c.params, c.query, c.due) for c in first] == [
        (c.params, c.query, c.due) for c in again
    ]
    assert {c.message_sid for c in first}.isdisjoint({c.message_sid for c in other})


def test_callbacks_come_in_due_order() -> None:
    dues = [c.due for c in _generate()]

    assert dues == sorted(dues)


def test_without_disorder_every_lifecycle_follows_twilios_order() -> None:
    callbacks = _generate(1500, duplicate_rate=0.0, out_of_order_rate=0.0, initial_status_rate=0.5)

    for sid, lifecycle in _by_message(callbacks).items():
        statuses = [c.status for c in lifecycle]
        ranks = [STATUS_RANK[s] for s in statuses]
        assert ranks == sorted(ranks), (sid, statuses)
        assert len(set(ranks)) == len(ranks), (sid, statuses)
        assert "read" not in statuses or "delivered" in statuses, (sid, statuses)
        assert "canceled" not in statuses or statuses[-1] == "canceled", (sid, statuses)
        assert not {"failed", "sent"} <= set(statuses), (sid, statuses)
        assert all(c.expected is Outcome.ACCEPTED for c in lifecycle)


def test_the_mix_covers_every_kind_of_lifecycle() -> None:
    callbacks = _generate(3000, initial_status_rate=0.1)
    statuses = Counter(c.status for c in callbacks)
    channels = Counter(c.params.get("ChannelPrefix", "sms") for c in callbacks)
    codes = {c.params["ErrorCode"] for c in callbacks if "ErrorCode" in c.params}

    assert set(STATUS_RANK) <= set(statuses)
    assert channels["whatsapp"] > 0
    assert any(c.params.get("NumMedia") for c in callbacks)
    assert any("MessagingServiceSid" in c.params for c in callbacks)
    assert {"30003", "30005", "30006", "30007", "30008", "21610", "21408", "63016"} <= codes


def test_error_code_only_on_failed_or_undelivered() -> None:
    for callback in _generate(2000):
        failing = callback.status in ("failed", "undelivered")
        assert ("ErrorCode" in callback.params) == failing, callback.params
        if failing:
            assert re.fullmatch(r"\d{5}", callback.params["ErrorCode"])


def test_callbacks_carry_twilios_fields() -> None:
    for callback in _generate(1000):
        params = callback.params
        assert SID.match(params["MessageSid"])
        assert params["SmsSid"] == params["MessageSid"]
        assert params["MessageStatus"] == params["SmsStatus"] == callback.status
        assert re.fullmatch(r"AC[0-9a-f]{32}", params["AccountSid"])
        assert params["ApiVersion"] == "2010-04-01"
        assert re.fullmatch(r"MG[0-9a-f]{32}", params.get("MessagingServiceSid", "MG" + "0" * 32))
        whatsapp = params.get("ChannelPrefix") == "whatsapp"
        assert params["To"].startswith("whatsapp:+") == whatsapp
        assert params["From"].startswith("whatsapp:+") == whatsapp
        assert (params.get("EventType") == "READ") == (callback.status == "read")
        assert ("NumMedia" in params) == params["MessageSid"].startswith("MM")
        if "RawDlrDoneDate" in params:
            assert callback.status in ("delivered", "undelivered")
            assert not whatsapp
            assert re.fullmatch(r"\d{10}", params["RawDlrDoneDate"])


def test_delivered_sms_mostly_carry_raw_dlr_done_date() -> None:
    delivered = [
        c for c in _generate(2000) if c.status == "delivered" and c.params["MessageSid"][:2] == "SM"
    ]
    sms = [c for c in delivered if "ChannelPrefix" not in c.params]

    assert sum("RawDlrDoneDate" in c.params for c in sms) > 0.8 * len(sms)


def test_destinations_are_valid_numbers_in_several_countries() -> None:
    regions: Counter[str | None] = Counter()
    for callback in _generate(1000):
        number = phonenumbers.parse(callback.params["To"].removeprefix("whatsapp:"))
        regions[phonenumbers.region_code_for_number(number)] += 1

    assert None not in regions
    assert len(regions) >= 8


def test_signatures_verify_with_twilios_request_validator() -> None:
    validator = RequestValidator(TOKEN)
    for callback in _generate(100):
        url = callback.url(BASE_URL)
        signature = sign(url, callback.params, TOKEN)

        assert validator.validate(url, callback.params, signature)
        assert not validator.validate(url, {**callback.params, "To": "+15550000000"}, signature)


def test_query_carries_traceparent_created_and_tags() -> None:
    callbacks = _generate(200)

    for callback in callbacks:
        query = dict(parse_qsl(callback.url(BASE_URL).split("?", 1)[1]))
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", query["traceparent"])
        assert re.fullmatch(r"\d{10}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", query["created"])
        assert {"tag.campaign", "tag.tenant"} <= set(query)
    assert len({c.query["traceparent"] for c in callbacks}) == len(_by_message(callbacks))


def test_query_features_can_be_switched_off() -> None:
    callbacks = _generate(50, query=frozenset({"created"}))

    assert all(set(c.query) == {"created"} for c in callbacks)
    assert all(c.url(BASE_URL) == BASE_URL for c in _generate(50, query=frozenset()))


def test_duplicates_and_out_of_order_happen_at_roughly_the_configured_rates() -> None:
    callbacks = _generate(4000, duplicate_rate=0.1, out_of_order_rate=0.05)
    outcomes = Counter(c.expected for c in callbacks)
    originals = outcomes[Outcome.ACCEPTED] + outcomes[Outcome.OUT_OF_ORDER]

    assert outcomes[Outcome.DUPLICATE] / originals == pytest.approx(0.1, rel=0.2)
    assert outcomes[Outcome.OUT_OF_ORDER] / originals == pytest.approx(0.05, rel=0.3)
    assert outcomes[Outcome.INVALID_SIGNATURE] == 0


def test_out_of_order_means_a_higher_status_arrived_first() -> None:
    callbacks = _generate(2000, out_of_order_rate=0.1)

    for lifecycle in _by_message(callbacks).values():
        for index, callback in enumerate(lifecycle):
            earlier = {STATUS_RANK[c.status] for c in lifecycle[:index]}
            if callback.expected is Outcome.OUT_OF_ORDER:
                assert max(earlier) > STATUS_RANK[callback.status]


def test_time_compression_scales_delays() -> None:
    real_time = _by_message(_generate(300, rate=10.0, time_compression=1.0))
    compressed = _by_message(_generate(300, rate=10.0, time_compression=60.0))

    assert real_time.keys() == compressed.keys()
    for sid, fast in compressed.items():
        slow = real_time[sid]
        assert [c.lifecycle_time for c in slow] == [c.lifecycle_time for c in fast]
        for (a, b), (c, d) in zip(pairwise(slow), pairwise(fast), strict=True):
            lifecycle_gap = b.lifecycle_time - a.lifecycle_time
            assert b.due - a.due == pytest.approx(lifecycle_gap, abs=1e-6)
            assert d.due - c.due == pytest.approx(lifecycle_gap / 60.0, abs=1e-6)


def test_rate_sets_the_pace_of_the_stream() -> None:
    callbacks = _generate(2000, rate=100.0, time_compression=3600.0)
    busy = [c for c in callbacks if c.due <= callbacks[-1].due * 0.5]

    assert len(busy) / (callbacks[-1].due * 0.5) == pytest.approx(100.0, rel=0.25)


# --- HTTP: a real local server that validates signatures like the exporter does ------------


@dataclass
class _Received:
    callbacks: Counter[tuple[str, str]] = field(default_factory=Counter)
    arrivals: list[tuple[str, str]] = field(default_factory=list)
    forged: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(received: _Received, answer: int, keep_alive: bool) -> type[BaseHTTPRequestHandler]:
    validator = RequestValidator(TOKEN)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            params = dict(parse_qsl(body, keep_blank_values=True))
            url = f"http://{self.headers['Host']}{self.path}"
            valid = validator.validate(url, params, self.headers.get("X-Twilio-Signature", ""))
            with received.lock:
                if valid:
                    key = (params["MessageSid"], params["MessageStatus"])
                    received.callbacks[key] += 1
                    received.arrivals.append(key)
                else:
                    received.forged += 1
            self.send_response(answer if valid else 403)
            self.send_header("Content-Length", "0")
            if not keep_alive:
                self.send_header("Connection", "close")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@dataclass
class _Server:
    url: str
    received: _Received


@pytest.fixture(params=[True, False], ids=["keep-alive", "close-each"])
def twilio_sink(request: pytest.FixtureRequest) -> Iterator[_Server]:
    """A local callback receiver; one answers keep-alive, one closes like gunicorn sync."""
    received = _Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received, 200, request.param))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield _Server(f"http://127.0.0.1:{server.server_port}/twilio/status", received)
    server.shutdown()
    server.server_close()


def test_sender_delivers_every_callback_correctly_signed(twilio_sink: _Server) -> None:
    profile = TrafficProfile(rate=0.0, duplicate_rate=0.05, invalid_signature_rate=0.05)
    callbacks = list(generate_callbacks(3, 300, profile))
    sender = CallbackSender(twilio_sink.url, TOKEN, concurrency=4)

    results = sender.run(callbacks, paced=False)

    summary = summary_json(results)
    planned = Counter(c.expected for c in callbacks)
    assert summary["ok"]
    assert summary["sent"] == len(callbacks)
    assert summary["responses"]["403"] == planned[Outcome.INVALID_SIGNATURE] > 0
    assert twilio_sink.received.forged == planned[Outcome.INVALID_SIGNATURE]
    signed = [c for c in callbacks if c.expected is not Outcome.INVALID_SIGNATURE]
    assert twilio_sink.received.callbacks == Counter((c.message_sid, c.status) for c in signed)
    assert summary["latency_seconds"]["p50"] > 0


def test_one_connection_keeps_each_messages_planned_order(twilio_sink: _Server) -> None:
    profile = TrafficProfile(rate=0.0, duplicate_rate=0.0, out_of_order_rate=0.2)
    callbacks = list(generate_callbacks(5, 200, profile))
    CallbackSender(twilio_sink.url, TOKEN, concurrency=3).run(callbacks, paced=False)

    planned = [(c.message_sid, c.status) for c in callbacks]
    arrivals = twilio_sink.received.arrivals
    assert len(arrivals) == len(planned)
    for sid in {c.message_sid for c in callbacks}:
        assert [a for a in arrivals if a[0] == sid] == [p for p in planned if p[0] == sid]


def test_pacing_follows_due_times(twilio_sink: _Server) -> None:
    profile = TrafficProfile(rate=200.0, time_compression=36_000.0)
    callbacks = list(generate_callbacks(9, 60, profile))

    results = CallbackSender(twilio_sink.url, TOKEN, concurrency=2).run(callbacks, paced=True)

    assert callbacks[-1].due <= results.elapsed < callbacks[-1].due + 1.0
    assert sum(results.counts.values()) == len(callbacks)


def test_duration_stops_an_endless_stream(twilio_sink: _Server) -> None:
    endless = generate_callbacks(1, None, TrafficProfile(rate=100.0))

    results = CallbackSender(twilio_sink.url, TOKEN, concurrency=2).run(
        endless, paced=True, duration=0.5
    )

    assert 0.5 <= results.elapsed < 5.0
    assert 0 < sum(results.counts.values()) < 200


def test_wrong_token_is_reported_as_unexpected_rejection(twilio_sink: _Server) -> None:
    callbacks = list(generate_callbacks(2, 20, TrafficProfile(rate=0.0)))

    results = CallbackSender(twilio_sink.url, "not-the-token", concurrency=2).run(
        callbacks, paced=False
    )

    assert summary_json(results)["unexpected"]["valid_rejected"] == len(callbacks)
    assert not summary_json(results)["ok"]


def test_connection_failures_are_counted_and_fail_the_run() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_port
    server.server_close()  # nothing listens there now
    callbacks = list(generate_callbacks(2, 10, TrafficProfile(rate=0.0)))

    results = CallbackSender(f"http://127.0.0.1:{port}/x", TOKEN, 2, timeout=2).run(
        callbacks, paced=False
    )

    assert summary_json(results)["unexpected"]["connection_errors"] == len(callbacks)
    assert not summary_json(results)["ok"]


def test_server_errors_fail_the_run() -> None:
    received = _Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received, 503, True))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        callbacks = list(generate_callbacks(2, 10, TrafficProfile(rate=0.0)))
        url = f"http://127.0.0.1:{server.server_port}/twilio/status"
        results = CallbackSender(url, TOKEN, 2).run(callbacks, paced=False)
    finally:
        server.shutdown()
        server.server_close()

    assert summary_json(results)["unexpected"]["server_errors"] == len(callbacks)


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_run_sends_and_writes_a_summary(
    twilio_sink: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary_path = tmp_path / "summary.json"
    args = _cli(
        "--url", twilio_sink.url, "--auth-token", TOKEN, "--messages", "100", "--rate", "0",
        "--seed", "4", "--invalid-signature-rate", "0.1", "--summary-json", str(summary_path),
        "--quiet",
    )  # fmt: skip

    assert simulate.run(args) == 0

    summary = json.loads(summary_path.read_text())
    assert summary["seed"] == 4
    assert summary["ok"]
    assert summary["sent"] == sum(twilio_sink.received.callbacks.values()) + summary["rejected"]
    assert "planned outcome" in capsys.readouterr().out


def test_cli_reads_the_token_from_the_environment(
    twilio_sink: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", f"{TOKEN},older-token")
    args = _cli("--url", twilio_sink.url, "--messages", "5", "--rate", "0", "--quiet")

    assert simulate.run(args) == 0


def test_cli_rejects_bad_options_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate.run(_cli("--auth-token", "t", "--duplicate-rate", "2")) == 2
    assert simulate.run(_cli("--auth-token", "t", "--countries", "XX")) == 2
    assert simulate.run(_cli("--auth-token", "t", "--url", "ftp://x")) == 2

    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3
    assert all(line.startswith("simulate: ") for line in errors)
