"""Twilio's request signature, checked over the public URL Twilio called.

Twilio signs the exact URL it requested (query string included) plus the sorted form
parameters. Behind a proxy or a load balancer the service sees another URL, so it validates
against EXPORTER_PUBLIC_URL when set, or rebuilds the URL from the request, believing
X-Forwarded-Proto/-Host only from trusted proxies (anyone else could forge them).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import parse_qs, quote, urlparse, urlsplit

from twilio.request_validator import (
    HMAC_SHA1,
    RequestValidator,
    add_port,
    get_signature_algorithm,
    remove_port,
)

SIGNATURE_HEADER = "X-Twilio-Signature"
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SignatureChecker:
    """Validates signatures made with any configured auth token (rotation, several accounts)
    or, when Twilio names one in X-Twilio-Webhooks-Signature-Settings, a webhook SharedKey."""

    def __init__(self, auth_tokens: Iterable[str], shared_keys: Mapping[str, str]) -> None:
        self._token_validators = [RequestValidator(token) for token in auth_tokens]
        self._key_validators = {
            key: RequestValidator(secret) for key, secret in shared_keys.items()
        }

    def is_valid(
        self,
        url: str,
        params: Mapping[str, list[str]],
        signature: str | None,
        signature_settings: str | None = None,
    ) -> bool:
        if not signature or not signature.isascii():
            return False
        if signature_settings:
            algorithm = get_signature_algorithm(signature_settings)
            key = _shared_key_id(signature_settings)
            validators = [self._key_validators[key]] if key in self._key_validators else []
        else:
            algorithm, validators = HMAC_SHA1, self._token_validators
        expected = signature.encode("ascii")
        # Twilio signs some URLs with the default port and some without; the exact URL is by
        # far the common case, so it is tried first and the variants only when it fails.
        for candidate in _url_variants(url):
            for validator in validators:
                try:
                    computed = validator.compute_signature(candidate, params, algorithm)
                except ValueError:  # an algorithm this twilio release does not know
                    return False
                if hmac.compare_digest(computed.encode("ascii"), expected):
                    return True
        return False


def body_hash_matches(url: str, body: bytes) -> bool:
    """For a JSON webhook (Event Streams): Twilio puts the hex SHA-256 of the body in the URL
    it calls (`bodySHA256`) and signs that URL without parameters, so the URL's signature
    covers the body only once the body is checked against that hash (as twilio's
    RequestValidator.validate does for a string body)."""
    try:
        claimed = parse_qs(urlsplit(url).query).get("bodySHA256")
    except ValueError:
        return False
    if not claimed or len(claimed) != 1 or not claimed[0].isascii():
        return False
    computed = hashlib.sha256(body).hexdigest()
    return hmac.compare_digest(computed.encode("ascii"), claimed[0].strip().lower().encode("ascii"))


def _url_variants(url: str) -> Iterator[str]:
    """The URL as received, then (only if asked for) with and without its default port."""
    yield url
    try:
        parsed = urlparse(url)
        variants = [remove_port(parsed), add_port(parsed)]
    except ValueError:  # a Host header no URL parser accepts ("[", a port of "x"): no variants
        return
    yield from (variant for variant in dict.fromkeys(variants) if variant != url)


def _shared_key_id(signature_settings: str) -> str | None:
    for part in signature_settings.split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "key":
            return value.strip()
    return None


def callback_url(
    environ: Mapping[str, object],
    public_url: str | None,
    trusted_proxies: tuple[Network, ...],
) -> str:
    """The URL Twilio requested: the public base (configured or rebuilt) + path + ?query."""
    query = str(environ.get("QUERY_STRING") or "")
    path = _raw_path(environ)
    base = public_url or _request_base(environ, trusted_proxies)
    return f"{base}{path}?{query}" if query else f"{base}{path}"


def _raw_path(environ: Mapping[str, object]) -> str:
    # The path as sent on the wire: percent-escapes must survive for the signature to match.
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(raw_uri, str) and raw_uri:
        path = urlsplit(raw_uri).path if "://" in raw_uri else raw_uri.partition("?")[0]
        if path:
            return path
    path_info = str(environ.get("PATH_INFO") or "/")
    return quote(str(environ.get("SCRIPT_NAME") or "") + path_info, safe="/:@!$&'()*+,;=-._~")


def _request_base(environ: Mapping[str, object], trusted_proxies: tuple[Network, ...]) -> str:
    scheme = str(environ.get("wsgi.url_scheme") or "http")
    host = str(environ.get("HTTP_HOST") or "")
    if not host:
        host = f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    if _is_trusted(str(environ.get("REMOTE_ADDR") or ""), trusted_proxies):
        forwarded_proto = _first(environ.get("HTTP_X_FORWARDED_PROTO")).lower()
        forwarded_host = _first(environ.get("HTTP_X_FORWARDED_HOST"))
        if forwarded_proto in {"http", "https"}:
            scheme = forwarded_proto
        if forwarded_host:
            host = forwarded_host
    return f"{scheme}://{host}"


def _first(header: object) -> str:
    # Each proxy in a chain appends its value; the first one is what the client asked for.
    return str(header).split(",")[0].strip() if header else ""


def _is_trusted(remote_addr: str, trusted_proxies: tuple[Network, ...]) -> bool:
    if not trusted_proxies or not remote_addr:
        return False
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    return any(address in network for network in trusted_proxies)
