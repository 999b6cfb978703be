"""Error responses over real HTTP: unknown routes, wrong methods, and hostile inputs that must never be a 500."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.api.helpers import PROBLEM, assert_problem, create_meter, ingest_ok, query_rows
from tests.conftest import Server, event, wait_for

Unique = Callable[[str], str]


@pytest.mark.parametrize(
    "path",
    ["/api/v1/nope", "/api/v3/events", "/api/v1/meters/a/b/c", "/api/v1/customers/x/nope", "/", "/api/v1/events/x"],
)
def test_unknown_route_is_404_problem(api: httpx.Client, path: str) -> None:
    for method in ("GET", "POST", "DELETE"):
        body = assert_problem(api.request(method, path), 404, detail="no such route")
        assert body["title"] == "Not Found"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/api/v1/meters/some_meter", "DELETE, GET, HEAD, PUT"),
        ("POST", "/api/v1/meters/some_meter", "DELETE, GET, HEAD, PUT"),
        ("PUT", "/api/v1/meters", "GET, HEAD, POST"),
        ("DELETE", "/api/v1/events", "GET, HEAD, POST"),
        ("PUT", "/api/v2/events", "GET, HEAD"),
        ("DELETE", "/api/v1/meters/some_meter/query", "GET, HEAD, POST"),
        ("PATCH", "/api/v1/customers/c", "DELETE, GET, HEAD, PUT"),
        ("PUT", "/api/v1/subjects", "GET, HEAD, POST"),
        ("POST", "/api/v1/subjects/s", "DELETE, GET, HEAD"),
    ],
)
def test_wrong_method_is_405_problem(api: httpx.Client, method: str, path: str, allow: str) -> None:
    response = api.request(method, path)
    body = assert_problem(response, 405, detail="method not allowed on this route")
    assert body["title"] == "Method Not Allowed"
    assert response.headers["allow"] == allow


def test_errors_keep_request_ids_apart(api: httpx.Client) -> None:
    first = api.get("/api/v1/nope").json()["instance"]
    second = api.get("/api/v1/nope").json()["instance"]
    assert first != second


def test_far_future_query_start_is_not_a_500(api: httpx.Client, unique: Unique) -> None:
    slug, etype = unique("far"), unique("far_type")
    create_meter(api, slug=slug, eventType=etype, aggregation="SUM", valueProperty="$.v")
    ingest_ok(api, [event(type_=etype, data={"v": 2})])
    wait_for(lambda: query_rows(api, slug))
    for start in ("9999-12-31T23:59:59Z", "9999-12-31T23:30:00.5Z"):
        assert query_rows(api, slug, **{"from": start}) == []
        assert query_rows(api, slug, **{"from": start}, windowSize="DAY") == []
        response = api.post(f"/api/v1/meters/{slug}/query", json={"from": start})
        assert response.status_code == 200, response.text
        assert response.json() == {"from": start, "data": []}
    everything = query_rows(api, slug, **{"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"})
    assert [r["value"] for r in everything] == [2.0]
    assert everything[0]["windowStart"] == "0001-01-01T00:00:00Z"


def test_event_times_outside_the_store_range_are_refused(api: httpx.Client, unique: Unique) -> None:
    response = api.post(
        "/api/v1/events", json=[event(type_="ancient", subject=unique("a"), time_="0099-01-02T03:04:05Z")]
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["extensions"]["validationErrors"][0]["field"] == "$[0].time"


# -- hostile inputs: a 4xx problem, never a 500 ----------------------------------------------------


BODIES = [
    b"",
    b" ",
    b"{",
    b"}",
    b"null",
    b"true",
    b"0",
    b"1e999",
    b'"text"',
    b"[]",
    b"{}",
    b"[null]",
    b"[[]]",
    b"[{}]",
    b"\xff\xfe\x00",
    b'{"a": "\\ud800"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"slug": "x\\u0000", "name": "\\u0000", "key": "\\u0000", "eventType": "t", "aggregation": "COUNT"}',
    b'{"slug": ["a"], "aggregation": {}, "eventType": 1, "groupBy": [], "metadata": []}',
    b'{"name": "n", "key": "k", "usageAttribution": {"subjectKeys": [1]}}',
    b'{"name": "n", "key": "k", "billingAddress": "nowhere"}',
    b'[{"key": "k", "metadata": "m"}]',
    b'{"from": 1, "to": [], "windowSize": 3, "groupBy": [1]}',
    b'{"advancedMeterGroupByFilters": {"g": {"$and": [{"$or": "x"}]}}}',
    b'{"filterGroupBy": {"g": "x"}}',
]


@pytest.fixture(scope="module")
def fuzz_meter(server: Server) -> Iterator[str]:
    slug = f"fuzz_{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        create_meter(client, slug=slug, eventType=slug, aggregation="SUM", valueProperty="$.v", groupBy={"g": "$.g"})
    yield slug


def _no_500(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["status"] == response.status_code


@pytest.mark.parametrize("content_type", ["application/json", "application/cloudevents-batch+json"])
def test_hostile_bodies_never_500(api: httpx.Client, fuzz_meter: str, content_type: str) -> None:
    targets = [
        ("POST", "/api/v1/events"),
        ("POST", "/api/v1/meters"),
        ("PUT", f"/api/v1/meters/{fuzz_meter}"),
        ("POST", f"/api/v1/meters/{fuzz_meter}/query"),
        ("POST", "/api/v1/customers"),
        ("POST", "/api/v1/subjects"),
    ]
    for method, path in targets:
        for body in BODIES:
            _no_500(api.request(method, path, content=body, headers={"Content-Type": content_type}))


def test_hostile_events_never_500(api: httpx.Client) -> None:
    base = event(type_="hostile")
    overrides: list[dict[str, Any]] = [
        {"time": "9999-12-31T23:59:59.999999Z"},
        {"time": "0001-01-01T00:00:00Z"},
        {"time": "2025-02-30T00:00:00Z"},
        {"time": "2025-01-01T25:00:00Z"},
        {"time": "2025-01-01T00:00:00+25:00"},
        {"time": None},
        {"id": "x" * 5000},
        {"subject": "\u0000"},
        {"data": {"deep": [[[[[[[[[[{"a": 1}]]]]]]]]]]}},
        {"data": {"big": 1e308, "small": -1e308, "int": 2**70}},
        {"dataschema": 5},
    ]
    for override in overrides:
        body = {**base, "id": uuid.uuid4().hex, **override}
        _no_500(api.post("/api/v1/events", json=body, headers={"Content-Type": "application/cloudevents+json"}))


def test_hostile_query_strings_never_500(api: httpx.Client, fuzz_meter: str) -> None:
    values = [
        "",
        " ",
        "\u0000",
        "x" * 3000,
        "'; DROP TABLE events; --",
        "%",
        "[]",
        "{}",
        "null",
        "-1",
        "1e309",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "2025-01-01T00:00:00+14:00",
        "../../etc/passwd",
    ]
    names = [
        "from",
        "to",
        "windowSize",
        "windowTimeZone",
        "subject",
        "groupBy",
        "filterCustomerId",
        "filterGroupBy[g]",
        "advancedMeterGroupByFilters",
        "limit",
        "id",
        "cursor",
        "filter",
        "page",
        "pageSize",
        "includeDeleted",
        "customerId",
        "ingestedAtFrom",
    ]
    paths = [
        f"/api/v1/meters/{fuzz_meter}/query",
        "/api/v1/events",
        "/api/v2/events",
        "/api/v1/customers",
        "/api/v1/meters",
        f"/api/v1/meters/{fuzz_meter}/subjects",
        f"/api/v1/meters/{fuzz_meter}/group-by/g/values",
    ]
    for path in paths:
        for name in names:
            for value in values:
                _no_500(api.get(path, params={name: value}))
    for odd in ("%00", "x" * 300, "%E2%82%AC", "a%2Fb"):
        for base in ("/api/v1/meters/", "/api/v1/customers/", "/api/v1/subjects/"):
            _no_500(api.get(base + odd))
            _no_500(api.delete(base + odd))
