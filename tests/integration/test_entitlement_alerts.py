"""Balance alerts on a server of their own (a fresh namespace with no rules yet): a threshold crossed right
after the first rule is created still fires, once, with the OpenMeter payload shape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from meterd.core.timeutil import floor_minute, format_rfc3339, utcnow
from tests.api.helpers import ingest_ok
from tests.conftest import Server, event, wait_for
from tests.integration.webhook_receiver import Receiver, receiving

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[httpx.Client]:
    server = Server(tmp_path / "data", env={"METERD_NOTIFICATIONS__POLL_INTERVAL": "PT0.1S"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            yield api
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def _usage(api: httpx.Client) -> float:
    return float(api.get("/api/v2/customers/acme/entitlements/calls/value").json()["usage"])


def test_a_threshold_crossed_just_after_the_first_rule_fires(fresh: httpx.Client, receiver: Receiver) -> None:
    api = fresh
    assert api.post("/api/v1/meters", json={"slug": "calls", "eventType": "call", "aggregation": "COUNT"}).is_success
    assert api.post("/api/v1/features", json={"key": "calls", "name": "Calls", "meterSlug": "calls"}).is_success
    assert api.post("/api/v1/customers", json={"name": "acme", "key": "acme"}).is_success
    entitlement = {
        "type": "metered",
        "featureKey": "calls",
        "usagePeriod": {"interval": "DAY"},
        "measureUsageFrom": format_rfc3339(floor_minute(utcnow())),
        "issue": {"amount": 10},
    }
    assert api.post("/api/v2/customers/acme/entitlements", json=entitlement).status_code == 201
    ingest_ok(api, [event(type_="call", subject="acme") for _ in range(3)])
    wait_for(lambda: _usage(api) == 3)  # the balance worker has looked at this namespace: no rules then

    channel = api.post(
        "/api/v1/notification/channels", json={"type": "WEBHOOK", "name": "h", "url": receiver.url("/a")}
    )
    rule = {
        "type": "entitlements.balance.threshold",
        "name": "half",
        "channels": [channel.json()["id"]],
        "thresholds": [{"type": "usage_value", "value": 5}],
    }
    assert api.post("/api/v1/notification/rules", json=rule).status_code == 201
    ingest_ok(api, [event(type_="call", subject="acme") for _ in range(3)])
    received = wait_for(lambda: receiver.at("/a"), timeout=15)
    payload = Webhook(channel.json()["signingSecret"]).verify(received[0].body, received[0].headers)
    assert payload["type"] == "entitlements.balance.threshold"
    assert payload["data"]["threshold"] == {"type": "usage_value", "value": 5}
    assert payload["data"]["value"]["usage"] == 6 and payload["data"]["value"]["balance"] == 4
    assert payload["data"]["entitlement"]["featureKey"] == "calls"

    ingest_ok(api, [event(type_="call", subject="acme")])  # still over 5: no second alert this period
    wait_for(lambda: _usage(api) == 7)
    time.sleep(0.5)  # the balance worker has recalculated by now
    events = api.get("/api/v1/notification/events").json()["items"]
    assert len(events) == 1 and len(receiver.at("/a")) == 1
