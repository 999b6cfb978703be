"""The ClickHouse schema, both renderings from one description: golden files for the text (review changes
to them; METERD_UPDATE_GOLDEN=1 rewrites them), the single-server schema run on chDB with a rollup built,
backfilled and fed, and every clustered statement parsed by ClickHouse (chDB has no cluster to run it on)."""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from meterd.backends.clickhouse.ddl import Layout
from meterd.backends.clickhouse.rollup_ddl import RollupBuild, rollup_names
from meterd.backends.clickhouse.rollups import RollupManager
from meterd.backends.clickhouse.schema import (
    EVENTS_TABLE,
    event_store_ddl,
    insert_settings,
    render_schema,
    schema_statements,
)
from meterd.core.timeutil import to_us
from meterd.meters.model import Aggregation, Meter

GOLDEN = Path(__file__).parent / "golden" / "clickhouse"
CLUSTER = "meterd_cluster"
TOKENS = Meter(
    id="01JQ3ZP4WGKVE9T2S6B8N5M7XA",
    namespace="default",
    slug="tokens_total",
    name="Tokens",
    aggregation=Aggregation.SUM,
    event_type="prompt",
    value_property="$.tokens",
    group_by={"model": "$.model", "type": "$.type"},
    event_from=None,
    description=None,
)
REQUESTS = Meter(
    id="01JQ3ZP4WGKVE9T2S6B8N5M7XB",
    namespace="default",
    slug="api_requests",
    name="API requests",
    aggregation=Aggregation.COUNT,
    event_type="request",
    value_property=None,
    group_by={},
    event_from=None,
    description=None,
)
METERS = [TOKENS, REQUESTS]
_INSERT_COLUMNS = ["seq", "namespace", "id", "source", "type", "subject", "time", "data", "ingested_at"]


# -- golden files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "cluster"), [("single", None), ("cluster", CLUSTER)])
def test_schema_matches_golden_file(name: str, cluster: str | None) -> None:
    text = render_schema("meterd", cluster, METERS)
    path = GOLDEN / f"{name}.sql"
    if os.environ.get("METERD_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs: review, then rewrite it with METERD_UPDATE_GOLDEN=1"


def test_the_store_runs_the_rendered_event_store_statements() -> None:
    for cluster in (None, CLUSTER):
        assert schema_statements("meterd", cluster, [])[0][1] == event_store_ddl("meterd", cluster)


def test_clustered_inserts_are_synchronous_and_keep_the_single_server_settings() -> None:
    single, clustered = insert_settings(None), insert_settings(CLUSTER)
    assert "distributed_foreground_insert" not in single
    assert clustered == {**single, "distributed_foreground_insert": 1}
    assert single["deduplicate_blocks_in_dependent_materialized_views"] == 1


@pytest.mark.parametrize("bad", ["", "a b", "c'; DROP TABLE x", "c`", "c)"])
def test_names_that_would_break_the_ddl_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        Layout("meterd", bad)
    with pytest.raises(ValueError):
        Layout(bad or "1x", None)


# -- the single-server schema, run -----------------------------------------------------------------


@pytest.fixture
def fresh(event_store: Any) -> Iterator[tuple[Client, str]]:
    """A new client on the test process's chDB engine (one engine path per process) and a new database."""
    client = clickhouse_connect.get_client(dsn=event_store.dsn)
    database = f"ddl_{uuid.uuid4().hex[:10]}"
    yield client, database
    client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    client.close()


def _insert(client: Client, database: str, first_seq: int, rows: list[list[Any]]) -> None:
    columns = [list(column) for column in zip(*rows, strict=True)]
    token = f"journal:{first_seq}-{first_seq + len(rows) - 1}"
    client.insert(
        f"{database}.events",
        columns,
        column_names=_INSERT_COLUMNS,
        column_oriented=True,
        settings={"insert_deduplication_token": token, **insert_settings(None)},
    )


def _rows(first_seq: int, n: int) -> list[list[Any]]:
    base = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)  # spans a month (partition) and several hours
    rows = []
    for i in range(n):
        seq = first_seq + i
        etype = ("prompt", "request", "other")[i % 3]
        data = {"tokens": i % 7, "model": ("a", "b")[i % 2], "type": ("in", "out")[i % 5 % 2]}
        moment = to_us(base + timedelta(minutes=7 * i))
        rows.append([seq, "default", f"e{seq}", "s", etype, f"u{i % 4}", moment, json.dumps(data).encode(), moment])
    return rows


def test_single_server_schema_runs_on_chdb_and_builds_rollups(fresh: tuple[Client, str]) -> None:
    client, database = fresh
    for statement in event_store_ddl(database):
        client.command(statement)
    early, late = _rows(1, 60), _rows(61, 60)
    _insert(client, database, 1, early)  # stored before the rollups exist: the backfill takes it
    builds = {TOKENS.id: "b1", REQUESTS.id: "b1"}
    for _, statements in schema_statements(database, None, METERS, seq=60, builds=builds):
        for statement in statements:
            client.command(statement)
    _insert(client, database, 61, late)  # through the views
    _insert(client, database, 61, late)  # a replay: dropped by the events table and by the views

    tokens: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    requests = 0
    for _, _, _, _, etype, _, _, data, _ in early + late:
        body = json.loads(data)
        if etype == "prompt":
            tokens[body["model"], body["type"]][0] += body["tokens"]
            tokens[body["model"], body["type"]][1] += 1
        requests += etype == "request"
    layout = Layout(database)
    assert client.query(f"SELECT count() FROM {database}.events").result_rows == [(120,)]
    table = rollup_names(layout, TOKENS, "b1").table
    got = client.query(f"SELECT g0, g1, sumMerge(value), sum(rows) FROM {table} GROUP BY g0, g1").result_rows
    assert {(g0, g1): [total, n] for g0, g1, total, n in got} == tokens
    table = rollup_names(layout, REQUESTS, "b1").table
    assert client.query(f"SELECT sum(rows) FROM {table}").result_rows == [(requests,)]


# -- the clustered schema, parsed ------------------------------------------------------------------


def _clustered_statements() -> list[str]:
    statements = [s for _, section in schema_statements("meterd", CLUSTER, METERS, seq=42) for s in section]
    layout = Layout("meterd", CLUSTER)
    names = rollup_names(layout, TOKENS, "b1")
    statements += [layout.drop("VIEW", names.view), layout.drop("TABLE", names.storage)]
    statements += Layout("meterd", "{cluster}").create_table(EVENTS_TABLE)  # a macro, as ON CLUSTER allows
    statements += Layout("meterd", "prod-eu.1").create_table(EVENTS_TABLE)  # a name that needs quoting
    return statements


def test_every_clustered_statement_parses(fresh: tuple[Client, str]) -> None:
    client, _ = fresh
    engines = {row[0] for row in client.query("SELECT name FROM system.table_engines").result_rows}
    table_settings = {row[0] for row in client.query("SELECT name FROM system.merge_tree_settings").result_rows}
    query_settings = {row[0] for row in client.query("SELECT name FROM system.settings").result_rows}
    for statement in _clustered_statements():
        # ClickHouse's own parser: a syntax error raises (formatQuery parses without running anything)
        client.query("SELECT formatQuery({q:String})", parameters={"q": statement})
        for engine in re.findall(r"^ENGINE = (\w+)\(", statement, re.MULTILINE):
            assert engine in engines, statement
        for clause in re.findall(r"^SETTINGS (.*)$", statement, re.MULTILINE):
            for name in re.findall(r"(\w+) = ", clause):
                assert name in table_settings, (name, statement)
        for name in re.findall(r"^INSERT INTO \S+ SETTINGS (\w+) = ", statement, re.MULTILINE):
            assert name in query_settings, (name, statement)
    for name in insert_settings(CLUSTER):
        assert name in query_settings, name


def test_clustered_statements_use_the_clustered_names() -> None:
    statements = _clustered_statements()
    creates = [s for s in statements if s.startswith("CREATE ")]
    assert all(f" ON CLUSTER {CLUSTER}" in s or "ON CLUSTER `" in s or "{cluster}" in s for s in creates)
    views = [s for s in statements if s.startswith("CREATE MATERIALIZED VIEW")]
    assert views and all("\nFROM meterd.events_local\n" in v and "_local AS\n" in v for v in views)
    backfills = [s for s in statements if s.startswith("INSERT INTO")]
    assert backfills and all("\nFROM meterd.events\n" in b and "_local" not in b.split("\n")[0] for b in backfills)
    assert all(s.endswith(" SYNC") for s in statements if s.startswith("DROP "))


# -- the rollup manager in a cluster, against a recording client -------------------------------------


class _Recorder:
    """Just enough of a clickhouse-connect client to record what RollupManager sends."""

    def __init__(self, tables: list[tuple[str, str]]) -> None:
        self.commands: list[str] = []
        self.inserts: list[str] = []
        self.tables = tables

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        self.commands.append(sql)
        rows: list[Any] = []
        if "max(seq)" in sql:
            rows = [(42,)]
        elif "system.tables" in sql:
            rows = self.tables
        return type("Result", (), {"result_rows": rows})()

    def insert(self, table: str, *args: Any, **kwargs: Any) -> None:
        self.inserts.append(table)


def test_rollup_manager_in_a_cluster_runs_the_rendered_build() -> None:
    stale = [
        ("rollup_01jq3zp4wgkve9t2s6b8n5m7xz_old_mv", "MaterializedView"),
        ("rollup_01jq3zp4wgkve9t2s6b8n5m7xz_old", "Distributed"),
    ]
    client = _Recorder(stale)
    manager = RollupManager(client, threading.Lock(), "meterd", cluster=CLUSTER)  # type: ignore[arg-type]
    assert client.commands[0].startswith(f"CREATE TABLE IF NOT EXISTS meterd.rollup_state ON CLUSTER {CLUSTER}")
    assert client.commands[1] == "SELECT meter_id, hash, build, ready FROM meterd.rollup_state FINAL"
    client.commands.clear()

    manager.ensure(TOKENS, wait=True)
    rollup = manager.ready(TOKENS)
    assert rollup is not None
    build = rollup.table.rsplit("_", 1)[1]
    rendered = RollupBuild(Layout("meterd", CLUSTER), TOKENS, build, EVENTS_TABLE)
    assert client.commands == [*rendered.create(), "SELECT max(seq) FROM meterd.events", *rendered.feed(42)]
    assert rollup.table == f"meterd.rollup_{TOKENS.id.lower()}_{build}"  # queries read the Distributed table
    assert client.inserts == ["meterd.rollup_state", "meterd.rollup_state"]

    client.commands.clear()
    manager.sync([TOKENS])
    drops = [c for c in client.commands if c.startswith("DROP")]
    assert drops == [
        f"DROP VIEW IF EXISTS meterd.{stale[0][0]} ON CLUSTER {CLUSTER} SYNC",
        f"DROP TABLE IF EXISTS meterd.{stale[1][0]} ON CLUSTER {CLUSTER} SYNC",
    ]
