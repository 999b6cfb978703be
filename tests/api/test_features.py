"""/api/v1/features over real HTTP: create, get, list (bare array or page object), archive, and the rules that
tie features to meters and entitlements (compat reference 1.2, "Entitlements / features / grants")."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem, create_meter

Unique = Callable[[str], str]
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def tokens_meter(api: httpx.Client, unique: Unique, prefix: str = "fmeter", aggregation: str = "SUM") -> str:
    slug = unique(prefix)
    body: dict[str, Any] = {"slug": slug, "eventType": f"{slug}_type", "aggregation": aggregation}
    if aggregation != "COUNT":
        body["valueProperty"] = "$.tokens"
    create_meter(api, **body, groupBy={"model": "$.model", "region": "$.region"})
    return slug


def create_feature(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/api/v1/features", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    feature: dict[str, Any] = response.json()
    return feature


def test_create_get_list_archive(api: httpx.Client, unique: Unique) -> None:
    meter, key = tokens_meter(api, unique), unique("gpt_tokens")
    feature = create_feature(
        api,
        key=key,
        name="GPT tokens",
        meterSlug=meter,
        meterGroupByFilters={"model": "gpt"},
        advancedMeterGroupByFilters={"region": {"$in": ["eu", "us"]}},
        metadata={"team": "ai"},
    )
    assert ULID.match(feature["id"])
    assert STAMP.match(feature["createdAt"]) and feature["updatedAt"] == feature["createdAt"]
    assert {k: v for k, v in feature.items() if k not in ("id", "createdAt", "updatedAt")} == {
        "key": key,
        "name": "GPT tokens",
        "metadata": {"team": "ai"},
        "meterSlug": meter,
        "meterGroupByFilters": {"model": "gpt"},
        "advancedMeterGroupByFilters": {"region": {"$in": ["eu", "us"]}},
        "unitCost": None,
        "deletedAt": None,
        "archivedAt": None,
    }
    for ref in (feature["id"], key):
        got = api.get(f"/api/v1/features/{ref}")
        assert got.status_code == 200 and got.headers["content-type"] == "application/json"
        assert got.json() == feature
    listed = api.get("/api/v1/features", params={"meterSlug": meter})
    assert listed.status_code == 200 and listed.json() == [feature]

    response = api.delete(f"/api/v1/features/{key}")
    assert response.status_code == 204 and response.content == b""
    archived = api.get(f"/api/v1/features/{feature['id']}").json()
    assert STAMP.match(archived["archivedAt"]) and archived["key"] == key
    assert api.get("/api/v1/features", params={"meterSlug": meter}).json() == []
    with_archived = api.get("/api/v1/features", params={"meterSlug": meter, "includeArchived": "true"}).json()
    assert [f["id"] for f in with_archived] == [feature["id"]]
    assert with_archived[0]["archivedAt"] == archived["archivedAt"]

    # the key is free again; by key, the live feature wins over the archived one
    again = create_feature(api, key=key, name="GPT tokens v2", meterSlug=meter)
    assert again["id"] != feature["id"]
    assert api.get(f"/api/v1/features/{key}").json()["id"] == again["id"]


def test_feature_without_meter(api: httpx.Client, unique: Unique) -> None:
    feature = create_feature(api, key=unique("sso"), name="Single sign-on")
    assert feature["meterSlug"] is None and feature["meterGroupByFilters"] is None


def test_not_found(api: httpx.Client) -> None:
    assert_problem(api.get("/api/v1/features/no_such_feature"), 404, detail="feature not found: no_such_feature")
    assert_problem(api.delete("/api/v1/features/no_such_feature"), 404, detail="feature not found")


def test_duplicate_key_is_a_conflict(api: httpx.Client, unique: Unique) -> None:
    key = unique("dup")
    create_feature(api, key=key, name="first")
    assert_problem(api.post("/api/v1/features", json={"key": key, "name": "second"}), 409, detail=key)


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"key": "Bad-Key", "name": "n"}, "key", "a-z, 0-9"),
        ({"key": "a__b", "name": "n"}, "key", "single underscores"),
        ({"key": "k" * 65, "name": "n"}, "key", "1-64"),
        ({"name": "n"}, "key", "is required"),
        ({"key": "ok_key"}, "name", "is required"),
        ({"key": "ok_key", "name": ""}, "name", "1-256"),
        ({"key": "ok_key", "name": "n", "meterGroupByFilters": {"model": "gpt"}}, "meterSlug", "need a meter"),
        ({"key": "ok_key", "name": "n", "meterGroupByFilters": {"model": 5}}, "meterGroupByFilters[...]", "str"),
        ({"key": "ok_key", "name": "n", "metadata": {"a": 1}}, "metadata[...]", "str"),
    ],
)
def test_bad_input_names_the_field(api: httpx.Client, body: dict[str, Any], field: str, detail: str) -> None:
    assert_problem(api.post("/api/v1/features", json=body), 400, field=field, detail=detail)


def test_group_by_filters_must_name_meter_group_bys(api: httpx.Client, unique: Unique) -> None:
    meter = tokens_meter(api, unique)
    base = {"key": unique("filtered"), "name": "n", "meterSlug": meter}
    bad_plain = {**base, "meterGroupByFilters": {"model": "gpt", "tier": "pro"}}
    assert_problem(
        api.post("/api/v1/features", json=bad_plain),
        400,
        field="meterGroupByFilters.tier",
        detail=f"tier is not a group-by of meter {meter}",
    )
    bad_advanced = {**base, "advancedMeterGroupByFilters": {"tier": {"$eq": "pro"}}}
    assert_problem(api.post("/api/v1/features", json=bad_advanced), 400, field="advancedMeterGroupByFilters.tier")
    bad_operator = {**base, "advancedMeterGroupByFilters": {"model": {"$bogus": "gpt"}}}
    assert_problem(
        api.post("/api/v1/features", json=bad_operator),
        400,
        field="advancedMeterGroupByFilters.model.$bogus",
        detail="unknown filter operator",
    )
    unknown_meter = {**base, "meterSlug": unique("no_such_meter")}
    assert_problem(api.post("/api/v1/features", json=unknown_meter), 404, detail="meter not found")


def test_list_bare_array_or_page_object(api: httpx.Client, unique: Unique) -> None:
    meter, other = tokens_meter(api, unique), tokens_meter(api, unique, "other_meter")
    keys = [unique(f"listed_{i}") for i in range(3)]
    created = [create_feature(api, key=k, name=k, meterSlug=meter) for k in keys]
    elsewhere = create_feature(api, key=unique("elsewhere"), name="e", meterSlug=other)

    bare = api.get("/api/v1/features", params={"meterSlug": meter})
    assert bare.status_code == 200 and bare.json() == created
    sliced = api.get("/api/v1/features", params={"meterSlug": meter, "offset": 1, "limit": 1}).json()
    assert sliced == created[1:2]
    both = api.get("/api/v1/features", params=[("meterSlug", meter), ("meterSlug", other)]).json()
    assert both == [*created, elsewhere]

    page = api.get("/api/v1/features", params={"meterSlug": meter, "page": 2, "pageSize": 2})
    assert page.status_code == 200
    assert page.json() == {"items": created[2:], "page": 2, "pageSize": 2, "totalCount": 3}
    only_size = api.get("/api/v1/features", params={"meterSlug": meter, "pageSize": 1}).json()
    assert only_size == {"items": created[:1], "page": 1, "pageSize": 1, "totalCount": 3}
    only_page = api.get("/api/v1/features", params={"meterSlug": meter, "page": 1}).json()
    assert only_page == {"items": created, "page": 1, "pageSize": 100, "totalCount": 3}

    assert_problem(api.get("/api/v1/features", params={"pageSize": 0}), 400, detail="pageSize")
    assert_problem(api.get("/api/v1/features", params={"limit": "many"}), 400, detail="limit")
    assert_problem(api.get("/api/v1/features", params={"includeArchived": "maybe"}), 400, detail="includeArchived")


def test_archiving_a_feature_with_live_entitlements_is_a_conflict(api: httpx.Client, unique: Unique) -> None:
    meter, customer = tokens_meter(api, unique), unique("feature_owner")
    feature = create_feature(api, key=unique("in_use"), name="in use", meterSlug=meter)
    assert api.post("/api/v1/customers", json={"name": customer, "key": customer}).status_code == 201
    entitlement = api.post(
        f"/api/v2/customers/{customer}/entitlements", json={"type": "boolean", "featureKey": feature["key"]}
    )
    assert entitlement.status_code == 201, entitlement.text
    assert_problem(api.delete(f"/api/v1/features/{feature['id']}"), 409, detail="active entitlements")
    assert api.get(f"/api/v1/features/{feature['id']}").json()["archivedAt"] is None

    assert api.delete(f"/api/v2/customers/{customer}/entitlements/{feature['key']}").status_code == 204
    assert api.delete(f"/api/v1/features/{feature['id']}").status_code == 204
    # an archived feature takes no new entitlements
    again = api.post(
        f"/api/v2/customers/{customer}/entitlements", json={"type": "boolean", "featureKey": feature["key"]}
    )
    assert_problem(again, 404, detail="feature not found")


def test_meter_used_by_a_feature_cannot_be_deleted(api: httpx.Client, unique: Unique) -> None:
    meter = tokens_meter(api, unique)
    feature = create_feature(api, key=unique("blocks_delete"), name="b", meterSlug=meter)
    assert_problem(api.delete(f"/api/v1/meters/{meter}"), 409, detail=feature["key"])
    assert api.get(f"/api/v1/meters/{meter}").status_code == 200
    assert api.delete(f"/api/v1/features/{feature['key']}").status_code == 204
    assert api.delete(f"/api/v1/meters/{meter}").status_code == 204
