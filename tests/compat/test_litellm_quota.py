"""A token quota enforced on LiteLLM traffic: an app meters every call through LiteLLM's `openmeter` callback
and asks meterd for access before each call. Access turns false on the call that exhausts the quota, each call
shows in the balance within the freshness bound, and the 80% and 100% webhooks arrive, signed, once each."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from meterd.core.timeutil import floor_minute, format_rfc3339, utcnow
from tests.compat.test_litellm import _run_driver
from tests.conftest import Server, wait_for
from tests.integration.webhook_receiver import receiving

pytestmark = [pytest.mark.compat, pytest.mark.slow]
QUOTA = 200


def _setup(api: httpx.Client, event_type: str, user: str, hook_url: str) -> tuple[str, str]:
    meter = {"slug": f"{event_type}_tokens", "eventType": event_type, "aggregation": "SUM"}
    meter |= {"valueProperty": "$.total_tokens", "groupBy": {"model": "$.model"}}
    assert api.post("/api/v1/meters", json=meter).status_code == 201
    feature = f"{event_type}_quota"
    body = {"key": feature, "name": "LLM tokens", "meterSlug": meter["slug"]}
    assert api.post("/api/v1/features", json=body).status_code == 201
    assert api.post("/api/v1/customers", json={"name": user, "key": user}).status_code == 201
    entitlement = {
        "type": "metered",
        "featureKey": feature,
        "usagePeriod": {"interval": "MONTH"},
        "measureUsageFrom": format_rfc3339(floor_minute(utcnow())),
        "issue": {"amount": QUOTA},
    }
    response = api.post(f"/api/v2/customers/{user}/entitlements", json=entitlement)
    assert response.status_code == 201, response.text
    channel = api.post(
        "/api/v1/notification/channels", json={"type": "WEBHOOK", "name": "quota alerts", "url": hook_url}
    )
    assert channel.status_code == 201, channel.text
    rule = {
        "type": "entitlements.balance.threshold",
        "name": "80% and 100%",
        "channels": [channel.json()["id"]],
        "features": [feature],
        "thresholds": [{"type": "usage_percentage", "value": 80}, {"type": "usage_percentage", "value": 100}],
    }
    response = api.post("/api/v1/notification/rules", json=rule)
    assert response.status_code == 201, response.text
    return feature, channel.json()["signingSecret"]


def test_quota_stops_litellm_calls_and_alerts(server: Server, api: httpx.Client, unique: Any) -> None:
    event_type, user = unique("quota_llm"), unique("quota-user")
    with receiving() as receiver:
        feature, secret = _setup(api, event_type, user, receiver.url("/quota"))
        value_url = f"{server.url}/api/v2/customers/{user}/entitlements/{feature}/value"
        call = {
            "model": "gpt-4o-mini",
            "user": user,
            "content": "count my tokens " * 3,
            "mock": "Metering is counting.",
        }
        result = _run_driver(
            server, event_type, {"mode": "quota", "value_url": value_url, "call": call, "max_calls": 60}
        )

        tokens = [c["total_tokens"] for c in result["calls"]]
        assert sum(tokens[:-1]) < QUOTA <= sum(tokens), tokens  # denied right after the call that used it up
        final = result["final"]
        assert final["hasAccess"] is False
        assert final["usage"] == sum(tokens) and final["balance"] == 0
        assert final["overage"] == sum(tokens) - QUOTA
        print(f"calls {len(tokens)}, lag to visible: max {max(result['lags']):.3f} s")
        assert max(result["lags"]) < 2.0, result["lags"]  # LiteLLM's callback delivery + meterd's freshness

        def full() -> bool:
            return any(json.loads(r.body)["data"]["threshold"]["value"] == 100 for r in receiver.at("/quota"))

        wait_for(full, timeout=20)
        time.sleep(0.5)  # an 80% alert raised with it arrives too
        received = receiver.at("/quota")
        hook = Webhook(secret)
        payloads = [hook.verify(r.body, r.headers) for r in received]
        thresholds = sorted(p["data"]["threshold"]["value"] for p in payloads)
        # 80% fires when a recalculation sees usage between 80% and 100%; when one recalculation sees both crossed
        # (calls faster than the usage feed, as in cluster mode), only the highest fires, as in OpenMeter
        assert thresholds in ([80, 100], [100]), thresholds
        for payload in payloads:
            assert payload["type"] == "entitlements.balance.threshold"
            assert payload["data"]["feature"]["key"] == feature
            assert payload["data"]["customer"]["key"] == user
        full = next(p for p in payloads if p["data"]["threshold"]["value"] == 100)
        assert full["data"]["value"]["hasAccess"] is False
