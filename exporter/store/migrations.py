"""Schema migrations, applied the same way on every backend.

Each backend keeps a list of numbered steps (1, 2, 3, ...) and records in the database the
number of the last step applied. On start the store reads that number, refuses a database
newer than the steps it knows, and applies the missing steps in order, each together with
the number that records it, while holding its backend's lock (SQLite's write flock,
PostgreSQL's advisory lock), so workers and replicas starting at once never race here.

Adding to a schema is one more `Migration` at the end of that backend's list; a step that
was released is never edited, since databases that already ran it will not run it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.store import StoreUnavailable


@dataclass(frozen=True)
class Migration:
    """One schema step: its number, and the statements (one script) that make it."""

    version: int
    script: str


class SchemaTooNew(StoreUnavailable):
    """The database was upgraded by a newer release than this one: refuse to touch it."""


class VersionedSchema(Protocol):
    """How one backend reads and advances the version recorded in its database."""

    def read_version(self) -> int:
        """The number of the last step applied; 0 for an empty database."""
        ...

    def apply(self, step: Migration) -> None:
        """Run the step and record its number, both or neither."""
        ...


def latest_version(steps: Sequence[Migration]) -> int:
    """The version a database reaches once every step ran; checks the steps are 1..n."""
    numbers = [step.version for step in steps]
    if numbers != list(range(1, len(steps) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3, ... in order, not {numbers}")
    return len(steps)


def pending_steps(backend: str, steps: Sequence[Migration], current: int) -> list[Migration]:
    """The steps a database at version `current` still needs, in order."""
    latest = latest_version(steps)
    if current > latest:
        raise SchemaTooNew(
            f"the {backend} database is at schema version {current}, but this release knows "
            f"versions up to {latest}: run a release at least as new as the one that "
            "upgraded it (a database is never downgraded)"
        )
    return [step for step in steps if step.version > current]


def upgrade(backend: str, steps: Sequence[Migration], schema: VersionedSchema) -> int:
    """Apply the missing steps; returns the version the database is at. The caller holds
    the backend's migration lock, so the version read here cannot change underneath."""
    for step in pending_steps(backend, steps, schema.read_version()):
        schema.apply(step)
    return latest_version(steps)
