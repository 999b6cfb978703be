"""Hostile strings through every string the entitlement routes accept (customer keys and subjects, feature
filter values, metadata, static configs, path segments) reach SQLite and ClickHouse only as bound values: each
is stored and matched literally, usage is exact, and the tables are intact afterwards."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from meterd.core.timeutil import floor_minute, format_rfc3339, utcnow
from tests.api.helpers import ingest_ok
from tests.conftest import event, wait_for

HOSTILE = [
    "' OR 1=1 --",
    "x'); DROP TABLE events; --",
    '" OR ""="',
    "{p0:String}",
    "\\' OR 1=1 #",
    "$.data[?(@.x)]",
    "%' AND SLEEP(5) --",
    "日本語 ☃ \u202e",
]


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_strings_are_only_ever_values(api: httpx.Client, unique: Callable[[str], str], index: int) -> None:
    hostile = HOSTILE[index]
    etype, feature = unique("inj"), unique("inj_feature")
    customer = f"{hostile} {unique('c')}"
    meter = {"slug": feature, "eventType": etype, "aggregation": "SUM", "valueProperty": "$.n", "groupBy": {"m": "$.m"}}
    assert api.post("/api/v1/meters", json=meter).status_code == 201
    body = {"key": feature, "name": hostile, "meterSlug": feature, "meterGroupByFilters": {"m": hostile}}
    body["metadata"] = {hostile: hostile}
    assert api.post("/api/v1/features", json=body).status_code == 201
    made = api.post(
        "/api/v1/customers",
        json={"name": hostile, "key": customer, "usageAttribution": {"subjectKeys": [hostile + "-s"]}},
    )
    assert made.status_code == 201, made.text
    path = f"/api/v2/customers/{quote(customer, safe='')}/entitlements"
    entitlement = {
        "type": "metered",
        "featureKey": feature,
        "usagePeriod": {"interval": "DAY"},
        "measureUsageFrom": format_rfc3339(floor_minute(utcnow())),
        "issue": {"amount": 100},
        "metadata": {hostile: hostile},
    }
    response = api.post(path, json=entitlement)
    assert response.status_code == 201, response.text
    ingest_ok(
        api,
        [
            event(type_=etype, subject=hostile + "-s", data={"n": 7, "m": hostile}),
            event(type_=etype, subject=customer, data={"n": 5, "m": hostile}),
            event(type_=etype, subject=hostile + "-s", data={"n": 1000, "m": hostile + "x"}),  # filtered out
            event(type_=etype, subject="someone else", data={"n": 1000, "m": hostile}),  # not the customer's
        ],
    )
    value_path = f"{path}/{feature}/value"
    assert wait_for(lambda: api.get(value_path).json().get("usage") == 12, timeout=15)
    assert api.get(value_path).json()["balance"] == 88
    assert api.get(f"{path}/{feature}").json()["metadata"] == {hostile: hostile}
    assert api.get(f"/api/v1/features/{feature}").json()["meterGroupByFilters"] == {"m": hostile}
    # hostile path segments are just unknown names
    assert api.get(f"{path}/{quote(hostile, safe='')}").status_code == 404
    assert api.get(f"/api/v1/customers/{quote(hostile, safe='')}/access").status_code == 404
    # the tables are all still there
    assert api.get(f"/api/v1/meters/{feature}/query").status_code == 200
    assert api.get("/api/v1/entitlements").status_code == 200
