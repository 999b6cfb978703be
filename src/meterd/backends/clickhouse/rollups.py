"""Rollup tables and their materialized views, one per meter (see meterd.usage.rollup for the semantics).

The DDL cannot take bound parameters, so the meter's namespace, event type and JSONPaths are written as
escaped string literals (clickhouse-connect's quoting; a test feeds it hostile strings). Building a rollup
holds the event store's write lock: the view is created and the existing events are backfilled while the
sink waits, so no event is missed or counted twice. A rollup is used only once marked ready with the hash of
its meter's definition; a crash mid-build leaves it unready and the next start rebuilds it."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from clickhouse_connect.driver.binding import format_query_value
from clickhouse_connect.driver.client import Client

from meterd.core.ids import new_ulid
from meterd.meters.model import Aggregation, Meter
from meterd.usage.rollup import STATE, Rollup, group_columns, state_expression

log = logging.getLogger(__name__)


def _lit(value: str) -> str:
    return str(format_query_value(value))


def rollup_names(database: str, meter_id: str, build: str) -> tuple[str, str]:
    """Table and view of one build of a meter's rollup. Every build gets new names, so a query that
    started on an older table is never pulled from under it; old tables go at the next start."""
    base = f"rollup_{meter_id.lower()}_{build}"
    return f"{database}.{base}", f"{database}.{base}_mv"


def definition_hash(meter: Meter) -> str:
    spec = [
        meter.namespace,
        meter.event_type,
        meter.aggregation.value,
        meter.value_property,
        sorted(meter.group_by.items()),
        2,  # the rollup layout: 2 = views take only batches after their backfill (rebuilds older rollups)
    ]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def rollup_table_ddl(table: str, meter: Meter) -> str:
    columns = ["namespace LowCardinality(String)", "subject String", "bucket DateTime('UTC')"]
    columns += [f"{column} String" for column in group_columns(meter.group_by).values()]
    columns += [
        "rows SimpleAggregateFunction(sum, UInt64)",
        "first SimpleAggregateFunction(min, DateTime64(6, 'UTC'))",
        "last SimpleAggregateFunction(max, DateTime64(6, 'UTC'))",
    ]
    if meter.aggregation is not Aggregation.COUNT:
        columns.append(f"value {STATE[meter.aggregation][0]}")
    key = ["namespace", "subject", "bucket", *group_columns(meter.group_by).values()]
    body = ",\n    ".join(columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {table}\n(\n    {body}\n)\nENGINE = AggregatingMergeTree\n"
        f"PARTITION BY toYYYYMM(bucket)\nORDER BY ({', '.join(key)})\n"
        "SETTINGS non_replicated_deduplication_window = 10000, fsync_after_insert = 1, fsync_part_directory = 1"
    )


def rollup_select(meter: Meter, events_table: str, seq_above: int | None = None, seq_through: int | None = None) -> str:
    """SELECT turning raw events of the meter into rollup rows (the view's body and the backfill). The view
    takes only journal batches after the backfill's last one (`seq_above`): a batch stored before the build and
    replayed after it (a crash between its insert and the sink's position) is dropped by the events table's
    deduplication, but would still reach a view whose table never saw its token."""
    columns = group_columns(meter.group_by)
    select = ["namespace", "subject", "toDateTime(toStartOfHour(time), 'UTC') AS bucket"]
    select += [f"JSON_VALUE(data, {_lit(meter.group_by[key])}) AS {column}" for key, column in columns.items()]
    select += ["count() AS rows", "min(time) AS first", "max(time) AS last"]
    if meter.aggregation is not Aggregation.COUNT:
        assert meter.value_property is not None
        select.append(f"{state_expression(meter.aggregation, _lit(meter.value_property))} AS value")
    group = ["namespace", "subject", "bucket", *columns.values()]
    return (
        f"SELECT {', '.join(select)}\nFROM {events_table}\n"
        f"WHERE namespace = {_lit(meter.namespace)} AND type = {_lit(meter.event_type)}"
        + (f" AND seq > {int(seq_above)}" if seq_above is not None else "")
        + (f" AND seq <= {int(seq_through)}" if seq_through is not None else "")
        + f"\nGROUP BY {', '.join(group)}"
    )


def rollup_view_ddl(view: str, table: str, meter: Meter, events_table: str, seq_above: int) -> str:
    body = rollup_select(meter, events_table, seq_above=seq_above)
    return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {table} AS\n{body}"


def state_table_ddl(database: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.rollup_state\n"
        "(\n    meter_id String,\n    hash String,\n    build String,\n    ready UInt8,\n"
        "    at DateTime64(6, 'UTC') DEFAULT now64(6)\n)\n"
        "ENGINE = ReplacingMergeTree(at)\nORDER BY meter_id"
    )


@dataclass(frozen=True)
class _Build:
    digest: str  # the meter definition it aggregates
    build: str  # names its table and view
    ready: bool


class RollupManager:
    def __init__(self, client: Client, lock: threading.Lock, database: str, events_table: str) -> None:
        self._client = client
        self._lock = lock  # the store's write lock: the sink waits while a rollup is built
        self._database = database
        self._events = events_table
        self._ready: dict[str, tuple[str, Rollup]] = {}  # meter id -> (definition hash, rollup)
        self._wanted: dict[str, str] = {}  # meter id -> hash of the definition to build
        self._builds: list[threading.Thread] = []
        self._client.command(state_table_ddl(database))
        rows = self._client.query(f"SELECT meter_id, hash, build, ready FROM {database}.rollup_state FINAL").result_rows
        self._recorded = {m: _Build(h, b, bool(r)) for m, h, b, r in rows if h}

    def ready(self, meter: Meter) -> Rollup | None:
        entry = self._ready.get(meter.id)
        if entry is None or entry[0] != definition_hash(meter):
            return None
        return entry[1]

    def sync(self, live: Iterable[Meter]) -> None:
        """At start-up: build what is missing or stale, and drop every rollup table or view that no live
        meter's current build uses (meters deleted or redefined, builds cut short by a crash)."""
        live = list(live)
        for meter in live:
            self.ensure(meter)
        with self._lock:
            keep: set[str] = set()
            for meter in live:
                recorded = self._recorded.get(meter.id)
                if recorded is not None:
                    keep.update(rollup_names(self._database, meter.id, recorded.build))
            rows = self._client.query(
                "SELECT name, engine FROM system.tables WHERE database = {db:String} AND startsWith(name, 'rollup_0')",
                parameters={"db": self._database},
            ).result_rows
            for name, engine in sorted(rows, key=lambda row: row[1] != "MaterializedView"):  # views first
                if f"{self._database}.{name}" not in keep:
                    kind = "VIEW" if engine == "MaterializedView" else "TABLE"
                    self._client.command(f"DROP {kind} IF EXISTS {self._database}.{name}")
            for meter_id in set(self._recorded) - {m.id for m in live}:
                self._record(meter_id, _Build("", "", False))
                self._recorded.pop(meter_id, None)

    def ensure(self, meter: Meter, wait: bool = False) -> None:
        """Make the meter's rollup current. A build (a backfill over every stored event of the meter's type)
        runs in the background unless `wait`; until it is ready, queries read raw events, which is exact."""
        digest = definition_hash(meter)
        self._wanted[meter.id] = digest
        recorded = self._recorded.get(meter.id)
        if recorded is not None and recorded.digest == digest and recorded.ready:
            table, _ = rollup_names(self._database, meter.id, recorded.build)
            self._ready[meter.id] = (digest, Rollup(table, group_columns(meter.group_by)))
            return
        if wait:
            self._build(meter, digest)
            return
        thread = threading.Thread(target=self._build_logged, args=(meter, digest), name="meterd-rollup", daemon=True)
        self._builds = [t for t in self._builds if t.is_alive()] + [thread]
        thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for background builds (tests, shutdown)."""
        for thread in list(self._builds):
            thread.join(timeout)

    def _build_logged(self, meter: Meter, digest: str) -> None:
        try:
            self._build(meter, digest)
        except Exception:
            log.exception("building the rollup of meter %s failed; its queries read raw events", meter.slug)

    def _build(self, meter: Meter, digest: str) -> None:
        with self._lock:
            recorded = self._recorded.get(meter.id)
            if self._wanted.get(meter.id) != digest:
                return  # deleted or redefined meanwhile
            if recorded is not None and recorded.digest == digest and recorded.ready:
                return  # an earlier request built it already
            build = new_ulid()[-10:].lower()
            table, view = rollup_names(self._database, meter.id, build)
            self._record(meter.id, _Build(digest, build, False))
            if recorded is not None and recorded.build:
                # stop feeding the previous build; queries already on its table may finish
                self._client.command(f"DROP VIEW IF EXISTS {rollup_names(self._database, meter.id, recorded.build)[1]}")
            self._client.command(rollup_table_ddl(table, meter))
            # under the write lock: every batch stored so far is in the backfill, every later one in the view
            last = int(self._client.query(f"SELECT max(seq) FROM {self._events}").result_rows[0][0] or 0)
            self._client.command(rollup_view_ddl(view, table, meter, self._events, seq_above=last))
            self._client.command(f"INSERT INTO {table}\n{rollup_select(meter, self._events, seq_through=last)}")
            self._record(meter.id, _Build(digest, build, True))
            self._ready[meter.id] = (digest, Rollup(table, group_columns(meter.group_by)))
        log.info("rollup of meter %s (%s) is ready", meter.slug, meter.id)

    def drop(self, meter: Meter) -> None:
        """Stop feeding the meter's rollup; its table stays for queries in flight until the next start."""
        self._wanted.pop(meter.id, None)
        with self._lock:
            self._ready.pop(meter.id, None)
            recorded = self._recorded.pop(meter.id, None)
            if recorded is not None and recorded.build:
                self._client.command(f"DROP VIEW IF EXISTS {rollup_names(self._database, meter.id, recorded.build)[1]}")
            self._record(meter.id, _Build("", "", False))  # a tombstone: no mutations on the event store
            self._recorded.pop(meter.id, None)

    def _record(self, meter_id: str, state: _Build) -> None:
        self._client.insert(
            f"{self._database}.rollup_state",
            [[meter_id, state.digest, state.build, int(state.ready)]],
            column_names=["meter_id", "hash", "build", "ready"],
        )
        self._recorded[meter_id] = state
