"""Property-based: whatever arrives, the answer is a clear 4xx or a 200, never a 5xx, and no
metric label ever leaves its bounded set."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import falcon.testing
import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.inputs.callback_form import CHANNELS
from exporter.inputs.event_streams import KNOWN_TYPES
from exporter.model import KNOWN_STATUSES
from exporter.settings import Settings
from exporter.store.sqlite import SQLiteStore
from exporter.telemetry.metrics import Metrics
from exporter.web.app import Telemetry
from tests.apps import inline_app
from tests.support import AUTH_TOKEN, cloud_event, signed_events_request, signed_request

HOST = "http://falconframework.org"
PATH = "/twilio/status"
EVENTS_PATH = "/twilio/events"
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
twilio_keys = st.sampled_from(
    ["MessageSid", "SmsSid", "MessageStatus", "SmsStatus", "ErrorCode", "To", "From",
     "ChannelPrefix", "EventType", "NumMedia", "RawDlrDoneDate", "AccountSid"]
)  # fmt: skip
values = st.one_of(
    text,
    st.sampled_from(["SM" + "a" * 32, "delivered", "failed", "30007", "+447700900123",
                     "whatsapp:+5511987654321", "READ", "2611231205", "99999999999"]),
)  # fmt: skip
forms = st.lists(st.tuples(st.one_of(twilio_keys, text), values), max_size=12)
queries = st.lists(
    st.tuples(st.sampled_from(["traceparent", "created", "tag.x", "tag.", "x"]), text), max_size=4
)
BOUNDED = {
    "status": KNOWN_STATUSES | {"other"},
    "channel": CHANNELS | {"other"},
    "country": phonenumbers.SUPPORTED_REGIONS | {""},
    "from_status": KNOWN_STATUSES | {"other"},
    "to_status": KNOWN_STATUSES | {"other"},
    "type": KNOWN_TYPES | {"other"},
}


@pytest.fixture(scope="module")
def app_under_attack(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[falcon.testing.TestClient, CollectorRegistry]:
    registry = CollectorRegistry()
    store = SQLiteStore(str(Path(tmp_path_factory.mktemp("hostile")) / "x.db"))
    telemetry = Telemetry(registry, Metrics(registry))
    app = inline_app(Settings(auth_tokens=(AUTH_TOKEN,)), store, telemetry)
    return falcon.testing.TestClient(app), registry


def assert_labels_bounded(registry: CollectorRegistry) -> None:
    for family in registry.collect():
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label in BOUNDED:
                    assert value in BOUNDED[label], (sample.name, label, value)
                elif label == "error_code":
                    assert value in ("", "other") or re.fullmatch(r"\d{5}", value), value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=3000),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
         "application/json", "text/plain", "", "multipart/form-data; boundary=x"]
    ),
    signature=st.one_of(st.none(), text),
    query=st.one_of(st.none(), text),
)  # fmt: skip
@pytest.mark.parametrize("path", [PATH, EVENTS_PATH])
def test_arbitrary_requests_get_a_4xx_never_a_5xx(
    app_under_attack: tuple[falcon.testing.TestClient, CollectorRegistry],
    path: str,
    body: bytes,
    content_type: str,
    signature: str | None,
    query: str | None,
) -> None:
    client, registry = app_under_attack
    headers = {"Content-Type": content_type} if content_type else {}
    if signature is not None and signature.isascii() and signature.isprintable():
        headers["X-Twilio-Signature"] = signature
    # A query string reaches the app without its "?" (the test client insists on that too).
    query = (query or "").lstrip("?")
    result = client.simulate_post(path, body=body, headers=headers, query_string=query or None)
    assert result.status_code in (400, 403, 413, 415), result.text
    assert "Traceback" not in result.text
    assert_labels_bounded(registry)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(form=forms, query=queries)
def test_signed_arbitrary_forms_are_accepted_or_refused_cleanly(
    app_under_attack: tuple[falcon.testing.TestClient, CollectorRegistry],
    form: list[tuple[str, str]],
    query: list[tuple[str, str]],
) -> None:
    client, registry = app_under_attack
    query_string = urlencode(query)
    url = f"{HOST}{PATH}?{query_string}" if query_string else f"{HOST}{PATH}"
    params = dict(form)  # the signature covers what is sent: one value per key here
    _, headers = signed_request(url, params)
    result = client.simulate_post(
        PATH, body=urlencode(params).encode(), headers=headers, query_string=query_string or None
    )
    assert result.status_code in (200, 400), result.text
    assert_labels_bounded(registry)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text, values),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
event_keys = st.sampled_from(
    ["messageSid", "timestamp", "to", "from", "errorCode", "tags", "rawDlrDoneDate",
     "numberOfSegments", "statusCallBackUrl", "mcc", "numMedia", "dateUpdated"]
)  # fmt: skip
event_types = st.one_of(st.sampled_from(sorted(KNOWN_TYPES)), text, st.integers(), st.none())


@st.composite
def deliveries(draw: st.DrawFn) -> object:
    """A batch of CloudEvents built from Twilio's shape, then bent in arbitrary ways."""
    events: list[object] = []
    for _ in range(draw(st.integers(0, 5))):
        event: dict[str, object] = cloud_event(draw(values), "sent", draw(text))
        event["type"] = draw(event_types)
        data = event["data"]
        assert isinstance(data, dict)
        data.update(draw(st.dictionaries(event_keys, json_values, max_size=6)))
        if draw(st.booleans()):
            event["data"] = draw(json_values)
        events.append(event if draw(st.integers(0, 9)) else draw(json_values))
    return events if draw(st.integers(0, 9)) else draw(json_values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery=deliveries())
def test_signed_arbitrary_deliveries_are_accepted_or_refused_cleanly(
    app_under_attack: tuple[falcon.testing.TestClient, CollectorRegistry], delivery: object
) -> None:
    client, registry = app_under_attack
    query, body, headers = signed_events_request(f"{HOST}{EVENTS_PATH}", delivery)
    result = client.simulate_post(EVENTS_PATH, body=body, headers=headers, query_string=query)
    assert result.status_code in (200, 400), result.text
    assert result.json is not None and "Traceback" not in result.text
    assert_labels_bounded(registry)
