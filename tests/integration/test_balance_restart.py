"""Period-start snapshots survive a restart and are dropped by late events that land before them.

An hourly usage period over five hours leaves five period starts in the metadata database; after a
restart the value is the same, and an event that arrives late (four hours back) changes it exactly."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from meterd.core.timeutil import floor_minute, format_rfc3339
from tests.api.helpers import ingest_ok
from tests.conftest import Server, event, wait_for

pytestmark = pytest.mark.slow


def _value(api: httpx.Client) -> dict[str, Decimal]:
    response = api.get("/api/v2/customers/acme/entitlements/tokens/value")
    assert response.status_code == 200, response.text
    return {k: Decimal(str(v)) for k, v in response.json().items() if k not in ("hasAccess", "grantBalances")}


def _snapshots(data: Path) -> int:
    with sqlite3.connect(data / "metadata.db") as conn:
        return int(conn.execute("SELECT count(*) FROM balance_snapshots").fetchone()[0])


def test_snapshots_persist_and_late_events_drop_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()
    start = floor_minute(datetime.now(UTC)) - timedelta(hours=5)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            meter = {"slug": "tokens", "eventType": "tok", "aggregation": "SUM", "valueProperty": "$.n"}
            assert api.post("/api/v1/meters", json=meter).status_code == 201
            assert api.post("/api/v1/features", json={"key": "tokens", "name": "t", "meterSlug": "tokens"}).is_success
            assert api.post("/api/v1/customers", json={"name": "acme", "key": "acme"}).status_code == 201
            entitlement = {
                "type": "metered",
                "featureKey": "tokens",
                "usagePeriod": {"interval": "PT1H", "anchor": format_rfc3339(start)},
                "measureUsageFrom": format_rfc3339(start),
            }
            assert api.post("/api/v2/customers/acme/entitlements", json=entitlement).status_code == 201
            grant = {"amount": 1000, "effectiveAt": format_rfc3339(start)}  # v2: rolls over up to 1000
            assert api.post("/api/v2/customers/acme/entitlements/tokens/grants", json=grant).status_code == 201
            events = [
                event(type_="tok", subject="acme", time_=format_rfc3339(start + timedelta(minutes=m)), data={"n": n})
                for m, n in ((5, 100), (70, 50), (130, 25), (200, 10), (290, 3))
            ]
            ingest_ok(api, events)
            wait_for(lambda: _value(api)["balance"] == 812, timeout=20)
            before = _value(api)
            # the current hourly period began at `start + 5h`: nothing used in it yet
            assert before == {"balance": 812, "usage": 0, "overage": 0, "totalAvailableGrantAmount": 812}
            assert _snapshots(data) >= 4  # the period starts passed on the way
        server.stop()

        server = Server(data, port=server.port).start()
        with httpx.Client(base_url=server.url, timeout=30) as api:
            assert _value(api) == before
            late = event(
                type_="tok", subject="acme", time_=format_rfc3339(start + timedelta(minutes=61)), data={"n": 7}
            )
            ingest_ok(api, [late])
            wait_for(lambda: _value(api)["balance"] == 805, timeout=20)
            assert _value(api) == {"balance": 805, "usage": 0, "overage": 0, "totalAvailableGrantAmount": 805}
            current = event(type_="tok", subject="acme", data={"n": 5})
            ingest_ok(api, [current])
            wait_for(lambda: _value(api)["usage"] == 5, timeout=20)
            assert _value(api) == {"balance": 800, "usage": 5, "overage": 0, "totalAvailableGrantAmount": 805}
        server.stop()

        server = Server(data, port=server.port).start()  # the stored period starts the late event spoiled are gone
        with httpx.Client(base_url=server.url, timeout=30) as api:
            assert _value(api) == {"balance": 800, "usage": 5, "overage": 0, "totalAvailableGrantAmount": 805}
    finally:
        server.stop()
