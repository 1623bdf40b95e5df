"""Signature validation over the public URL: known vectors, ports, query strings, rotation,
proxies and webhook SharedKeys."""

from __future__ import annotations

import ipaddress

import pytest
from twilio.request_validator import HMAC_SHA256, RequestValidator

from exporter.inputs.callback_form import FormParams
from exporter.web.signature import SignatureChecker, body_hash_matches, callback_url

# twilio-python's own test vector (tests/unit/test_request_validator.py).
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
VECTOR_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def form(params: dict[str, str]) -> FormParams:
    return FormParams({k: [v] for k, v in params.items()})


def test_known_vector_from_twilio_python_validates() -> None:
    checker = SignatureChecker(["12345"], {})
    assert checker.is_valid(VECTOR_URL, form(VECTOR_PARAMS), VECTOR_SIGNATURE)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url, params: (url.replace("foo=1", "foo=2"), params),
        lambda url, params: (url.replace("https", "http"), params),
        lambda url, params: (url, {**params, "Digits": "1235"}),
        lambda url, params: (url, {**params, "Extra": ""}),
    ],
    ids=["query", "scheme", "value", "added-parameter"],
)
def test_any_change_to_url_or_form_invalidates(tamper) -> None:  # type: ignore[no-untyped-def]
    url, params = tamper(VECTOR_URL, VECTOR_PARAMS)
    assert not SignatureChecker(["12345"], {}).is_valid(url, form(params), VECTOR_SIGNATURE)


def test_wrong_token_is_rejected() -> None:
    assert not SignatureChecker(["54321"], {}).is_valid(
        VECTOR_URL, form(VECTOR_PARAMS), VECTOR_SIGNATURE
    )


@pytest.mark.parametrize("signature", [None, "", "not base64 at all", "Zm9v\u00e9"])
def test_missing_or_garbage_signature_is_rejected(signature: str | None) -> None:
    assert not SignatureChecker(["12345"], {}).is_valid(VECTOR_URL, form(VECTOR_PARAMS), signature)


def test_any_of_several_tokens_validates_for_rotation() -> None:
    checker = SignatureChecker(["old-token", "12345"], {})
    assert checker.is_valid(VECTOR_URL, form(VECTOR_PARAMS), VECTOR_SIGNATURE)


@pytest.mark.parametrize(
    ("signed_url", "seen_url"),
    [
        ("https://example.com:443/twilio/status", "https://example.com/twilio/status"),
        ("https://example.com/twilio/status", "https://example.com:443/twilio/status"),
        ("http://example.com:80/twilio/status?x=1", "http://example.com/twilio/status?x=1"),
    ],
)
def test_default_port_signed_either_way_validates(signed_url: str, seen_url: str) -> None:
    signature = RequestValidator("t").compute_signature(signed_url, VECTOR_PARAMS)
    assert SignatureChecker(["t"], {}).is_valid(seen_url, form(VECTOR_PARAMS), signature)


def test_non_default_port_must_match() -> None:
    signature = RequestValidator("t").compute_signature("https://e.com:8443/s", VECTOR_PARAMS)
    checker = SignatureChecker(["t"], {})
    assert checker.is_valid("https://e.com:8443/s", form(VECTOR_PARAMS), signature)
    assert not checker.is_valid("https://e.com/s", form(VECTOR_PARAMS), signature)


def test_repeated_keys_are_signed_with_all_values() -> None:
    params = FormParams({"MessageSid": ["SM1"], "MediaUrl": ["b", "a"]})
    signature = RequestValidator("t").compute_signature("https://e.com/s", params)
    assert SignatureChecker(["t"], {}).is_valid("https://e.com/s", params, signature)


def test_shared_key_named_in_settings_header_validates_with_sha256() -> None:
    signature = RequestValidator("key-secret").compute_signature(
        VECTOR_URL, VECTOR_PARAMS, HMAC_SHA256
    )
    checker = SignatureChecker(["12345"], {"webhooks_sharedkey_1": "key-secret"})
    header = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    assert checker.is_valid(VECTOR_URL, form(VECTOR_PARAMS), signature, header)
    # The auth token must not stand in for an unknown shared key.
    unknown = "key=webhooks_sharedkey_2,algorithm=HMAC_SHA256"
    assert not checker.is_valid(VECTOR_URL, form(VECTOR_PARAMS), signature, unknown)


def test_unsupported_algorithm_is_rejected() -> None:
    checker = SignatureChecker([], {"k": "s"})
    assert not checker.is_valid(VECTOR_URL, form(VECTOR_PARAMS), "x", "key=k,algorithm=HMAC_MD5")


def environ(**overrides: str) -> dict[str, str]:
    base = {
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "10.0.0.5:8080",
        "PATH_INFO": "/twilio/status",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "10.0.0.1",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_X_FORWARDED_HOST": "hooks.example.com",
    }
    base.update(overrides)
    return base


PROXY = (ipaddress.ip_network("10.0.0.0/24"),)


def test_public_url_setting_wins_and_keeps_query_as_received() -> None:
    env = environ(QUERY_STRING="tag.campaign=a%20b&created=1")
    url = callback_url(env, "https://hooks.example.com/prefix", ())
    assert url == "https://hooks.example.com/prefix/twilio/status?tag.campaign=a%20b&created=1"


def test_forwarded_headers_are_believed_only_from_trusted_proxies() -> None:
    assert callback_url(environ(), None, PROXY) == "https://hooks.example.com/twilio/status"
    untrusted = environ(REMOTE_ADDR="203.0.113.9")
    assert callback_url(untrusted, None, PROXY) == "http://10.0.0.5:8080/twilio/status"
    assert callback_url(environ(), None, ()) == "http://10.0.0.5:8080/twilio/status"


def test_first_forwarded_value_is_used_behind_proxy_chains() -> None:
    env = environ(HTTP_X_FORWARDED_PROTO="https, http", HTTP_X_FORWARDED_HOST="a.com, b.internal")
    assert callback_url(env, None, PROXY) == "https://a.com/twilio/status"


def test_raw_path_keeps_percent_escapes() -> None:
    env = environ(RAW_URI="/twilio/status?x=%2F", PATH_INFO="/twilio/status", QUERY_STRING="x=%2F")
    assert callback_url(env, None, ()) == "http://10.0.0.5:8080/twilio/status?x=%2F"


@pytest.mark.parametrize("host", ["[", "example.com:notaport", "[::1", "a:99999"])
def test_unparseable_host_header_is_just_invalid(host: str) -> None:
    url = callback_url(environ(HTTP_HOST=host), None, ())
    assert not SignatureChecker(["t"], {}).is_valid(url, form(VECTOR_PARAMS), "c2ln")


# An Event Streams delivery from the Rust helper library of Twilio's blog post on validating
# Event Streams webhooks (its test vector; token of 32 ones): the URL carries the body's
# SHA-256 as bodySHA256 and is signed without parameters.
EVENT_STREAMS_BODY = (
    b'[{"specversion":"1.0","type":"com.twilio.eventstreams.test-event","source":"Sink",'
    b'"id":"AC11111111111111111111111111111111","dataschema":"https://events-schemas.twilio.com/'
    b'EventStreams.TestSink/1.json","datacontenttype":"application/json","time":'
    b'"2026-06-10T06:02:54.377Z","data":{"test_id":"cae2f9e2-c277-4612-8ad3-93c1a7a3ef88"}}]'
)
EVENT_STREAMS_URL = (
    "https://96e5-165-225-114-134.ngrok-free.app/webhook?bodySHA256="
    "f4dc494f1e604a19df36cdd069f7956b1f261dc954ae1c698ed8b4939fd9ab54"
)


def test_event_streams_vector_validates() -> None:
    checker = SignatureChecker(["1" * 32], {})
    assert body_hash_matches(EVENT_STREAMS_URL, EVENT_STREAMS_BODY)
    assert checker.is_valid(EVENT_STREAMS_URL, {}, "qovYYTCoTFG3Ga6KmSrRVvSgwm8=")


@pytest.mark.parametrize(
    "url",
    [
        EVENT_STREAMS_URL.replace("f4dc", "f4dd"),
        EVENT_STREAMS_URL.partition("?")[0],
        EVENT_STREAMS_URL + "&bodySHA256=" + "0" * 64,
        "http://[/?bodySHA256=x",
    ],
)
def test_body_hash_must_be_the_one_in_the_url(url: str) -> None:
    assert not body_hash_matches(url, EVENT_STREAMS_BODY)


def test_changed_body_fails_the_hash() -> None:
    assert not body_hash_matches(EVENT_STREAMS_URL, EVENT_STREAMS_BODY + b" ")
