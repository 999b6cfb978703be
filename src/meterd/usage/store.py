"""Event-store protocols: the sink writes through EventWriter, the API reads through EventReader."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from meterd.ingest.journal import JournalBatch
from meterd.meters.model import Meter
from meterd.usage.builder import CompiledQuery
from meterd.usage.rollup import Rollup


@dataclass(frozen=True)
class StoredEvent:
    namespace: str
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: str
    ingested_at: datetime
    stored_at: datetime
    seq: int


@dataclass(frozen=True)
class EventFilter:
    namespace: str
    start: datetime | None = None
    end: datetime | None = None
    ingested_from: datetime | None = None
    ingested_to: datetime | None = None
    id_contains: str | None = None
    subjects: Sequence[str] | None = None
    # v2 filters: column -> FilterString (id, source, subject, type)
    string_filters: dict[str, dict[str, Any]] | None = None
    after: tuple[int, int] | None = None  # v2 cursor: (time µs, seq), strictly older rows follow
    limit: int = 100


class EventWriter(Protocol):
    def write(self, batch: JournalBatch) -> None:
        """Insert the batch; inserting the same batch (same token) twice stores it once."""
        ...


class EventReader(Protocol):
    def run(self, query: CompiledQuery) -> list[tuple[Any, ...]]: ...

    def rollup_for(self, meter: Meter) -> Rollup | None:
        """The meter's rollup when it is ready to answer queries."""
        ...

    def list_events(self, flt: EventFilter) -> list[StoredEvent]: ...

    def distinct_subjects(
        self, namespace: str, event_type: str, start: datetime | None, end: datetime | None
    ) -> list[str]: ...

    def distinct_values(
        self, namespace: str, event_type: str, path: str, start: datetime | None, end: datetime | None
    ) -> list[str]: ...

    def check_json_path(self, path: str) -> bool: ...

    def count_events(self, namespace: str, since: datetime) -> dict[str, int]: ...
