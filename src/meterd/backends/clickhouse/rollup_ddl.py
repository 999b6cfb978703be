"""The SQL of a meter's rollup (see meterd.usage.rollup for the semantics): its table, the materialized
view that feeds it, the backfill, and the table recording which build of each meter is ready; rendered for
one server or a cluster by meterd.backends.clickhouse.ddl.

The DDL cannot take bound parameters, so the meter's namespace, event type and JSONPaths are written as
escaped string literals (clickhouse-connect's quoting; a test feeds it hostile strings)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from clickhouse_connect.driver.binding import format_query_value

from meterd.backends.clickhouse.ddl import DEDUP_WINDOW, Layout, Table
from meterd.meters.model import Aggregation, Meter
from meterd.usage.rollup import STATE, group_columns, state_expression

# Which build of each meter's rollup exists and whether it is ready (the newest row per meter wins). A few
# rows per meter: in a cluster every node holds all of it, so any node can read it alone.
STATE_TABLE = Table(
    name="rollup_state",
    columns=(
        "meter_id String",
        "hash String",
        "build String",
        "ready UInt8",
        "at DateTime64(6, 'UTC') DEFAULT now64(6)",
    ),
    engine="ReplacingMergeTree",
    engine_args=("at",),
    order_by=("meter_id",),
    sharded=False,
)


def _lit(value: str) -> str:
    return str(format_query_value(value))


@dataclass(frozen=True)
class RollupNames:
    """Qualified names of one build of a meter's rollup."""

    table: str  # what queries read (a Distributed table in a cluster)
    storage: str  # where its rows live (each shard's local table in a cluster; else `table`)
    view: str  # the materialized view on the events' storage table

    def all(self) -> set[str]:
        return {self.table, self.storage, self.view}


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


def rollup_table(meter: Meter, build: str) -> Table:
    """One build of the meter's rollup. Every build gets new names, so a query that started on an older
    table is never pulled from under it; old tables go at the next start."""
    groups = list(group_columns(meter.group_by).values())
    columns = ["namespace LowCardinality(String)", "subject String", "bucket DateTime('UTC')"]
    columns += [f"{column} String" for column in groups]
    columns += [
        "rows SimpleAggregateFunction(sum, UInt64)",
        "first SimpleAggregateFunction(min, DateTime64(6, 'UTC'))",
        "last SimpleAggregateFunction(max, DateTime64(6, 'UTC'))",
    ]
    if meter.aggregation is not Aggregation.COUNT:
        columns.append(f"value {STATE[meter.aggregation][0]}")
    return Table(
        name=f"rollup_{meter.id.lower()}_{build}",
        columns=tuple(columns),
        engine="AggregatingMergeTree",
        order_by=("namespace", "subject", "bucket", *groups),
        partition_by="toYYYYMM(bucket)",
        dedup_window=DEDUP_WINDOW,
        fsync=True,
    )


def rollup_names(layout: Layout, meter: Meter, build: str) -> RollupNames:
    table = rollup_table(meter, build)
    return RollupNames(layout.name(table.name), layout.storage(table), layout.name(table.name + "_mv"))


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


@dataclass(frozen=True)
class RollupBuild:
    """The statements of one build, in two steps: `create()`, then (with no event insert running) read
    the largest stored journal seq from the events and run `feed(seq)`."""

    layout: Layout
    meter: Meter
    build: str
    events: Table

    @property
    def names(self) -> RollupNames:
        return rollup_names(self.layout, self.meter, self.build)

    def create(self) -> list[str]:
        """The rollup's table(s); in a cluster, then wait until every replica of the events holds every
        part, so the seq read next and the backfill see every batch whichever replica answers."""
        return self.layout.create_table(rollup_table(self.meter, self.build)) + self.layout.sync_replicas(self.events)

    def feed(self, seq: int) -> list[str]:
        """The view, taking journal batches after `seq` (on each shard, from its local events into its local
        rollup table), then the backfill of batches up to `seq` (in a cluster, each shard from its own
        events: the rollup shards like the events, so no event is read twice)."""
        table = rollup_table(self.meter, self.build)
        view = self.layout.create_view(
            table.name + "_mv", table, rollup_select(self.meter, self.layout.storage(self.events), seq_above=seq)
        )
        backfill = self.layout.insert_select(
            table, rollup_select(self.meter, self.layout.name(self.events.name), seq_through=seq)
        )
        return [view, backfill]
