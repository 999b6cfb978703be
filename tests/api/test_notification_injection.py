"""Hostile strings through the notification routes (channel and rule names, metadata, custom header values,
list filters, path segments) are stored and returned literally and never answer 5xx."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.api.test_entitlement_injection import HOSTILE


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_strings_in_notifications(api: httpx.Client, index: int) -> None:
    hostile = HOSTILE[index]
    channel = {
        "type": "WEBHOOK",
        "name": hostile,
        "url": "http://127.0.0.1:9/hook",
        "customHeaders": {"X-Tag": hostile.replace("\u202e", "")},
        "metadata": {hostile: hostile},
        "disabled": True,
    }
    made = api.post("/api/v1/notification/channels", json=channel)
    assert made.status_code == 201, made.text
    got = api.get(f"/api/v1/notification/channels/{made.json()['id']}").json()
    assert got["name"] == hostile and got["metadata"] == {hostile: hostile}
    rule = {
        "type": "entitlements.balance.threshold",
        "name": hostile,
        "channels": [made.json()["id"]],
        "thresholds": [{"type": "usage_value", "value": 1}],
        "metadata": {hostile: hostile},
    }
    created = api.post("/api/v1/notification/rules", json=rule)
    assert created.status_code == 201, created.text
    assert api.get(f"/api/v1/notification/rules/{created.json()['id']}").json()["name"] == hostile
    for path, params in (
        ("/api/v1/notification/events", {"feature": hostile, "subject": hostile, "rule": hostile}),
        ("/api/v1/notification/rules", {"feature": hostile, "channel": hostile}),
        ("/api/v1/notification/channels", {"includeDeleted": "true"}),
    ):
        response = api.get(path, params=params)
        assert response.status_code in (200, 400), (path, response.status_code, response.text)
    for path in (
        f"/api/v1/notification/channels/{quote(hostile, safe='')}",
        f"/api/v1/notification/rules/{quote(hostile, safe='')}",
        f"/api/v1/notification/events/{quote(hostile, safe='')}",
    ):
        assert api.get(path).status_code in (400, 404), path
