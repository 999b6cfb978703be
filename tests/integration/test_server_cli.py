"""The server's safety defaults, API keys, config-file meters, overload, and the client commands."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, event, free_port, wait_for

pytestmark = pytest.mark.slow

METERD = [sys.executable, "-m", "meterd.cli.main"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*METERD, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    result = _run("serve", "--data-dir", str(tmp_path / "d"), "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode != 0
    assert "refusing to serve 0.0.0.0 without API keys" in result.stderr


def test_api_keys_create_use_revoke(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = _run("keys", "create", "--name", "ci", "--data-dir", str(data))
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("mtd_")
    assert secret not in (data / "metadata.db").read_bytes().decode("latin-1")  # only the hash is kept
    server = Server(data).start()
    try:
        with httpx.Client(base_url=server.url) as anonymous:
            denied = anonymous.get("/api/v1/meters")
            assert denied.status_code == 401
            assert denied.headers["content-type"] == "application/problem+json"
            assert anonymous.get("/api/v1/meters", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert anonymous.get("/healthz").status_code == 200
        auth = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=server.url, headers=auth) as api:
            assert api.get("/api/v1/meters").status_code == 200
            listed = _run("keys", "list", "--data-dir", str(data))
            key_id = listed.stdout.split()[0]
            assert _run("keys", "revoke", key_id, "--data-dir", str(data)).returncode == 0
            assert api.get("/api/v1/meters").status_code == 401  # revocation takes effect at once
    finally:
        server.stop()


def test_env_keys_and_config_meters(tmp_path: Path) -> None:
    config = tmp_path / "meterd.yaml"
    config.write_text(
        "meters:\n"
        "  - slug: tokens_total\n    eventType: litellm_tokens\n    aggregation: SUM\n"
        "    valueProperty: $.total_tokens\n    groupBy: {model: $.model}\n"
        "  - slug: calls\n    eventType: litellm_tokens\n    aggregation: COUNT\n"
    )
    server = Server(tmp_path / "data", env={"METERD_API_KEYS": "k1,k2"}, args=[])
    server.args = []
    server.env["METERD_CONFIG"] = str(config)
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer k2"}) as api:
            slugs = sorted(m["slug"] for m in api.get("/api/v1/meters").json())
            assert slugs == ["calls", "tokens_total"]
        server.stop()
        server.start()  # provisioning is idempotent
    finally:
        server.stop()


async def _flood(url: str, bodies: int) -> list[httpx.Response]:
    batch = [event(type_="flood", data={"n": i}) for i in range(100)]
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=64)) as client:

        async def one(i: int) -> httpx.Response:
            body = [dict(e, id=f"{i}-{j}") for j, e in enumerate(batch)]
            return await client.post("/api/v1/events", json=body)

        return list(await asyncio.gather(*(one(i) for i in range(bodies))))


@pytest.mark.parametrize(
    ("limits", "named"),
    [  # each limit alone: the other one out of the flood's reach (64 connections)
        ({"METERD_INGEST__MAX_QUEUED_EVENTS": "100", "METERD_INGEST__MAX_CONCURRENT_REQUESTS": "999"}, "queue is full"),
        ({"METERD_INGEST__MAX_CONCURRENT_REQUESTS": "2"}, "ingest.max_concurrent_requests"),
    ],
)
def test_overload_sheds_with_429_and_retry_after(tmp_path: Path, limits: dict[str, str], named: str) -> None:
    server = Server(tmp_path / "data", env=limits).start()
    try:
        responses = asyncio.run(_flood(server.url, 200))
        statuses = {r.status_code for r in responses}
        assert statuses <= {204, 429}, statuses
        shed = [r for r in responses if r.status_code == 429]
        assert shed, "expected some requests to be shed"
        assert all(int(r.headers["retry-after"]) >= 1 and named in r.json()["detail"] for r in shed)
        accepted = sum(100 for r in responses if r.status_code == 204)
        with httpx.Client(base_url=server.url) as api:
            api.post("/api/v1/meters", json={"slug": "flood", "eventType": "flood", "aggregation": "COUNT"})

            def counted() -> float:
                rows = api.get("/api/v1/meters/flood/query").json()["data"]
                return rows[0]["value"] if rows else 0

            assert wait_for(lambda: counted() == accepted or None, timeout=20)
    finally:
        server.stop()


def test_cli_client_commands(tmp_path: Path, server: Server, unique) -> None:
    env = {"METERD_URL": server.url}
    slug, etype = unique("cli_tokens"), unique("cli")
    created = _run(
        "meters",
        "create",
        slug,
        "--event-type",
        etype,
        "--aggregation",
        "SUM",
        "--value-property",
        "$.tokens",
        "--group-by",
        "model=$.model",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        "\n".join(
            json.dumps({"type": etype, "subject": f"s{i % 2}", "id": f"e{i}", "data": {"tokens": i, "model": "m"}})
            for i in range(10)
        )
    )
    for _ in range(2):  # a second run repeats every id: dedup keeps the totals
        result = _run("ingest", str(lines), "--batch-size", "3", env=env)
        assert result.returncode == 0, result.stderr

    def csv() -> str | None:
        out = _run("query", slug, "--group-by", "subject", "--format", "csv", env=env).stdout
        return out if out.count("\n") == 3 else None

    text = wait_for(csv, timeout=10)
    header, *rows = [line.split(",") for line in text.splitlines()]
    # subject_display_name appears when the namespace has subject entities (other tests on the server add some)
    assert [h for h in header if h != "subject_display_name"] == ["window_start", "window_end", "subject", "value"]
    subject, value = header.index("subject"), header.index("value")
    assert [(row[subject], row[value]) for row in rows] == [("s0", "20.000000"), ("s1", "25.000000")]
    listed = json.loads(_run("meters", "list", "--format", "json", env=env).stdout)
    assert slug in [m["slug"] for m in listed]
    table = _run("meters", "list", env={**env, "COLUMNS": "200"}).stdout
    assert slug in table
    tail = _run("events", "tail", "--count", "3", "--interval", "0.1", env=env)
    assert tail.returncode == 0, tail.stderr
    tailed = [json.loads(line) for line in tail.stdout.splitlines()]
    assert len(tailed) == 3 and all("event" in item and "ingestedAt" in item for item in tailed)


def test_namespaces_are_isolated_by_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key_a = _run("keys", "create", "--namespace", "alpha", "--data-dir", str(data)).stdout.strip()
    key_b = _run("keys", "create", "--namespace", "beta", "--data-dir", str(data)).stdout.strip()
    server = Server(data).start()
    try:
        a = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key_a}"})
        b = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key_b}"})
        meter = {"slug": "calls", "eventType": "call", "aggregation": "COUNT"}
        assert a.post("/api/v1/meters", json=meter).status_code == 201
        assert b.get("/api/v1/meters/calls").status_code == 404
        assert b.post("/api/v1/meters", json=meter).status_code == 201  # same slug, other namespace
        assert a.post("/api/v1/events", json=[event(type_="call") for _ in range(3)]).status_code == 204
        assert b.post("/api/v1/events", json=[event(type_="call")]).status_code == 204
        assert a.post("/api/v1/customers", json={"name": "A", "key": "cust"}).status_code == 201
        assert b.get("/api/v1/customers/cust").status_code == 404

        def total(client: httpx.Client) -> float:
            rows = client.get("/api/v1/meters/calls/query").json()["data"]
            return rows[0]["value"] if rows else 0

        wait_for(lambda: total(a) == 3 and total(b) == 1, timeout=10)
        assert {e["event"]["type"] for e in b.get("/api/v1/events").json()} == {"call"}
        assert len(b.get("/api/v1/events").json()) == 1
        a.close()
        b.close()
    finally:
        server.stop()


def test_a_lagging_event_store_gets_503_with_retry_after(tmp_path: Path) -> None:
    env = {"METERD_SINK__MAX_LAG_EVENTS": "1000", "METERD_SINK__MIN_BATCH": "100000", "METERD_SINK__MAX_WAIT": "PT600S"}
    server = Server(tmp_path / "data", env=env).start()
    try:
        with httpx.Client(base_url=server.url) as api:
            batch = [event(type_="lag") for _ in range(1001)]
            assert api.post("/api/v1/events", json=batch).status_code == 204
            refused = api.post("/api/v1/events", json=[event(type_="lag")])
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert int(refused.headers["retry-after"]) >= 1
            assert api.get("/readyz").json()["journalDepth"] == 1001
    finally:
        server.stop()
    # the acknowledged events were kept: a restart with a normal sink stores every one of them
    server = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url) as api:
            api.post("/api/v1/meters", json={"slug": "lag", "eventType": "lag", "aggregation": "COUNT"})

            def total() -> float:
                rows = api.get("/api/v1/meters/lag/query").json()["data"]
                return rows[0]["value"] if rows else 0

            assert wait_for(lambda: total() == 1001, timeout=10)
    finally:
        server.stop()
