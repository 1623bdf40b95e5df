"""`twilio-status-exporter simulate`: send realistic, signed status traffic to the exporter:
StatusCallbacks, Event Streams events, or both.

For demos (start the service, start the simulator, open the dashboards) and as the load
generator of the benchmark and the end-to-end tests. The engine is `exporter.simulation`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

from exporter.settings import signing_auth_token
from exporter.simulation import (
    CallbackSender,
    Input,
    ScheduledCallback,
    TrafficProfile,
    events_url_for,
    generate_callbacks,
    generate_traffic,
    sign,
    summary_json,
    summary_table,
)
from exporter.simulation.batching import DEFAULT_BATCH
from exporter.simulation.lifecycles import regions_for
from exporter.simulation.model import QUERY_FEATURES
from exporter.simulation.report import exit_code, progress_line

__all__ = ["ScheduledCallback", "add_arguments", "generate_callbacks", "run", "sign"]

DEFAULT_URL = "http://127.0.0.1:8080/twilio/status"
INPUTS = {
    "callbacks": frozenset({Input.CALLBACKS}),
    "events": frozenset({Input.EVENTS}),
    "both": frozenset({Input.CALLBACKS, Input.EVENTS}),
}
EXAMPLES = """examples:
  demo, a minute of lifecycle per second until ^C:
    twilio-status-exporter simulate
  load, 100,000 messages as fast as possible on 16 connections:
    twilio-status-exporter simulate --messages 100000 --rate 0 --concurrency 16 --quiet
  exercise the 403 path and duplicates, reproducibly:
    twilio-status-exporter simulate --messages 500 --invalid-signature-rate 0.05 \\
      --duplicate-rate 0.1 --seed 42 --summary-json summary.json
  Event Streams and callbacks for every status, events 20 to a request:
    twilio-status-exporter simulate --input both --event-batch 20 --messages 1000

Exit status: 0 when every answer was the expected one; 1 on any 5xx, connection failure,
rejected valid callback or event (or one a 200 reports unusable) or accepted forged one;
2 on bad options."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `simulate` options to `parser`."""
    parser.description = (
        "Send realistic, correctly signed Twilio status traffic (StatusCallbacks, Event Streams "
        "events, or both) to the exporter."
    )
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add = parser.add_argument
    add("--url", default=DEFAULT_URL, help=f"callback URL to POST to (default {DEFAULT_URL})")
    add(
        "--input",
        choices=sorted(INPUTS),
        default="callbacks",
        help="how statuses are reported: StatusCallbacks, Event Streams events, or both, "
        "each status then reported twice (callbacks)",
    )
    add(
        "--events-url",
        metavar="URL",
        help="Event Streams sink URL to POST to (default: --url with /twilio/status replaced "
        "by /twilio/events)",
    )
    add(
        "--event-batch",
        type=int,
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"most events per Event Streams request ({DEFAULT_BATCH})",
    )
    add(
        "--auth-token",
        metavar="TOKEN",
        help="token to sign with (default: first of env TWILIO_AUTH_TOKEN)",
    )
    add(
        "--rate",
        type=float,
        default=20.0,
        metavar="PER_SECOND",
        help="statuses/s, callbacks and events together; 0 = as fast as possible (20)",
    )
    add(
        "--messages",
        type=int,
        metavar="N",
        help="messages to simulate (default: until --duration or ^C)",
    )
    add("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    add("--concurrency", type=int, default=4, metavar="N", help="parallel connections (4)")
    add("--seed", type=int, metavar="N", help="random seed; the same seed sends the same traffic")
    add(
        "--time-compression",
        type=float,
        default=60.0,
        metavar="FACTOR",
        help="lifecycle seconds per real second (60: a minute of lifecycle per second)",
    )
    add(
        "--duplicate-rate",
        type=float,
        default=0.02,
        metavar="SHARE",
        help="share of callbacks and of events repeated (0.02)",
    )
    add(
        "--out-of-order-rate",
        type=float,
        metavar="SHARE",
        default=0.02,
        help="share of callbacks and of events overtaken by a later status of their message (0.02)",
    )
    add(
        "--invalid-signature-rate",
        type=float,
        metavar="SHARE",
        default=0.0,
        help="share of callbacks and of events also sent with a wrong signature, expecting 403 (0)",
    )
    add(
        "--initial-status-rate",
        type=float,
        metavar="SHARE",
        default=0.02,
        help="share of messages whose initial status (queued/accepted/scheduled) is sent "
        "as a callback (0.02; Event Streams always reports queued)",
    )
    add(
        "--with-query",
        default=",".join(sorted(QUERY_FEATURES)),
        metavar="LIST",
        help="callback URL query parameters: any of created,tags,traceparent, or 'none'",
    )
    add(
        "--countries",
        metavar="LIST",
        help="destination regions, e.g. US,GB,IN, or 'all' (default: a mix)",
    )
    add(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="per-request timeout in seconds (10)",
    )
    add("--summary-json", type=Path, metavar="PATH", help="also write the summary as JSON")
    add("--quiet", action="store_true", help="no progress line, summary only")


def run(args: argparse.Namespace) -> int:
    """Run the simulation described by `args`; 0 when every answer was as expected."""
    try:
        token, profile = _token(args), _profile(args)
        events_url = args.events_url or events_url_for(args.url)
        sender = CallbackSender(
            args.url,
            token,
            args.concurrency,
            args.timeout,
            events_url=events_url,
            event_batch=args.event_batch,
        )
    except ValueError as ex:
        print(f"simulate: {ex}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    messages = args.messages
    if messages is None and args.duration is None and not args.quiet:
        print("simulate: no --messages or --duration: running until ^C", file=sys.stderr)
    if not args.quiet:
        targets = [
            url
            for url, input_ in ((args.url, Input.CALLBACKS), (events_url, Input.EVENTS))
            if input_ in profile.inputs
        ]
        print(f"simulate: seed {seed}, sending to {' and '.join(targets)}", file=sys.stderr)
    traffic = generate_traffic(seed, messages, profile)
    done = threading.Event()
    progress = None
    if not args.quiet:
        progress = threading.Thread(target=_report_progress, args=(sender, done), daemon=True)
        progress.start()
    results = sender.run(traffic, paced=profile.rate > 0, duration=args.duration)
    done.set()
    if progress is not None:
        progress.join()
    print(summary_table(results))
    if args.summary_json is not None:
        data = summary_json(results) | {
            "seed": seed,
            "input": args.input,
            "url": args.url,
            "events_url": events_url,
        }
        args.summary_json.write_text(json.dumps(data, indent=2) + "\n")
    return exit_code(results)


def _token(args: argparse.Namespace) -> str:
    """The first of --auth-token's tokens, else of TWILIO_AUTH_TOKEN's."""
    flag_tokens = [token.strip() for token in (args.auth_token or "").split(",") if token.strip()]
    token = flag_tokens[0] if flag_tokens else signing_auth_token()
    if not token:
        raise ValueError("no auth token: pass --auth-token or set TWILIO_AUTH_TOKEN")
    return token


def _profile(args: argparse.Namespace) -> TrafficProfile:
    if args.messages is not None and args.messages < 1:
        raise ValueError(f"--messages must be >= 1, got {args.messages}")
    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration must be > 0 seconds, got {args.duration}")
    features = {f.strip() for f in args.with_query.split(",") if f.strip()} - {"none"}
    return TrafficProfile(
        rate=args.rate,
        time_compression=args.time_compression,
        duplicate_rate=args.duplicate_rate,
        out_of_order_rate=args.out_of_order_rate,
        invalid_signature_rate=args.invalid_signature_rate,
        initial_status_rate=args.initial_status_rate,
        query=frozenset(features),
        regions=regions_for(args.countries),
        epoch=time.time(),
        inputs=INPUTS[args.input],
    )


def _report_progress(sender: CallbackSender, done: threading.Event) -> None:
    live = sys.stderr.isatty()
    interval = 1.0 if live else 10.0
    while not done.wait(interval):
        line = progress_line(sender.snapshot())
        print(f"\r\x1b[2K{line}" if live else line, end="" if live else "\n", file=sys.stderr)
    if live:
        print(file=sys.stderr)
