"""Hostile strings (SQL quotes and comments, `'); DROP TABLE ...`, backslashes, NUL, ClickHouse `{name:Type}`
placeholders, LIKE wildcards, look-alike quotes, control characters) through every string the core routes take:
meters (bodies, path segments, query parameters and filters), events (ingest, the v1 and v2 lists), customers
and subjects. Each is refused with a 400 naming the field, answered 404 as an unknown name, or stored, matched
and echoed back literally; never a 5xx. A canary meter, its events, a customer and a subject read the same before
and after each string, and the counts of meters, customers and subjects are unchanged once a test cleans up."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.api.helpers import assert_problem, barrier, create_meter, ingest_ok
from tests.api.properties import never_5xx, refused, refused_one_of
from tests.api.test_entitlement_injection import HOSTILE
from tests.api.test_filter_properties import matches  # the filter evaluator: h's own % _ \\ are LIKE syntax
from tests.conftest import Server, wait_for

CORE_HOSTILE = [
    *HOSTILE,
    "'); DROP TABLE events; --",
    '"); DROP TABLE meters; --',
    "'; SELECT * FROM system.tables; --",
    "\\",
    "a\\",
    "\\\\'",
    "a\x00b",
    "{name:String}",
    "{p1:Array(String)}",
    "`events`",
    "/* x */ --",
    "%",
    "_",
    "' || '",
    "\u02bc OR 1=1 \u2019",
    "\uff07 OR \uff071\uff07=\uff071",
    "tab\there\nnew\rline",
    "\\N",
    "NULL",
    "😀 \U0010ffff",
    "x" * 300,
]
SLUG = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")


@dataclass(frozen=True)
class Planted:
    """What the module put in place for one hostile string."""

    hostile: str
    slug: str  # a SUM meter of $.v grouped by g = $.g, named and described by the hostile string
    etype: str  # its event type, with the hostile string in it
    event_id: str  # the event of subject `hostile`, source `hostile`, g `hostile`, v 2 (another has v 5)

    @property
    def nul(self) -> bool:
        """PostgreSQL cannot keep NUL in text, so meterd refuses it in metadata (meters, customers, subjects) on
        either database; the event store keeps it."""
        return "\x00" in self.hostile


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def planted(client: httpx.Client) -> Iterator[list[Planted]]:
    suffix = uuid.uuid4().hex[:8]
    out, events = [], []
    for i, hostile in enumerate(CORE_HOSTILE):
        slug, etype = f"inj_{i}_{suffix}", f"{hostile}|inj{i}_{suffix}"
        body = {"slug": slug, "eventType": etype, "aggregation": "SUM", "valueProperty": "$.v"}
        body |= {"groupBy": {"g": "$.g"}, "name": hostile[:256], "description": hostile, "metadata": {hostile: hostile}}
        response = client.post("/api/v1/meters", json=body)
        if "\x00" in hostile:
            refused_one_of(response, {"name", "description", "eventType", "metadata"})
            etype = etype.replace("\x00", "")
            create_meter(client, **body | {"eventType": etype, "name": slug, "description": slug, "metadata": {}})
        else:
            assert response.status_code == 201, response.text
        event_id = f"{hostile}#{i}-{suffix}"
        common = {"specversion": "1.0", "source": hostile, "type": etype}
        events += [
            {**common, "id": event_id, "subject": hostile, "data": {"g": hostile, "v": 2, hostile: hostile}},
            {**common, "id": f"{event_id}-x", "subject": f"{hostile}-x", "data": {"g": f"{hostile}x", "v": 5}},
        ]
        out.append(Planted(hostile, slug, etype, event_id))
    ingest_ok(client, events)
    barrier(client)
    wait_for(lambda: all(_total(client, p.slug) == 7 for p in out), timeout=20)
    yield out
    for p in out:  # a live meter's rollup view feeds on every later insert of the session
        client.delete(f"/api/v1/meters/{p.slug}")


@pytest.fixture(scope="module")
def canary(client: httpx.Client) -> Iterator[str]:
    name = f"canary_{uuid.uuid4().hex[:8]}"
    create_meter(client, slug=name, eventType=name, aggregation="SUM", valueProperty="$.v", groupBy={"g": "$.g"})
    events = [
        {"specversion": "1.0", "id": f"{name}-{i}", "source": "canary", "type": name, "subject": name}
        | {"data": {"v": i, "g": "c"}}
        for i in range(1, 4)
    ]
    ingest_ok(client, events)
    made = client.post(
        "/api/v1/customers", json={"name": name, "key": name, "usageAttribution": {"subjectKeys": [name]}}
    )
    assert made.status_code == 201, made.text
    assert client.post("/api/v1/subjects", json=[{"key": name, "displayName": name}]).status_code == 200
    barrier(client)
    wait_for(lambda: _total(client, name) == 6)
    yield name
    client.delete(f"/api/v1/meters/{name}")


def _total(client: httpx.Client, slug: str, **params: Any) -> float:
    response = client.get(f"/api/v1/meters/{slug}/query", params=params)
    assert response.status_code == 200, response.text
    return float(sum(row["value"] for row in response.json()["data"]))


def snapshot(client: httpx.Client, canary: str) -> dict[str, Any]:
    """The canary's data and the counts of everything listed."""
    customers = client.get("/api/v1/customers", params={"pageSize": 1})
    events = client.get("/api/v1/events", params={"subject": canary}).json()
    return {
        "canary usage": client.get(f"/api/v1/meters/{canary}/query", params={"groupBy": ["g", "subject"]}).json(),
        "canary events": sorted((e["event"]["id"], json.dumps(e["event"]["data"])) for e in events),
        "canary customer": client.get(f"/api/v1/customers/{canary}").json()["usageAttribution"],
        "canary subject": client.get(f"/api/v1/subjects/{canary}").json()["displayName"],
        "meters": len(client.get("/api/v1/meters").json()),
        "customers": customers.json()["totalCount"],
        "subjects": len(client.get("/api/v1/subjects").json()),
    }


def _segment(text: str) -> str:
    """A path segment. One with a "/" in it reaches no route (Starlette routes the decoded path), so names with a
    slash are addressed by id here."""
    return quote(text, safe="")


# -- meters --------------------------------------------------------------------------------------------


def missing(response: httpx.Response, p: Planted) -> None:
    """An unknown name: a 404 (a 400 naming the field for a name with NUL, which no name can have)."""
    if p.nul and response.status_code == 400:
        refused_one_of(response, {"id", "key", "slug"})
    else:
        assert_problem(response, 404)


def check_meters(client: httpx.Client, p: Planted) -> None:
    h = p.hostile
    got = client.get(f"/api/v1/meters/{p.slug}").json()
    if not p.nul:
        assert (got["name"], got["description"], got["eventType"], got["metadata"]) == (h[:256], h, p.etype, {h: h})
    meter = {"eventType": p.etype, "aggregation": "SUM", "valueProperty": "$.v"}
    response = client.post("/api/v1/meters", json={**meter, "slug": h})
    if SLUG.fullmatch(h) and len(h) <= 64:
        assert response.status_code in (201, 409), response.text
        client.delete(f"/api/v1/meters/{h}")
    else:
        refused(response, "slug")
    for field, body in (
        ("eventFrom", {**meter, "slug": "inj_probe", "eventFrom": h}),
        ("aggregation", {**meter, "slug": "inj_probe", "aggregation": h}),
        (f"groupBy.{h}", {**meter, "slug": "inj_probe", "groupBy": {h: "$.g"}}),
        ("valueProperty", {**meter, "slug": "inj_probe", "valueProperty": h}),
        ("groupBy.g", {**meter, "slug": "inj_probe", "groupBy": {"g": h}}),
    ):
        response = client.post("/api/v1/meters", json=body)
        never_5xx(response)
        if response.status_code == 201:  # a path ClickHouse accepts ($.data[?(@.x)] is not one)
            assert client.delete("/api/v1/meters/inj_probe").status_code == 204
        else:
            refused_one_of(response, {field})
    update = {"name": h[:256], "description": h, "metadata": {h: h}, "groupBy": {"g": "$.g"}}
    response = client.put(f"/api/v1/meters/{p.slug}", json=update)
    if p.nul:
        refused_one_of(response, {"name", "description", "metadata"})
    else:
        assert response.status_code == 200, response.text
        assert {k: response.json()[k] for k in update} == update
    for method in ("GET", "PUT", "DELETE"):
        missing(client.request(method, f"/api/v1/meters/{_segment(h)}", json=update if method == "PUT" else None), p)
    for suffix in ("query", "subjects", "group-by/g/values"):
        missing(client.get(f"/api/v1/meters/{_segment(h)}/{suffix}"), p)
    response = client.get(f"/api/v1/meters/{p.slug}/group-by/{_segment(h)}/values")
    assert response.status_code in (400, 404), response.text  # 404: a "/" in it makes another route


def check_queries(client: httpx.Client, p: Planted) -> None:
    """The hostile string as a subject, a group-by value and a filter argument selects exactly its event."""
    h, url = p.hostile, f"/api/v1/meters/{p.slug}/query"
    assert _total(client, p.slug, subject=h) == 2
    assert _total(client, p.slug, **{"filterGroupBy[g]": h}) == 2
    for spec in ({"$eq": h}, {"$in": [h]}, {"$ne": h}, {"$nin": [h]}, {"$contains": h}, {"$like": h}, {"$gte": h}):
        for response in (
            client.get(url, params={"advancedMeterGroupByFilters": json.dumps({"g": spec})}),
            client.post(url, json={"advancedMeterGroupByFilters": {"g": spec}}),
        ):
            if "$like" in spec and (len(h) - len(h.rstrip("\\"))) % 2:
                refused_one_of(response, {"advancedMeterGroupByFilters"})
                continue
            assert response.status_code == 200, (spec, response.text)
            total = sum(row["value"] for row in response.json()["data"])
            assert total == sum(v for g, v in ((h, 2), (f"{h}x", 5)) if matches(g, spec)), (spec, total)
    rows = client.get(url, params={"groupBy": ["subject", "g"]}).json()["data"]
    assert sorted((r["subject"], r["groupBy"]["g"], r["value"]) for r in rows) == [
        (h, h, 2.0),
        (f"{h}-x", f"{h}x", 5.0),
    ]
    assert client.get(f"/api/v1/meters/{p.slug}/subjects").json() == sorted([h, f"{h}-x"])
    values = client.get(f"/api/v1/meters/{p.slug}/group-by/g/values", params={"from": "2000-01-01T00:00:00Z"}).json()
    assert values == sorted([h, f"{h}x"])
    for name in ("groupBy", "from", "to", "windowSize", "windowTimeZone", "filterGroupBy[" + h + "]"):
        response = client.get(url, params={name: h})
        if name.startswith("filterGroupBy["):
            refused_one_of(response, {f"filterGroupBy.{h}"})
        else:
            refused(response, name)
    missing(client.get(url, params={"filterCustomerId": h}), p)
    assert client.get(url, params={"clientId": h[:36]}).status_code == 200


# -- events --------------------------------------------------------------------------------------------


def check_events(client: httpx.Client, p: Planted) -> None:
    h = p.hostile
    listed = client.get("/api/v1/events", params={"subject": h})
    assert listed.status_code == 200, listed.text
    [item] = [i for i in listed.json() if i["event"]["type"] == p.etype]
    assert item["event"] | {"time": None} == {
        "id": p.event_id,
        "source": h,
        "specversion": "1.0",
        "type": p.etype,
        "subject": h,
        "time": None,
        "datacontenttype": "application/json",
        "data": {"g": h, "v": 2, h: h},
    }
    by_id = client.get("/api/v1/events", params={"id": p.event_id}).json()
    assert sorted(i["event"]["id"] for i in by_id) == [p.event_id, f"{p.event_id}-x"]  # contains, no wildcards
    contains = client.get("/api/v1/events", params={"id": h}).json()
    assert all(h in i["event"]["id"] for i in contains) and p.event_id in {i["event"]["id"] for i in contains}
    assert client.get("/api/v1/events", params={"clientId": h}).status_code == 200
    missing(client.get("/api/v1/events", params={"customerId": h}), p)  # an unknown customer, as in queries
    for name in ("from", "to", "ingestedAtFrom", "ingestedAtTo", "limit"):
        refused(client.get("/api/v1/events", params={name: h}), name)
    for column, value in (("subject", h), ("source", h), ("id", p.event_id), ("type", p.etype)):
        for op in ("$eq", "$in"):
            spec = {"type": {"$eq": p.etype}, column: {op: value if op == "$eq" else [value]}}
            response = client.get("/api/v2/events", params={"filter": json.dumps(spec)})
            assert response.status_code == 200, response.text
            got = sorted(i["event"]["id"] for i in response.json()["items"])
            assert got == ([p.event_id] if column in ("subject", "id") else sorted([p.event_id, f"{p.event_id}-x"]))
    response = client.get("/api/v2/events", params={"cursor": h})
    refused(response, "cursor")
    response = client.get("/api/v2/events", params={"filter": json.dumps({h: {"$eq": h}})})
    assert response.status_code == 400, response.text


# -- customers and subjects ------------------------------------------------------------------------------


def check_customers(client: httpx.Client, p: Planted) -> None:
    h, key = p.hostile, f"{p.hostile[:200]}|{p.slug}"  # keys are 1-256 characters
    body = {
        "name": h[:256],
        "key": key,
        "description": h,
        "primaryEmail": h,
        "metadata": {h: h},
        "usageAttribution": {"subjectKeys": [h]},
    }
    made = client.post("/api/v1/customers", json=body)
    if made.status_code == 400:  # NUL (PostgreSQL cannot keep it, so meterd refuses it everywhere), or too long
        refused_one_of(made, {"name", "key", "description", "primaryEmail", "metadata", "usageAttribution"})
        assert "\x00" in h or len(h) > 256, made.text
        return
    assert made.status_code == 201, made.text
    by_id = f"/api/v1/customers/{made.json()['id']}"
    try:
        paths = [by_id] if "/" in key else [by_id, f"/api/v1/customers/{_segment(key)}"]  # see _segment
        for path in paths:
            got = client.get(path)
            assert got.status_code == 200, got.text
            assert {k: got.json()[k] for k in body} == body
        listed = client.get("/api/v1/customers", params={"key": key}).json()["items"]
        assert [c["key"] for c in listed] == [key]
        for name in ("name", "subject"):  # a case-insensitive contains-match, with no wildcards
            items = client.get("/api/v1/customers", params={name: h}).json()["items"]
            assert key in {c["key"] for c in items}
            for c in items:  # a customer's subjects are its key and its subjectKeys
                texts = [c["name"]] if name == "name" else [c.get("key", ""), *c["usageAttribution"]["subjectKeys"]]
                assert any(h.lower() in t.lower() for t in texts), (h, c)
        refused(client.post("/api/v1/customers", json={**body, "key": f"{key}-2", "currency": h}), "currency")
        assert _total(client, p.slug, filterCustomerId=key) == 2
        replaced = client.put(by_id, json={**body, "description": h + h})
        assert replaced.status_code == 200 and replaced.json()["description"] == h + h, replaced.text
    finally:
        assert client.delete(by_id).status_code == 204
    assert client.get(by_id).status_code == 404


def check_subjects(client: httpx.Client, p: Planted) -> None:
    h = p.hostile
    body = {"key": h, "displayName": h, "metadata": {h: h}, "stripeCustomerId": h}
    made = client.post("/api/v1/subjects", json=[body])
    if made.status_code == 400:
        refused_one_of(made, {"[0].key", "key", "displayName", "metadata", "stripeCustomerId"})
        assert "\x00" in h or len(h) > 256, made.text
        return
    assert made.status_code == 200, made.text
    assert {k: made.json()[0][k] for k in body} == body
    by_id = f"/api/v1/subjects/{made.json()[0]['id']}"
    try:
        for path in [by_id] if "/" in h else [by_id, f"/api/v1/subjects/{_segment(h)}"]:
            got = client.get(path)
            assert got.status_code == 200 and {k: got.json()[k] for k in body} == body, got.text
        assert h in {s["key"] for s in client.get("/api/v1/subjects").json()}
    finally:
        assert client.delete(by_id).status_code == 204
    assert client.get(by_id).status_code == 404


@pytest.mark.parametrize("index", range(len(CORE_HOSTILE)))
def test_hostile_strings_are_refused_or_kept_literally(
    client: httpx.Client, planted: list[Planted], canary: str, index: int
) -> None:
    before = snapshot(client, canary)
    p = planted[index]
    check_meters(client, p)
    check_queries(client, p)
    check_events(client, p)
    check_customers(client, p)
    check_subjects(client, p)
    assert snapshot(client, canary) == before
