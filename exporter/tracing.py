"""Message traces: the interface the web layer calls. Issue #3 fills in OTLP export."""

from __future__ import annotations

from typing import Protocol

from exporter.events import StatusEvent
from exporter.store import MessageState, Recorded


class MessageTracer(Protocol):
    """Turns recorded lifecycle steps into spans. Must never raise or block a callback."""

    def record(self, event: StatusEvent, recorded: Recorded) -> None: ...

    def record_stale(self, message: MessageState, now: float) -> None: ...

    def shutdown(self) -> None: ...


class NoTracer:
    """Tracing switched off (OTEL_TRACES_EXPORTER=none)."""

    def record(self, event: StatusEvent, recorded: Recorded) -> None:
        pass

    def record_stale(self, message: MessageState, now: float) -> None:
        pass

    def shutdown(self) -> None:
        pass


def tracer_from_env(settings: object, spans_dropped: object) -> MessageTracer:
    """The tracer the OTEL_* variables ask for (OTLP export arrives with issue #3)."""
    return NoTracer()
