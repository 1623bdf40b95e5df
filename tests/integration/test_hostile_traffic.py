"""Hostile traffic against the real service under gunicorn: slow and silent clients, oversized
and odd bodies, unsigned floods. Never a 5xx, never a traceback, nothing recorded."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import requests
from twilio.request_validator import RequestValidator

from exporter.inputs.callback_form import parse_form
from exporter.server.gunicorn_worker import CLIENT_READ_TIMEOUT
from tests.integration.service import Service
from tests.support import callback_params, sid, signed_request


def raw_request(service: Service, payload: bytes, read_timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", service.port), timeout=read_timeout) as conn:
        conn.sendall(payload)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def stored_events(service: Service) -> int:
    service.wait_applied()
    with sqlite3.connect(service.store_url.removeprefix("sqlite:///")) as db:
        count: int = db.execute("SELECT count(*) FROM status_events").fetchone()[0]
        return count


def test_slow_and_silent_clients_do_not_hold_the_service(service: Service) -> None:
    headers = (
        f"POST /twilio/status HTTP/1.1\r\nHost: 127.0.0.1:{service.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n"
        "X-Twilio-Signature: abc=\r\n\r\n"
    ).encode()
    with ThreadPoolExecutor(max_workers=8) as pool:
        # More stalled clients than the 3 workers: half a body then silence, or nothing.
        stalled = [pool.submit(raw_request, service, headers + b"MessageSid=SM") for _ in range(3)]
        silent = [pool.submit(raw_request, service, b"") for _ in range(2)]
        started = time.monotonic()
        # A real callback still goes through once a worker has dropped its stalled client:
        # five hostile connections on three workers cost at most two read timeouts.
        response = service.post_callback(callback_params(sid("SM", 1), "sent"))
        assert response.status_code == 200
        assert time.monotonic() - started < CLIENT_READ_TIMEOUT * 2 + 10
        for future in stalled:
            assert future.result().startswith(b"HTTP/1.1 408")
        for future in silent:
            assert future.result() == b""  # closed without a word
    log = service.log()
    assert "Traceback" not in log
    assert "WORKER TIMEOUT" not in log


def signed_head_and_body(service: Service, message_sid: str) -> bytes:
    body, headers = signed_request(service.status_url, callback_params(message_sid, "sent"))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST /twilio/status HTTP/1.1\r\nHost: 127.0.0.1:{service.port}\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_answer(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):  # the worker closes after its answer
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_client_that_keeps_its_connection_open_does_not_hold_the_worker(
    service_factory: Callable[..., Service],
) -> None:
    """After its answer a worker closes the connection at once when the request was read to
    its end, instead of waiting for the client to close first (gunicorn's lingering close,
    which holds a sync worker for up to two seconds per such client)."""
    service = service_factory(workers=1)
    idle = []
    started = time.monotonic()
    for n in range(3):  # clients that read their 200 and keep the connection open
        conn = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        idle.append(conn)
        conn.sendall(signed_head_and_body(service, sid("SM", 10 + n)))
        assert read_answer(conn).startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < 1.5
    for conn in idle:
        conn.close()


def test_a_client_that_sends_more_than_its_request_still_reads_its_answer(
    service: Service,
) -> None:
    """Bytes past the request (a pipelined second request) make the worker linger as gunicorn
    does, so closing never resets the connection before the answer is read."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as conn:
        conn.sendall(signed_head_and_body(service, sid("SM", 20)) + b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.2)  # the answer is sent before this client reads anything
        answer = read_answer(conn)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert stored_events(service) == 1


def test_oversized_body_is_413_without_reading_it(service: Service) -> None:
    head = (
        f"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: {10**9}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: a\r\n\r\n"
    ).encode()
    assert raw_request(service, head + b"a=1").startswith(b"HTTP/1.1 413")


def test_bogus_host_header_is_403_not_500(service: Service) -> None:
    body = urlencode(callback_params(sid("SM", 1), "sent")).encode()
    head = (
        f"POST /twilio/status HTTP/1.1\r\nHost: [\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: a\r\n\r\n"
    ).encode()
    assert raw_request(service, head + body).startswith(b"HTTP/1.1 403")


def test_odd_bodies_get_clear_4xx(service: Service) -> None:
    url = service.status_url
    many_keys = {f"k{n}": "v" for n in range(5000)} | callback_params(sid("SM", 2), "sent")
    body, headers = signed_request(url, many_keys)
    assert requests.post(url, data=body, headers=headers, timeout=30).status_code == 400
    non_utf8 = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "a"}
    response = requests.post(url, data=b"MessageSid=\xff\xfe", headers=non_utf8, timeout=10)
    assert response.status_code == 400
    assert "UTF-8" in response.json()["description"]
    assert requests.post(url, json={"MessageSid": "SM1"}, timeout=10).status_code == 415
    assert requests.get(url, timeout=10).status_code == 405
    assert stored_events(service) == 0


def test_repeated_keys_are_signed_as_sent_and_the_first_value_recorded(service: Service) -> None:
    url = service.status_url
    pairs = [*callback_params(sid("SM", 3), "sent").items(), ("MessageStatus", "delivered")]
    body = urlencode(pairs).encode()
    signature = RequestValidator("12345").compute_signature(url, parse_form(body))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 200
    service.wait_applied()
    with sqlite3.connect(service.store_url.removeprefix("sqlite:///")) as db:
        assert db.execute("SELECT status FROM status_events").fetchall() == [("sent",)]


def test_unsigned_flood_is_refused_cheaply_and_records_nothing(service: Service) -> None:
    body = urlencode(callback_params(sid("SM", 4), "sent")).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    def flood(_: int) -> int:
        with requests.Session() as session:
            return session.post(
                service.status_url, data=body, headers=headers, timeout=10
            ).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(flood, range(1500)))
    elapsed = time.monotonic() - started
    assert set(codes) == {403}
    assert stored_events(service) == 0
    assert 'outcome="invalid_signature"} 1500.0' in service.metrics_text()
    assert elapsed < 60  # generous: catches a service that stalls, not one that is slow
