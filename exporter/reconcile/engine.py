"""One reconcile run: walk Twilio's list for a window, then poll the messages still stuck.

The list comes first: one request answers for up to a thousand messages, so the stuck
messages it covers need no fetch of their own. Every status the API reports that the store
lacks goes through the `Applier`, as the ingester applies a callback, marked `source=poll`.

Resumable: the walk saves the next page's URL after each page, and the run's figures after
each page and batch. A crash repeats at most one page or batch, and repeating is harmless:
recording is idempotent per (MessageSid, status), and a message added by the first attempt is
known to the second, so it is not counted as missed twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from exporter.ingest.applier import Applier
from exporter.inputs.rest_poll import ApiMessage, poll_event, should_record
from exporter.lifecycle import in_flight
from exporter.model import Checkpoint, MessageState, ReconcileRun
from exporter.reconcile.api import ApiError, CredentialsRejected, ListPage, MessagesApi
from exporter.store import ReconcileStore

log = logging.getLogger(__name__)
RESULTS = ("checked", "updated", "missed", "still_stuck", "not_found", "error")
MISSED_SIDS_KEPT = 100  # listed in the summary; the store holds them all (source=poll)


@dataclass(frozen=True)
class Window:
    """The date_sent range whose listing is reconciled: since <= date_sent < until (UTC)."""

    since: datetime
    until: datetime

    def contains(self, moment: datetime | None) -> bool:
        return moment is not None and self.since <= moment < self.until

    def checkpoint_name(self, account_sid: str) -> str:
        return f"list:{account_sid}:{_iso(self.since)}:{_iso(self.until)}"

    def __str__(self) -> str:
        return f"{_iso(self.since)}..{_iso(self.until)}"


@dataclass(frozen=True)
class ReconcileOptions:
    stuck_after: float = 12 * 3600.0
    window: Window | None = None  # None: poll stuck messages only
    concurrency: int = 4
    page_size: int = 1000
    batch_size: int = 100
    messaging_service_sid: str | None = None  # only reconcile this service's messages
    rewalk: bool = False  # walk a window again even if an earlier run completed it


@dataclass
class RunSummary:
    """What one run did; `run` is the part saved in the store."""

    run: ReconcileRun
    window: Window | None = None
    pages: int = 0
    list_completed: bool = False
    list_skipped: bool = False  # an earlier run completed this window
    missed_sids: list[str] = field(default_factory=list)
    failure: str | None = None  # why the run stopped early, if it did

    def count(self, result: str, n: int = 1) -> None:
        column = "errors" if result == "error" else result
        self.run = replace(self.run, **{column: getattr(self.run, column) + n})

    @property
    def figures(self) -> dict[str, int]:
        run = self.run
        return {
            "checked": run.checked,
            "updated": run.updated,
            "missed": run.missed,
            "still_stuck": run.still_stuck,
            "not_found": run.not_found,
            "error": run.errors,
        }


class Reconciler:
    """Brings the store in line with what Twilio's API reports."""

    def __init__(
        self,
        store: ReconcileStore,
        applier: Applier,
        api: MessagesApi,
        options: ReconcileOptions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._applier = applier
        self._api = api
        self._options = options
        self._clock = clock

    def run(self) -> RunSummary:
        """One full run; its figures are in the store whatever happens short of a crash."""
        now = self._clock()
        summary = RunSummary(ReconcileRun(started_at=now), window=self._options.window)
        summary.run = replace(summary.run, id=self._store.save_reconcile_run(summary.run))
        try:
            if self._options.window is not None:
                self._walk(self._options.window, summary, now)
            self._poll_stuck(summary, now)
            self._store.prune_polls(now - self._options.stuck_after)
        except CredentialsRejected as ex:
            summary.failure = str(ex)
        succeeded = summary.failure is None and summary.run.errors == 0
        summary.run = replace(summary.run, finished_at=self._clock(), succeeded=succeeded)
        self._store.save_reconcile_run(summary.run)
        return summary

    def _walk(self, window: Window, summary: RunSummary, now: float) -> None:
        name = window.checkpoint_name(self._api.account_sid)
        checkpoint = None if self._options.rewalk else self._store.load_checkpoint(name)
        if checkpoint is not None and checkpoint.completed:
            summary.list_skipped = summary.list_completed = True
            return
        try:
            page = self._start_walk(window, checkpoint)
            while True:
                self._reconcile_listed(page.messages, window, summary, now)
                summary.pages += 1
                next_url = page.next_page_url
                self._store.save_checkpoint(
                    Checkpoint(name, next_url, next_url is None, self._clock())
                )
                self._store.save_reconcile_run(summary.run)
                if next_url is None:
                    summary.list_completed = True
                    return
                page = self._api.page(next_url)
        except CredentialsRejected:
            raise
        except ApiError as ex:
            # The checkpoint still points at the page that failed: the next run resumes there.
            log.warning("listing %s stopped: %s", window, ex)
            summary.count("error")
            summary.failure = f"listing stopped: {ex}"

    def _start_walk(self, window: Window, checkpoint: Checkpoint | None) -> ListPage:
        if checkpoint is not None and checkpoint.next_page_url:
            try:
                return self._api.page(checkpoint.next_page_url)
            except CredentialsRejected:
                raise
            except ApiError as ex:
                if ex.status is None or ex.status == 429 or ex.status >= 500:
                    raise
                # A page token Twilio no longer accepts: walk again from the start, which
                # repeats nothing harmful (recording is idempotent).
                log.warning("cannot resume listing %s (%s); starting over", window, ex)
        return self._api.first_page(window.since, window.until, self._options.page_size)

    def _reconcile_listed(
        self, messages: Sequence[ApiMessage], window: Window, summary: RunSummary, now: float
    ) -> None:
        listed = [m for m in messages if self._wanted(m) and window.contains(m.date_sent)]
        known = self._store.known_messages([m.sid for m in listed])
        polled = []
        for message in listed:
            summary.count("checked")
            entry = known.get(message.sid)
            if entry is None:
                self._add_missed(message, summary, now)
                continue
            if in_flight(entry.message):
                polled.append(message.sid)
            self._apply(message, entry.message, entry.statuses, summary, now)
        if polled:  # the listing is as fresh as a fetch: no need to poll these again soon
            self._store.mark_polled(polled, now)

    def _poll_stuck(self, summary: RunSummary, now: float) -> None:
        cutoff = now - self._options.stuck_after
        after = ""
        with ThreadPoolExecutor(self._options.concurrency, "reconcile-fetch") as pool:
            while True:
                batch = self._store.stuck_messages(
                    cutoff,
                    cutoff,
                    account_sid=self._api.account_sid,
                    after_sid=after,
                    limit=self._options.batch_size,
                )
                if not batch:
                    return
                after = batch[-1].message_sid
                self._poll_batch(pool, batch, summary, now)
                self._store.save_reconcile_run(summary.run)

    def _poll_batch(
        self,
        pool: ThreadPoolExecutor,
        batch: Sequence[MessageState],
        summary: RunSummary,
        now: float,
    ) -> None:
        """Fetch a batch on the pool's threads; record on this one (one writer is enough)."""
        futures = {pool.submit(self._api.fetch, m.message_sid): m for m in batch}
        known = self._store.known_messages([m.message_sid for m in batch])
        polled = []
        try:
            for future in as_completed(futures):
                state = futures[future]
                try:
                    fetched = future.result()
                except CredentialsRejected:
                    raise
                except ApiError as ex:  # not marked polled, so the next run asks again
                    log.warning("poll %s failed: %s", state.message_sid, ex)
                    summary.count("error")
                    continue
                polled.append(state.message_sid)
                if fetched is None:
                    summary.count("not_found")
                    continue
                summary.count("checked")
                entry = known.get(state.message_sid)
                statuses = entry.statuses if entry else frozenset({state.status})
                self._apply(fetched, entry.message if entry else state, statuses, summary, now)
        except CredentialsRejected:
            _cancel(futures)
            raise
        finally:
            self._store.mark_polled(polled, now)

    def _apply(
        self,
        message: ApiMessage,
        state: MessageState,
        statuses: frozenset[str],
        summary: RunSummary,
        now: float,
    ) -> None:
        """Record the API's status if it is news; count the message if it stays stuck."""
        was_stuck = in_flight(state) and state.updated_at < now - self._options.stuck_after
        if should_record(state.status, statuses, message.status):
            recorded = self._applier.apply([poll_event(message, now)])[0]
            if not recorded.duplicate:
                summary.count("updated")
            state = recorded.message
        if was_stuck and in_flight(state):
            summary.count("still_stuck")

    def _add_missed(self, message: ApiMessage, summary: RunSummary, now: float) -> None:
        recorded = self._applier.apply([poll_event(message, now)])[0]
        if recorded.duplicate:  # its callback arrived a moment ago
            return
        summary.count("missed")
        if len(summary.missed_sids) < MISSED_SIDS_KEPT:
            summary.missed_sids.append(message.sid)
        # Saved at once (missed messages are rare): after a crash this message is known, so
        # the run that resumes could never count it again.
        self._store.save_reconcile_run(summary.run)

    def _wanted(self, message: ApiMessage) -> bool:
        service = self._options.messaging_service_sid
        return message.outbound and (service is None or message.messaging_service_sid == service)


def _cancel(futures: Iterable[Future[ApiMessage | None]]) -> None:
    for future in futures:
        future.cancel()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
