"""The official OpenMeter Python SDK's notification calls against a running meterd: channels, rules, rule
tests, events and resends. The SDK raises on any status but the one it expects (201 creates and rule tests,
202 resend, 204 deletes). It hands channels, rules and payloads (its union types) back as plain dicts of the
JSON; events, delivery statuses and pages come back as its models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Server

openmeter = pytest.importorskip("openmeter")

from corehttp.exceptions import HttpResponseError, ResourceNotFoundError  # noqa: E402
from openmeter import Client  # noqa: E402

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    with Client(endpoint=server.url) as sdk:
        yield sdk


def test_notification_round_trip(client: Client) -> None:
    channel = client.notification_channels.create(
        {"type": "WEBHOOK", "name": "sdk hook", "url": "http://127.0.0.1:9/sdk", "customHeaders": {"X-A": "b"}}
    )
    assert channel["type"] == "WEBHOOK" and channel["customHeaders"] == {"X-A": "b"}
    assert channel["signingSecret"].startswith("whsec_")
    channel_id = channel["id"]
    assert client.notification_channels.get(channel_id)["name"] == "sdk hook"
    updated = client.notification_channels.update(
        channel_id, {"type": "WEBHOOK", "name": "renamed", "url": "http://127.0.0.1:9/sdk2"}
    )
    assert updated["name"] == "renamed" and updated["signingSecret"] == channel["signingSecret"]
    assert channel_id in [c["id"] for c in client.notification_channels.list(page_size=1000).items_property]

    rule = client.notification_rules.create(
        {
            "type": "entitlements.balance.threshold",
            "name": "sdk rule",
            "channels": [channel_id],
            "thresholds": [{"value": 75, "type": "usage_percentage"}, {"value": 10, "type": "balance_value"}],
        }
    )
    assert rule["type"] == "entitlements.balance.threshold"
    assert rule["thresholds"] == [{"value": 75, "type": "usage_percentage"}, {"value": 10, "type": "balance_value"}]
    assert rule["channels"] == [{"id": channel_id, "type": "WEBHOOK"}]
    rule_id = rule["id"]
    listed = client.notification_rules.list(channel=[channel_id])
    assert [r["id"] for r in listed.items_property] == [rule_id] and listed.total_count == 1
    rule = client.notification_rules.update(
        rule_id,
        {
            "type": "entitlements.balance.threshold",
            "name": "sdk rule 2",
            "channels": [channel_id],
            "thresholds": [{"value": 90, "type": "usage_percentage"}],
        },
    )
    assert rule["name"] == "sdk rule 2"

    event = client.notification_rules.test(rule_id)
    assert event.type == "entitlements.balance.threshold"
    assert event.annotations == {"notification.rule.test": True}
    assert event.payload["data"]["threshold"] == {"value": 90, "type": "usage_percentage"}
    assert event.rule["id"] == rule_id
    [status] = event.delivery_status
    assert status.channel.id == channel_id and status.state in ("PENDING", "SENDING", "FAILED")
    assert client.notification_events.get(event.id).id == event.id
    events = client.notification_events.list(rule=[rule_id])
    assert [e.id for e in events.items_property] == [event.id] and events.total_count == 1
    assert client.notification_events.resend(event.id, {"channels": [channel_id]}) is None
    assert client.notification_events.resend(event.id, {}) is None

    with pytest.raises(HttpResponseError) as conflict:
        client.notification_channels.delete(channel_id)
    assert conflict.value.status_code == 409
    assert client.notification_rules.delete(rule_id) is None
    assert client.notification_channels.delete(channel_id) is None
    with pytest.raises(ResourceNotFoundError):
        client.notification_rules.get("01J00000000000000000000000")
    with pytest.raises(HttpResponseError) as bad:
        client.notification_channels.create({"type": "WEBHOOK", "name": "x", "url": "nope"})
    assert bad.value.status_code == 400
