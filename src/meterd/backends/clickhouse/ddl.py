"""One description of each table, two renderings: a single server (chDB or one ClickHouse server) or a
ClickHouse cluster. meterd.backends.clickhouse.schema explains the clustered layout; this module only
spells it.

A `Table` says what meterd needs (columns, the MergeTree family member, sort key, partitioning, how many
inserts to remember for replays, whether to fsync, whether it is sharded); a `Layout` (database, cluster)
turns it into statements. Readers and writers name `Layout.name(table)`; `Layout.storage(table)` is where
the rows live (the same table on one server, the `_local` table of each shard in a cluster)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEDUP_SECONDS", "DEDUP_WINDOW", "SHARDING_KEY", "Layout", "Table"]

# Which shard a row lives on: one customer (namespace, subject) stays on one shard with all its event types.
SHARDING_KEY = "cityHash64(namespace, subject)"
# Inserts a table remembers (by deduplication token) so that the sink can replay a batch after a crash. The
# rollup tables remember as many as the events table: a replay the events table drops, the views drop too.
DEDUP_WINDOW = 10_000
# A replicated table forgets a deduplication hash after this long (counted from its newest insert) even
# inside the block window; ClickHouse's default (3600 in 26.x) is shorter than a sink may be down.
DEDUP_SECONDS = 7 * 24 * 3600
LOCAL_SUFFIX = "_local"

_DATABASE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9_.{}-]+$")  # a remote_servers name, or a macro such as {cluster}
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Table:
    """A table as meterd needs it, whatever the deployment."""

    name: str
    columns: tuple[str, ...]
    engine: str  # a MergeTree family member without "Replicated": MergeTree, AggregatingMergeTree, ...
    order_by: tuple[str, ...]
    engine_args: tuple[str, ...] = ()  # e.g. the version column of a ReplacingMergeTree
    partition_by: str | None = None
    dedup_window: int = 0  # inserts remembered, so that a replayed insert (same token) is dropped
    fsync: bool = False  # fsync parts on insert: the journal forgets a batch once the store has it
    sharded: bool = True  # False: small metadata, one full copy on every node of a cluster


@dataclass(frozen=True)
class Layout:
    """Where the tables live: `cluster` is None for a single server, else the name of a cluster in the
    servers' remote_servers configuration (with internal_replication = true, so that a Distributed insert
    writes one replica of each shard and replication copies it)."""

    database: str
    cluster: str | None = None

    def __post_init__(self) -> None:
        if not _DATABASE_RE.match(self.database):
            raise ValueError(f"not a plain ClickHouse database name: {self.database!r}")
        if self.cluster is not None and not _CLUSTER_RE.match(self.cluster):
            raise ValueError(f"not a ClickHouse cluster name: {self.cluster!r}")

    # -- names -------------------------------------------------------------------------------------

    def name(self, table: str) -> str:
        """The table that reads and inserts name (a Distributed table in a cluster)."""
        return f"{self.database}.{table}"

    def storage(self, table: Table) -> str:
        """The table that holds the rows: the same on one server; each shard's local table in a cluster."""
        return self.name(self._stored_name(table))

    def _stored_name(self, table: Table) -> str:
        return table.name + LOCAL_SUFFIX if self.cluster is not None and table.sharded else table.name

    def _on_cluster(self) -> str:
        if self.cluster is None:
            return ""
        quoted = self.cluster if _IDENTIFIER_RE.match(self.cluster) else f"`{self.cluster}`"
        return f" ON CLUSTER {quoted}"

    # -- statements --------------------------------------------------------------------------------

    def create_database(self) -> str:
        return f"CREATE DATABASE IF NOT EXISTS {self.database}{self._on_cluster()}"

    def create_table(self, table: Table) -> list[str]:
        """The table on one server; in a cluster, the replicated table on every node, and for a sharded
        table a Distributed table over the shards under the table's own name."""
        if self.cluster is None:
            engine = table.engine + (f"({', '.join(table.engine_args)})" if table.engine_args else "")
            return [self._create(self.name(table.name), table, engine, self._settings(table), merge_tree=True)]
        stored = self._stored_name(table)
        if table.sharded:
            path = f"/clickhouse/meterd/{self.database}/shard/{{shard}}/{stored}"
            replica = "{replica}"
        else:
            path = f"/clickhouse/meterd/{self.database}/global/{stored}"
            replica = "{shard}-{replica}"  # unique across the cluster: every node is a replica of it
        args = ", ".join([f"'{path}'", f"'{replica}'", *table.engine_args])
        engine = f"Replicated{table.engine}({args})"
        statements = [self._create(self.name(stored), table, engine, self._settings(table), merge_tree=True)]
        if table.sharded:
            target = f"'{self.cluster}', '{self.database}', '{stored}', {SHARDING_KEY}"
            statements.append(
                self._create(self.name(table.name), table, f"Distributed({target})", [], merge_tree=False)
            )
        return statements

    def create_view(self, view: str, target: Table, select: str) -> str:
        """A materialized view feeding `target` (on each node in a cluster: `select` reads local tables)."""
        return (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.name(view)}{self._on_cluster()} "
            f"TO {self.storage(target)} AS\n{select}"
        )

    def insert_select(self, target: Table, select: str) -> str:
        """INSERT ... SELECT from Distributed tables. In a cluster both tables shard by the same key, so
        each shard runs the statement from its local tables to its local tables
        (parallel_distributed_insert_select = 2): every row is read once, on the shard that holds it."""
        if self.cluster is None:
            return f"INSERT INTO {self.name(target.name)}\n{select}"
        return f"INSERT INTO {self.name(target.name)} SETTINGS parallel_distributed_insert_select = 2\n{select}"

    def sync_replicas(self, table: Table) -> list[str]:
        """Statements after which every replica holds every part of `table` inserted so far (none on one
        server): a read that must see everything (a backfill) may be served by any replica."""
        if self.cluster is None:
            return []
        return [f"SYSTEM SYNC REPLICA{self._on_cluster()} {self.storage(table)} LIGHTWEIGHT"]

    def drop(self, kind: str, qualified_name: str) -> str:
        """DROP TABLE or VIEW. In a cluster, on every node, and SYNC: the table's Keeper path is gone when
        the statement returns, so a table of the same name can be created again at once."""
        assert kind in ("TABLE", "VIEW")
        if self.cluster is None:
            return f"DROP {kind} IF EXISTS {qualified_name}"
        return f"DROP {kind} IF EXISTS {qualified_name}{self._on_cluster()} SYNC"

    # -- rendering ---------------------------------------------------------------------------------

    def _settings(self, table: Table) -> list[str]:
        if self.cluster is None:
            settings = [f"non_replicated_deduplication_window = {table.dedup_window}"] if table.dedup_window else []
        else:
            settings = [f"replicated_deduplication_window = {table.dedup_window}"]
            if table.dedup_window:
                settings.append(f"replicated_deduplication_window_seconds = {DEDUP_SECONDS}")
        if table.fsync:
            settings += ["fsync_after_insert = 1", "fsync_part_directory = 1"]
        return settings

    def _create(self, name: str, table: Table, engine: str, settings: list[str], *, merge_tree: bool) -> str:
        columns = ",\n    ".join(table.columns)
        lines = [f"CREATE TABLE IF NOT EXISTS {name}{self._on_cluster()}", f"(\n    {columns}\n)", f"ENGINE = {engine}"]
        if merge_tree:
            if table.partition_by is not None:
                lines.append(f"PARTITION BY {table.partition_by}")
            order = table.order_by[0] if len(table.order_by) == 1 else f"({', '.join(table.order_by)})"
            lines.append(f"ORDER BY {order}")
        if settings:
            lines.append(f"SETTINGS {', '.join(settings)}")
        return "\n".join(lines)
