"""The simulator: realistic lifecycles, reproducible traffic, valid signatures, real HTTP."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import phonenumbers
import pytest
from twilio.request_validator import RequestValidator

from exporter.cli import simulate
from exporter.inputs.callback_form import FormParams, parse_callback
from exporter.lifecycle import apply_event
from exporter.model import RANKS, MessageState
from exporter.simulation import (
    PUBLISHED_STATUSES,
    CallbackSender,
    EventBatch,
    Input,
    Outcome,
    RequestBuilder,
    Scheduled,
    ScheduledCallback,
    ScheduledEvent,
    TrafficProfile,
    dispatches,
    events_url_for,
    generate_callbacks,
    generate_traffic,
    sign,
    summary_json,
)

TOKEN = "test-auth-token-0123456789abcdef"
BASE_URL = "https://exporter.example.com/twilio/status"
EVENTS_URL = "https://exporter.example.com/twilio/events"
SID = re.compile(r"^(SM|MM)[0-9a-f]{32}$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CALLBACKS = frozenset({Input.CALLBACKS})
EVENTS = frozenset({Input.EVENTS})
BOTH = frozenset({Input.CALLBACKS, Input.EVENTS})
T = TypeVar("T", ScheduledCallback, ScheduledEvent)
# Every status of an outgoing message; the simulator sends no inbound traffic.
OUTBOUND_STATUSES = set(RANKS) - {"receiving", "received", "partially_delivered"}


def _generate(messages: int = 400, seed: int = 7, **profile: object) -> list[ScheduledCallback]:
    return list(generate_callbacks(seed, messages, TrafficProfile(**profile)))  # type: ignore[arg-type]


def _traffic(messages: int = 400, seed: int = 7, **profile: object) -> list[Scheduled]:
    return list(generate_traffic(seed, messages, TrafficProfile(**profile)))  # type: ignore[arg-type]


def _of(kind: type[T], traffic: Sequence[Scheduled]) -> list[T]:
    return [item for item in traffic if isinstance(item, kind)]


def _by_message(items: Sequence[T]) -> dict[str, list[T]]:
    grouped: dict[str, list[T]] = defaultdict(list)
    for item in items:
        grouped[item.message_sid].append(item)
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
        ranks = [RANKS[s] for s in statuses]
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

    assert set(statuses) >= OUTBOUND_STATUSES
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
            earlier = {RANKS[c.status] for c in lifecycle[:index]}
            if callback.expected is Outcome.OUT_OF_ORDER:
                assert max(earlier) > RANKS[callback.status]


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


# --- Event Streams: CloudEvents, batches, bodySHA256 signatures ------------------------------


def test_events_carry_the_message_status_schema() -> None:
    events = _of(ScheduledEvent, _traffic(1500, inputs=EVENTS))
    assert events

    for event in events:
        cloud = json.loads(json.dumps(event.cloud_event(BASE_URL)))  # as posted
        data = cloud["data"]
        sid = event.message_sid
        assert set(cloud) == {
            "specversion", "type", "source", "id", "dataschema", "datacontenttype", "time", "data"
        }  # fmt: skip
        assert cloud["specversion"] == "1.0"
        assert cloud["type"] == f"com.twilio.messaging.message.{event.status}"
        assert re.fullmatch(rf"/2010-04-01/Accounts/AC[0-9a-f]{{32}}/Messages/{sid}\.json",
                            cloud["source"])  # fmt: skip
        assert (
            cloud["id"] == "EZ" + hashlib.sha256(f"{sid}:{event.status}".encode()).hexdigest()[:32]
        )
        assert cloud["dataschema"] == "https://events-schemas.twilio.com/Messaging.MessageStatus/7"
        assert cloud["datacontenttype"] == "application/json"
        assert ISO_MS.match(cloud["time"])
        assert SID.match(data["messageSid"]) and data["messageSid"] == sid
        assert data["timestamp"] == data["dateUpdated"] == cloud["time"]
        assert re.fullmatch(r"AC[0-9a-f]{32}", data["accountSid"])
        assert cloud["source"].startswith(f"/2010-04-01/Accounts/{data['accountSid']}/")
        assert data["eventName"] == cloud["type"]
        assert data["apiVersion"] == "2010-04-01"
        assert data["messageStatus"] == event.status.upper()
        whatsapp = data["to"].startswith("whatsapp:+")
        assert data["from"].startswith("whatsapp:+") == whatsapp
        assert re.fullmatch(r"MG[0-9a-f]{32}", data.get("messagingServiceSid", "MG" + "0" * 32))
        failing = event.status in ("failed", "undelivered")
        assert ("errorCode" in data) == failing
        if failing:
            assert type(data["errorCode"]) is int and 10000 <= data["errorCode"] <= 99999
        url = urlsplit(data["statusCallBackUrl"])
        assert url._replace(query="").geturl() == BASE_URL
        query = dict(parse_qsl(url.query))
        assert {"traceparent", "created", "tag.campaign", "tag.tenant"} <= set(query)
        assert type(data["tags"]) is dict
        assert data["tags"] == {k[4:]: v for k, v in query.items() if k.startswith("tag.")}
        assert ("mcc" in data) == ("mnc" in data)
        if "mcc" in data:
            assert re.fullmatch(r"\d{3}", data["mcc"]) and re.fullmatch(r"\d{2,3}", data["mnc"])
        if "rawDlrDoneDate" in data:
            assert event.status in ("delivered", "undelivered")
            assert not whatsapp
            assert re.fullmatch(r"\d{10}", data["rawDlrDoneDate"])
        assert type(data["numberOfSegments"]) is int and data["numberOfSegments"] >= 1
    everything = [json.loads(json.dumps(e.data)) for e in events]
    assert any("messagingServiceSid" in d for d in everything)
    assert any("messagingServiceSid" not in d for d in everything)
    assert any(d["numberOfSegments"] > 1 for d in everything)
    assert any("rawDlrDoneDate" in d for d in everything)
    sms = [d for d in everything if not d["to"].startswith("whatsapp:")]
    assert sum("mcc" in d for d in sms) == len(sms)  # the default regions all have networks


def test_event_fields_stay_the_same_for_every_status_of_a_message() -> None:
    for lifecycle in _by_message(_of(ScheduledEvent, _traffic(500, inputs=EVENTS))).values():
        shared = ("accountSid", "from", "to", "messagingServiceSid", "tags", "mcc", "mnc",
                  "numberOfSegments")  # fmt: skip
        assert len({json.dumps([e.data.get(k) for k in shared]) for e in lifecycle}) == 1


def test_event_time_is_when_the_callback_for_that_status_would_be_due() -> None:
    profile: dict[str, Any] = {
        "duplicate_rate": 0.0,
        "out_of_order_rate": 0.0,
        "initial_status_rate": 1.0,
    }
    traffic = _traffic(500, inputs=BOTH, epoch=1_767_225_600.0, **profile)
    callbacks = {(c.message_sid, c.status): c for c in _of(ScheduledCallback, traffic)}

    for event in _of(ScheduledEvent, traffic):
        callback = callbacks[(event.message_sid, event.status)]
        moment = datetime.fromtimestamp(1_767_225_600.0 + callback.due, tz=UTC)
        assert event.data["timestamp"] == moment.isoformat(timespec="milliseconds")[:23] + "Z"
        assert event.due == callback.due


def test_event_ids_are_deterministic_per_message_and_status() -> None:
    first = _of(ScheduledEvent, _traffic(300, inputs=EVENTS, duplicate_rate=0.3))
    again = _of(ScheduledEvent, _traffic(300, inputs=EVENTS, duplicate_rate=0.3))
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for event in first:
        ids[(event.message_sid, event.status)].add(event.id)

    assert [e.id for e in first] == [e.id for e in again]
    assert all(len(found) == 1 for found in ids.values())  # copies carry the original's id
    assert len({next(iter(found)) for found in ids.values()}) == len(ids)
    assert any(e.expected is Outcome.DUPLICATE for e in first)


def test_same_seed_generates_the_same_events() -> None:
    def shape(items: list[ScheduledEvent]) -> list[object]:
        return [(e.due, e.envelope, e.data, e.query, e.expected) for e in items]

    first = _of(ScheduledEvent, _traffic(300, seed=11, inputs=EVENTS))
    again = _of(ScheduledEvent, _traffic(300, seed=11, inputs=EVENTS))
    other = _of(ScheduledEvent, _traffic(300, seed=12, inputs=EVENTS))

    assert shape(first) == shape(again)
    assert {e.message_sid for e in first}.isdisjoint({e.message_sid for e in other})


def test_statuses_event_streams_does_not_publish_are_not_sent_as_events() -> None:
    traffic = _traffic(3000, inputs=EVENTS, initial_status_rate=1.0, out_of_order_rate=0.0)
    statuses = Counter(e.status for e in _of(ScheduledEvent, traffic))

    assert not _of(ScheduledCallback, traffic)
    assert set(statuses) == {"queued", "sent", "delivered", "undelivered", "failed", "read"}
    assert set(statuses) == PUBLISHED_STATUSES
    for lifecycle in _by_message(_of(ScheduledEvent, traffic)).values():
        # A Messaging Service message's lifecycle starts at queued on this input (no accepted,
        # no scheduled); a canceled scheduled message has no event at all.
        assert lifecycle[0].status == "queued"


def test_events_are_published_for_every_message_even_without_initial_callbacks() -> None:
    traffic = _traffic(1000, inputs=BOTH, initial_status_rate=0.0, duplicate_rate=0.0)
    callbacks = {(c.message_sid, c.status) for c in _of(ScheduledCallback, traffic)}
    events = {(e.message_sid, e.status) for e in _of(ScheduledEvent, traffic)}

    assert {pair for pair in callbacks if pair[1] in PUBLISHED_STATUSES} < events
    assert {pair[1] for pair in events - callbacks} == {"queued"}


def test_both_reports_exactly_the_published_statuses_twice() -> None:
    profile: dict[str, Any] = {"rate": 0.0, "duplicate_rate": 0.0, "initial_status_rate": 1.0}
    both = _traffic(1500, seed=3, inputs=BOTH, **profile)
    pairs = Counter((item.message_sid, item.status) for item in both)

    assert {n for (_, status), n in pairs.items() if status in PUBLISHED_STATUSES} == {2}
    assert {n for (_, status), n in pairs.items() if status not in PUBLISHED_STATUSES} == {1}
    # Each input reports a status once, so exactly one of the two copies counts.
    for pair, copies in _by_status(both).items():
        firsts = [c for c in copies if c.expected in (Outcome.ACCEPTED, Outcome.OUT_OF_ORDER)]
        assert len(firsts) == 1, pair


def _by_status(items: Sequence[Scheduled]) -> dict[tuple[str, str], list[Scheduled]]:
    grouped: dict[tuple[str, str], list[Scheduled]] = defaultdict(list)
    for item in items:
        grouped[(item.message_sid, item.status)].append(item)
    return grouped


def test_a_seed_makes_the_same_messages_over_every_input() -> None:
    def callbacks(items: list[Scheduled]) -> list[object]:
        return [
            (c.due, c.params, c.query, c.concurrent_copy) for c in _of(ScheduledCallback, items)
        ]

    def events(items: list[Scheduled]) -> list[object]:
        return [(e.due, e.envelope, e.data, e.query) for e in _of(ScheduledEvent, items)]

    profile: dict[str, Any] = {"rate": 0.0, "duplicate_rate": 0.1, "invalid_signature_rate": 0.05}
    both = _traffic(800, seed=5, inputs=BOTH, **profile)

    assert callbacks(both) == callbacks(_traffic(800, seed=5, inputs=CALLBACKS, **profile))
    assert events(both) == events(_traffic(800, seed=5, inputs=EVENTS, **profile))


def test_disorder_duplicates_and_forgeries_apply_to_events_at_their_rates() -> None:
    rates: dict[str, Any] = {
        "duplicate_rate": 0.1,
        "out_of_order_rate": 0.05,
        "invalid_signature_rate": 0.05,
    }
    events = _of(ScheduledEvent, _traffic(4000, inputs=EVENTS, **rates))
    outcomes = Counter(e.expected for e in events)
    originals = outcomes[Outcome.ACCEPTED] + outcomes[Outcome.OUT_OF_ORDER]

    assert outcomes[Outcome.DUPLICATE] / originals == pytest.approx(0.1, rel=0.2)
    assert outcomes[Outcome.OUT_OF_ORDER] / originals == pytest.approx(0.05, rel=0.3)
    assert outcomes[Outcome.INVALID_SIGNATURE] / originals == pytest.approx(0.05, rel=0.3)


def test_rate_counts_callbacks_and_events_together() -> None:
    traffic = _traffic(2000, inputs=BOTH, rate=100.0, time_compression=3600.0)
    busy = [item for item in traffic if item.due <= traffic[-1].due * 0.5]

    assert len(busy) / (traffic[-1].due * 0.5) == pytest.approx(100.0, rel=0.25)


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_batches_hold_at_most_the_limit_and_keep_each_messages_order(limit: int) -> None:
    rates: dict[str, Any] = {
        "duplicate_rate": 0.2,
        "out_of_order_rate": 0.1,
        "invalid_signature_rate": 0.05,
    }
    traffic = _traffic(600, inputs=BOTH, rate=0.0, **rates)
    sent_on: dict[int, list[Scheduled]] = defaultdict(list)
    shard_of: dict[str, set[int]] = defaultdict(set)
    sizes: Counter[int] = Counter()

    for dispatch in dispatches(traffic, shards=4, max_events=limit):
        first, *racing = dispatch.deliveries
        for delivery in dispatch.deliveries:
            items = list(delivery.events) if isinstance(delivery, EventBatch) else [delivery]
            for item in items:
                shard_of[item.message_sid].add(dispatch.shard)
            if isinstance(delivery, EventBatch):
                assert 1 <= len(delivery.events) <= limit
                assert len({e.id for e in delivery.events}) == len(delivery.events)
                assert len({e.expected is Outcome.INVALID_SIGNATURE for e in delivery.events}) == 1
                assert dispatch.due >= max(e.due for e in delivery.events)
        for delivery in racing:
            items = list(delivery.events) if isinstance(delivery, EventBatch) else [delivery]
            assert all(item.concurrent_copy for item in items)
            if isinstance(delivery, EventBatch):
                # A racing copy's original leads its request: the race reorders nothing else.
                assert isinstance(first, EventBatch)
                assert [e.id for e in delivery.events] == [first.events[0].id]
        if isinstance(first, EventBatch):
            sizes[len(first.events)] += 1
            sent_on[dispatch.shard] += first.events
        else:
            sent_on[dispatch.shard].append(first)

    assert all(len(shards) == 1 for shards in shard_of.values())
    assert max(sizes) == limit
    # Every delivery but the racing copies goes out on its message's connection; signed ones in
    # plan order per input (events wait for their batch, callbacks do not).
    planned = [i for i in traffic if not i.concurrent_copy]
    arrived = [i for sent in sent_on.values() for i in sent]
    assert Counter(map(id, arrived)) == Counter(map(id, planned))
    for sent in sent_on.values():
        signed = [i for i in sent if i.expected is not Outcome.INVALID_SIGNATURE]
        callbacks = _by_message(_of(ScheduledCallback, signed)).values()
        events = _by_message(_of(ScheduledEvent, signed)).values()
        dues = [[c.due for c in lifecycle] for lifecycle in callbacks]
        dues += [[e.due for e in lifecycle] for lifecycle in events]
        assert all(d == sorted(d) for d in dues)


def test_a_redelivered_event_goes_into_a_later_batch() -> None:
    events = _of(ScheduledEvent, _traffic(300, inputs=EVENTS, rate=0.0, duplicate_rate=0.5))
    retries = Counter(e.id for e in events if e.expected is Outcome.DUPLICATE)
    concurrent = Counter(e.id for e in events if e.concurrent_copy)
    requests_of: dict[str, list[int]] = defaultdict(list)

    dispatched = dispatches(events, shards=1, max_events=50, window=3600.0)
    for index, dispatch in enumerate(dispatched):
        for delivery in dispatch.deliveries:
            assert isinstance(delivery, EventBatch)
            ids = [e.id for e in delivery.events]
            assert len(set(ids)) == len(ids)
            for event_id in ids:
                requests_of[event_id].append(index)

    assert sum(retries.values()) > sum(concurrent.values()) > 0
    for event_id, found in requests_of.items():
        # A simultaneous copy races its original's request; every later retry is in a later one.
        assert len(set(found)) == 1 + retries[event_id] - concurrent[event_id]


def test_event_requests_are_signed_over_the_url_with_the_body_hash() -> None:
    validator = RequestValidator(TOKEN)
    traffic = _traffic(200, inputs=EVENTS, rate=0.0, invalid_signature_rate=0.1)
    builder = RequestBuilder(TOKEN, BASE_URL, EVENTS_URL)
    forged = 0

    for dispatch in dispatches(traffic, shards=2, max_events=7):
        for delivery in dispatch.deliveries:
            request = builder.build(delivery)
            body, signature = request.body.decode(), request.headers["X-Twilio-Signature"]
            url = urlsplit(request.url)
            assert request.input is Input.EVENTS
            assert request.headers["Content-Type"] == "application/json"
            assert url._replace(query="").geturl() == EVENTS_URL
            assert parse_qs(url.query) == {"bodySHA256": [hashlib.sha256(request.body).hexdigest()]}
            assert body == json.dumps(json.loads(body), separators=(",", ":"))  # compact
            posted = json.loads(body)
            assert isinstance(posted, list)
            assert [e["id"] for e in posted] == [e.id for e in delivery.events]  # type: ignore[union-attr]
            computed = validator.compute_signature(request.url, {})
            assert (signature == computed) == (not request.forged)
            assert validator.validate(request.url, body, signature) == (not request.forged)
            forged += request.forged
            assert not validator.validate(request.url, body.replace("+", "+1", 1), signature)
    assert forged > 0


def test_events_url_with_a_query_gets_the_body_hash_appended() -> None:
    traffic = _traffic(5, inputs=EVENTS, rate=0.0)
    batch = EventBatch(tuple(_of(ScheduledEvent, traffic))[:3])
    request = RequestBuilder(TOKEN, BASE_URL, EVENTS_URL + "?sink=a").build(batch)

    assert request.url.startswith(EVENTS_URL + "?sink=a&bodySHA256=")
    assert RequestValidator(TOKEN).validate(
        request.url, request.body.decode(), request.headers["X-Twilio-Signature"]
    )


def test_events_url_defaults_next_to_the_callback_url() -> None:
    assert (
        events_url_for("https://x.example/p/twilio/status") == "https://x.example/p/twilio/events"
    )
    assert events_url_for("http://h:81/twilio/status?a=1") == "http://h:81/twilio/events"
    assert events_url_for("http://h/hooks") == "http://127.0.0.1:8080/twilio/events"


# --- HTTP: a real local server that validates signatures like the exporter does ------------


@dataclass
class _Received:
    callbacks: Counter[tuple[str, str]] = field(default_factory=Counter)
    arrivals: list[tuple[str, str]] = field(default_factory=list)
    forged: int = 0
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    event_arrivals: list[tuple[str, str]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # sizes of signed event requests
    forged_batches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(
    received: _Received, answer: int, keep_alive: bool, unusable: bool = False
) -> type[BaseHTTPRequestHandler]:
    """Validates callbacks and Event Streams batches as the exporter does; `unusable` reports
    every event of a batch as failed in a 200 (a shape the sink does not understand)."""
    validator = RequestValidator(TOKEN)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            url = f"http://{self.headers['Host']}{self.path}"
            signature = self.headers.get("X-Twilio-Signature", "")
            if self.headers["Content-Type"] == "application/json":
                self._events(url, body, signature)
                return
            params = dict(parse_qsl(body, keep_blank_values=True))
            valid = validator.validate(url, params, signature)
            with received.lock:
                if valid:
                    key = (params["MessageSid"], params["MessageStatus"])
                    received.callbacks[key] += 1
                    received.arrivals.append(key)
                else:
                    received.forged += 1
            self._answer(answer if valid else 403, b"")

        def _events(self, url: str, body: str, signature: str) -> None:
            assert self.path.startswith("/twilio/events?bodySHA256=")
            valid = validator.validate(url, body, signature)  # checks bodySHA256 too
            events = json.loads(body)
            keys = [(e["data"]["messageSid"], e["type"].rpartition(".")[2]) for e in events]
            with received.lock:
                if valid:
                    received.events.update(keys)
                    received.event_arrivals += keys
                    received.batches.append(len(events))
                else:
                    received.forged_batches += 1
            failed = [{"index": i, "id": e["id"], "reason": "no"} for i, e in enumerate(events)]
            summary: dict[str, object] = {
                "accepted": 0 if unusable else len(events),
                "duplicates": 0,
                "ignored": 0,
                "failed": failed if unusable else [],
            }
            self._answer(answer if valid else 403, json.dumps(summary).encode())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if not keep_alive:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

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


def test_sender_delivers_every_event_correctly_signed_in_batches(twilio_sink: _Server) -> None:
    rates: dict[str, Any] = {
        "duplicate_rate": 0.1,
        "invalid_signature_rate": 0.05,
        "out_of_order_rate": 0.1,
    }
    events = _of(ScheduledEvent, _traffic(300, seed=3, inputs=EVENTS, rate=0.0, **rates))
    sender = CallbackSender(twilio_sink.url, TOKEN, concurrency=4, event_batch=5)

    results = sender.run(events, paced=False)

    summary = summary_json(results)
    received = twilio_sink.received
    signed = [e for e in events if e.expected is not Outcome.INVALID_SIGNATURE]
    distinct = {(e.message_sid, e.status) for e in signed}
    assert summary["ok"], summary["unexpected"]
    assert sender.events_url == twilio_sink.url.replace("/twilio/status", "/twilio/events")
    assert summary["sent"] == len(events)
    assert received.events == Counter((e.message_sid, e.status) for e in signed)
    assert not received.callbacks
    assert max(received.batches) == 5
    assert sum(received.batches) == len(signed)
    assert list(summary["inputs"]) == ["events"]
    block = summary["inputs"]["events"]
    assert block["requests"] == len(received.batches) + received.forged_batches
    assert block["sent"] == len(events)
    assert block["responses"]["2xx"] == len(received.batches)
    assert block["responses"]["403"] == received.forged_batches > 0
    assert block["latency_seconds"]["p50"] > 0
    assert summary["expected"] == {
        "twilio_stream_events_total": {
            "accepted+duplicate": len(signed),
            "accepted": len(distinct),
            "duplicate": len(signed) - len(distinct),
        },
        "twilio_stream_requests_total": {
            "accepted": len(received.batches),
            "invalid_signature": received.forged_batches,
        },
        "twilio_message_status_total": len(distinct),
        "twilio_status_callbacks_out_of_order_total": sum(
            e.expected is Outcome.OUT_OF_ORDER for e in events
        ),
    }


@pytest.mark.parametrize("inputs", [CALLBACKS, EVENTS], ids=["callbacks", "events"])
def test_one_connection_keeps_each_messages_planned_order(
    twilio_sink: _Server, inputs: frozenset[Input]
) -> None:
    profile = TrafficProfile(rate=0.0, duplicate_rate=0.0, out_of_order_rate=0.2, inputs=inputs)
    traffic = list(generate_traffic(5, 200, profile))
    CallbackSender(twilio_sink.url, TOKEN, concurrency=3).run(traffic, paced=False)

    planned = [(t.message_sid, t.status) for t in traffic]
    received = twilio_sink.received
    arrivals = received.arrivals if inputs == CALLBACKS else received.event_arrivals
    assert len(arrivals) == len(planned)
    for sid in {t.message_sid for t in traffic}:
        assert [a for a in arrivals if a[0] == sid] == [p for p in planned if p[0] == sid]


def test_both_sends_every_callback_and_every_published_status_as_an_event(
    twilio_sink: _Server,
) -> None:
    rates: dict[str, Any] = {"duplicate_rate": 0.05, "invalid_signature_rate": 0.05}
    traffic = _traffic(300, seed=8, inputs=BOTH, rate=0.0, **rates)
    results = CallbackSender(twilio_sink.url, TOKEN, concurrency=4).run(traffic, paced=False)

    summary = summary_json(results)
    received = twilio_sink.received
    signed = [i for i in traffic if i.expected is not Outcome.INVALID_SIGNATURE]
    callbacks, events = _of(ScheduledCallback, signed), _of(ScheduledEvent, signed)
    assert summary["ok"], summary["unexpected"]
    assert received.callbacks == Counter((c.message_sid, c.status) for c in callbacks)
    assert received.events == Counter((e.message_sid, e.status) for e in events)
    assert set(summary["inputs"]) == {"callbacks", "events"}
    assert summary["inputs"]["callbacks"]["requests"] == len(_of(ScheduledCallback, traffic))
    assert summary["inputs"]["events"]["sent"] == len(_of(ScheduledEvent, traffic))
    expected = summary["expected"]
    # Which input's copy lands first is a race: per input only the sum is exact.
    assert expected["twilio_status_callbacks_total"] == {
        "accepted+duplicate": len(callbacks),
        "invalid_signature": received.forged,
    }
    assert expected["twilio_stream_events_total"] == {"accepted+duplicate": len(events)}
    assert expected["twilio_message_status_total"] == len(
        set(received.callbacks) | set(received.events)
    )
    assert "twilio_status_callbacks_out_of_order_total" not in expected


def test_events_a_200_reports_unusable_fail_the_run() -> None:
    received = _Received()
    handler = _handler(received, 200, keep_alive=True, unusable=True)
    with _serving(handler) as url:
        events = _traffic(20, inputs=EVENTS, rate=0.0)
        results = CallbackSender(url, TOKEN, 2).run(events, paced=False)

    summary = summary_json(results)
    assert summary["responses"]["2xx"] == len(events)
    assert summary["unexpected"]["valid_unusable"] == len(events)
    assert not summary["ok"]


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


@pytest.mark.parametrize("inputs", [CALLBACKS, EVENTS], ids=["callbacks", "events"])
def test_server_errors_fail_the_run(inputs: frozenset[Input]) -> None:
    with _serving(_handler(_Received(), 503, True)) as url:
        traffic = _traffic(10, seed=2, rate=0.0, inputs=inputs)
        results = CallbackSender(url, TOKEN, 2).run(traffic, paced=False)

    assert summary_json(results)["unexpected"]["server_errors"] == len(traffic)
    assert not summary_json(results)["ok"]


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` locally; yields the callback URL (events go next to it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/twilio/status"
    finally:
        server.shutdown()
        server.server_close()


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


def test_cli_sends_events_and_callbacks_with_input_both(
    twilio_sink: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary_path = tmp_path / "summary.json"
    args = _cli(
        "--url", twilio_sink.url, "--auth-token", TOKEN, "--messages", "60", "--rate", "0",
        "--seed", "4", "--input", "both", "--event-batch", "3", "--summary-json",
        str(summary_path), "--quiet",
    )  # fmt: skip

    assert simulate.run(args) == 0

    summary = json.loads(summary_path.read_text())
    received = twilio_sink.received
    assert summary["input"] == "both"
    assert summary["events_url"] == twilio_sink.url.replace("/status", "/events")
    assert summary["inputs"]["callbacks"]["sent"] == sum(received.callbacks.values())
    assert summary["inputs"]["events"]["sent"] == sum(received.events.values())
    assert max(received.batches) == 3
    assert {status for _, status in received.events} <= PUBLISHED_STATUSES
    table = capsys.readouterr().out
    assert "events in" in table
    assert "latency events" in table


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
    assert simulate.run(_cli("--auth-token", "t", "--input", "events", "--event-batch", "0")) == 2
    assert simulate.run(_cli("--auth-token", "t", "--input", "both", "--events-url", "x")) == 2

    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 5
    assert all(line.startswith("simulate: ") for line in errors)


def test_expected_outcomes_are_what_the_service_lifecycle_decides() -> None:
    callbacks = _generate(1500, out_of_order_rate=0.2, duplicate_rate=0.1)
    messages: dict[str, tuple[MessageState | None, dict[str, float]]] = {}
    for n, callback in enumerate(callbacks):  # in arrival order, as the service sees them
        form = FormParams({k: [v] for k, v in callback.params.items()})
        event = parse_callback(form, urlencode(callback.query), float(n))
        state, history = messages.get(callback.message_sid, (None, {}))
        recorded = apply_event(state, history, event)  # what the store decides, minus the SQL
        if recorded.transition is None:
            decided = Outcome.DUPLICATE
        elif recorded.transition.out_of_order:
            decided = Outcome.OUT_OF_ORDER
        else:
            decided = Outcome.ACCEPTED
        assert decided is callback.expected, (callback.message_sid, callback.status)
        messages[callback.message_sid] = (recorded.message, {**history, event.status: event.at})
