"""GET /api/v1/events (bare array, newest first, read-time validationError) and GET /api/v2/events (cursor pages)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem, barrier, create_meter, ingest_ok, list_events
from tests.conftest import event

Unique = Callable[[str], str]
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_v1_list_shape_and_order(api: httpx.Client, unique: Unique) -> None:
    subject, etype = unique("order"), unique("order_type")
    sent = [
        event(f"{subject}-old", type_=etype, subject=subject, time_=ago(minutes=30), data={"n": 1}),
        event(f"{subject}-new", type_=etype, subject=subject, time_=ago(minutes=1), data={"n": 3}),
        event(f"{subject}-mid", type_=etype, subject=subject, time_=ago(minutes=10)),
    ]
    ingest_ok(api, sent)
    barrier(api)
    listed = list_events(api, subject=subject)
    assert [item["event"]["id"] for item in listed] == [f"{subject}-new", f"{subject}-mid", f"{subject}-old"]
    newest = listed[0]
    assert set(newest) == {"event", "ingestedAt", "storedAt", "validationError"}
    assert newest["event"] == {
        "id": f"{subject}-new",
        "source": "tests",
        "specversion": "1.0",
        "type": etype,
        "subject": subject,
        "time": sent[1]["time"],
        "datacontenttype": "application/json",
        "data": {"n": 3},
    }
    assert listed[1]["event"]["data"] is None
    for item in listed:
        assert STAMP.match(item["ingestedAt"]) and STAMP.match(item["storedAt"])
        assert item["ingestedAt"] <= item["storedAt"]


def test_v1_validation_errors(api: httpx.Client, unique: Unique) -> None:
    subject, etype, orphan_type = unique("valid"), unique("valid_type"), unique("orphan_type")
    create_meter(api, slug=unique("valid_sum"), eventType=etype, aggregation="SUM", valueProperty="$.tokens")
    ingest_ok(
        api,
        [
            event("ok", type_=etype, subject=subject, data={"tokens": 5}),
            event("missing", type_=etype, subject=subject, data={"other": 5}),
            event("null_data", type_=etype, subject=subject),
            event("text", type_=etype, subject=subject, data={"tokens": "many"}),
            event("orphan", type_=orphan_type, subject=subject),
        ],
    )
    customer = api.post("/api/v1/customers", json={"name": "Valid", "usageAttribution": {"subjectKeys": [subject]}})
    assert customer.status_code == 201, customer.text
    barrier(api)
    errors = {item["event"]["id"]: item.get("validationError") for item in list_events(api, subject=subject)}
    assert errors == {
        "ok": None,
        "missing": 'missing value property: "$.tokens"',
        "null_data": "null and missing value property",
        "text": "value cannot be parsed as float64",
        "orphan": f"no meter found for event type: {orphan_type}",
    }


def test_v1_filters(api: httpx.Client, unique: Unique) -> None:
    subject, other = unique("filt"), unique("filt_other")
    tag = unique("idtag")
    ingest_ok(
        api,
        [
            *(event(f"{tag}-{i}", type_="filt", subject=subject, time_=ago(minutes=i + 1)) for i in range(5)),
            event(f"x-{tag}-x", type_="filt", subject=other),
        ],
    )
    barrier(api)
    assert [i["event"]["id"] for i in list_events(api, subject=subject)] == [f"{tag}-{i}" for i in range(5)]
    assert [i["event"]["id"] for i in list_events(api, subject=subject, limit=2)] == [f"{tag}-0", f"{tag}-1"]
    assert [i["event"]["id"] for i in list_events(api, id=f"{tag}-3")] == [f"{tag}-3"]
    partial = list_events(api, id=tag)
    assert {i["event"]["id"] for i in partial} == {*(f"{tag}-{i}" for i in range(5)), f"x-{tag}-x"}
    both = list_events(api, subject=[subject, other], limit=100)
    assert {i["event"]["subject"] for i in both} == {subject, other} and len(both) == 6
    assert list_events(api, subject=subject, id="no-such-id") == []
    window = list_events(api, subject=subject, **{"from": ago(minutes=3, seconds=30), "to": ago(minutes=1, seconds=30)})
    assert [i["event"]["id"] for i in window] == [f"{tag}-1", f"{tag}-2"]
    everything_now = list_events(api, subject=subject, ingestedAtFrom=ago(minutes=5))
    assert len(everything_now) == 5
    assert list_events(api, subject=subject, ingestedAtTo=ago(minutes=5)) == []


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": 0}, "limit: must be between 1 and 100"),
        ({"limit": 101}, "limit: must be between 1 and 100"),
        ({"limit": "ten"}, "limit: must be an integer"),
        ({"from": "yesterday"}, "from: invalid RFC 3339 date-time"),
        ({"to": "2025-01-01T00:00:00"}, "to: invalid RFC 3339 date-time"),
        ({"ingestedAtFrom": "x"}, "ingestedAtFrom: invalid RFC 3339"),
        ({"from": "2000-01-01T00:00:00Z"}, "from: must be within the last 32 days"),
    ],
)
def test_v1_bad_params(api: httpx.Client, params: dict[str, Any], detail: str) -> None:
    assert_problem(api.get("/api/v1/events", params=params), 400, field=detail.split(":")[0], detail=detail)


def test_v1_limit_bounds_are_accepted(api: httpx.Client) -> None:
    for limit in (1, 100):
        response = api.get("/api/v1/events", params={"limit": limit})
        assert response.status_code == 200
        assert len(response.json()) <= limit


def test_v1_unknown_customer_filter_is_404(api: httpx.Client) -> None:
    response = api.get("/api/v1/events", params={"customerId": "no_such_customer"})
    assert_problem(response, 404, detail="customer not found: no_such_customer")


# -- v2 --------------------------------------------------------------------------------------------


def v2(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/api/v2/events", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    page: dict[str, Any] = response.json()
    assert set(page) == {"items", "nextCursor"}
    return page


def test_v2_cursor_paging_returns_each_event_once(api: httpx.Client, unique: Unique) -> None:
    subject = unique("paging")
    same_time = ago(minutes=2)
    sent = [event(f"{subject}-{i:02d}", type_="paging", subject=subject, time_=ago(minutes=10 + i)) for i in range(4)]
    sent += [event(f"{subject}-same-{i}", type_="paging", subject=subject, time_=same_time) for i in range(3)]
    ingest_ok(api, sent)
    barrier(api)
    flt = json.dumps({"subject": {"$eq": subject}})
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"filter": flt, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = v2(api, **params)
        pages += 1
        assert len(page["items"]) <= 2
        seen += [item["event"]["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert pages < 10
    assert sorted(seen) == sorted(e["id"] for e in sent)
    assert len(seen) == len(set(seen)) == 7
    assert set(seen[:3]) == {f"{subject}-same-{i}" for i in range(3)}  # ties: any order, but each once
    assert seen[3:] == [f"{subject}-{i:02d}" for i in range(4)]
    # one page that holds everything has no next cursor
    whole = v2(api, filter=flt)
    assert [i["event"]["id"] for i in whole["items"]] == seen and whole["nextCursor"] is None


def test_v2_filters(api: httpx.Client, unique: Unique) -> None:
    subject = unique("v2f")
    ingest_ok(
        api,
        [
            event(f"{subject}-a", type_="v2_alpha", subject=subject, source="src-1", time_=ago(minutes=3)),
            event(f"{subject}-b", type_="v2_beta", subject=subject, source="src-2", time_=ago(minutes=2)),
        ],
    )
    barrier(api)

    def ids(flt: dict[str, Any]) -> list[str]:
        return [i["event"]["id"] for i in v2(api, filter=json.dumps({"subject": {"$eq": subject}, **flt}))["items"]]

    assert ids({}) == [f"{subject}-b", f"{subject}-a"]
    assert ids({"type": {"$eq": "v2_alpha"}}) == [f"{subject}-a"]
    assert ids({"source": {"$in": ["src-2"]}}) == [f"{subject}-b"]
    assert ids({"id": {"$like": "%-a"}}) == [f"{subject}-a"]
    assert ids({"time": {"$gte": ago(minutes=2, seconds=30)}}) == [f"{subject}-b"]
    assert ids({"time": {"$lt": ago(minutes=2, seconds=30)}}) == [f"{subject}-a"]


@pytest.mark.parametrize(
    ("params", "field", "detail"),
    [
        ({"limit": 0}, "limit", "limit: must be between 1 and 100"),
        ({"limit": 101}, "limit", "limit: must be between 1 and 100"),
        ({"cursor": "!!!not-a-cursor"}, "cursor", "cursor: not a cursor this server issued"),
        ({"filter": "{"}, "filter", "filter: must be a JSON object"),
        ({"filter": "[]"}, "filter", "filter: must be a JSON object"),
        ({"filter": '{"color": {"$eq": "red"}}'}, "filter.color", "unknown filter"),
        ({"filter": '{"subject": {"$bogus": "x"}}'}, "filter.subject.$bogus", "unknown filter operator"),
        ({"filter": '{"subject": "x"}'}, "filter.subject", "must be a non-empty filter object"),
        ({"filter": '{"time": {"$gte": "soon"}}'}, "filter.time.$gte", "invalid RFC 3339"),
        ({"filter": '{"time": {"$eq": "2025-01-01T00:00:00Z"}}'}, "filter.time.$eq", "use $gt, $gte, $lt or $lte"),
    ],
)
def test_v2_bad_params(api: httpx.Client, params: dict[str, Any], field: str | None, detail: str) -> None:
    assert_problem(api.get("/api/v2/events", params=params), 400, field=field, detail=detail)
