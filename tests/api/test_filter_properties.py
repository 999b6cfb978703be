"""Property tests of meter query filters over real HTTP (compat reference 2.2 and 10.5): `advancedMeterGroupByFilters`
(random FilterString trees and random JSON), `filterGroupBy`, `subject`, `filterCustomerId` and `groupBy`, sent as
GET parameters or a POST body; and features' `meterGroupByFilters` / `advancedMeterGroupByFilters`, through the
usage of an entitlement. Invalid filters are 400s naming the field (an unknown customer a 404), never 5xx; valid
ones select exactly what an independent evaluator, written from the reference, selects.

The evaluator: a filter applies to the text JSON_VALUE gives the group-by's path ('' when missing). $eq/$ne/$gt/
$gte/$lt/$lte compare strings, $in/$nin test membership, $like/$nlike/$ilike/$nilike are SQL LIKE (% any run, _ one
character, a backslash makes the next % _ or backslash literal and is itself literal before anything else;
i- without case), $contains/$ncontains test substrings, $exists means a non-empty text, $and/$or combine, and the
operators of one object all hold. A trailing unpaired backslash in a LIKE pattern is refused."""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from tests.api.helpers import assert_problem, barrier, create_meter, ingest_ok
from tests.api.properties import examples, never_5xx, refused_one_of, render
from tests.conftest import Server, wait_for
from tests.model import MISSING, json_value

GROUP_BY = {"r": "$.r", "t": "$.t"}
SUBJECTS = ["s1", "s2", "s3", "lone"]
R_VALUES = ["eu", "us", "EU", "e%u", "e_u", "", "x'y", "a\\b", "é", "É", None, 5, MISSING, {"o": 1}]
T_VALUES = ["gold", "free", "", "Gold", MISSING]
STRING_OPS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$like", "$nlike", "$ilike", "$nilike", "$contains"]
STRING_OPS.append("$ncontains")


@dataclass
class World:
    slug: str
    events: list[tuple[str, dict[str, Any], int]]  # (subject, data, v)
    customers: dict[str, tuple[str, str, set[str]]]  # name -> (id, key, subjects)
    start: datetime  # every event is at or after it, in the current minute's past

    def __repr__(self) -> str:
        return f"World({self.slug!r})"


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def world(client: httpx.Client) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:10]
    slug = f"filters_{suffix}"
    create_meter(client, slug=slug, eventType=slug, aggregation="SUM", valueProperty="$.v", groupBy=GROUP_BY)
    customers = {}
    for name, subjects in (("a", {"s1", "s2"}), ("b", {"s3"})):
        key = f"cust_{name}_{suffix}"
        made = client.post(
            "/api/v1/customers", json={"name": key, "key": key, "usageAttribution": {"subjectKeys": sorted(subjects)}}
        )
        assert made.status_code == 201, made.text
        customers[name] = (made.json()["id"], key, subjects | {key})
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    events, body = [], []
    for i in range(3 * len(R_VALUES)):
        data: dict[str, Any] = {"v": i + 1}
        for name, values, step in (("r", R_VALUES, 1), ("t", T_VALUES, 3)):
            if (value := values[(i * step) % len(values)]) is not MISSING:
                data[name] = value
        subject = SUBJECTS[i % len(SUBJECTS)]
        events.append((subject, data, i + 1))
        body.append(
            {"specversion": "1.0", "id": f"{slug}-{i}", "source": "filters", "type": slug, "subject": subject}
            | {"time": render(start + i * timedelta(seconds=3), 0, 6), "data": data}
        )
    ingest_ok(client, body)
    barrier(client)
    wait_for(lambda: client.get(f"/api/v1/meters/{slug}/query").json()["data"], timeout=15)
    yield World(slug, events, customers, start)
    client.delete(f"/api/v1/meters/{slug}")  # its rollup view would feed on every later insert


# -- the evaluator -----------------------------------------------------------------------------------


def like(text: str, pattern: str, fold: bool) -> bool:
    parts, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_\\":
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        i += 1
    flags = re.DOTALL | (re.IGNORECASE if fold else 0)
    return re.fullmatch("".join(parts), text, flags) is not None


def matches(text: str, spec: dict[str, Any]) -> bool:
    checks = {
        "$eq": lambda a: text == a,
        "$ne": lambda a: text != a,
        "$gt": lambda a: text > a,
        "$gte": lambda a: text >= a,
        "$lt": lambda a: text < a,
        "$lte": lambda a: text <= a,
        "$in": lambda a: text in a,
        "$nin": lambda a: text not in a,
        "$like": lambda a: like(text, a, False),
        "$nlike": lambda a: not like(text, a, False),
        "$ilike": lambda a: like(text, a, True),
        "$nilike": lambda a: not like(text, a, True),
        "$contains": lambda a: a in text,
        "$ncontains": lambda a: a not in text,
        "$exists": lambda a: (text != "") == a,
        "$and": lambda a: all(matches(text, sub) for sub in a),
        "$or": lambda a: any(matches(text, sub) for sub in a),
    }
    return all(checks[op](arg) for op, arg in spec.items())


def filter_ok(spec: Any) -> bool:
    """Is this a FilterString (the reference's operators and argument types)?"""
    if not isinstance(spec, dict) or not spec:
        return False
    for op, arg in spec.items():
        if op in ("$and", "$or"):
            ok = isinstance(arg, list) and bool(arg) and all(filter_ok(sub) for sub in arg)
        elif op in ("$in", "$nin"):
            ok = isinstance(arg, list) and all(isinstance(v, str) for v in arg)
        elif op == "$exists":
            ok = isinstance(arg, bool)
        elif op in STRING_OPS:
            ok = isinstance(arg, str) and not (op.endswith("like") and (len(arg) - len(arg.rstrip("\\"))) % 2)
        else:
            ok = False
        if not ok:
            return False
    return True


def text(data: dict[str, Any], key: str) -> str:
    return json_value(data, GROUP_BY[key])


# -- strategies --------------------------------------------------------------------------------------

present = sorted({json_value({"r": v}, "$.r") for v in R_VALUES} | {json_value({"t": v}, "$.t") for v in T_VALUES})
values = (
    st.sampled_from(present)
    | st.sampled_from(["nope", "%", "_", "e%", "%u", "E%", "\\%", "e\\_u", "\\"])
    | st.text("eEuU%_\\'x yé.", max_size=4)
)
leaves = st.one_of(
    st.builds(lambda op, v: {op: v}, st.sampled_from(STRING_OPS), values),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["$in", "$nin"]), st.lists(values, max_size=3)),
    st.builds(lambda v: {"$exists": v}, st.booleans()),
)
filters = st.recursive(
    leaves,
    lambda inner: st.builds(
        lambda op, subs: {op: subs}, st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=1, max_size=3)
    ),
    max_leaves=4,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)
broken_filters = st.one_of(
    st.builds(lambda op, v: {op: v}, st.sampled_from(["$regex", "eq", "$EQ", "$not", ""]), values),
    st.builds(lambda op, v: {op: v}, st.sampled_from([*STRING_OPS, "$in", "$exists", "$and"]), json_values),
    st.sampled_from([{}, {"$and": []}, {"$or": [{}]}, {"$like": "eu\\"}, {"$ilike": "\\"}, {"$in": [1]}]),
    json_values,
)
any_filters = filters | filters | broken_filters
filter_maps = st.dictionaries(st.sampled_from(["r", "t", "r", "nope", "subject"]), any_filters, max_size=2)


@st.composite
def queries(draw: st.DrawFn) -> dict[str, Any]:
    query: dict[str, Any] = {"method": draw(st.sampled_from(["GET", "POST"]))}
    kind = draw(st.sampled_from(["advanced", "advanced", "legacy", "both", "none", "raw"]))
    if kind in ("advanced", "both"):
        query["advancedMeterGroupByFilters"] = draw(filter_maps)
    if kind in ("legacy", "both"):
        legacy = st.dictionaries(
            st.sampled_from(["r", "t", "nope"]), st.lists(values, min_size=1, max_size=3), max_size=2
        )
        query["filterGroupBy"] = draw(legacy)
    if kind == "raw":  # any JSON at all where the filter map goes
        query["advancedMeterGroupByFilters"] = draw(json_values)
    query["subject"] = draw(st.lists(st.sampled_from([*SUBJECTS, "nobody", "' OR 1=1 --"]), max_size=3, unique=True))
    query["filterCustomerId"] = draw(
        st.lists(st.sampled_from(["a.id", "a.key", "b.key", "unknown"]), max_size=2, unique=True)
    )
    query["groupBy"] = draw(
        st.lists(st.sampled_from(["r", "t", "subject", "customer_id", "nope"]), max_size=3, unique=True)
    )
    return query


# -- the model of a query ----------------------------------------------------------------------------


def refusal(query: dict[str, Any]) -> set[str]:
    """The fields that make the query a 400 (none for a good one)."""
    advanced = query.get("advancedMeterGroupByFilters")
    sent_as_json = query["method"] == "GET" and "advancedMeterGroupByFilters" in query  # "null" is no object
    if (advanced is not None or sent_as_json) and not isinstance(advanced, dict):
        return {"advancedMeterGroupByFilters"}
    advanced = advanced or {}
    if query["method"] == "POST" and any(not isinstance(spec, dict) for spec in advanced.values()):
        return {"advancedMeterGroupByFilters"}  # the body's type: a map of objects
    bad = set()
    legacy = query.get("filterGroupBy") or {}
    if (advanced and legacy) or any(k not in GROUP_BY or not filter_ok(spec) for k, spec in advanced.items()):
        bad.add("advancedMeterGroupByFilters")
    if any(key not in GROUP_BY for key in legacy):
        bad.add("filterGroupBy")
    if any(key not in (*GROUP_BY, "subject", "customer_id") for key in query["groupBy"]):
        bad.add("groupBy")
    if "customer_id" in query["groupBy"] and not query["filterCustomerId"]:
        bad.add("groupBy")
    return bad


def rows(world: World, query: dict[str, Any]) -> list[tuple[tuple[Any, ...], int]]:
    """The rows of a good query: (subject, customer id, group-by values) -> sum of v, in a stable order."""
    customer_of: dict[str, str] = {}
    for ref in query["filterCustomerId"]:
        customer_id, _, subjects = world.customers[ref[0]]
        customer_of |= {s: customer_id for s in subjects}
    by_subject = bool(query["subject"]) or "subject" in query["groupBy"]
    by_customer = bool(query["filterCustomerId"]) or "customer_id" in query["groupBy"]
    keys = sorted(k for k in query["groupBy"] if k in GROUP_BY)
    legacy = query.get("filterGroupBy") or {}
    specs = {**{k: {"$in": v} for k, v in legacy.items()}, **(query.get("advancedMeterGroupByFilters") or {})}
    sums: dict[tuple[Any, ...], int] = defaultdict(int)
    for subject, data, v in world.events:
        if query["subject"] and subject not in query["subject"]:
            continue
        if query["filterCustomerId"] and subject not in customer_of:
            continue
        if not all(matches(text(data, k), spec) for k, spec in specs.items()):
            continue
        group = (subject if by_subject else None, customer_of.get(subject) if by_customer else None)
        sums[group + tuple(text(data, k) for k in keys)] += v
    return sorted(sums.items(), key=repr)


def send(client: httpx.Client, world: World, query: dict[str, Any]) -> httpx.Response:
    url = f"/api/v1/meters/{world.slug}/query"
    customers = [
        world.customers[ref[0]][0 if ref.endswith("id") else 1] if ref != "unknown" else "unknown-" + world.slug
        for ref in query["filterCustomerId"]
    ]
    if query["method"] == "POST":
        body = {k: v for k, v in query.items() if k not in ("method", "filterCustomerId")}
        return client.post(url, json={**body, "filterCustomerId": customers})
    params: list[tuple[str, str]] = [("subject", s) for s in query["subject"]]
    params += [("filterCustomerId", c) for c in customers] + [("groupBy", g) for g in query["groupBy"]]
    params += [(f"filterGroupBy[{k}]", v) for k, vs in (query.get("filterGroupBy") or {}).items() for v in vs]
    if "advancedMeterGroupByFilters" in query:
        params.append(("advancedMeterGroupByFilters", json.dumps(query["advancedMeterGroupByFilters"])))
    return client.get(url, params=params)


@examples(120)
@given(query=queries())
def test_filters_select_exactly_or_are_refused(client: httpx.Client, world: World, query: dict[str, Any]) -> None:
    note(repr(query))
    response = send(client, world, query)
    never_5xx(response)
    bad = refusal(query)
    event("400" if bad else "404" if "unknown" in query["filterCustomerId"] else "200")
    if bad:
        refused_one_of(response, bad)
        return
    if "unknown" in query["filterCustomerId"]:
        assert_problem(response, 404, detail="customer not found: unknown-")
        return
    assert response.status_code == 200, response.text
    keys = sorted(k for k in query["groupBy"] if k in GROUP_BY)
    got: dict[tuple[Any, ...], float] = {}
    for row in response.json()["data"]:
        group = (row["subject"], row.get("customerId"), *(row["groupBy"][k] for k in keys))
        assert group not in got, group
        got[group] = row["value"]
    assert sorted(got.items(), key=repr) == [(group, float(v)) for group, v in rows(world, query)]


PATTERNS = ["eu", "EU", "e%", "E%", "%u", "_u", "e\\%u", "e\\_u", "a\\b", "a\\\\b", "%", "", "x'y", "é", "É%", "null"]


@pytest.mark.parametrize("op", [*STRING_OPS, "$in", "$nin", "$exists"])
def test_every_operator_on_every_value(client: httpx.Client, world: World, op: str) -> None:
    """Each operator with each of a fixed list of arguments (hypothesis samples these sparsely), grouped by r."""
    args: list[Any] = [[p] for p in PATTERNS] + [PATTERNS[:4], []] if op in ("$in", "$nin") else PATTERNS
    for arg in [True, False] if op == "$exists" else args:
        query = {"method": "POST", "advancedMeterGroupByFilters": {"r": {op: arg}}}
        query |= {"subject": [], "filterCustomerId": [], "groupBy": ["r"]}
        response = send(client, world, query)
        assert response.status_code == 200, (arg, response.text)
        got = {(None, None, row["groupBy"]["r"]): row["value"] for row in response.json()["data"]}
        assert got == {group: float(v) for group, v in rows(world, query)}, (op, arg)


# -- features ----------------------------------------------------------------------------------------

feature_filters = st.fixed_dictionaries(
    {},
    optional={
        "meterGroupByFilters": st.dictionaries(st.sampled_from(["r", "t", "nope"]), values, max_size=2),
        "advancedMeterGroupByFilters": filter_maps,
    },
)


@examples(25)
@given(body=feature_filters)
def test_feature_filters_narrow_entitlement_usage_exactly(
    client: httpx.Client, world: World, body: dict[str, Any]
) -> None:
    key = f"ff_{uuid.uuid4().hex[:12]}"
    note(repr(body))
    made = client.post("/api/v1/features", json={"key": key, "name": key, "meterSlug": world.slug, **body})
    never_5xx(made)
    simple, advanced = body.get("meterGroupByFilters") or {}, body.get("advancedMeterGroupByFilters") or {}
    bad = {f"meterGroupByFilters.{k}" for k in simple if k not in GROUP_BY}
    bad |= {"advancedMeterGroupByFilters" for k, spec in advanced.items() if k not in GROUP_BY or not filter_ok(spec)}
    if bad:
        refused_one_of(made, bad)
        return
    assert made.status_code == 201, made.text
    event("created")
    _, customer_key, subjects = world.customers["a"]
    path = f"/api/v2/customers/{quote(customer_key, safe='')}/entitlements"
    entitlement = {
        "type": "metered",
        "featureKey": key,
        "usagePeriod": {"interval": "DAY"},
        "measureUsageFrom": render(world.start, 0, 0),
        "issue": {"amount": 1_000_000},
    }
    created = client.post(path, json=entitlement)
    assert created.status_code == 201, created.text
    try:
        specs = {**{k: {"$eq": v} for k, v in simple.items()}, **advanced}
        want = sum(
            v
            for subject, data, v in world.events
            if subject in subjects and all(matches(text(data, k), spec) for k, spec in specs.items())
        )
        value = client.get(f"{path}/{key}/value")
        assert value.status_code == 200, value.text
        assert value.json()["usage"] == want
    finally:
        client.delete(f"{path}/{created.json()['id']}")
        client.delete(f"/api/v1/features/{key}")
