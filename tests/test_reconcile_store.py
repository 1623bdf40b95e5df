"""Reconcile's bookkeeping, run against every backend: stuck messages with keyset paging,
polls, checkpoints, run figures. Both stores must answer the same."""

from __future__ import annotations

import pytest

from exporter.model import Checkpoint, ReconcileRun
from exporter.store import ReconcileStore, Store
from tests.support import sid
from tests.test_store import T0, make_event


@pytest.fixture
def reconcile_store(store: Store) -> ReconcileStore:
    assert isinstance(store, ReconcileStore)
    return store


def test_stuck_messages_are_in_flight_old_unpolled_and_paged_by_sid(
    reconcile_store: ReconcileStore,
) -> None:
    for n in range(1, 6):
        reconcile_store.record(make_event(n, "sent", T0))
    reconcile_store.record(make_event(6, "delivered", T0))  # final: never stuck
    reconcile_store.record(make_event(7, "sent", T0 + 500))  # too recent
    reconcile_store.mark_polled([sid("SM", 5)], T0 + 90)  # asked about lately
    first = reconcile_store.stuck_messages(T0 + 100, T0 + 50, limit=2)
    assert [m.message_sid for m in first] == [sid("SM", 1), sid("SM", 2)]
    rest = reconcile_store.stuck_messages(T0 + 100, T0 + 50, after_sid=first[-1].message_sid)
    assert [m.message_sid for m in rest] == [sid("SM", 3), sid("SM", 4)]
    assert reconcile_store.stuck_messages(T0 + 100, T0 + 50, account_sid=sid("AC", 2)) == []
    mine = reconcile_store.stuck_messages(T0 + 100, T0 + 50, account_sid=sid("AC", 1))
    assert len(mine) == 4
    assert reconcile_store.prune_polls(T0 + 91) == 1
    assert len(reconcile_store.stuck_messages(T0 + 100, T0 + 50)) == 5


def test_known_messages_have_their_state_and_every_status(
    reconcile_store: ReconcileStore,
) -> None:
    reconcile_store.record(make_event(1, "sent", T0))
    reconcile_store.record(make_event(1, "delivered", T0 + 1))
    known = reconcile_store.known_messages([sid("SM", 1), sid("SM", 2)])
    assert list(known) == [sid("SM", 1)]
    assert known[sid("SM", 1)].message.status == "delivered"
    assert known[sid("SM", 1)].statuses == {"sent", "delivered"}


def test_checkpoints_are_saved_and_replaced(reconcile_store: ReconcileStore) -> None:
    assert reconcile_store.load_checkpoint("list:AC:1:2") is None
    reconcile_store.save_checkpoint(Checkpoint("list:AC:1:2", "/page/2", False, T0))
    reconcile_store.save_checkpoint(Checkpoint("list:AC:1:2", None, True, T0 + 1))
    assert reconcile_store.load_checkpoint("list:AC:1:2") == Checkpoint(
        "list:AC:1:2", None, True, T0 + 1
    )


def test_run_figures_add_up_and_crashed_runs_count_as_neither(
    reconcile_store: ReconcileStore,
) -> None:
    assert reconcile_store.reconcile_totals().runs_succeeded == 0
    run_id = reconcile_store.save_reconcile_run(ReconcileRun(started_at=T0))
    assert (
        reconcile_store.save_reconcile_run(
            ReconcileRun(T0, T0 + 4, True, checked=10, updated=3, id=run_id)
        )
        == run_id
    )
    reconcile_store.save_reconcile_run(ReconcileRun(T0 + 10, T0 + 12, False, errors=2))
    reconcile_store.save_reconcile_run(ReconcileRun(T0 + 20, checked=5))  # crashed
    totals = reconcile_store.reconcile_totals()
    assert (totals.runs_succeeded, totals.runs_failed) == (1, 1)
    assert totals.messages["checked"] == 15 and totals.messages["errors"] == 2
    assert (totals.last_run_at, totals.last_success_at) == (T0 + 12, T0 + 4)
    assert totals.last_duration == 2
