"""The sink ledger (cluster mode, PostgreSQL): what each sink batch is, so a replay repeats it exactly.

A sink batch is a run of offsets of one Kafka partition. Before its insert into ClickHouse, one transaction:
- records the batch's plan: its offsets and a range of journal sequence numbers taken from `sink_sequence`
  (the `seq` column of the event store, which orders events and bounds rollup builds);
- claims each event's dedup key, (namespace, source, id) hashed to 16 bytes, for the message that carries it.
  A key already claimed by another message makes this one a duplicate; a key claimed by this very message (an
  earlier try of the same batch) stays its own. So the set of events to insert is the same on every replay.

The claim is made with the write, never before it in a way that could lose an event: a claim belongs to a
message that stays in Kafka until the batch is marked stored and its offsets committed, and every replay of
that message inserts it again. The insert carries a deduplication token made of the plan's sequence range, so
the event store keeps one copy however many times the batch is replayed, and a batch already marked stored is
not inserted again at all.

Writers hold a shared PostgreSQL advisory lock from the plan to the stored mark; a rollup build takes it
exclusively, so it sees every planned batch either stored or not yet planned (see `RollupWriteLock`)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from sqlalchemy.engine import make_url

from meterd.core.errors import UnavailableError

log = logging.getLogger(__name__)

WRITE_LOCK = 0x6D65_7465_7264  # "meterd": the advisory lock id shared by sinks and rollup builds


def connect(info: str) -> psycopg.Connection:
    """An autocommit connection that never prepares statements. A prepared claim statement gets a generic plan
    once it has run 5 times; made while `dedup_claims` was small, that plan scanned the partition's claims once
    per message, and a 10,000-message claim took 60 s instead of 0.2 s until the next ANALYZE, stalling every
    sink behind it (bench/reliability_cluster.py found it). Unprepared, each claim is planned for its table."""
    return psycopg.connect(info, autocommit=True, prepare_threshold=None)


def conninfo(url: str) -> str:
    """A libpq connection string from a SQLAlchemy URL (postgresql+psycopg://...)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def dedup_key(namespace: str, source: str, id_: str) -> bytes:
    """16 bytes of SHA-256: at ten billion keys in a window, a collision has odds below one in 10^18."""
    return hashlib.sha256(f"{namespace}\0{source}\0{id_}".encode()).digest()[:16]


@dataclass(frozen=True)
class Plan:
    part: int
    first_offset: int
    last_offset: int
    first_seq: int
    last_seq: int
    stored: bool
    winners: frozenset[int]  # offsets of the messages to insert (first claims of their keys)

    def seq_of(self, index: int) -> int:
        return self.first_seq + index


class SinkLedger:
    """One sink's connection to the ledger. Not thread-safe: one sink thread uses it."""

    def __init__(self, url: str, topic: str) -> None:
        self._conninfo = conninfo(url)
        self._topic = topic
        self._conn: psycopg.Connection | None = None
        self._locked = False

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._conninfo)
            self._locked = False  # a new session holds no lock
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def ensure_sequence_above(self, stored_max: int) -> None:
        """Never hand out a seq the event store already holds (a metadata database restored from a backup
        would otherwise reuse sequence ranges, and ClickHouse would drop new batches as repeated tokens)."""
        self._connection().execute(
            "UPDATE sink_sequence SET next = %s WHERE id = 1 AND next <= %s", (stored_max + 1, stored_max)
        )

    def plan(self, part: int, messages: Sequence[tuple[int, bytes]]) -> Plan | None:
        """The batch starting at messages[0] ((offset, dedup key) pairs, in offset order): the recorded plan
        when there is one (None when it needs messages not buffered yet), else a new plan of all `messages`."""
        conn = self._connection()
        try:
            if not self._locked:
                conn.execute("SELECT pg_advisory_lock_shared(%s)", (WRITE_LOCK,))
                self._locked = True
            with conn.transaction():
                return self._plan(conn, part, messages)
        except psycopg.OperationalError:
            self.close()
            raise

    def _plan(self, conn: psycopg.Connection, part: int, messages: Sequence[tuple[int, bytes]]) -> Plan | None:
        first = messages[0][0]
        row = conn.execute(
            "SELECT first_offset, last_offset, first_seq, last_seq, stored FROM sink_batches "
            "WHERE topic = %s AND part = %s AND first_offset <= %s AND last_offset >= %s",
            (self._topic, part, first, first),
        ).fetchone()
        if row is not None:
            first_offset, last_offset, first_seq, last_seq, stored = row
            if first_offset != first:
                # the group's offset points inside a batch (it was reset by hand): store the rest as planned
                log.warning(
                    "partition %d resumes at offset %d inside batch %d-%d", part, first, first_offset, last_offset
                )
            if messages[-1][0] < last_offset:
                return None
            batch = [m for m in messages if m[0] <= last_offset]
            winners = frozenset() if stored else self._claim(conn, part, batch)
            return Plan(part, first, last_offset, first_seq + (first - first_offset), last_seq, stored, winners)
        winners = self._claim(conn, part, messages)
        count = len(messages)
        # the one sequence row is taken last: its lock, which every other sink's plan waits for, is held only
        # until this transaction's commit, not through the claim
        (first_seq,) = conn.execute(
            "UPDATE sink_sequence SET next = next + %s WHERE id = 1 RETURNING next - %s", (count, count)
        ).fetchone() or (None,)
        if first_seq is None:
            raise RuntimeError("the sink ledger has no sequence row: run `meterd migrate`")
        last = messages[-1][0]
        conn.execute(
            "INSERT INTO sink_batches (topic, part, first_offset, last_offset, first_seq, last_seq, stored, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, false, now())",
            (self._topic, part, first, last, first_seq, first_seq + count - 1),
        )
        return Plan(part, first, last, first_seq, first_seq + count - 1, False, winners)

    def _claim(self, conn: psycopg.Connection, part: int, messages: Sequence[tuple[int, bytes]]) -> frozenset[int]:
        """Claim each key for its first message here; return the offsets whose message owns its key."""
        firsts: dict[bytes, int] = {}
        for offset, key in messages:
            firsts.setdefault(key, offset)
        keys, offsets = list(firsts), list(firsts.values())
        rows = conn.execute(
            """
            WITH input AS (SELECT * FROM unnest(%(keys)s::bytea[], %(offsets)s::bigint[]) AS t(key, msg_offset)),
            claimed AS (
                INSERT INTO dedup_claims (key, topic, part, msg_offset, claimed_at)
                SELECT key, %(topic)s, %(part)s, msg_offset, now() FROM input
                ON CONFLICT (key) DO NOTHING
                RETURNING msg_offset
            )
            SELECT msg_offset FROM claimed
            UNION ALL
            SELECT i.msg_offset FROM input i JOIN dedup_claims d ON d.key = i.key
            WHERE d.topic = %(topic)s AND d.part = %(part)s AND d.msg_offset = i.msg_offset
            """,
            {"keys": keys, "offsets": offsets, "topic": self._topic, "part": part},
        ).fetchall()
        return frozenset(offset for (offset,) in rows)

    def stored(self, plan: Plan) -> None:
        """The event store has the batch: it is never inserted again. Ends the write (releases the lock)."""
        conn = self._connection()
        try:
            conn.execute(
                "UPDATE sink_batches SET stored = true WHERE topic = %s AND part = %s AND first_offset <= %s "
                "AND last_offset >= %s",
                (self._topic, plan.part, plan.first_offset, plan.first_offset),
            )
            self.release()
        except psycopg.OperationalError:
            self.close()
            raise

    def release(self) -> None:
        if self._locked and self._conn is not None and not self._conn.closed:
            self._conn.execute("SELECT pg_advisory_unlock_shared(%s)", (WRITE_LOCK,))
        self._locked = False

    def prune(self, window: timedelta, chunk: int = 10_000) -> int:
        """Forget dedup claims and stored plans older than the window; returns the claims dropped. Plans live as
        long as claims: a batch replayed later (a consumer group rewound by hand) must find its plan, or its
        messages, which still own their claims, would be inserted again under a new token."""
        conn = self._connection()
        dropped = 0
        while True:
            cur = conn.execute(
                "DELETE FROM dedup_claims WHERE key IN (SELECT key FROM dedup_claims "
                "WHERE claimed_at < now() - %s LIMIT %s)",
                (window, chunk),
            )
            dropped += cur.rowcount
            if cur.rowcount < chunk:
                break
        conn.execute("DELETE FROM sink_batches WHERE stored AND created_at < now() - %s", (window,))
        return dropped


class StoredWatermark:
    """The highest seq through which every planned batch is stored (an API node lists events up to it, so a
    listed event is counted by every meter). A callable; one connection, reopened after a failure."""

    def __init__(self, url: str) -> None:
        self._conninfo = conninfo(url)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None

    def __call__(self) -> int:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self._conninfo)
                row = self._conn.execute(
                    "SELECT coalesce((SELECT min(first_seq) - 1 FROM sink_batches WHERE NOT stored), "
                    "(SELECT next - 1 FROM sink_sequence WHERE id = 1), 0)"
                ).fetchone()
            except psycopg.OperationalError as exc:
                if self._conn is not None:
                    self._conn.close()
                raise UnavailableError("the metadata database is not answering") from exc
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


class RollupWriteLock:
    """The event store's write lock across processes, for rollup builds (a context manager, like the
    threading.Lock of embedded mode): while held, no sink is between its plan and its stored mark, and no
    crashed sink left a batch planned but unstored, so the store holds every event of every planned batch."""

    def __init__(self, url: str, timeout: timedelta = timedelta(minutes=2)) -> None:
        self._conninfo = conninfo(url)
        self._timeout = timeout.total_seconds()
        self._local = threading.Lock()
        self._conn: psycopg.Connection | None = None

    def __enter__(self) -> RollupWriteLock:
        self._local.acquire()
        try:
            self._conn = self._acquire()
        except BaseException:
            self._local.release()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._conn is not None:
                self._conn.close()  # ends the session, which releases the lock
                self._conn = None
        finally:
            self._local.release()

    def _acquire(self) -> psycopg.Connection:
        deadline = time.monotonic() + self._timeout
        conn = connect(self._conninfo)
        while True:
            conn.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
            row = conn.execute("SELECT count(*) FROM sink_batches WHERE NOT stored").fetchone()
            if not row or not row[0]:
                return conn
            conn.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))
            if time.monotonic() > deadline:
                conn.close()
                raise UnavailableError("a sink batch waits to be replayed; start the sinks, then retry")
            time.sleep(0.5)
