"""The stored-batch feed of cluster mode: `meterd worker` follows the batches the sinks have stored and tells
its balance worker which entitlements they touch, so usage-threshold notifications fire as in embedded mode.

It reads the sink ledger's watermark (every batch through that seq is stored), asks the event store which
(namespace, type, subject) the new seq range holds and the earliest and latest event time of each, and hands
that to the balance worker as a batch. Its position is kept in PostgreSQL (`feed_cursors`), so a restarted
worker resumes where it stopped; a range handed over just before a crash is handed over again (notification
events are deduplicated)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from meterd.backends.clickhouse.store import ClickHouseEventStore
from meterd.backends.sql.ledger import conninfo
from meterd.ingest.journal import JournalBatch, JournalRow

log = logging.getLogger(__name__)

FEED = "balances"


class StoredFeed:
    def __init__(
        self,
        url: str,
        store: ClickHouseEventStore,
        watermark: Callable[[], int],
        on_stored: Callable[[JournalBatch], None],
        interval_s: float = 0.25,
    ) -> None:
        self._conninfo = conninfo(url)
        self._store = store
        self._watermark = watermark
        self._on_stored = on_stored
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.position = 0
        self.failures = 0

    def start(self) -> None:
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT seq FROM feed_cursors WHERE name = %s", (FEED,)).fetchone()
        # a first start follows from now on: what was stored before is no news
        self.position = int(row[0]) if row else self._watermark()
        self._thread = threading.Thread(target=self._run, name="meterd-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failures < 20

    def _run(self) -> None:
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            while not self._stop.wait(self._interval):
                try:
                    self.step(conn)
                    self.failures = 0
                except Exception as exc:  # the store or the ledger is away: try again next round
                    self.failures += 1
                    log.warning("following the stored batches failed: %s", exc)

    def step(self, conn: psycopg.Connection) -> bool:
        """Hand over the batches stored since the last step; True when there were any."""
        through = self._watermark()
        if through <= self.position:
            return False
        rows = self._touched(self.position, through)
        if rows:
            self._on_stored(JournalBatch(self.position + 1, through, rows))
        conn.execute(
            "INSERT INTO feed_cursors (name, seq) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            (FEED, through),
        )
        self.position = through
        return True

    def _touched(self, after: int, through: int) -> list[JournalRow]:
        """Two rows per (namespace, type, subject) in the range: its earliest and its latest event."""
        sql = (
            "SELECT namespace, type, subject, toUnixTimestamp64Micro(min(time)), toUnixTimestamp64Micro(max(time)) "
            f"FROM {self._store.table} WHERE seq > {{a:UInt64}} AND seq <= {{b:UInt64}} "
            "GROUP BY namespace, type, subject"
        )
        rows: list[JournalRow] = []
        for namespace, type_, subject, first, last in self._store.query_rows(sql, {"a": after, "b": through}):
            for time_us in {int(first), int(last)}:
                rows.append((through, namespace, "", "", type_, subject, time_us, b"null", 0))
        return rows
