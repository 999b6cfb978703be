"""Run by tests/integration/test_cluster_schema.py in a child process whose working directory holds a
config.xml declaring a one-shard cluster `meterd_cluster` on this very chDB engine (chDB reads config.xml
from the working directory and hosts one engine per process).

chDB cannot run `ON CLUSTER` (no distributed DDL worker) nor bring a replicated table out of read-only
(no interserver endpoint), so every statement the store sends goes through `dereplicate`: ON CLUSTER and
SYSTEM SYNC REPLICA are left out, Replicated engines lose their Keeper path and replica name, and the
replicated deduplication window becomes the same non-replicated one. Everything else runs as generated:
the Distributed tables and their sharding key, foreground inserts with the deduplication token, the
views on the local events table, the parallel backfill through the Distributed tables, and the queries."""

from __future__ import annotations

import random
import re
import sys
import uuid
from datetime import timedelta
from typing import Any

from meterd.backends.clickhouse.store import ClickHouseEventStore
from meterd.meters.model import Aggregation, WindowSize
from meterd.usage.builder import EVENTS_TABLE, build
from meterd.usage.query import MeterQuery
from meterd.usage.rollup import build_rollup
from tests.integration.test_rollups import _SEQ, BASE, _events, _meter, _same

CLUSTER = "meterd_cluster"
SENT: list[str] = []


def dereplicate(sql: str) -> str | None:
    if sql.startswith("SYSTEM SYNC REPLICA"):
        return None
    sql = sql.replace(f" ON CLUSTER {CLUSTER}", "")
    sql = re.sub(r"ENGINE = Replicated(\w+)\('[^']*', '[^']*'(?:, )?", r"ENGINE = \1(", sql)
    sql = re.sub(r"replicated_deduplication_window_seconds = \d+, ", "", sql)
    return sql.replace("replicated_deduplication_window = ", "non_replicated_deduplication_window = ")


class _Client:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        SENT.append(sql)
        runnable = dereplicate(sql)
        return None if runnable is None else self.inner.command(runnable, *args, **kwargs)

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        SENT.append(f"INSERT INTO {table} {sorted(kwargs.get('settings', {}).items())}")
        return self.inner.insert(table, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Store(ClickHouseEventStore):
    def _client(self) -> Any:
        return _Client(super()._client())


def main(path: str) -> None:
    store = _Store(f"chdb://{path}", cluster=CLUSTER, readers=1)
    writer: Any = store._writer
    client = writer.inner
    assert client.query(f"SELECT count() FROM system.clusters WHERE cluster = '{CLUSTER}'").result_rows == [(1,)]
    engines = dict(client.query("SELECT name, engine FROM system.tables WHERE database = 'meterd'").result_rows)
    assert engines["events"] == "Distributed" and engines["events_local"] == "MergeTree", engines
    rng = random.Random(7)
    for aggregation in (Aggregation.SUM, Aggregation.COUNT, Aggregation.UNIQUE_COUNT, Aggregation.LATEST):
        namespace = f"ns_{uuid.uuid4().hex[:6]}"
        meter = _meter(namespace, "usage", aggregation)
        before = _events(namespace, "usage", 600, rng, next(_SEQ))
        store.write(before)
        store.write(before)  # a replay, before the rollup exists
        store.rollups.ensure(meter, wait=True)  # the backfill
        after = _events(namespace, "usage", 600, rng, next(_SEQ))
        store.write(after)
        store.write(after)  # a replay, through the views
        rollup = store.rollup_for(meter)
        assert rollup is not None and not rollup.table.endswith("_local")
        where = f"namespace = '{namespace}'"
        assert client.query(f"SELECT count() FROM meterd.events WHERE {where}").result_rows == [(1200,)]
        assert client.query(f"SELECT sum(rows) FROM {rollup.table} WHERE {where}").result_rows == [(1200,)]
        checked = 0
        for _ in range(20):
            start = BASE + timedelta(microseconds=rng.randrange(-3600 * 10**6, 40 * 3600 * 10**6))
            query = MeterQuery(
                namespace=namespace,
                event_type="usage",
                aggregation=aggregation,
                value_property=meter.value_property,
                start=start,
                end=start + timedelta(microseconds=rng.randrange(1, 30 * 3600 * 10**6)),
                window_size=rng.choice([None, WindowSize.HOUR, WindowSize.DAY]),
                time_zone=rng.choice(["UTC", "Europe/Budapest"]),
                group_by_subject=rng.random() < 0.5,
                group_by={k: meter.group_by[k] for k in rng.sample(["model", "region"], rng.randrange(0, 3))},
            )
            fast = build_rollup(query, rollup, EVENTS_TABLE)
            if fast is not None:
                assert _same(store.run(fast), store.run(build(query))), (query, fast.sql)
                checked += 1
        assert checked >= 10
    store.rollups.sync([])  # every rollup table and view dropped
    left = {name for (name,) in client.query("SELECT name FROM system.tables WHERE database = 'meterd'").result_rows}
    assert left == {"events", "events_local", "rollup_state"}, left
    creates = [s for s in SENT if s.startswith("CREATE")]
    assert creates and all(f" ON CLUSTER {CLUSTER}" in s for s in creates)
    assert any(s.startswith("SYSTEM SYNC REPLICA") for s in SENT)
    drops = [s for s in SENT if s.startswith("DROP")]
    assert drops and all(s.endswith(f" ON CLUSTER {CLUSTER} SYNC") for s in drops)
    inserts = [s for s in SENT if s.startswith("INSERT INTO meterd.events ")]
    assert inserts and all("('distributed_foreground_insert', 1)" in s for s in inserts)
    store.close()
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
