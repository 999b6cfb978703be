"""Metadata on PostgreSQL: the Alembic migrations, and every SQL store behind a real `meterd serve`, checked over
HTTP with exact values. Each server gets a fresh database on the session's real PostgreSQL (`postgres`).

The whole tests/api suite runs on PostgreSQL too with METERD_TEST_METADATA=postgres (not in the default run);
this module is the slice that always runs, plus what only PostgreSQL has: concurrent writers, concurrent
migrations, and answers that must match SQLite's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text

from meterd.backends.sql.migrate import alembic_config, upgrade
from meterd.backends.sql.tables import metadata
from tests.api.helpers import assert_problem, create_meter
from tests.conftest import Server, wait_for
from tests.services.postgres import Databases, PostgresServer

Unique = Callable[[str], str]
METERD = [sys.executable, "-m", "meterd.cli.main"]
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
VOLATILE = {"id", "createdAt", "updatedAt", "deletedAt", "signingSecret"}


@pytest.fixture(scope="module")
def pg_url(postgres: Databases) -> str:
    """A database with a linguistic collation (en-US: `_` and case ignored on a first pass), as operators'
    databases often have: meterd must not depend on the server's collation."""
    return postgres.create_database(icu_locale="en-US")


@pytest.fixture(scope="module")
def pg_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("pg-metadata") / "data", env={"METERD_STORAGE__METADATA_URL": pg_url})
    yield srv.start()
    srv.stop()


@pytest.fixture
def pg(pg_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=pg_server.url, timeout=30) as client:
        yield client


@pytest.fixture
def db(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


def exact(response: httpx.Response) -> Any:
    """The body with numbers as Decimal (the exact digits sent)."""
    return json.loads(response.content, parse_float=Decimal)


def with_numbers(body: Any, **numbers: str) -> dict[str, Any]:
    """Request kwargs for a JSON body whose "<name>" strings are replaced by the exact number texts given."""
    content = json.dumps(body)
    for name, digits in numbers.items():
        content = content.replace(f'"<{name}>"', digits)
    return {"content": content, "headers": {"Content-Type": "application/json"}}


def stable(body: Any) -> Any:
    """The body without the fields each server makes up (ids, times, secrets)."""
    if isinstance(body, dict):
        return {k: stable(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [stable(v) for v in body]
    return body


def all_at_once(count: int, request: Callable[[httpx.Client], httpx.Response], base_url: str) -> list[int]:
    """`count` clients send `request` at the same moment; their status codes, sorted."""
    gate = threading.Barrier(count)

    def one(_: int) -> int:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            gate.wait()
            return request(client).status_code

    with ThreadPoolExecutor(count) as pool:
        return sorted(pool.map(one, range(count)))


# -- migrations --------------------------------------------------------------------------------------------


def _model_differences(conn: Connection) -> list[Any]:
    """What differs between the migrated schema and the model the stores use (tables.py), which holds every
    table but the sink ledger's (written with plain SQL by meterd.backends.sql.ledger). Empty = the migrations
    made exactly the model: no create_all anywhere."""

    def modelled(_obj: Any, name: str | None, kind: str, reflected: bool, _compare_to: Any) -> bool:
        return not (kind == "table" and reflected and name not in metadata.tables)

    context = MigrationContext.configure(conn, opts={"include_object": modelled})
    return [d for d in compare_metadata(context, metadata) if not _ledger_index(d)]


def _ledger_index(difference: Any) -> bool:
    return bool(difference[0] == "remove_index" and difference[1].table.name not in metadata.tables)


def _schema(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        columns = conn.execute(
            text(
                "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable "
                "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
            )
        )
        indexes = conn.execute(
            text("SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 2")
        )
        return [tuple(row) for row in [*columns, *indexes]]


def test_migrations_make_the_schema_from_empty_and_a_second_upgrade_is_a_no_op(postgres: Databases) -> None:
    engine = create_engine(postgres.create_database())
    try:
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
            assert _model_differences(conn) == []
            kinds = dict(
                conn.execute(
                    text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'grants' AND column_name IN ('amount', 'effective_at', 'metadata')"
                    )
                ).all()
            )
        assert kinds == {"amount": "character varying", "effective_at": "timestamp with time zone", "metadata": "json"}
        before = _schema(engine)
        statements: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        upgrade(engine)
        writes = [s for s in statements if re.match(r"\s*(CREATE|ALTER|DROP|INSERT|UPDATE|DELETE)", s, re.I)]
        assert writes == [] and statements  # it looked, and changed nothing
        assert _schema(engine) == before
    finally:
        engine.dispose()


UPGRADE_WHEN_TOLD = """
import pathlib, sys, time
from sqlalchemy import create_engine
from meterd.backends.sql.migrate import upgrade
engine = create_engine(sys.argv[1])
with engine.connect():
    pass
pathlib.Path(sys.argv[2]).touch()
while not pathlib.Path(sys.argv[3]).exists():
    time.sleep(0.002)
upgrade(engine)
"""


def test_nodes_starting_at_once_migrate_one_empty_database_once(postgres: Databases, tmp_path: Path) -> None:
    """Three processes upgrade one empty database at the same moment: all succeed, the schema is made once."""
    url, go = postgres.create_database(), tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(3)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE_WHEN_TOLD, url, str(r), str(go)], stderr=subprocess.PIPE, text=True
        )
        for r in ready
    ]
    try:
        deadline = 60.0
        while not all(r.exists() for r in ready) and deadline > 0:
            assert all(p.poll() is None for p in processes), [p.communicate()[1] for p in processes]
            threading.Event().wait(0.01)
            deadline -= 0.01
        go.touch()
        results = [(p.wait(timeout=120), p.communicate()[1]) for p in processes]
    finally:
        for p in processes:
            p.kill() if p.poll() is None else None
    assert [code for code, _ in results] == [0, 0, 0], [err[-3000:] for _, err in results]
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
            assert _model_differences(conn) == []
    finally:
        engine.dispose()


# -- customers and subjects --------------------------------------------------------------------------------


def test_customers_crud_with_exact_values(pg: httpx.Client, unique: Unique, db: Engine) -> None:
    key, s1, s2 = unique("acme"), unique("Sub_A"), unique("sub_b")
    body = {
        "name": "Ünïcødé 100% Pure_Co ☃",
        "key": key,
        "usageAttribution": {"subjectKeys": [s1, s2]},
        "description": "x" * 10_000,
        "primaryEmail": "billing@acme.test",
        "currency": "EUR",
        "metadata": {"tier": "gold", "emoji": "🚀", "quote": 'it\'s "quoted"', "nul": "a\u0000b"},
    }
    created = pg.post("/api/v1/customers", json=body)
    assert created.status_code == 201, created.text
    customer = created.json()
    assert stable(customer) == {k: v for k, v in body.items()}
    assert customer["createdAt"] == customer["updatedAt"]
    for ref in (customer["id"], key):
        assert pg.get(f"/api/v1/customers/{ref}").json() == customer
    with db.connect() as conn:  # stored as sent
        row = conn.execute(text("SELECT name, metadata::text FROM customers WHERE id = :id"), {"id": customer["id"]})
        name, stored_metadata = row.one()
    assert name == body["name"] and json.loads(stored_metadata) == body["metadata"]

    replaced = pg.put(f"/api/v1/customers/{key}", json={**body, "name": "Renamed", "currency": "USD"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "Renamed" and replaced.json()["currency"] == "USD"
    assert replaced.json()["createdAt"] == customer["createdAt"] < replaced.json()["updatedAt"]
    assert pg.delete(f"/api/v1/customers/{key}").status_code == 204
    assert_problem(pg.get(f"/api/v1/customers/{key}"), 404)
    again = pg.post("/api/v1/customers", json=body)  # key and subjects are free again (partial unique indexes)
    assert again.status_code == 201, again.text


def test_customer_filters_are_literal_and_case_insensitive(pg: httpx.Client, unique: Unique) -> None:
    tag = unique("t")
    wanted = pg.post("/api/v1/customers", json={"name": f"{tag} 100% Pure_Co", "key": unique("k1")}).json()
    decoy = pg.post("/api/v1/customers", json={"name": f"{tag} 100X PureXCo", "key": unique("k2")}).json()
    sub = pg.post("/api/v1/customers", json={"name": f"{tag} sub", "usageAttribution": {"subjectKeys": [f"{tag}_%"]}})

    def names(**params: str) -> list[str]:
        response = pg.get("/api/v1/customers", params={**params, "pageSize": 100})
        assert response.status_code == 200, response.text
        return [c["name"] for c in response.json()["items"]]

    assert names(name=f"{tag} 100% PURE_co".upper()) == [wanted["name"]]
    assert names(name=f"{tag} 100_") == []
    assert decoy["name"] in names(name=tag)
    assert names(subject=f"{tag}_%") == [sub.json()["name"]]
    assert names(subject=f"{tag}__") == []


def test_customer_list_sorts_names_by_code_point(pg: httpx.Client, unique: Unique) -> None:
    tag = unique("o")
    for name in ("b", "B", "_a", "a_b", "ab", "É", "Z"):
        assert pg.post("/api/v1/customers", json={"name": f"{tag} {name}", "key": unique(name)}).status_code == 201
    listed = pg.get("/api/v1/customers", params={"name": tag, "pageSize": 100}).json()["items"]
    got = [c["name"].removeprefix(f"{tag} ") for c in listed]
    assert got == ["B", "Z", "_a", "a_b", "ab", "b", "É"]  # as SQLite sorts: by code point


def test_subjects_keep_microseconds_and_concurrent_upserts_make_one_row(pg: httpx.Client, unique: Unique) -> None:
    key = unique("subj")
    body = [{"key": key, "displayName": "Ünï", "currentPeriodStart": "2024-02-29T23:59:59.999999Z"}]
    upserted = pg.post("/api/v1/subjects", json=body)
    assert upserted.status_code == 200, upserted.text
    (subject,) = upserted.json()
    assert subject["currentPeriodStart"] == "2024-02-29T23:59:59.999999Z"
    assert pg.get(f"/api/v1/subjects/{key}").json() == subject

    fresh = unique("subj_race")
    statuses = all_at_once(8, lambda c: c.post("/api/v1/subjects", json=[{"key": fresh}]), str(pg.base_url))
    assert statuses == [200] * 8
    assert [s["key"] for s in pg.get("/api/v1/subjects").json()].count(fresh) == 1


# -- meters, features, entitlements, grants ------------------------------------------------------------------


def test_meters_crud_with_exact_values(pg: httpx.Client, unique: Unique) -> None:
    slug = unique("tokens")
    body = {
        "slug": slug,
        "name": "Tökens ✓",
        "description": "LLM tokens, 100% of them",
        "eventType": unique("type"),
        "aggregation": "SUM",
        "valueProperty": "$.tokens",
        "groupBy": {"model": "$.model", "region": "$.meta.region"},
        "metadata": {"team": "ai", "nested": '{"a": 1}'},
        "eventFrom": "2025-01-01T00:00:00.123456Z",
    }
    meter = create_meter(pg, **body)
    assert stable(meter) == body
    assert pg.get(f"/api/v1/meters/{slug}").json() == meter
    assert slug in [m["slug"] for m in pg.get("/api/v1/meters").json()]
    assert pg.delete(f"/api/v1/meters/{slug}").status_code == 204
    assert_problem(pg.get(f"/api/v1/meters/{slug}"), 404)
    assert create_meter(pg, **body)["slug"] == slug  # the slug is free again


@pytest.mark.parametrize("resource", ["customers", "meters", "features"])
def test_concurrent_creates_of_one_key_give_one_201_and_409s(pg: httpx.Client, unique: Unique, resource: str) -> None:
    key = unique("race")
    bodies = {
        "customers": {"name": key, "key": key, "usageAttribution": {"subjectKeys": [key]}},
        "meters": {"slug": key, "eventType": key, "aggregation": "COUNT"},
        "features": {"key": key, "name": key},
    }
    statuses = all_at_once(8, lambda c: c.post(f"/api/v1/{resource}", json=bodies[resource]), str(pg.base_url))
    assert statuses == [201] + [409] * 7


def _entitlement_world(pg: httpx.Client, unique: Unique) -> tuple[str, str, str]:
    meter, feature, customer = unique("ent_meter"), unique("ent_feature"), unique("ent_customer")
    create_meter(pg, slug=meter, eventType=meter, aggregation="SUM", valueProperty="$.v", groupBy={"m": "$.m"})
    made = pg.post(
        "/api/v1/features", json={"key": feature, "name": "F", "meterSlug": meter, "meterGroupByFilters": {"m": "x"}}
    )
    assert made.status_code == 201, made.text
    assert made.json()["meterGroupByFilters"] == {"m": "x"}
    made = pg.post(
        "/api/v1/customers", json={"name": customer, "key": customer, "usageAttribution": {"subjectKeys": [customer]}}
    )
    assert made.status_code == 201, made.text
    return meter, feature, customer


def test_entitlements_and_grants_keep_exact_decimals(pg: httpx.Client, unique: Unique, db: Engine) -> None:
    _, feature, customer = _entitlement_world(pg, unique)
    base = f"/api/v2/customers/{customer}/entitlements"
    body = {
        "type": "metered",
        "featureKey": feature,
        "usagePeriod": {"interval": "DAY"},
        "measureUsageFrom": "2024-01-01T00:00:00Z",
        "issueAfterReset": "<issue>",
        "isSoftLimit": True,
    }
    entitlement = pg.post(base, **with_numbers(body, issue="0.000001"))
    assert entitlement.status_code == 201, entitlement.text
    assert exact(entitlement)["issue"] == {"amount": Decimal("0.000001"), "priority": 1}
    assert entitlement.json()["isSoftLimit"] is True
    amount = "123456789012345.000000000000000001"
    body = {
        "amount": "<amount>",
        "priority": 7,
        "effectiveAt": "2024-01-01T00:00:00Z",
        "minRolloverAmount": "<min>",
        "maxRolloverAmount": "<max>",
        "metadata": {"po": "PO-1"},
    }
    grant = pg.post(f"{base}/{feature}/grants", **with_numbers(body, amount=amount, min="0.1", max="1e3"))
    assert grant.status_code == 201, grant.text
    assert exact(grant)["amount"] == Decimal(amount)
    assert exact(grant)["minRolloverAmount"] == Decimal("0.1") and exact(grant)["maxRolloverAmount"] == 1000
    listed = {g["id"]: g for g in exact(pg.get(f"{base}/{feature}/grants"))["items"]}
    assert (listed[grant.json()["id"]]["amount"], listed[grant.json()["id"]]["priority"]) == (Decimal(amount), 7)
    issued = [g for g in listed.values() if g["id"] != grant.json()["id"]]  # issueAfterReset's own grant
    assert [(g["amount"], g["priority"]) for g in issued] == [(Decimal("0.000001"), 1)]
    with db.connect() as conn:
        stored = conn.execute(text("SELECT amount FROM grants WHERE id = :id"), {"id": grant.json()["id"]}).scalar()
    assert stored == amount  # the exact text, never a float
    value = pg.get(f"{base}/{feature}/value")
    assert value.status_code == 200, value.text
    # daily resets since 2024 roll the grant over capped at maxRolloverAmount, plus the issueAfterReset grant
    assert exact(value)["balance"] == Decimal("1000.000001") and exact(value)["usage"] == 0
    assert pg.get(f"{base}/{feature}").json()["id"] == entitlement.json()["id"]


def test_concurrent_entitlement_creates_give_one_201_and_409s(pg: httpx.Client, unique: Unique) -> None:
    _, feature, customer = _entitlement_world(pg, unique)
    body = {"type": "boolean", "featureKey": feature}
    url = f"/api/v2/customers/{customer}/entitlements"
    assert all_at_once(8, lambda c: c.post(url, json=body), str(pg.base_url)) == [201] + [409] * 7
    assert len(pg.get(url).json()["items"]) == 1


# -- notifications -----------------------------------------------------------------------------------------


def test_notification_channels_rules_and_events(pg: httpx.Client, unique: Unique) -> None:
    _, feature, _ = _entitlement_world(pg, unique)
    channel_body = {
        "type": "WEBHOOK",
        "name": "Billing hook ✓",
        "url": "http://127.0.0.1:9/hook",
        "customHeaders": {"X-Team": "billing"},
        "signingSecret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "disabled": False,
        "metadata": {"env": "test"},
    }
    channel = pg.post("/api/v1/notification/channels", json=channel_body)
    assert channel.status_code == 201, channel.text
    assert stable(channel.json()) == stable(channel_body)
    assert channel.json()["signingSecret"] == channel_body["signingSecret"]
    body = {
        "type": "entitlements.balance.threshold",
        "name": "alerts",
        "channels": [channel.json()["id"]],
        "features": [feature],
        "thresholds": [{"value": "<percent>", "type": "PERCENT"}, {"value": "<number>", "type": "NUMBER"}],
    }
    rule = pg.post("/api/v1/notification/rules", **with_numbers(body, percent="80.5", number="1000.000001"))
    assert rule.status_code == 201, rule.text
    assert [(t["value"], t["type"]) for t in exact(rule)["thresholds"]] == [
        (Decimal("80.5"), "PERCENT"),
        (Decimal("1000.000001"), "NUMBER"),
    ]
    assert pg.get(f"/api/v1/notification/rules/{rule.json()['id']}").json() == rule.json()
    assert_problem(pg.delete(f"/api/v1/notification/channels/{channel.json()['id']}"), 409)
    tested = pg.post(f"/api/v1/notification/rules/{rule.json()['id']}/test")
    assert tested.status_code == 201, tested.text
    events = pg.get("/api/v1/notification/events", params={"rule": rule.json()["id"]}).json()
    assert [e["id"] for e in events["items"]] == [tested.json()["id"]]
    assert pg.delete(f"/api/v1/notification/rules/{rule.json()['id']}").status_code == 204
    assert pg.delete(f"/api/v1/notification/channels/{channel.json()['id']}").status_code == 204


# -- API keys ----------------------------------------------------------------------------------------------


def test_api_keys_live_in_postgres(postgres: Databases, tmp_path: Path) -> None:
    url = postgres.create_database()
    env = {**os.environ, "METERD_STORAGE__METADATA_URL": url}

    def meterd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*METERD, *args], capture_output=True, text=True, timeout=120, env=env)

    created = meterd("keys", "create", "--name", "ci ✓", "--data-dir", str(tmp_path / "data"))
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name, prefix, hash FROM api_keys")).all()
    finally:
        engine.dispose()
    assert [(name, secret.startswith(prefix), secret in digest) for name, prefix, digest in rows] == [
        ("ci ✓", True, False)
    ]
    server = Server(tmp_path / "data", env={"METERD_STORAGE__METADATA_URL": url}).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/api/v1/meters").status_code == 401
            auth = {"Authorization": f"Bearer {secret}"}
            assert client.get("/api/v1/meters", headers=auth).status_code == 200
            key_id = meterd("keys", "list").stdout.split()[0]
            assert meterd("keys", "revoke", key_id).returncode == 0
            assert client.get("/api/v1/meters", headers=auth).status_code == 401
    finally:
        server.stop()


# -- PostgreSQL going away -----------------------------------------------------------------------------------


def test_a_crashed_postgres_is_a_503_and_committed_metadata_survives_it(tmp_path: Path) -> None:
    """SIGKILL the database under a running node: requests get 503 with Retry-After (not 500) while it is
    down, and once it is back (WAL recovery) the node answers again with everything it had acknowledged."""
    root = Path(tempfile.mkdtemp(prefix="meterd-pg-crash-"))  # not under pytest's 0700 dirs (user postgres)
    pg = PostgresServer(root).start()
    server = Server(tmp_path / "data", env={"METERD_STORAGE__METADATA_URL": pg.create_database()})
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as api:
            meter = create_meter(api, slug="survivor", eventType="e", aggregation="COUNT")
            pg.kill()
            down = api.get("/api/v1/meters/survivor")
            assert_problem(down, 503, detail="metadata database")
            assert down.headers["retry-after"] == "5"
            pg.start()
            back = wait_for(lambda: (r := api.get("/api/v1/meters/survivor")).status_code == 200 and r, timeout=30)
            assert back.json() == meter
    finally:
        server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- the same answers as SQLite ----------------------------------------------------------------------------


def test_hostile_values_get_the_same_answers_as_on_sqlite(server: Server, pg: httpx.Client, unique: Unique) -> None:
    """The session server (SQLite, unless METERD_TEST_METADATA=postgres) and PostgreSQL answer alike: what
    PostgreSQL cannot store (NUL in text, strings longer than their column) is a 400 on both."""
    key = unique("same")
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/v1/customers", {"json": {"name": "a\u0000b", "key": key}}),
        ("POST", "/api/v1/customers", {"json": {"name": "n", "key": key, "currency": "EURO"}}),
        ("POST", "/api/v1/customers", {"json": {"name": "n", "key": key, "primaryEmail": "e" * 300}}),
        ("POST", "/api/v1/features", {"json": {"key": "k" * 65, "name": "n"}}),
        ("GET", "/api/v1/customers/a%00b", {}),
        ("GET", "/api/v1/customers", {"params": {"name": "\u0000"}}),
        ("GET", "/api/v1/customers", {"params": {"subject": "%", "key": key}}),
        ("POST", "/api/v1/subjects", {"json": [{"key": "s\u0000"}]}),
        ("POST", "/api/v1/customers", {"json": {"name": "n", "key": key, "metadata": {"a\u0000": "\u0000"}}}),
        ("GET", f"/api/v1/customers/{key}", {}),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as sqlite:
        for method, path, kwargs in requests:
            on_sqlite, on_pg = sqlite.request(method, path, **kwargs), pg.request(method, path, **kwargs)
            assert on_pg.status_code == on_sqlite.status_code < 500, (path, on_sqlite.text, on_pg.text)
            if on_pg.status_code >= 400:
                assert on_pg.json()["detail"] == on_sqlite.json()["detail"]
            else:
                assert stable(on_pg.json()) == stable(on_sqlite.json())
