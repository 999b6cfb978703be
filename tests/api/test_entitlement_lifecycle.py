"""Customers with live entitlements cannot be deleted; an entitlement measuring usage from years back answers
its first value quickly (past periods are replayed from one query) and exactly."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from meterd.core.timeutil import format_rfc3339
from tests.api.helpers import assert_problem, ingest_ok
from tests.conftest import event, wait_for


def _setup(api: httpx.Client, unique: Callable[[str], str]) -> tuple[str, str, str]:
    etype, feature, customer = unique("life"), unique("life_feature"), unique("life-customer")
    meter = {"slug": feature, "eventType": etype, "aggregation": "SUM", "valueProperty": "$.n"}
    assert api.post("/api/v1/meters", json=meter).status_code == 201
    assert api.post("/api/v1/features", json={"key": feature, "name": "f", "meterSlug": feature}).status_code == 201
    assert api.post("/api/v1/customers", json={"name": "c", "key": customer}).status_code == 201
    return etype, feature, customer


def test_a_customer_with_live_entitlements_cannot_be_deleted(api: httpx.Client, unique: Callable[[str], str]) -> None:
    _, feature, customer = _setup(api, unique)
    body = {"type": "boolean", "featureKey": feature}
    assert api.post(f"/api/v2/customers/{customer}/entitlements", json=body).status_code == 201
    assert_problem(api.delete(f"/api/v1/customers/{customer}"), 409, detail="active entitlement")
    assert api.delete(f"/api/v2/customers/{customer}/entitlements/{feature}").status_code == 204
    assert api.delete(f"/api/v1/customers/{customer}").status_code == 204


def test_ten_years_of_daily_periods(api: httpx.Client, unique: Callable[[str], str]) -> None:
    etype, feature, customer = _setup(api, unique)
    start = datetime(2016, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    times = [start + timedelta(days=d, hours=3) for d in (0, 400, 1500, 3000)] + [now - timedelta(seconds=30)]
    ingest_ok(api, [event(type_=etype, subject=customer, time_=format_rfc3339(t), data={"n": 10}) for t in times])
    wait_for(lambda: sum(r["value"] for r in api.get(f"/api/v1/meters/{feature}/query").json()["data"]) == 50)
    body = {
        "type": "metered",
        "featureKey": feature,
        "usagePeriod": {"interval": "DAY", "anchor": format_rfc3339(start)},
        "measureUsageFrom": format_rfc3339(start),
        "grants": [{"amount": 1000, "effectiveAt": format_rfc3339(start)}],  # v2: rolls over up to 1000
    }
    assert api.post(f"/api/v2/customers/{customer}/entitlements", json=body).status_code == 201
    started = time.perf_counter()
    value = api.get(f"/api/v2/customers/{customer}/entitlements/{feature}/value").json()
    took = time.perf_counter() - started
    today = 10 if (now - timedelta(seconds=30)).date() == now.date() else 0
    assert (value["balance"], value["usage"], value["overage"]) == (950, today, 0)
    assert took < 15, f"the first value over ~3,900 daily periods took {took:.1f} s"
    at = format_rfc3339(start + timedelta(days=1000))  # a past value, before the last two events
    past = api.get(f"/api/v2/customers/{customer}/entitlements/{feature}/value", params={"time": at}).json()
    assert (past["balance"], past["usage"]) == (980, 0)
