"""The embedded journal's depth and oldest unstored event, which /metrics and the sink read every few
milliseconds: they must agree with the file, survive a restart, and never wait on the sink's connection."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from meterd.backends.sqlite.journal import SQLiteJournal
from meterd.ingest.events import EventRecord


def _events(prefix: str, count: int) -> list[EventRecord]:
    return [EventRecord(f"{prefix}-{i}", "test", "t", "s", 1_700_000_000_000_000, b"{}") for i in range(count)]


def _append(journal: SQLiteJournal, *batches: list[EventRecord]) -> None:
    async def run() -> None:
        for batch in batches:  # one after the other: one commit each
            await journal.append("default", batch)

    asyncio.run(run())


def _from_file(path: Path) -> tuple[int, int | None]:
    """Depth and the oldest unstored ingest time, read straight from the file."""
    with sqlite3.connect(path) as conn:
        (pos,) = conn.execute("SELECT pos FROM sink_state").fetchone()
        count, oldest = conn.execute("SELECT count(*), min(ingested_us) FROM events WHERE seq > ?", (pos,)).fetchone()
    return count, oldest


def test_waiting_follows_commits_sink_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SQLiteJournal(path)
    try:
        assert journal.waiting() == (0, None)
        _append(journal, _events("a", 30), _events("b", 20))
        _append(journal, _events("a", 30))  # duplicates: no commit of events, no change
        assert journal.waiting() == _from_file(path)
        assert journal.waiting()[0] == 50
        first_commit = journal.waiting()[1]
        time.sleep(0.002)
        _append(journal, _events("c", 10))

        batch = journal.next_batch(40)  # ends in the middle of the second commit
        assert batch is not None
        journal.mark_stored(batch)
        depth, oldest = journal.waiting()
        assert (depth, oldest) == _from_file(path)
        assert depth == 20
        assert oldest is not None and first_commit is not None and oldest > first_commit
    finally:
        journal.close()

    reopened = SQLiteJournal(path)  # recovery: what is left in the file
    try:
        assert reopened.waiting() == _from_file(path)
        batch = reopened.next_batch(15)  # the rest of the second commit and half the third
        assert batch is not None
        reopened.mark_stored(batch)
        assert reopened.waiting() == _from_file(path)
        assert reopened.waiting()[0] == 5
        batch = reopened.next_batch(100)
        assert batch is not None
        reopened.mark_stored(batch)
        assert reopened.waiting() == (0, None)
    finally:
        reopened.close()


def test_waiting_does_not_wait_for_a_blocked_sink(tmp_path: Path) -> None:
    """A sink stuck on the write lock holds its connection; asking for the lag must still answer at once."""
    path = tmp_path / "journal.db"
    journal = SQLiteJournal(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        _append(journal, _events("x", 10))
        batch = journal.next_batch(100)
        assert batch is not None
        blocker.execute("BEGIN IMMEDIATE")  # someone else holds the write lock
        sink = threading.Thread(target=journal.mark_stored, args=(batch,))
        sink.start()
        time.sleep(0.3)  # the sink is now inside BEGIN IMMEDIATE, waiting out its busy timeout
        assert sink.is_alive()
        started = time.perf_counter()
        assert journal.waiting()[0] == 10
        assert time.perf_counter() - started < 0.1
        blocker.execute("ROLLBACK")
        sink.join(timeout=10)
        assert not sink.is_alive()
        assert journal.waiting() == (0, None)
    finally:
        blocker.close()
        journal.close()
