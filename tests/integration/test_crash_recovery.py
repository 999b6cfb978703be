"""SIGKILL at the awkward moments: while a new meter's rollup is being backfilled, and while a restarted server
is still moving a backlog from its journal into the store. Afterwards every acknowledged event is counted
exactly once, by meters and by entitlement balances."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from meterd.core.timeutil import floor_minute, format_rfc3339, utcnow
from tests.conftest import Server, event, wait_for

pytestmark = pytest.mark.slow


def _total(api: httpx.Client, slug: str) -> float:
    rows = api.get(f"/api/v1/meters/{slug}/query").json()["data"]
    return sum(r["value"] for r in rows)


def _ingest(api: httpx.Client, etype: str, count: int, batch: int = 1000) -> None:
    for start in range(0, count, batch):
        body = [
            event(f"{etype}-{i}", type_=etype, subject=f"s{i % 13}", data={"n": i % 7})
            for i in range(start, min(count, start + batch))
        ]
        assert api.post("/api/v1/events", json=body).status_code == 204


def test_kill_while_a_new_meter_backfills(tmp_path: Path) -> None:
    etype, count = f"bf_{uuid.uuid4().hex[:6]}", 30_000
    expected = sum(i % 7 for i in range(count))
    server = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            counter = {"slug": "calls", "eventType": etype, "aggregation": "COUNT"}
            assert api.post("/api/v1/meters", json=counter).status_code == 201
            _ingest(api, etype, count)
            wait_for(lambda: _total(api, "calls") == count, timeout=30)
        for round_, delay in enumerate((0.0, 0.05, 0.3)):
            slug = f"sum_{round_}"
            meter = {"slug": slug, "eventType": etype, "aggregation": "SUM", "valueProperty": "$.n"}
            with httpx.Client(base_url=server.url, timeout=30) as api:
                assert api.post("/api/v1/meters", json=meter).status_code == 201
            time.sleep(delay)
            server.kill()  # the rollup backfill of the new meter is running (or just done)
            server.start()
            with httpx.Client(base_url=server.url, timeout=30) as api:
                assert _total(api, slug) == expected  # right at once (raw events answer until the rollup is ready)
                hourly = api.get(f"/api/v1/meters/{slug}/query", params={"windowSize": "HOUR"}).json()["data"]
                assert sum(r["value"] for r in hourly) == expected
                assert _total(api, "calls") == count
        with httpx.Client(base_url=server.url, timeout=30) as api:  # once the rebuilt rollups are ready too
            time.sleep(2)
            for round_ in range(3):
                assert _total(api, f"sum_{round_}") == expected
    finally:
        server.stop()


def test_kill_during_recovery_of_a_journal_backlog(tmp_path: Path) -> None:
    """The first server acknowledges events but never stores them (its sink waits for a batch it never gets);
    the second is killed while it drains that backlog; the third must count each event once, balances too."""
    etype, count, data = f"rc_{uuid.uuid4().hex[:6]}", 20_000, tmp_path / "data"
    stalled = {"METERD_SINK__MIN_BATCH": "100000", "METERD_SINK__MAX_WAIT": "PT3600S"}
    server = Server(data, env=stalled).start()
    start = floor_minute(utcnow())
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            meter = {"slug": "units", "eventType": etype, "aggregation": "SUM", "valueProperty": "$.n"}
            assert api.post("/api/v1/meters", json=meter).status_code == 201
            assert api.post("/api/v1/features", json={"key": "units", "name": "u", "meterSlug": "units"}).is_success
            assert api.post("/api/v1/customers", json={"name": "s0", "key": "s0"}).status_code == 201
            entitlement = {
                "type": "metered",
                "featureKey": "units",
                "usagePeriod": {"interval": "DAY"},
                "measureUsageFrom": format_rfc3339(start),
                "issue": {"amount": 1_000_000},
            }
            assert api.post("/api/v2/customers/s0/entitlements", json=entitlement).status_code == 201
            _ingest(api, etype, count)
            assert _total(api, "units") == 0  # acknowledged, all still in the journal
        server.kill()
        server = Server(data, port=server.port).start()
        server.kill()  # the sink is draining the backlog now
        server = Server(data, port=server.port).start()
        expected = sum(i % 7 for i in range(count))
        mine = sum(i % 7 for i in range(count) if i % 13 == 0)  # subject s0's events
        with httpx.Client(base_url=server.url, timeout=30) as api:
            wait_for(lambda: _total(api, "units") >= expected, timeout=60)
            time.sleep(0.5)
            assert _total(api, "units") == expected
            value = api.get("/api/v2/customers/s0/entitlements/units/value").json()
            assert (value["usage"], value["balance"]) == (mine, 1_000_000 - mine)
            _ingest(api, etype, count)  # the same ids again: all duplicates
            time.sleep(1.0)
            assert _total(api, "units") == expected
            assert api.get("/api/v2/customers/s0/entitlements/units/value").json()["usage"] == mine
    finally:
        server.stop()
