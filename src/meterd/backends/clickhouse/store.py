"""The event store on ClickHouse through clickhouse-connect: in-process chDB (chdb:///path) or a server
(http(s)://...). One client for the sink's inserts and a small pool for reads, so a long query never
waits behind an insert and vice versa (chDB releases the GIL while it works)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from meterd.backends.clickhouse.rollups import RollupManager
from meterd.backends.clickhouse.schema import DATABASE, EVENTS, event_store_ddl, insert_settings
from meterd.core.errors import UnavailableError, ValidationError
from meterd.core.timeutil import from_us, to_us
from meterd.ingest.journal import JournalBatch
from meterd.meters.model import Meter
from meterd.usage.builder import CompiledQuery, Params, filter_sql
from meterd.usage.rollup import Rollup
from meterd.usage.store import EventFilter, StoredEvent

log = logging.getLogger(__name__)

_INSERT_COLUMNS = ["seq", "namespace", "id", "source", "type", "subject", "time", "data", "ingested_at"]
_EVENT_COLUMNS = (
    "namespace, id, source, type, subject, toUnixTimestamp64Micro(time), data, "
    "toUnixTimestamp64Micro(ingested_at), toUnixTimestamp64Micro(stored_at), seq"
)

# ClickHouse error codes that mean the caller sent something the engine cannot parse.
_CALLER_FAULT_CODES = {"36", "6", "27", "38", "41", "43", "53", "62", "69", "70", "72", "130", "386", "395"}


class ClickHouseEventStore:
    """`cluster`: the name of the ClickHouse cluster (remote_servers) to spread the store over, with
    replicated tables and Distributed tables over them; None for chDB or a single server."""

    def __init__(
        self,
        dsn: str,
        *,
        readers: int = 4,
        database: str | None = None,
        cluster: str | None = None,
        rollup_lock: AbstractContextManager[object] | None = None,
        completed_seq: Callable[[], int] | None = None,
    ) -> None:
        """`rollup_lock`: held while a rollup's view is created (default: this process's write lock; cluster
        mode passes one shared with the sinks). `completed_seq`: the seq through which every batch is stored
        (default: what this process has written; cluster mode reads it from the sink ledger)."""
        self.dsn = dsn
        database = database or database_from(dsn)
        self.database = database
        self.cluster = cluster
        self.table = f"{database}.{EVENTS}"  # a Distributed table in a cluster: reads and inserts name it
        self._writer = self._client()
        for statement in event_store_ddl(database, cluster):
            self._writer.command(statement)
        self._write_lock = threading.Lock()
        self.rollups = RollupManager(self._writer, rollup_lock or self._write_lock, database, cluster)
        self._ledger_seq = completed_seq
        # The highest journal seq whose insert has completed, rollup views included. An insert makes the
        # events' parts visible before its views' parts, so listing only completed batches means an event
        # that is listed is also counted by every meter.
        self._completed_seq = self.max_seq()
        self._readers: queue.SimpleQueue[Client] = queue.SimpleQueue()
        for _ in range(readers):
            self._readers.put(self._client())

    def _client(self) -> Client:
        return client_for(self.dsn)

    @contextmanager
    def _reader(self) -> Iterator[Client]:
        client = self._readers.get()
        try:
            yield client
        finally:
            self._readers.put(client)

    def close(self) -> None:
        self._writer.close()
        while not self._readers.empty():
            self._readers.get().close()

    # -- writes ----------------------------------------------------------------------------------

    def write(self, batch: JournalBatch) -> None:
        rows = batch.rows
        columns: list[list[Any]] = [list(col) for col in zip(*rows, strict=True)] if rows else [[]] * 9
        with self._write_lock:
            self._writer.insert(
                self.table,
                columns,
                column_names=_INSERT_COLUMNS,
                column_oriented=True,
                settings={"insert_deduplication_token": batch.token, **insert_settings(self.cluster)},
            )
            self._completed_seq = max(self._completed_seq, batch.last_seq)

    # -- reads -----------------------------------------------------------------------------------

    def max_seq(self) -> int:
        """The highest seq the store holds."""
        return int(self._writer.query(f"SELECT max(seq) FROM {self.table}").result_rows[0][0] or 0)

    def completed_seq(self) -> int:
        """Events up to this seq are listed: every batch through it is stored, rollup views included."""
        return self._ledger_seq() if self._ledger_seq is not None else self._completed_seq

    def _query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            with self._reader() as client:
                return [tuple(row) for row in client.query(sql, parameters=params).result_rows]
        except DatabaseError as exc:
            code = str(getattr(exc, "code", "") or "")
            if code in _CALLER_FAULT_CODES:
                raise ValidationError(f"the query could not be run: {_first_line(exc)}") from None
            raise
        except ClickHouseError as exc:
            log.error("event store query failed: %s", exc)
            raise UnavailableError("the event store is not answering") from None

    def query_rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of a read-only statement whose every value is bound (`{name:Type}` placeholders)."""
        return self._query(sql, params)

    def run(self, query: CompiledQuery) -> list[tuple[Any, ...]]:
        return self._query(query.sql.replace("\nFROM events\n", f"\nFROM {self.table}\n"), query.params)

    def rollup_for(self, meter: Meter) -> Rollup | None:
        return self.rollups.ready(meter)

    def list_events(self, flt: EventFilter) -> list[StoredEvent]:
        params = Params()
        where = [
            f"namespace = {params.bind(flt.namespace, 'String')}",
            f"seq <= {params.bind(self.completed_seq(), 'UInt64')}",
        ]
        for column, value, op in (
            ("time", flt.start, ">="),
            ("time", flt.end, "<"),
            ("ingested_at", flt.ingested_from, ">="),
            ("ingested_at", flt.ingested_to, "<"),
        ):
            if value is not None:
                where.append(f"{column} {op} fromUnixTimestamp64Micro({params.bind(to_us(value), 'Int64')}, 'UTC')")
        if flt.id_contains:
            where.append(f"position(id, {params.bind(flt.id_contains, 'String')}) > 0")
        if flt.subjects:
            where.append(f"subject IN {params.bind(list(flt.subjects), 'Array(String)')}")
        for column, spec in (flt.string_filters or {}).items():
            assert column in ("id", "source", "subject", "type")
            where.append(f"({filter_sql(column, spec, params)})")
        if flt.after is not None:
            time_us = params.bind(flt.after[0], "Int64")
            where.append(f"(toUnixTimestamp64Micro(time), seq) < ({time_us}, {params.bind(flt.after[1], 'UInt64')})")
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM {self.table} WHERE {' AND '.join(where)} "
            f"ORDER BY time DESC, seq DESC LIMIT {int(flt.limit)}"
        )
        return [
            StoredEvent(ns, id_, src, typ, subj, from_us(t), data, from_us(ing), from_us(st), seq)
            for ns, id_, src, typ, subj, t, data, ing, st, seq in self._query(sql, params.values)
        ]

    def distinct_subjects(
        self, namespace: str, event_type: str, start: datetime | None, end: datetime | None
    ) -> list[str]:
        return self._distinct("subject", namespace, event_type, start, end, None)

    def distinct_values(
        self, namespace: str, event_type: str, path: str, start: datetime | None, end: datetime | None
    ) -> list[str]:
        return self._distinct("JSON_VALUE(data, {path:String})", namespace, event_type, start, end, path)

    def _distinct(
        self,
        expr: str,
        namespace: str,
        event_type: str,
        start: datetime | None,
        end: datetime | None,
        path: str | None,
    ) -> list[str]:
        params: dict[str, Any] = {"ns": namespace, "type": event_type}
        where = "namespace = {ns:String} AND type = {type:String}"
        if path is not None:
            params["path"] = path
        if start is not None:
            params["start"] = to_us(start)
            where += " AND time >= fromUnixTimestamp64Micro({start:Int64}, 'UTC')"
        if end is not None:
            params["end"] = to_us(end)
            where += " AND time < fromUnixTimestamp64Micro({end:Int64}, 'UTC')"
        sql = f"SELECT DISTINCT {expr} AS v FROM {self.table} WHERE {where} ORDER BY v"
        return [row[0] for row in self._query(sql, params)]

    def count_events(self, namespace: str, since: datetime) -> dict[str, int]:
        sql = (
            f"SELECT subject, count() FROM {self.table} WHERE namespace = {{ns:String}} "
            "AND time >= fromUnixTimestamp64Micro({since:Int64}, 'UTC') GROUP BY subject ORDER BY subject"
        )
        return {s: int(n) for s, n in self._query(sql, {"ns": namespace, "since": to_us(since)})}

    def check_json_path(self, path: str) -> bool:
        """ClickHouse's own JSONPath parser decides what a valid path is (as OpenMeter does)."""
        try:
            with self._reader() as client:
                client.query("SELECT JSON_VALUE('{}', {p:String})", parameters={"p": path})
            return True
        except DatabaseError:
            return False

    def healthy(self) -> bool:
        try:
            with self._reader() as client:
                client.query("SELECT 1")
            return True
        except ClickHouseError:
            return False


def client_for(dsn: str) -> Client:
    """A clickhouse-connect client: in-process chDB for chdb:///path, else the HTTP interface of a server."""
    if dsn.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=dsn)
    parsed = urlparse(dsn)
    return clickhouse_connect.get_client(
        host=parsed.hostname or "localhost",
        port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
        username=unquote(parsed.username or "default"),  # a URL's user info is percent-encoded
        password=unquote(parsed.password or ""),
        secure=parsed.scheme == "https",
    )


def database_from(dsn: str) -> str:
    """The database a server DSN names in its path (http://host:8123/meterd), else meterd's default."""
    if dsn.startswith("chdb://"):
        return DATABASE
    return urlparse(dsn).path.strip("/") or DATABASE


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(" (version")[0][:300]
