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

from clickhouse_connect.driver.binding import format_query_value
from clickhouse_connect.driver.client import Client

from meterd.meters.model import Aggregation, Meter
from meterd.usage.rollup import STATE, Rollup, group_columns, state_expression

log = logging.getLogger(__name__)


def _lit(value: str) -> str:
    return str(format_query_value(value))


def rollup_names(database: str, meter: Meter) -> tuple[str, str]:
    base = f"rollup_{meter.id.lower()}"
    return f"{database}.{base}", f"{database}.{base}_mv"


def definition_hash(meter: Meter) -> str:
    spec = [
        meter.namespace,
        meter.event_type,
        meter.aggregation.value,
        meter.value_property,
        sorted(meter.group_by.items()),
        1,
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


def rollup_select(meter: Meter, events_table: str) -> str:
    """SELECT turning raw events of the meter into rollup rows (the view's body and the backfill)."""
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
        f"WHERE namespace = {_lit(meter.namespace)} AND type = {_lit(meter.event_type)}\n"
        f"GROUP BY {', '.join(group)}"
    )


def rollup_view_ddl(view: str, table: str, meter: Meter, events_table: str) -> str:
    return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {table} AS\n{rollup_select(meter, events_table)}"


def state_table_ddl(database: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.rollup_state\n"
        "(\n    meter_id String,\n    hash String,\n    ready UInt8,\n    at DateTime64(6, 'UTC') DEFAULT now64(6)\n)\n"
        "ENGINE = ReplacingMergeTree(at)\nORDER BY meter_id"
    )


class RollupManager:
    def __init__(self, client: Client, lock: threading.Lock, database: str, events_table: str) -> None:
        self._client = client
        self._lock = lock  # the store's write lock: the sink waits while a rollup is built
        self._database = database
        self._events = events_table
        self._ready: dict[str, tuple[str, Rollup]] = {}  # meter id -> (hash, rollup)
        self._client.command(state_table_ddl(database))
        rows = self._client.query(f"SELECT meter_id, hash, ready FROM {database}.rollup_state FINAL").result_rows
        self._recorded = {meter_id: (h, bool(ready)) for meter_id, h, ready in rows if h}

    def ready(self, meter: Meter) -> Rollup | None:
        entry = self._ready.get(meter.id)
        if entry is None or entry[0] != definition_hash(meter):
            return None
        return entry[1]

    def sync(self, live: Iterable[Meter]) -> None:
        """At start-up: build what is missing or stale, drop rollups of meters that are gone."""
        live = list(live)
        for meter in live:
            self.ensure(meter)
        known = {m.id for m in live}
        for meter_id in list(self._recorded):
            if meter_id not in known:
                self._drop_by_id(meter_id)

    def ensure(self, meter: Meter) -> None:
        digest = definition_hash(meter)
        table, view = rollup_names(self._database, meter)
        if self._recorded.get(meter.id) == (digest, True):
            self._ready[meter.id] = (digest, Rollup(table, group_columns(meter.group_by)))
            return
        with self._lock:
            self._ready.pop(meter.id, None)
            self._record(meter.id, digest, ready=False)
            self._client.command(f"DROP VIEW IF EXISTS {view}")
            self._client.command(f"DROP TABLE IF EXISTS {table}")
            self._client.command(rollup_table_ddl(table, meter))
            self._client.command(rollup_view_ddl(view, table, meter, self._events))
            self._client.command(f"INSERT INTO {table}\n{rollup_select(meter, self._events)}")
            self._record(meter.id, digest, ready=True)
        self._ready[meter.id] = (digest, Rollup(table, group_columns(meter.group_by)))
        log.info("rollup of meter %s (%s) is ready", meter.slug, meter.id)

    def drop(self, meter: Meter) -> None:
        self._drop_by_id(meter.id)

    def _drop_by_id(self, meter_id: str) -> None:
        base = f"{self._database}.rollup_{meter_id.lower()}"
        with self._lock:
            self._ready.pop(meter_id, None)
            self._client.command(f"DROP VIEW IF EXISTS {base}_mv")
            self._client.command(f"DROP TABLE IF EXISTS {base}")
            self._record(meter_id, "", ready=False)  # a tombstone: no mutations on the event store
        self._recorded.pop(meter_id, None)

    def _record(self, meter_id: str, digest: str, ready: bool) -> None:
        self._client.insert(
            f"{self._database}.rollup_state",
            [[meter_id, digest, int(ready)]],
            column_names=["meter_id", "hash", "ready"],
        )
        self._recorded[meter_id] = (digest, ready)
