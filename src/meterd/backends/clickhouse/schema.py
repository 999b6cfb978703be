"""ClickHouse schema of the event store, described once (meterd.backends.clickhouse.ddl.Table) and
rendered for one server (chDB or one ClickHouse server) or for a ClickHouse cluster (`cluster` = a cluster
name from the servers' remote_servers configuration). `render_schema()` prints all of it; the golden files
tests/unit/golden/clickhouse/{single,cluster}.sql show both renderings.

One server: `events` is a MergeTree sorted by (namespace, type, subject, time), partitioned by month; it
remembers the last 10,000 insert tokens (non_replicated_deduplication_window) so that the sink can replay a
batch after a crash, and fsyncs parts on insert. Each meter has an hourly AggregatingMergeTree rollup fed
by a materialized view on `events` (meterd.usage.rollup); `rollup_state` records which build is ready.

A cluster, the same tables and sort keys, spread over shards and replicated:

- `CREATE ... ON CLUSTER` everywhere: every node has every table. The cluster needs Keeper (or ZooKeeper),
  the {shard} and {replica} macros on each node, and internal_replication = true, so that a Distributed
  insert writes one replica of each shard and replication copies it.
- `events_local` is a ReplicatedMergeTree on every node, and `events` a Distributed table over it: reads
  and inserts name `events`, in both renderings. The sharding key is cityHash64(namespace, subject): a
  customer's queries filter on (namespace, type, subject), so all of one customer's events (of every type)
  sit on one shard, in one narrow range of its sort key; the load spreads over customers. `type` stays out
  of the key so that a customer's meters do not scatter; a single customer larger than a shard is the
  limit of this choice.
- Keeper paths are explicit, without {uuid}: /clickhouse/meterd/<database>/shard/{shard}/<table>, replica
  '{replica}'. A rebuilt node (same macros) re-creates its tables on the same path and fetches the data
  from the other replicas of its shard; two meterd databases on one cluster never share a path. The price:
  a name can be created again only once its previous table is really gone, so meterd drops with
  `ON CLUSTER ... SYNC` (a drop that lost Keeper midway leaves a path for `SYSTEM DROP REPLICA`). Rollups
  get new table names on every build, so they never reuse a path.
- Replays: the sink sends every batch with an insert_deduplication_token. The Distributed insert must be
  synchronous (`insert_settings()`: distributed_foreground_insert = 1): the INSERT returns only once every
  shard has stored its rows, so the sink moves its position only then (the 204-means-stored contract), and
  each shard runs its part of the insert with the insert's settings, token included. A replay splits into
  the same rows per shard, and each shard's replicated table (every replica: the hashes live in Keeper)
  drops the repeat: replicated_deduplication_window = 10,000 inserts, kept up to 7 days
  (replicated_deduplication_window_seconds; ClickHouse's default is one hour). A replay must happen before
  shards are added or removed, or rows may land on a shard that never saw the token.
- Rollups: per meter, `rollup_<meter>_<build>_local` (ReplicatedAggregatingMergeTree, the same columns and
  keys as on one server) on every node and `rollup_<meter>_<build>` (Distributed, the same sharding key)
  over it. The materialized view `rollup_<meter>_<build>_mv` is created ON CLUSTER on `events_local` and
  writes to the local rollup table: each shard aggregates its own events where they are inserted, so a
  customer's rollup rows live on the shard with its events, and a rollup query reads the Distributed
  rollup table and merges the states on the node that asked (exact, as on one server).
- Backfill of a new rollup: first `SYSTEM SYNC REPLICA ON CLUSTER <c> events_local LIGHTWEIGHT` (every
  replica has fetched every part so far, so whichever replica answers sees every stored batch), then the
  largest stored seq is read, the view created (seq above it), and `INSERT INTO rollup_... SELECT ... FROM
  events` runs with parallel_distributed_insert_select = 2: both tables are Distributed with the same
  sharding key, so each shard reads its own events (one replica each) into its own rollup table. Every
  event is read exactly once, nothing crosses shards and nothing is double counted.
- `rollup_state` is one small ReplicatedReplacingMergeTree that every node holds whole (path
  /clickhouse/meterd/<database>/global/rollup_state, replica '{shard}-{replica}', unique across the
  cluster), rather than a sharded table: it has a few rows per meter, and any node reads it locally with
  FINAL. Its deduplication is off: two identical records are two facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meterd.backends.clickhouse.ddl import DEDUP_WINDOW, Layout, Table
from meterd.backends.clickhouse.rollup_ddl import STATE_TABLE, RollupBuild, definition_hash
from meterd.meters.model import Meter

DATABASE = "meterd"

# The sort key (namespace, type, subject, time) keeps one customer's queries to a narrow range as data
# grows. Parts are fsynced on insert: the journal forgets a batch as soon as the store has it.
EVENTS_TABLE = Table(
    name="events",
    columns=(
        "namespace LowCardinality(String)",
        "type LowCardinality(String)",
        "subject String",
        "time DateTime64(6, 'UTC')",
        "id String",
        "source String",
        "data String",
        "ingested_at DateTime64(6, 'UTC')",
        "stored_at DateTime64(6, 'UTC') DEFAULT now64(6)",
        "seq UInt64",
    ),
    engine="MergeTree",
    order_by=("namespace", "type", "subject", "time"),
    partition_by="toYYYYMM(time)",
    dedup_window=DEDUP_WINDOW,
    fsync=True,
)
EVENTS = EVENTS_TABLE.name


def event_store_ddl(database: str = DATABASE, cluster: str | None = None) -> list[str]:
    """Statements that create the event store: the database and the events table(s)."""
    layout = Layout(database, cluster)
    return [layout.create_database(), *layout.create_table(EVENTS_TABLE)]


def insert_settings(cluster: str | None = None) -> dict[str, Any]:
    """Settings of every sink insert into `events`, besides its insert_deduplication_token."""
    settings: dict[str, Any] = {
        # a replayed batch reaches the rollup views even when the events table drops it as a duplicate, so
        # a crash between the two inserts cannot leave a rollup short
        "deduplicate_blocks_in_dependent_materialized_views": 1,
        "max_partitions_per_insert_block": 0,
    }
    if cluster is not None:
        # the INSERT returns once every shard has stored its rows (the sink then moves its position), and the
        # shards run it with these settings, token included (insert_distributed_sync until its rename in late 2023)
        settings["distributed_foreground_insert"] = 1
    return settings


def schema_statements(
    database: str,
    cluster: str | None,
    meters: Iterable[Meter],
    *,
    seq: int = 0,
    builds: Mapping[str, str] | None = None,
) -> list[tuple[str, list[str]]]:
    """The whole schema as (comment, statements) sections: the event store, the rollup state table, and
    each meter's rollup as a build would run it. `seq` is the largest journal seq already stored (0 on an
    empty store): the views take later batches, the backfills the earlier ones. `builds` names each
    meter's build (meter id -> label; by default the first 10 characters of its definition hash)."""
    layout = Layout(database, cluster)
    where = f"cluster {cluster}" if cluster is not None else "a single server"
    sections = [
        (f"event store: database {database} on {where}", event_store_ddl(database, cluster)),
        ("rollup builds and whether they are ready", layout.create_table(STATE_TABLE)),
    ]
    for meter in meters:
        build = (builds or {}).get(meter.id) or definition_hash(meter)[:10]
        rollup = RollupBuild(layout, meter, build, EVENTS_TABLE)
        comment = f"rollup of meter {meter.slug} ({meter.id}, {meter.aggregation.value}), build {build}"
        sections.append((comment, rollup.create() + rollup.feed(seq)))
    return sections


def render_schema(
    database: str,
    cluster: str | None,
    meters: Iterable[Meter],
    *,
    seq: int = 0,
    builds: Mapping[str, str] | None = None,
) -> str:
    """`schema_statements()` as one SQL script (`meterd migrate --print-sql`)."""
    parts = []
    for comment, statements in schema_statements(database, cluster, meters, seq=seq, builds=builds):
        parts.append(f"-- {comment}\n" + "\n\n".join(f"{statement};" for statement in statements))
    return "\n\n".join(parts) + "\n"
