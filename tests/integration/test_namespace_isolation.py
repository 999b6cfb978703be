"""A key for one namespace never sees or changes another's features, entitlements, grants, balances or
notifications: every such route answers 404 (or an empty list) for the other namespace's ids and keys, the
same keys can be reused there, and events with the same subject in one namespace never touch the other's
balances."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterd.core.timeutil import floor_minute, format_rfc3339, utcnow
from tests.conftest import Server, event, wait_for

pytestmark = pytest.mark.slow


def _key(data: Path, namespace: str) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "meterd.cli.main", "keys", "create", "--namespace", namespace, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return created.stdout.strip()


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    data = tmp_path_factory.mktemp("isolation") / "data"
    key_a, key_b = _key(data, "alpha"), _key(data, "beta")
    server = Server(data).start()
    try:
        with (
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key_a}"}, timeout=30) as a,
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key_b}"}, timeout=30) as b,
        ):
            yield a, b
    finally:
        server.stop()


def _world(api: httpx.Client) -> dict[str, Any]:
    """A meter, feature, customer, metered entitlement with a grant, a channel and a rule."""
    assert api.post("/api/v1/meters", json={"slug": "calls", "eventType": "call", "aggregation": "COUNT"}).is_success
    feature = api.post("/api/v1/features", json={"key": "calls", "name": "Calls", "meterSlug": "calls"}).json()
    assert api.post("/api/v1/customers", json={"name": "c", "key": "cust"}).status_code == 201
    body = {
        "type": "metered",
        "featureKey": "calls",
        "usagePeriod": {"interval": "DAY"},
        "measureUsageFrom": format_rfc3339(floor_minute(utcnow())),
        "issue": {"amount": 100},
    }
    entitlement = api.post("/api/v2/customers/cust/entitlements", json=body).json()
    grant = {"amount": 5, "effectiveAt": format_rfc3339(floor_minute(utcnow()))}
    granted = api.post("/api/v2/customers/cust/entitlements/calls/grants", json=grant).json()
    channel = api.post(
        "/api/v1/notification/channels", json={"type": "WEBHOOK", "name": "h", "url": "http://127.0.0.1:9/h"}
    ).json()
    rule = {
        "type": "entitlements.balance.threshold",
        "name": "r",
        "channels": [channel["id"]],
        "thresholds": [{"type": "usage_value", "value": 1}],
    }
    made_rule = api.post("/api/v1/notification/rules", json=rule).json()
    return {"feature": feature, "entitlement": entitlement, "grant": granted, "channel": channel, "rule": made_rule}


def _value(api: httpx.Client) -> Any:
    return api.get("/api/v2/customers/cust/entitlements/calls/value").json()


def test_every_entitlement_and_notification_route_is_namespaced(clients: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = clients
    mine = _world(a)
    e, g, f = mine["entitlement"]["id"], mine["grant"]["id"], mine["feature"]["id"]
    ch, rule = mine["channel"]["id"], mine["rule"]["id"]
    not_found = [
        ("GET", f"/api/v1/features/{f}"),
        ("GET", "/api/v1/features/calls"),
        ("DELETE", f"/api/v1/features/{f}"),
        ("GET", f"/api/v2/entitlements/{e}"),
        ("GET", f"/api/v1/entitlements/{e}"),
        ("GET", "/api/v2/customers/cust/entitlements"),
        ("GET", f"/api/v2/customers/cust/entitlements/{e}"),
        ("GET", "/api/v2/customers/cust/entitlements/calls/value"),
        ("GET", "/api/v2/customers/cust/entitlements/calls/grants"),
        ("GET", "/api/v2/customers/cust/entitlements/calls/history?windowSize=DAY"),
        ("POST", "/api/v2/customers/cust/entitlements/calls/reset"),
        ("DELETE", f"/api/v2/customers/cust/entitlements/{e}"),
        ("GET", "/api/v1/customers/cust/access"),
        ("GET", "/api/v1/customers/cust/entitlements/calls/value"),
        ("GET", f"/api/v1/subjects/cust/entitlements/{e}"),
        ("GET", f"/api/v1/subjects/cust/entitlements/{e}/value"),
        ("DELETE", f"/api/v1/grants/{g}"),
        ("GET", f"/api/v1/notification/channels/{ch}"),
        ("DELETE", f"/api/v1/notification/channels/{ch}"),
        ("GET", f"/api/v1/notification/rules/{rule}"),
        ("POST", f"/api/v1/notification/rules/{rule}/test"),
        ("DELETE", f"/api/v1/notification/rules/{rule}"),
    ]
    for method, path in not_found:
        response = b.request(method, path, json={} if method == "POST" else None)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
    for path in (
        "/api/v1/features",
        "/api/v1/entitlements",
        "/api/v1/grants",
        "/api/v2/entitlements?page=1",
        "/api/v2/grants?page=1",
        "/api/v1/notification/channels",
        "/api/v1/notification/rules",
        "/api/v1/notification/events",
    ):
        listed = b.get(path).json()
        items = listed["items"] if isinstance(listed, dict) else listed
        assert items == [], (path, listed)

    # the same keys are free in the other namespace, and its events never reach the first one's balance
    theirs = _world(b)
    assert theirs["entitlement"]["id"] != e
    assert b.post("/api/v1/events", json=[event(type_="call", subject="cust") for _ in range(7)]).status_code == 204
    assert a.post("/api/v1/events", json=[event(type_="call", subject="cust") for _ in range(2)]).status_code == 204
    wait_for(lambda: _value(a)["usage"] == 2 and _value(b)["usage"] == 7, timeout=15)
    assert _value(a)["balance"] == 103 and _value(b)["balance"] == 98
    # each namespace's rule raised its own event, from its own usage
    events_a = wait_for(lambda: a.get("/api/v1/notification/events").json()["items"], timeout=15)
    events_b = wait_for(lambda: b.get("/api/v1/notification/events").json()["items"], timeout=15)
    assert [x["rule"]["id"] for x in events_a] == [rule]
    assert [x["rule"]["id"] for x in events_b] == [theirs["rule"]["id"]]
    assert events_a[0]["payload"]["data"]["value"]["usage"] == 2
