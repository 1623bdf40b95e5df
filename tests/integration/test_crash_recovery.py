"""Crashes in the middle of concurrent load: a worker SIGKILLed, then the whole service.
Every callback that got a 200 is in the store exactly once, and what Twilio retries after the
restart is neither lost nor counted twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service import Service
from tests.support import callback_params, sid, wait_for

Callback = tuple[str, str]


def load(service: Service, callbacks: list[Callback], answered: dict[Callback, int]) -> None:
    """Send callbacks from 12 threads; remember each one's status code (0 = no answer)."""
    lock = threading.Lock()

    def send(callback: Callback) -> None:
        try:
            code = service.post_callback(callback_params(*callback)).status_code
        except requests.RequestException:
            code = 0
        with lock:
            answered[callback] = code

    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(send, callbacks))


def stored(service: Service) -> list[Callback]:
    """The statuses applied: recorded in the lifecycle history."""
    with sqlite3.connect(service.store_url.removeprefix("sqlite:///")) as db:
        return db.execute("SELECT message_sid, status FROM status_events").fetchall()


def accepted_not_applied(service: Service) -> list[Callback]:
    """The callbacks durably in the inbox, waiting for the ingester."""
    with sqlite3.connect(service.store_url.removeprefix("sqlite:///")) as db:
        bodies = db.execute("SELECT body FROM inbox WHERE source = 'callback'").fetchall()
    forms = [parse_qs(body.decode()) for (body,) in bodies]
    return [(form["MessageSid"][0], form["MessageStatus"][0]) for form in forms]


def status_total(service: Service) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(service.metrics_text())
        for sample in family.samples
        if sample.name == "twilio_message_status_total"
    )


def test_no_acknowledged_callback_is_lost_across_worker_and_service_crashes(
    service_factory: Callable[..., Service],
) -> None:
    first = service_factory(workers=3)
    callbacks = [(sid("SM", n), s) for n in range(400) for s in ("queued", "sent", "delivered")]
    answered: dict[Callback, int] = {}
    loader = threading.Thread(target=load, args=(first, callbacks, answered))
    loader.start()
    wait_for(lambda: len(answered) > 300, what="load to get going")
    os.kill(first.worker_pids()[0], signal.SIGKILL)  # one worker dies mid-request
    wait_for(lambda: len(answered) > 800, what="load to continue after the worker crash")
    first.kill()  # then the whole service, master and workers, with no chance to clean up
    loader.join(timeout=120)

    acknowledged = {c for c, code in answered.items() if code == 200}
    assert 800 <= len(acknowledged) < len(callbacks)
    records = stored(first)
    assert len(records) == len(set(records))  # exactly once
    # Every 200 was committed: applied, or in the inbox for the next ingester.
    assert acknowledged <= set(records) | set(accepted_not_applied(first))

    # Restart on the same store; Twilio retries everything that did not get a 200.
    second = service_factory(workers=3, store_url=first.store_url)
    unanswered = [c for c in callbacks if answered.get(c) != 200]
    recorded_before = set(records)
    retried: dict[Callback, int] = {}
    load(second, unanswered, retried)
    assert set(retried.values()) == {200}

    second.wait_applied()
    final = stored(second)
    assert sorted(final) == sorted(set(callbacks))  # nothing lost, nothing twice
    # Counters restart with the service; those after the restart count only what was new.
    assert status_total(second) == len(set(callbacks) - recorded_before)
    metrics = second.metrics_text()
    assert "twilio_messages_in_flight" in metrics
    assert "Traceback" not in second.log()
