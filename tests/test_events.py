"""Parsing a callback into a StatusEvent: fields, fallbacks, channel, country, URL context."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exporter.inputs.callback_form import (
    FormParams,
    MalformedCallback,
    parse_callback,
    parse_form,
    parse_raw_dlr_done_date,
)
from tests.support import callback_params, sid

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()
SID = sid("SM", 1)


def event(params: dict[str, str], query: str = ""):  # type: ignore[no-untyped-def]
    return parse_callback(FormParams({k: [v] for k, v in params.items()}), query, NOW)


def test_parses_the_documented_failed_sms_payload() -> None:
    body = (
        b"ErrorCode=21408&SmsSid=SM1342fe1b2c904d1ab04f0fc7a58abca9&SmsStatus=failed"
        b"&MessageStatus=failed&To=%2B15558675310&MessageSid=SM1342fe1b2c904d1ab04f0fc7a58abca9"
        b"&AccountSid=ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX&From=%2B15017250604&ApiVersion=2010-04-01"
    )
    parsed = parse_callback(parse_form(body), "", NOW)
    assert parsed.message_sid == "SM1342fe1b2c904d1ab04f0fc7a58abca9"
    assert parsed.status == "failed"
    assert parsed.error_code == "21408"
    assert parsed.error_code_label == "21408"
    assert (parsed.channel, parsed.country) == ("sms", "US")
    assert parsed.params["ApiVersion"] == "2010-04-01"


def test_whatsapp_read_event_maps_to_read_and_whatsapp_channel() -> None:
    params = callback_params(SID, "read", To="whatsapp:+5511987654321", ChannelPrefix="whatsapp")
    params.pop("MessageStatus")
    params["SmsStatus"] = "read"
    params["EventType"] = "READ"
    parsed = event(params)
    assert (parsed.status, parsed.channel, parsed.country) == ("read", "whatsapp", "BR")


def test_sms_status_is_the_fallback_for_message_status() -> None:
    params = callback_params(SID, "sent")
    del params["MessageStatus"]
    assert event(params).status == "sent"


@pytest.mark.parametrize(
    ("extra", "channel"),
    [({}, "sms"), ({"NumMedia": "2"}, "mms"), ({"ChannelPrefix": "rcs"}, "rcs"),
     ({"ChannelPrefix": "pigeon"}, "other"), ({"To": "messenger:123"}, "messenger")],
)  # fmt: skip
def test_channel_comes_from_prefix_or_media(extra: dict[str, str], channel: str) -> None:
    assert event(callback_params(SID, "sent", **extra)).channel == channel


@pytest.mark.parametrize(
    ("status", "code", "label"),
    [("failed", "30007", "30007"), ("undelivered", "oops", "other"), ("undelivered", "", ""),
     ("delivered", "30007", ""), ("sent", "", "")],
)  # fmt: skip
def test_error_code_label_is_bounded(status: str, code: str, label: str) -> None:
    params = callback_params(SID, status)
    if code:
        params["ErrorCode"] = code
    assert event(params).error_code_label == label


@pytest.mark.parametrize("missing", ["MessageSid", "status"])
def test_required_fields_missing_is_malformed(missing: str) -> None:
    params = callback_params(SID, "sent")
    if missing == "MessageSid":
        del params["MessageSid"], params["SmsSid"]
    else:
        del params["MessageStatus"], params["SmsStatus"]
    with pytest.raises(MalformedCallback):
        event(params)


def test_unknown_status_is_kept_raw() -> None:
    parsed = event(callback_params(SID, "Teleported"))
    assert (parsed.status, parsed.status_label) == ("Teleported", "other")


def test_raw_dlr_done_date_is_read_as_utc_minutes() -> None:
    assert parse_raw_dlr_done_date("2611231205") == NOW + 300
    for bad in ["", "26112312", "2613231205", "abcdefghij", None]:
        assert parse_raw_dlr_done_date(bad) is None


def test_query_context_carries_traceparent_created_and_tags() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    query = f"traceparent={traceparent}&created=2026-11-23T11:59:00Z&tag.campaign=bf&tag.tenant=a"
    context = event(callback_params(SID, "sent"), query).context
    assert context.traceparent == traceparent
    assert context.created_at == NOW - 60
    assert dict(context.tags) == {"campaign": "bf", "tenant": "a"}


@pytest.mark.parametrize(
    "query",
    ["traceparent=00-00000000000000000000000000000000-b7ad6b7169203331-01",
     "traceparent=garbage", "created=yesterday", "created=nan", f"created={NOW + 3600}"],
)  # fmt: skip
def test_bad_context_values_are_ignored_not_rejected(query: str) -> None:
    context = event(callback_params(SID, "sent"), query).context
    assert context.traceparent is None and context.created_at is None


def test_created_as_unix_seconds() -> None:
    assert event(callback_params(SID, "sent"), f"created={NOW - 5}").context.created_at == NOW - 5


@pytest.mark.parametrize("body", [b"\xff\xfe", b'{"MessageSid": 1}', b"a=1&b"])
def test_non_form_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedCallback):
        parse_form(body)


def test_repeated_keys_keep_every_value() -> None:
    params = parse_form(b"MediaUrl=a&MediaUrl=b&MessageSid=SM1")
    assert params.getall("MediaUrl") == ["a", "b"]
    assert params.flat() == {"MediaUrl": ["a", "b"], "MessageSid": "SM1"}


def test_callback_url_with_hundreds_of_parameters_is_still_parsed() -> None:
    query = "&".join(f"x{n}=1" for n in range(500)) + "&tag.campaign=bf&tag.campaign=again"
    assert dict(event(callback_params(SID, "sent"), query).context.tags) == {"campaign": "bf"}
