"""`twilio-status-exporter reconcile`: options, set-up, the summary, and `--every` looping.

Importing this module is cheap (argparse only): `serve` must be able to build the parser
before the multiprocess metrics directory exists, so the heavy imports happen in `run`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from exporter.ingest.applier import Applier
    from exporter.reconcile.api import MessagesApi
    from exporter.reconcile.engine import Reconciler, RunSummary, Window
    from exporter.settings import ApiCredentials, Settings
    from exporter.store import ReconcileStore

log = logging.getLogger("exporter.reconcile")
DEFAULT_STUCK_AFTER = "12h"  # Twilio: poll a message not delivered/undelivered within 12 h


class UsageError(ValueError):
    """A bad option or variable; the message names it and says what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `reconcile` options to `parser`."""
    add = parser.add_argument
    add("--store", metavar="URL", help="store URL, as the service uses [EXPORTER_STORE]")
    add(
        "--stuck-after",
        default=DEFAULT_STUCK_AFTER,
        metavar="DURATION",
        help="poll messages non-final for longer than this (default 12h); each is polled "
        "at most once per this interval",
    )
    add("--since", metavar="TIME", help="list messages sent from this UTC date or time")
    add("--until", metavar="TIME", help="... up to (excluding) this one (default: yesterday)")
    add("--no-list", action="store_true", help="only poll stuck messages; do not list")
    add("--rewalk", action="store_true", help="list a window again that a run completed")
    add("--messaging-service-sid", metavar="SID", help="only this Messaging Service's messages")
    add("--concurrency", type=_positive_int, default=4, metavar="N", help="parallel fetches (4)")
    add("--page-size", type=_page_size, default=1000, metavar="N", help="messages per page (1000)")
    add("--max-attempts", type=_positive_int, default=5, metavar="N", help="tries per request (5)")
    add("--api-base", metavar="URL", help="Twilio API base URL [TWILIO_API_BASE]")
    add("--every", metavar="DURATION", help="run forever, once per DURATION (e.g. 15m)")
    add("--metrics-port", type=int, metavar="PORT", help="with --every: serve /metrics here")
    add("--json", action="store_true", help="print the summary as JSON")
    add("-v", "--verbose", action="store_true", help="log each retry and skipped page")


def run(args: argparse.Namespace) -> int:
    """Run reconcile as `args` say; 0 when every run succeeded, 1 when one had errors."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from exporter.server.startup import store_command_settings
    from exporter.settings import ConfigError, api_credentials, twilio_api_base

    if args.verbose:  # urllib3's Retry, which does the retrying, logs each retry at debug
        logging.getLogger("urllib3.util.retry").setLevel(logging.DEBUG)
    try:
        every = _every(args)
        _window(args, datetime.now(UTC))  # a bad --since/--until fails now, not in a loop
    except UsageError as ex:
        _fail(str(ex))
    settings = store_command_settings(args.store)
    try:
        credentials = api_credentials(settings)
        api_base = twilio_api_base(args.api_base)
    except ConfigError as ex:
        _fail(str(ex))
    from exporter.store import StoreUnavailable

    try:
        return _serve(args, settings, _messages_api(args, credentials, api_base), every)
    except StoreUnavailable as ex:
        print(f"twilio-status-exporter: reconcile: store unavailable: {ex}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _serve(
    args: argparse.Namespace, settings: Settings, api: MessagesApi, every: float | None
) -> int:
    """Open everything once, then run once or every `every` seconds."""
    from prometheus_client import CollectorRegistry

    from exporter.ingest.applier import Applier
    from exporter.telemetry.metrics import Metrics, ReconcileCollector
    from exporter.telemetry.tracing import span_outbox_from_env

    store = _open_store(settings)
    # Per-status metrics of polled updates land here; with PROMETHEUS_MULTIPROC_DIR set to the
    # service's directory (same container) the service's /metrics merges them, so they are
    # configured as the service's are (tag labels, label value caps), exemplars too.
    registry = CollectorRegistry()
    metrics = Metrics.for_settings(registry, settings)
    # Spans of polled updates are queued in the store, for the service's ingester to export.
    applier = Applier(store, metrics, span_outbox_from_env(settings, metrics.spans_dropped))
    try:
        if every is None:
            summary = _reconciler(args, store, applier, api).run()
            _report(summary, args.json)
            return 0 if summary.run.succeeded else 1
        if args.metrics_port is not None:
            from prometheus_client import start_http_server

            on_error = metrics.store_errors("read").inc
            registry.register(ReconcileCollector(store.reconcile_totals, on_error))
            start_http_server(args.metrics_port, registry=registry)
        _loop(args, store, applier, api, every)
        return 0
    finally:
        metrics.exemplars.save()
        store.close()


def _loop(
    args: argparse.Namespace,
    store: ReconcileStore,
    applier: Applier,
    api: MessagesApi,
    every: float,
) -> None:
    """Run, wait, run again until SIGTERM; a failed run is logged and the next one retries."""
    from exporter.store import StoreUnavailable

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        started = time.monotonic()
        try:
            _report(_reconciler(args, store, applier, api).run(), args.json)
        except StoreUnavailable as ex:
            log.warning("reconcile run skipped, store unavailable: %s", ex)
        applier.metrics.exemplars.save()  # the run's last ones, not one interval later
        stop.wait(max(0.0, every - (time.monotonic() - started)))


def _open_store(settings: Settings) -> ReconcileStore:
    from exporter.settings import redact_url
    from exporter.store import ReconcileStore, StoreUnavailable, open_store

    try:
        store = open_store(settings.store_url, synchronous=settings.sqlite_synchronous)
    except (StoreUnavailable, OSError, ValueError) as ex:
        _fail(f"EXPORTER_STORE: cannot open {redact_url(settings.store_url)}: {ex}")
    if not isinstance(store, ReconcileStore):
        _fail(f"EXPORTER_STORE: {redact_url(settings.store_url)} does not support reconcile yet")
    return store


def _messages_api(
    args: argparse.Namespace, credentials: ApiCredentials, api_base: str | None
) -> MessagesApi:
    from exporter.reconcile.api import ApiHttpClient, MessagesApi, RetryPolicy, make_client

    policy = RetryPolicy(attempts=args.max_attempts)
    http_client = ApiHttpClient(api_base=api_base, policy=policy)
    return MessagesApi(make_client(credentials, http_client))


def _reconciler(
    args: argparse.Namespace, store: ReconcileStore, applier: Applier, api: MessagesApi
) -> Reconciler:
    """A run's reconciler; its default window (yesterday) moves on with the clock."""
    from exporter.reconcile.engine import ReconcileOptions, Reconciler
    from exporter.settings import parse_duration

    options = ReconcileOptions(
        stuck_after=parse_duration(args.stuck_after),
        window=None if args.no_list else _window(args, datetime.now(UTC)),
        concurrency=args.concurrency,
        page_size=args.page_size,
        messaging_service_sid=args.messaging_service_sid,
        rewalk=args.rewalk,
    )
    return Reconciler(store, applier, api, options)


def _window(args: argparse.Namespace, now: datetime) -> Window:
    """--since/--until, each defaulting from the other; neither: yesterday (UTC)."""
    from exporter.reconcile.engine import Window

    since = _moment("--since", args.since)
    until = _moment("--until", args.until)
    if since is None:
        end = until or now.replace(hour=0, minute=0, second=0, microsecond=0)
        since, until = end - timedelta(days=1), end
    elif until is None:
        until = min(since + timedelta(days=1), now)
    if since >= until:
        raise UsageError("--since must be before --until")
    return Window(since, until)


def _moment(flag: str, text: str | None) -> datetime | None:
    """A UTC date (2026-11-22) or date and time (2026-11-22T06:00:00Z)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{flag}: {text!r} is not a date like 2026-11-22 or a time like 2026-11-22T06:00:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _every(args: argparse.Namespace) -> float | None:
    from exporter.settings import parse_duration

    try:
        parse_duration(args.stuck_after)
        every = None if args.every is None else parse_duration(args.every)
    except ValueError as ex:
        raise UsageError(f"--stuck-after/--every: {ex}") from None
    if every is not None and every < 1:
        raise UsageError("--every: must be at least 1s")
    if args.metrics_port is not None and every is None:
        raise UsageError("--metrics-port: only with --every (a single run exits at once)")
    return every


def _report(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary_json(summary), indent=2))
    else:
        print(summary_text(summary))
    sys.stdout.flush()


def summary_text(summary: RunSummary) -> str:
    run = summary.run
    lines = []
    if summary.window is not None:
        state = (
            "already complete"
            if summary.list_skipped
            else ("complete" if summary.list_completed else "incomplete, resumes next run")
        )
        pages = f"{summary.pages} page{'' if summary.pages == 1 else 's'}"
        lines.append(f"listed {summary.window}: {pages}, {state}")
    figures = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in summary.figures.items())
    duration = (run.finished_at or run.started_at) - run.started_at
    lines.append(f"{figures} ({duration:.1f}s)")
    if summary.missed_sids:
        more = run.missed - len(summary.missed_sids)
        lines.append(
            "missed callbacks: "
            + " ".join(summary.missed_sids)
            + (f" and {more} more" if more > 0 else "")
        )
    if summary.failure:
        lines.append(f"failed: {summary.failure}")
    return "\n".join(f"reconcile: {line}" for line in lines)


def summary_json(summary: RunSummary) -> dict[str, object]:
    run = summary.run
    return {
        "succeeded": run.succeeded,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "window": None if summary.window is None else str(summary.window),
        "list_completed": summary.list_completed,
        "pages": summary.pages,
        **summary.figures,
        "missed_sids": summary.missed_sids,
        "failure": summary.failure,
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _page_size(text: str) -> int:
    value = _positive_int(text)
    if value > 1000:
        raise argparse.ArgumentTypeError("Twilio pages hold at most 1000 messages")
    return value


def _fail(message: str) -> NoReturn:
    from exporter.server.startup import fail

    fail(message)
