"""The embedded ingest journal: one SQLite file in WAL mode, written by one thread with group commit.

Every request's events wait in a bounded queue; the writer takes all that is waiting, claims each
(namespace, source, id) key and writes the new events in the same transaction, commits once (one fsync
for everyone, synchronous=FULL) and only then answers the requests. So an acknowledged event is on disk,
and a key is never claimed without its event (the claim-before-write loss of OpenMeter #5118 cannot
happen). The sink reads the same file through its own connection.

A full disk is an outage, not damage: a commit that cannot be written rolls back whole and its requests get
503, and below `min_free_bytes` of free space new requests get 503 before anything is tried, leaving room
for the sink and the event store's merges. Both clear by themselves once space is freed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from meterd.core.errors import OverloadedError, UnavailableError
from meterd.core.timeutil import now_us
from meterd.ingest.events import EventRecord
from meterd.ingest.journal import AppendResult, JournalBatch, JournalRow

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    source TEXT NOT NULL,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    data BLOB NOT NULL,
    ingested_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sink_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pos INTEGER NOT NULL,
    pending_first INTEGER,
    pending_last INTEGER
);
INSERT OR IGNORE INTO sink_state (id, pos) VALUES (1, 0);
"""

_PRUNE_EVERY_S = 600.0
_PRUNE_CHUNK = 20_000
_DISK_CHECK_S = 0.5


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@dataclass(slots=True)
class _Pending:
    namespace: str
    events: Sequence[EventRecord]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[AppendResult]


@dataclass
class _Stats:
    commits: int = 0
    events_written: int = 0
    duplicates: int = 0
    last_commit_s: float = 0.0
    errors: int = 0


class SQLiteJournal:
    def __init__(
        self,
        path: Path,
        *,
        dedup_window: timedelta = timedelta(days=32),
        max_queued_events: int = 200_000,
        max_commit_events: int = 20_000,
        max_lag_events: int = 2_000_000,
        min_free_bytes: int = 0,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._min_free = min_free_bytes
        self._free_checked = (0.0, 0)  # (monotonic time, free bytes)
        self._window_us = int(dedup_window.total_seconds() * 1_000_000)
        self._max_queued = max_queued_events
        self._max_commit = max_commit_events
        self._max_lag = max_lag_events
        self._conn = _connect(path)
        self._conn.executescript(_SCHEMA)
        self._reader = _connect(path)
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._closing = False
        self._failed: BaseException | None = None
        self.stats = _Stats()
        self._last_seq = self._scalar("SELECT coalesce(max(seq), 0) FROM keys")
        self._pos = self._scalar("SELECT pos FROM sink_state WHERE id = 1")
        # The events not yet in the event store, and (last seq, ingest time) of each commit among them, oldest
        # first: /metrics and the sink's "is a batch due" read these, so neither reads the file (nor waits on
        # the sink's connection) on the event loop. A commit's events share one ingest time. (Seqs have gaps:
        # a refused duplicate uses one up, so the depth is counted, not subtracted.)
        self._unstored_lock = threading.Lock()
        self._depth: int = self._conn.execute("SELECT count(*) FROM events WHERE seq > ?", (self._pos,)).fetchone()[0]
        self._unstored: deque[tuple[int, int]] = deque(
            self._conn.execute(
                "SELECT max(seq), ingested_us FROM events WHERE seq > ? GROUP BY ingested_us ORDER BY 1",
                (self._pos,),
            ).fetchall()
        )
        self._next_prune = 0.0
        self._writer = threading.Thread(target=self._run, name="meterd-journal", daemon=True)
        self._writer.start()

    def _scalar(self, sql: str) -> int:
        return int(self._conn.execute(sql).fetchone()[0])

    # -- the ingest side -------------------------------------------------------------------------

    async def append(self, namespace: str, events: Sequence[EventRecord]) -> AppendResult:
        if self._failed is not None or self._closing:
            raise UnavailableError("the ingest journal is not accepting writes", retry_after=5)
        if self._depth > self._max_lag:
            raise UnavailableError("the event store is behind the journal; retry shortly", retry_after=2)
        if not self.disk_ok():
            raise UnavailableError(
                f"the data directory has {self.free_bytes() // 2**20} MiB free, less than "
                f"storage.min_free_disk_mb ({self._min_free // 2**20} MiB); free some space",
                retry_after=30,
            )
        loop = asyncio.get_running_loop()
        pending = _Pending(namespace, events, loop, loop.create_future())
        with self._cond:
            if self._queued_events + len(events) > self._max_queued and self._queued_events:
                raise OverloadedError("ingest queue is full; retry shortly", retry_after=1)
            self._queue.append(pending)
            self._queued_events += len(events)
            self._cond.notify()
        return await pending.future

    def depth(self) -> int:
        return self._depth

    def queued(self) -> int:
        return self._queued_events

    def free_bytes(self) -> int:
        """Free space for the data directory (measured at most every half second)."""
        checked, free = self._free_checked
        now = time.monotonic()
        if now - checked >= _DISK_CHECK_S:
            st = os.statvfs(self.path.parent)
            free = st.f_bavail * st.f_frsize
            self._free_checked = (now, free)
        return free

    def disk_ok(self) -> bool:
        return not self._min_free or self.free_bytes() >= self._min_free

    def healthy(self) -> bool:
        return self._failed is None and self._writer.is_alive() and self.disk_ok()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._writer.join(timeout=30)
        self._conn.close()
        self._reader.close()

    # -- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    if not self._cond.wait(timeout=1.0):
                        break
                if not self._queue and self._closing:
                    return
                batch = self._take()
            if batch:
                self._commit(batch)
            self._maybe_prune()

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        count = 0
        while self._queue and (not batch or count + len(self._queue[0].events) <= self._max_commit):
            item = self._queue.popleft()
            batch.append(item)
            count += len(item.events)
        self._queued_events -= count
        return batch

    def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = self._write(batch)
        except sqlite3.Error as exc:
            self.stats.errors += 1
            full = getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"
            reason = "the data directory's disk is full" if full else str(exc)
            log.error("journal write failed, %d requests answered 503: %s", len(batch), reason)
            error = UnavailableError(f"the ingest journal could not write: {reason}", retry_after=30 if full else 5)
            for item in batch:
                _resolve(item, error)
            return
        self.stats.commits += 1
        self.stats.last_commit_s = time.perf_counter() - started
        for item, result in zip(batch, results, strict=True):
            _resolve(item, result)

    def _write(self, batch: list[_Pending]) -> list[AppendResult]:
        conn = self._conn
        at = now_us()
        results: list[AppendResult] = []
        rows: list[JournalRow] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in batch:
                ns = item.namespace
                accepted = 0
                for ev in item.events:
                    cur = conn.execute(
                        "INSERT INTO keys (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                        (f"{ns}\x00{ev.source}\x00{ev.id}", at),
                    )
                    if cur.rowcount == 1:
                        seq = cur.lastrowid
                        assert seq is not None
                        rows.append((seq, ns, ev.id, ev.source, ev.type, ev.subject, ev.time_us, ev.data, at))
                        accepted += 1
                results.append(AppendResult(accepted, len(item.events) - accepted))
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        if rows:
            with self._unstored_lock:
                self._last_seq = rows[-1][0]
                self._depth += len(rows)
                self._unstored.append((self._last_seq, at))
        self.stats.events_written += len(rows)
        self.stats.duplicates += sum(r.duplicates for r in results)
        return results

    def _maybe_prune(self) -> None:
        """Forget dedup keys older than the window, a chunk at a time, between group commits."""
        now = time.monotonic()
        if now < self._next_prune:
            return
        cutoff = now_us() - self._window_us
        try:
            last = self._last_key_before(cutoff)
            first = self._scalar("SELECT coalesce(min(seq), 0) FROM keys")
            if last and last >= first:
                upto = min(last, first + _PRUNE_CHUNK - 1)
                self._conn.execute("DELETE FROM keys WHERE seq <= ?", (upto,))
                if upto < last:
                    return  # more to do: come back after the next commit
        except sqlite3.Error as exc:
            log.warning("dedup key pruning failed: %s", exc)
        self._next_prune = now + _PRUNE_EVERY_S

    def _last_key_before(self, cutoff_us: int) -> int:
        """The highest seq whose claim time is before `cutoff_us` (claim times grow with seq)."""
        lo = self._scalar("SELECT coalesce(min(seq), 0) FROM keys")
        hi = self._last_seq
        found = 0
        while lo <= hi and lo > 0:
            mid = (lo + hi) // 2
            row = self._conn.execute("SELECT seq, at FROM keys WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,))
            hit = row.fetchone()
            if hit is None or hit[1] >= cutoff_us:
                hi = mid - 1
            else:
                found = hit[0]
                lo = hit[0] + 1
        return found

    # -- the sink side ---------------------------------------------------------------------------

    def next_batch(self, max_rows: int) -> JournalBatch | None:
        conn = self._reader
        pos, first, last = conn.execute(
            "SELECT pos, pending_first, pending_last FROM sink_state WHERE id = 1"
        ).fetchone()
        if first is not None:
            rows = conn.execute("SELECT * FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last)).fetchall()
            return JournalBatch(first, last, rows)
        rows = conn.execute("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (pos, max_rows)).fetchall()
        if not rows:
            return None
        batch = JournalBatch(rows[0][0], rows[-1][0], rows)
        conn.execute(
            "UPDATE sink_state SET pending_first = ?, pending_last = ? WHERE id = 1",
            (batch.first_seq, batch.last_seq),
        )
        return batch

    def waiting(self) -> tuple[int, int | None]:
        with self._unstored_lock:
            return self._depth, (self._unstored[0][1] if self._unstored else None)

    def mark_stored(self, batch: JournalBatch) -> None:
        conn = self._reader
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "UPDATE sink_state SET pos = ?, pending_first = NULL, pending_last = NULL WHERE id = 1",
                (batch.last_seq,),
            )
            conn.execute("DELETE FROM events WHERE seq <= ?", (batch.last_seq,))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        with self._unstored_lock:
            self._pos = batch.last_seq
            self._depth -= len(batch.rows)
            while self._unstored and self._unstored[0][0] <= self._pos:
                self._unstored.popleft()


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends it by itself after some errors (a full disk)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _resolve(item: _Pending, outcome: AppendResult | BaseException) -> None:
    def settle() -> None:
        if item.future.done():
            return
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # a closed loop: the request is gone
        item.loop.call_soon_threadsafe(settle)
