"""/api/v1/customers and /api/v1/subjects over real HTTP, and customer attribution in queries and the events list."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem, barrier, create_meter, ingest_ok, list_events, query_rows
from tests.conftest import event, wait_for

Unique = Callable[[str], str]
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")


def create_customer(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/api/v1/customers", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    customer: dict[str, Any] = response.json()
    return customer


# -- customers CRUD --------------------------------------------------------------------------------


def test_create_and_get_by_id_and_key(api: httpx.Client, unique: Unique) -> None:
    key, s1, s2 = unique("acme"), unique("sub_a"), unique("sub_b")
    customer = create_customer(
        api,
        name="Acme Inc.",
        key=key,
        usageAttribution={"subjectKeys": [s1, s2]},
        description="first customer",
        primaryEmail="billing@acme.test",
        currency="USD",
        metadata={"tier": "gold"},
    )
    assert ULID.match(customer["id"])
    assert customer["createdAt"] == customer["updatedAt"]
    assert {k: v for k, v in customer.items() if k not in ("id", "createdAt", "updatedAt")} == {
        "name": "Acme Inc.",
        "key": key,
        "usageAttribution": {"subjectKeys": [s1, s2]},
        "description": "first customer",
        "primaryEmail": "billing@acme.test",
        "currency": "USD",
        "metadata": {"tier": "gold"},
    }
    for ref in (customer["id"], key):
        got = api.get(f"/api/v1/customers/{ref}")
        assert got.status_code == 200 and got.headers["content-type"] == "application/json"
        assert got.json() == customer
    assert_problem(api.get("/api/v1/customers/no_such_customer"), 404, detail="customer not found: no_such_customer")


def test_create_with_only_subject_keys_or_only_key(api: httpx.Client, unique: Unique) -> None:
    subject = unique("only_sub")
    by_subject = create_customer(api, name="By subject", usageAttribution={"subjectKeys": [subject]})
    assert "key" not in by_subject
    assert by_subject["usageAttribution"] == {"subjectKeys": [subject]}
    by_key = create_customer(api, name="By key", key=unique("only_key"))
    assert by_key["usageAttribution"] == {"subjectKeys": []}


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"key": "k"}, "name", "is required"),
        ({"name": "", "key": "k"}, "name", "must be 1-256 characters"),
        ({"name": "x" * 257, "key": "k"}, "name", "must be 1-256 characters"),
        ({"name": "n", "key": ""}, "key", "must be 1-256 characters"),
        ({"name": "n", "key": "k", "currency": "dollars"}, "currency", "3-letter ISO 4217"),
        ({"name": "n", "usageAttribution": {"subjectKeys": ["a", "a"]}}, "usageAttribution.subjectKeys", "repeat"),
        ({"name": "n", "usageAttribution": {"subjectKeys": ["a", ""]}}, "usageAttribution.subjectKeys[1]", "empty"),
        ({"name": "n", "usageAttribution": {"subjectKeys": "a"}}, "usageAttribution.subjectKeys", "Expected `array`"),
        ({"name": 5, "key": "k"}, "name", "Expected `str`, got `int`"),
    ],
)
def test_create_validation(api: httpx.Client, body: dict[str, Any], field: str, detail: str) -> None:
    assert_problem(api.post("/api/v1/customers", json=body), 400, field=field, detail=detail)


def test_create_needs_key_or_subject_keys(api: httpx.Client) -> None:
    response = api.post("/api/v1/customers", json={"name": "Nobody", "usageAttribution": {"subjectKeys": []}})
    assert_problem(response, 400, field="key", detail="a customer needs a key or usageAttribution.subjectKeys")


def test_conflicts(api: httpx.Client, unique: Unique) -> None:
    key, subject = unique("owner"), unique("owned_subject")
    owner = create_customer(api, name="Owner", key=key, usageAttribution={"subjectKeys": [subject]})
    detail = "subject keys belongs to another customer"
    other = {"name": "Other", "key": unique("other"), "usageAttribution": {"subjectKeys": [subject]}}
    assert_problem(api.post("/api/v1/customers", json=other), 409, detail=detail)
    assert_problem(api.post("/api/v1/customers", json={"name": "Same key", "key": key}), 409, detail="key")
    # the owner's own key is attributed to it too
    claim_key = {"name": "Key thief", "usageAttribution": {"subjectKeys": [key]}}
    assert_problem(api.post("/api/v1/customers", json=claim_key), 409, detail=detail)
    # a replace that steals a subject conflicts as well
    second = create_customer(api, name="Second", key=unique("second"))
    steal = {"name": "Second", "key": second["key"], "usageAttribution": {"subjectKeys": [subject]}}
    assert_problem(api.put(f"/api/v1/customers/{second['id']}", json=steal), 409, detail=detail)
    assert api.get(f"/api/v1/customers/{owner['id']}").json() == owner


def test_list_is_paginated(api: httpx.Client, unique: Unique) -> None:
    tag = unique("paged")
    made = [create_customer(api, name=f"{tag} {i}", key=f"{tag}_{i}") for i in range(3)]
    response = api.get("/api/v1/customers", params={"name": tag, "pageSize": 2})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    first = response.json()
    assert first == {"items": made[:2], "page": 1, "pageSize": 2, "totalCount": 3}
    second = api.get("/api/v1/customers", params={"name": tag, "pageSize": 2, "page": 2}).json()
    assert second == {"items": made[2:], "page": 2, "pageSize": 2, "totalCount": 3}
    by_key = api.get("/api/v1/customers", params={"key": made[1]["key"]}).json()
    assert by_key == {"items": [made[1]], "page": 1, "pageSize": 100, "totalCount": 1}
    for params in ({"page": 0}, {"pageSize": 0}, {"pageSize": 1001}, {"page": "x"}):
        assert_problem(api.get("/api/v1/customers", params=params), 400, detail=next(iter(params)))


def test_put_replaces(api: httpx.Client, unique: Unique) -> None:
    key, old_subject, new_subject = unique("put"), unique("old_sub"), unique("new_sub")
    created = create_customer(
        api,
        name="Before",
        key=key,
        description="to drop",
        usageAttribution={"subjectKeys": [old_subject]},
        metadata={"a": "1"},
    )
    body = {"name": "After", "key": key, "usageAttribution": {"subjectKeys": [new_subject]}, "currency": "EUR"}
    response = api.put(f"/api/v1/customers/{key}", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    updated = response.json()
    assert updated["id"] == created["id"] and updated["createdAt"] == created["createdAt"]
    assert updated["updatedAt"] > created["updatedAt"]
    assert {k: v for k, v in updated.items() if k not in ("id", "createdAt", "updatedAt")} == {
        **body,
        "metadata": {},
    }
    assert api.get(f"/api/v1/customers/{created['id']}").json() == updated
    # the released subject can now be attributed to someone else
    create_customer(api, name="Heir", usageAttribution={"subjectKeys": [old_subject]})
    assert_problem(api.put("/api/v1/customers/no_such_customer", json=body), 404, detail="customer not found")
    assert_problem(api.put(f"/api/v1/customers/{key}", json={"key": key}), 400, field="name")


def test_delete(api: httpx.Client, unique: Unique) -> None:
    key, subject = unique("gone"), unique("gone_sub")
    customer = create_customer(api, name="Gone", key=key, usageAttribution={"subjectKeys": [subject]})
    response = api.delete(f"/api/v1/customers/{key}")
    assert response.status_code == 204 and response.content == b""
    assert_problem(api.get(f"/api/v1/customers/{key}"), 404, detail=f"customer not found: {key}")
    assert_problem(api.get(f"/api/v1/customers/{customer['id']}"), 404)
    assert_problem(api.delete(f"/api/v1/customers/{key}"), 404)
    assert api.get("/api/v1/customers", params={"key": key}).json()["totalCount"] == 0
    listed = api.get("/api/v1/customers", params={"key": key, "includeDeleted": "true"}).json()["items"]
    assert [c["id"] for c in listed] == [customer["id"]] and "deletedAt" in listed[0]
    # key and subjects are free again
    again = create_customer(api, name="Back", key=key, usageAttribution={"subjectKeys": [subject]})
    assert again["id"] != customer["id"]


# -- attribution in queries and the events list ----------------------------------------------------


def test_query_by_customer_and_events_attribution(api: httpx.Client, unique: Unique) -> None:
    slug, etype = unique("per_customer"), unique("per_customer_type")
    a1, a2, b1, stray = unique("a1"), unique("a2"), unique("b1"), unique("stray")
    create_meter(api, slug=slug, eventType=etype, aggregation="COUNT")
    alpha = create_customer(api, name="Alpha", key=unique("alpha"), usageAttribution={"subjectKeys": [a1, a2]})
    beta = create_customer(api, name="Beta", key=unique("beta"), usageAttribution={"subjectKeys": [b1]})
    when = "2025-06-01T12:00:00Z"
    counts = {a1: 2, a2: 1, b1: 3, stray: 4}
    ingest_ok(api, [event(type_=etype, subject=s, time_=when) for s, n in counts.items() for _ in range(n)])
    window = {"from": "2025-06-01T00:00:00Z", "to": "2025-06-02T00:00:00Z"}
    wait_for(lambda: sum(r["value"] for r in query_rows(api, slug, **window)) == 10)

    rows = query_rows(api, slug, filterCustomerId=alpha["id"], **window)
    assert rows == [
        {
            "value": 3.0,
            "windowStart": window["from"],
            "windowEnd": window["to"],
            "subject": None,
            "customerId": alpha["id"],
            "groupBy": {},
        }
    ]
    rows = query_rows(api, slug, filterCustomerId=alpha["key"], groupBy="subject", **window)
    assert sorted((r["subject"], r["customerId"], r["value"]) for r in rows) == sorted(
        [(a1, alpha["id"], 2.0), (a2, alpha["id"], 1.0)]
    )
    rows = query_rows(api, slug, filterCustomerId=[alpha["id"], beta["key"]], **window)
    assert sorted((r["customerId"], r["value"]) for r in rows) == sorted([(alpha["id"], 3.0), (beta["id"], 3.0)])
    rows = query_rows(api, slug, filterCustomerId=beta["id"], groupBy="customer_id", **window)
    assert [(r["customerId"], r["value"]) for r in rows] == [(beta["id"], 3.0)]
    # without the filter there is no customerId
    assert all("customerId" not in r for r in query_rows(api, slug, groupBy="subject", **window))

    # the events list names the customer of attributed subjects, and says when there is none
    ingest_ok(api, [event(type_=etype, subject=a1), event(type_=etype, subject=stray)])
    barrier(api)
    (attributed,) = list_events(api, subject=a1, limit=1)
    assert attributed["customerId"] == alpha["id"]
    assert "validationError" not in attributed
    (unattributed,) = list_events(api, subject=stray, limit=1)
    assert "customerId" not in unattributed
    assert unattributed["validationError"] == f"no customer found for event subject: {stray}"
    # and filters by customer
    listed = list_events(api, customerId=alpha["id"])
    assert {item["event"]["subject"] for item in listed} == {a1}
    assert {item["customerId"] for item in listed} == {alpha["id"]}


# -- subjects (deprecated in OpenMeter, still served) ----------------------------------------------


def test_subjects_crud(api: httpx.Client, unique: Unique) -> None:
    one, two = unique("subj_one"), unique("subj_two")
    response = api.post(
        "/api/v1/subjects",
        json=[{"key": one, "displayName": "One", "metadata": {"plan": "pro"}}, {"key": two}],
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    first, second = response.json()
    assert ULID.match(first["id"]) and first["key"] == one
    assert first["displayName"] == "One" and first["metadata"] == {"plan": "pro"}
    assert second["key"] == two and "displayName" not in second

    # an upsert changes only what it sends
    again = api.post("/api/v1/subjects", json=[{"key": one, "stripeCustomerId": "cus_123"}])
    assert again.status_code == 200
    (updated,) = again.json()
    assert updated["id"] == first["id"] and updated["createdAt"] == first["createdAt"]
    assert updated["displayName"] == "One" and updated["stripeCustomerId"] == "cus_123"

    listed = api.get("/api/v1/subjects")
    assert listed.status_code == 200 and listed.headers["content-type"] == "application/json"
    by_key = {s["key"]: s for s in listed.json()}
    assert by_key[one] == updated and by_key[two] == second

    for ref in (one, first["id"]):
        got = api.get(f"/api/v1/subjects/{ref}")
        assert got.status_code == 200 and got.json() == updated
    deleted = api.delete(f"/api/v1/subjects/{one}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(api.get(f"/api/v1/subjects/{one}"), 404, detail=f"subject not found: {one}")
    assert_problem(api.delete(f"/api/v1/subjects/{one}"), 404)
    assert one not in {s["key"] for s in api.get("/api/v1/subjects").json()}


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"key": "x"}, "body", "Expected `array`, got `object`"),
        ([{"key": ""}], "[0].key", "length >= 1"),
        ([{"displayName": "no key"}], "[0].key", "is required"),
        ([{"key": "x", "currentPeriodStart": "soon"}], "[0].currentPeriodStart", "Invalid RFC3339"),
        ([{"key": "x", "currentPeriodEnd": "2025-01-01T00:00:00"}], "[0].currentPeriodEnd", "with a UTC offset or Z"),
    ],
)
def test_subject_validation(api: httpx.Client, body: Any, field: str, detail: str) -> None:
    assert_problem(api.post("/api/v1/subjects", json=body), 400, field=field, detail=detail)


def test_subject_upsert_is_all_or_nothing(api: httpx.Client, unique: Unique) -> None:
    good, bad = unique("upsert_good"), unique("upsert_bad")
    body = [{"key": good}, {"key": bad, "currentPeriodStart": "2025-01-01T00:00:00"}]
    assert_problem(api.post("/api/v1/subjects", json=body), 400, field="[1].currentPeriodStart")
    assert_problem(api.get(f"/api/v1/subjects/{good}"), 404)
    zoned = [
        {"key": good, "currentPeriodStart": "2025-01-01T02:00:00+02:00", "currentPeriodEnd": "2025-02-01T00:00:00Z"}
    ]
    response = api.post("/api/v1/subjects", json=zoned)
    assert response.status_code == 200, response.text
    (subject,) = response.json()
    assert subject["currentPeriodStart"] == "2025-01-01T00:00:00Z"
    assert subject["currentPeriodEnd"] == "2025-02-01T00:00:00Z"
