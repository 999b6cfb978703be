"""The ingest journal: where an event is durable before its 204, and where dedup is decided.

Implementations: meterd.backends.sqlite.journal (embedded). The sink drains a journal into the event store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from meterd.ingest.events import EventRecord

# One journal row as the sink sees it:
# (seq, namespace, id, source, type, subject, time_us, data, ingested_us)
JournalRow = tuple[int, str, str, str, str, str, int, bytes, int]
ROW_COLUMNS = ("seq", "namespace", "id", "source", "type", "subject", "time", "data", "ingested_at")


@dataclass(frozen=True, slots=True)
class AppendResult:
    accepted: int  # new events written
    duplicates: int  # events whose (namespace, source, id) was already seen in the dedup window


@dataclass(frozen=True, slots=True)
class JournalBatch:
    """A range of journal rows handed to the sink. `token` is stable across replays of the same range."""

    first_seq: int
    last_seq: int
    rows: Sequence[JournalRow]

    @property
    def token(self) -> str:
        return f"journal:{self.first_seq}-{self.last_seq}"


class Journal(Protocol):
    async def append(self, namespace: str, events: Sequence[EventRecord]) -> AppendResult:
        """Return only once the new events are durable; duplicates are dropped in the same step."""
        ...

    def depth(self) -> int:
        """Events written but not yet handed to the event store."""
        ...

    def healthy(self) -> bool: ...

    def close(self) -> None: ...


class JournalSource(Protocol):
    """The sink's side of a journal."""

    def next_batch(self, max_rows: int) -> JournalBatch | None:
        """The pending batch (replayed after a crash, same range) or a new one; None when empty."""
        ...

    def waiting(self) -> tuple[int, int | None]:
        """(events not yet in the store, ingest time in µs of the oldest of them or None)."""
        ...

    def mark_stored(self, batch: JournalBatch) -> None:
        """The store has the batch: advance past it and forget its rows."""
        ...
