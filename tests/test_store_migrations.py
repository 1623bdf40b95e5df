"""The migration driver both backends share: pending steps in order, versions recorded, a
database newer than the code refused."""

from __future__ import annotations

import pytest

from exporter.store.migrations import (
    Migration,
    SchemaTooNew,
    latest_version,
    pending_steps,
    upgrade,
)
from exporter.store.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from exporter.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

STEPS = (Migration(1, "one"), Migration(2, "two"), Migration(3, "three"))


class RecordingSchema:
    """A database that only keeps its version and the scripts it ran."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.ran: list[str] = []

    def read_version(self) -> int:
        return self.version

    def apply(self, step: Migration) -> None:
        self.ran.append(step.script)
        self.version = step.version


def test_empty_database_runs_every_step_in_order() -> None:
    schema = RecordingSchema(0)
    assert upgrade("test", STEPS, schema) == 3
    assert schema.ran == ["one", "two", "three"]


def test_older_database_runs_only_the_missing_steps() -> None:
    schema = RecordingSchema(1)
    assert upgrade("test", STEPS, schema) == 3
    assert schema.ran == ["two", "three"]


def test_current_database_runs_nothing() -> None:
    schema = RecordingSchema(3)
    assert upgrade("test", STEPS, schema) == 3
    assert schema.ran == []


def test_newer_database_is_refused_naming_both_versions() -> None:
    with pytest.raises(SchemaTooNew, match=r"test database is at schema version 4.* up to 3"):
        upgrade("test", STEPS, RecordingSchema(4))


def test_steps_out_of_sequence_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"numbered 1, 2, 3"):
        pending_steps("test", (Migration(1, "one"), Migration(3, "three")), 0)


@pytest.mark.parametrize("steps", [SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS], ids=["sqlite", "pg"])
def test_each_backend_numbers_its_steps_from_one(steps: tuple[Migration, ...]) -> None:
    assert latest_version(steps) == len(steps)
