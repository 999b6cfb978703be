"""/api/v1/meters over real HTTP: CRUD and its validation (compat reference 2), query errors, CSV output."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from tests.api.helpers import PROBLEM, assert_problem, create_meter, ingest_ok, query_rows, total
from tests.conftest import Server, event, wait_for

Unique = Callable[[str], str]
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def sum_meter(slug: str, etype: str, **extra: Any) -> dict[str, Any]:
    return {"slug": slug, "eventType": etype, "aggregation": "SUM", "valueProperty": "$.tokens", **extra}


# -- create ----------------------------------------------------------------------------------------


def test_create_defaults_name_to_slug(api: httpx.Client, unique: Unique) -> None:
    slug, etype = unique("created"), unique("created_type")
    meter = create_meter(api, slug=slug, eventType=etype, aggregation="COUNT")
    assert ULID.match(meter["id"])
    assert STAMP.match(meter["createdAt"]) and meter["updatedAt"] == meter["createdAt"]
    assert {k: v for k, v in meter.items() if k not in ("id", "createdAt", "updatedAt")} == {
        "slug": slug,
        "name": slug,
        "aggregation": "COUNT",
        "eventType": etype,
        "groupBy": {},
        "metadata": {},
    }


def test_create_with_every_field(api: httpx.Client, unique: Unique) -> None:
    slug, etype = unique("full"), unique("full_type")
    body = sum_meter(
        slug,
        etype,
        name="Full meter",
        description="LLM tokens",
        groupBy={"model": "$.model", "region": "$.meta.region"},
        metadata={"team": "ai"},
        eventFrom="2025-01-01T00:00:00Z",
    )
    meter = create_meter(api, **body)
    for key, value in body.items():
        assert meter[key] == value, key
    got = api.get(f"/api/v1/meters/{slug}")
    assert got.status_code == 200 and got.json() == meter


@pytest.mark.parametrize("aggregation", ["SUM", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST"])
def test_create_each_value_aggregation(api: httpx.Client, unique: Unique, aggregation: str) -> None:
    meter = create_meter(api, **sum_meter(unique("agg"), unique("agg_type"), aggregation=aggregation))
    assert meter["aggregation"] == aggregation and meter["valueProperty"] == "$.tokens"


@pytest.mark.parametrize(
    ("override", "field", "detail"),
    [
        ({"slug": "Bad-Slug"}, "slug", "must be 1-64 characters"),
        ({"slug": "double__underscore"}, "slug", "must be 1-64 characters"),
        ({"slug": "_lead"}, "slug", "must be 1-64 characters"),
        ({"slug": "a" * 65}, "slug", "must be 1-64 characters"),
        ({"slug": ""}, "slug", "must be 1-64 characters"),
        ({"slug": 5}, "slug", "Expected `str`, got `int`"),
        ({"aggregation": "COUNT"}, "valueProperty", "not allowed when the aggregation is count"),
        ({"valueProperty": None}, "valueProperty", "required"),
        ({"valueProperty": ""}, "valueProperty", "required"),
        ({"valueProperty": "tokens"}, "valueProperty", "must start with $"),
        ({"valueProperty": "$..a"}, "valueProperty", "invalid JSONPath '$..a'"),
        ({"valueProperty": "$["}, "valueProperty", "invalid JSONPath '$['"),
        ({"groupBy": {"1model": "$.model"}}, "groupBy.1model", "must match ^[a-zA-Z_][0-9a-zA-Z_]*$"),
        ({"groupBy": {"model-name": "$.model"}}, "groupBy.model-name", "must match"),
        ({"groupBy": {"subject": "$.user"}}, "groupBy.subject", "group-by key 'subject' is reserved"),
        ({"groupBy": {"customer_id": "$.c"}}, "groupBy.customer_id", "group-by key 'customer_id' is reserved"),
        ({"groupBy": {"model": "model"}}, "groupBy.model", "must start with $"),
        ({"groupBy": {"model": "$["}}, "groupBy.model", "invalid JSONPath"),
        ({"groupBy": {"tokens": "$.tokens"}}, "groupBy.tokens", "must differ from the value property"),
        ({"aggregation": "SUMX"}, "aggregation", "must be one of SUM, COUNT, UNIQUE_COUNT, AVG, MIN, MAX, LATEST"),
        ({"aggregation": "sum"}, "aggregation", "must be one of"),
        ({"description": ""}, "description", "must be 1-1024 characters"),
        ({"description": "d" * 1025}, "description", "must be 1-1024 characters"),
        ({"name": ""}, "name", "must be 1-256 characters"),
        ({"eventType": ""}, "eventType", "must not be empty"),
        ({"eventFrom": "yesterday"}, "eventFrom", "invalid RFC 3339"),
        ({"metadata": {"a": 1}}, "metadata[...]", "Expected `str`, got `int`"),
    ],
)
def test_create_validation(
    api: httpx.Client, unique: Unique, override: dict[str, Any], field: str, detail: str
) -> None:
    body = {**sum_meter(unique("bad"), unique("bad_type")), **override}
    assert_problem(api.post("/api/v1/meters", json=body), 400, field=field, detail=detail)


@pytest.mark.parametrize("value", ["yesterday", "2025-01-01", "2025-01-01T00:00:00"])
def test_create_bad_event_from(api: httpx.Client, unique: Unique, value: str) -> None:
    body = {**sum_meter(unique("bad"), unique("bad_type")), "eventFrom": value}
    problem = assert_problem(api.post("/api/v1/meters", json=body), 400, field="eventFrom")
    (error,) = problem["extensions"]["validationErrors"]
    assert error["message"] == f"invalid RFC 3339 date-time {value!r} (expected e.g. 2026-01-31T12:00:00Z)"
    assert problem["detail"] == f"eventFrom: {error['message']}"


@pytest.mark.parametrize("missing", ["slug", "eventType", "aggregation"])
def test_create_missing_field(api: httpx.Client, unique: Unique, missing: str) -> None:
    body = sum_meter(unique("missing"), unique("missing_type"))
    del body[missing]
    body_json = assert_problem(api.post("/api/v1/meters", json=body), 400, field=missing, detail="is required")
    assert body_json["extensions"]["validationErrors"][0]["code"] == "required"


def test_create_reports_every_problem_at_once(api: httpx.Client) -> None:
    body = {
        "slug": "Not A Slug",
        "eventType": "",
        "aggregation": "SUM",
        "valueProperty": "$.v",
        "description": "",
        "groupBy": {"subject": "$.s", "v": "$.v", "ok": "nope"},
    }
    problem = assert_problem(api.post("/api/v1/meters", json=body), 400)
    fields = sorted(e["field"] for e in problem["extensions"]["validationErrors"])
    assert fields == ["description", "eventType", "groupBy.ok", "groupBy.subject", "groupBy.v", "slug"]
    for field in fields:
        assert field in problem["detail"]


def test_create_malformed_json(api: httpx.Client) -> None:
    response = api.post("/api/v1/meters", content=b"{", headers={"Content-Type": "application/json"})
    assert_problem(response, 400, field="body", detail="malformed JSON")
    response = api.post("/api/v1/meters", content=b"", headers={"Content-Type": "application/json"})
    assert_problem(response, 400, field="body", detail="a JSON body is required")
    assert_problem(api.post("/api/v1/meters", json=[]), 400, field="body", detail="Expected `object`, got `array`")


def test_duplicate_slug_conflicts(api: httpx.Client, unique: Unique) -> None:
    slug = unique("dup")
    create_meter(api, slug=slug, eventType=unique("dup_type"), aggregation="COUNT")
    response = api.post("/api/v1/meters", json={"slug": slug, "eventType": "other", "aggregation": "COUNT"})
    assert_problem(response, 409, detail=f"meter with the same slug already exists: {slug}")


# -- read ------------------------------------------------------------------------------------------


def test_get_by_id_and_slug(api: httpx.Client, unique: Unique) -> None:
    meter = create_meter(api, slug=unique("get"), eventType=unique("get_type"), aggregation="COUNT")
    for key in (meter["id"], meter["slug"]):
        response = api.get(f"/api/v1/meters/{key}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == meter
    assert_problem(api.get("/api/v1/meters/no_such_meter"), 404, detail="meter not found: no_such_meter")


def test_list_is_a_bare_array(api: httpx.Client, unique: Unique) -> None:
    one = create_meter(api, slug=unique("list_a"), eventType=unique("list_type"), aggregation="COUNT")
    two = create_meter(api, **sum_meter(unique("list_b"), unique("list_type")))
    response = api.get("/api/v1/meters")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    listed = response.json()
    assert isinstance(listed, list)
    by_id = {m["id"]: m for m in listed}
    assert by_id[one["id"]] == one and by_id[two["id"]] == two
    assert all("deletedAt" not in m for m in listed)
    assert_problem(api.get("/api/v1/meters", params={"includeDeleted": "maybe"}), 400, detail="includeDeleted")


# -- update ----------------------------------------------------------------------------------------


def test_put_replaces_mutable_fields(api: httpx.Client, unique: Unique) -> None:
    slug, etype = unique("put"), unique("put_type")
    meter = create_meter(
        api,
        **sum_meter(
            slug, etype, name="Before", description="old", metadata={"a": "1"}, groupBy={"m": "$.m", "r": "$.r"}
        ),
    )
    change = {"name": "After", "description": "new", "metadata": {"b": "2"}, "groupBy": {"m": "$.model"}}
    response = api.put(f"/api/v1/meters/{meter['id']}", json=change)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    updated = response.json()
    assert {k: updated[k] for k in change} == change
    for key in ("id", "slug", "aggregation", "eventType", "valueProperty", "createdAt"):
        assert updated[key] == meter[key]
    assert updated["updatedAt"] > meter["updatedAt"]
    assert api.get(f"/api/v1/meters/{slug}").json() == updated
    # a group-by the PUT dropped is no longer queryable
    assert_problem(api.get(f"/api/v1/meters/{slug}/query", params={"groupBy": "r"}), 400, detail="invalid group by: r")
    assert query_rows(api, slug, groupBy="m") == []


def test_put_omitting_fields_drops_them(api: httpx.Client, unique: Unique) -> None:
    slug = unique("put_empty")
    create_meter(
        api, **sum_meter(slug, unique("t"), name="Named", description="d", metadata={"a": "1"}, groupBy={"m": "$.m"})
    )
    response = api.put(f"/api/v1/meters/{slug}", json={})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == slug
    assert updated["groupBy"] == {} and updated["metadata"] == {}
    assert "description" not in updated


def test_put_validation_and_not_found(api: httpx.Client, unique: Unique) -> None:
    slug = unique("put_bad")
    create_meter(api, **sum_meter(slug, unique("t")))
    bad = {"description": "", "name": "", "groupBy": {"tokens": "$.tokens", "subject": "$.s"}}
    problem = assert_problem(api.put(f"/api/v1/meters/{slug}", json=bad), 400)
    fields = {e["field"] for e in problem["extensions"]["validationErrors"]}
    assert fields == {"description", "name", "groupBy.tokens", "groupBy.subject"}
    assert_problem(api.put(f"/api/v1/meters/{slug}", json={"groupBy": {"m": 1}}), 400, field="groupBy[...]")
    assert_problem(api.put("/api/v1/meters/no_such_meter", json={}), 404, detail="meter not found")
    assert api.get(f"/api/v1/meters/{slug}").json()["groupBy"] == {}


def test_put_keeps_group_bys_features_filter_on(api: httpx.Client, unique: Unique) -> None:
    """As OpenMeter does: 409 when a PUT drops a group-by an active feature filters on (its usage queries would
    name a column the meter no longer has); other group-bys may go, and archived features do not count."""
    slug, feature = unique("put_used"), unique("put_used_feature")
    group_by = {"model": "$.model", "region": "$.region", "tier": "$.tier"}
    create_meter(api, **sum_meter(slug, unique("t"), groupBy=group_by))
    filters = {"meterGroupByFilters": {"model": "gpt"}, "advancedMeterGroupByFilters": {"region": {"$eq": "eu"}}}
    body = {"key": feature, "name": feature, "meterSlug": slug, **filters}
    assert api.post("/api/v1/features", json=body).status_code == 201
    dropped = assert_problem(api.put(f"/api/v1/meters/{slug}", json={"groupBy": {}}), 409, detail=feature)
    assert "group-by model, region cannot be dropped" in dropped["detail"]
    assert_problem(api.put(f"/api/v1/meters/{slug}", json={"groupBy": {"model": "$.model"}}), 409, detail="region")
    kept = {"model": "$.m", "region": "$.r"}  # a new path for a kept key is allowed
    response = api.put(f"/api/v1/meters/{slug}", json={"groupBy": kept})
    assert response.status_code == 200, response.text
    assert response.json()["groupBy"] == kept
    assert api.delete(f"/api/v1/features/{feature}").status_code == 204
    assert api.put(f"/api/v1/meters/{slug}", json={}).status_code == 200


# -- delete ----------------------------------------------------------------------------------------


def test_delete_is_soft_and_frees_the_slug(api: httpx.Client, unique: Unique) -> None:
    slug, etype = unique("del"), unique("del_type")
    meter = create_meter(api, slug=slug, eventType=etype, aggregation="COUNT")
    response = api.delete(f"/api/v1/meters/{slug}")
    assert response.status_code == 204 and response.content == b""
    assert_problem(api.get(f"/api/v1/meters/{slug}"), 404, detail=f"meter not found: {slug}")
    assert_problem(api.get(f"/api/v1/meters/{meter['id']}"), 404)
    assert_problem(api.get(f"/api/v1/meters/{slug}/query"), 404)
    assert meter["id"] not in {m["id"] for m in api.get("/api/v1/meters").json()}
    everything = api.get("/api/v1/meters", params={"includeDeleted": "true"}).json()
    deleted = next(m for m in everything if m["id"] == meter["id"])
    assert STAMP.match(deleted["deletedAt"])
    again = create_meter(api, slug=slug, eventType=etype, aggregation="COUNT")
    assert again["id"] != meter["id"]
    assert api.get(f"/api/v1/meters/{slug}").json()["id"] == again["id"]
    assert api.delete(f"/api/v1/meters/{again['id']}").status_code == 204
    assert_problem(api.get(f"/api/v1/meters/{slug}"), 404)
    assert_problem(api.delete("/api/v1/meters/no_such_meter"), 404, detail="meter not found")


# -- query errors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qmeter(server: Server) -> Iterator[str]:
    slug = f"qerr_{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        create_meter(client, **sum_meter(slug, f"{slug}_type", groupBy={"model": "$.model"}))
    yield slug


T0, T1 = "2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z"
ADV = "advancedMeterGroupByFilters"


@pytest.mark.parametrize(
    ("params", "field", "detail"),
    [
        ({"from": T0, "to": T0}, "to", "from and to cannot be equal"),
        ({"from": T1, "to": T0}, "from", "from must be before to"),
        ({"windowSize": "WEEK"}, "windowSize", "must be one of MINUTE, HOUR, DAY, MONTH"),
        ({"windowSize": "hour"}, "windowSize", "must be one of"),
        ({"windowTimeZone": "Mars/Olympus_Mons"}, "windowTimeZone", "invalid time zone"),
        ({"groupBy": "nope"}, "groupBy", "invalid group by: nope"),
        ({"groupBy": "customer_id"}, "groupBy", "grouping by customer_id requires filterCustomerId"),
        ({"filterGroupBy[nope]": "x"}, "filterGroupBy.nope", "nope is not a group-by of the meter"),
        ({ADV: '{"model": {"$foo": "a"}}'}, f"{ADV}.model.$foo", "unknown filter operator"),
        ({ADV: '{"model": 5}'}, f"{ADV}.model", "must be a non-empty filter object"),
        ({ADV: '{"model": {}}'}, f"{ADV}.model", "must be a non-empty filter object"),
        ({ADV: '{"model": {"$in": "a"}}'}, f"{ADV}.model.$in", "must be a list of at most 1000 strings"),
        ({ADV: '{"nope": {"$eq": "a"}}'}, f"{ADV}.nope", "nope is not a group-by of the meter"),
        ({ADV: '{"model": {"$eq": "a"}}', "filterGroupBy[model]": "a"}, ADV, "cannot be combined with filterGroupBy"),
    ],
)
def test_query_validation(api: httpx.Client, qmeter: str, params: dict[str, str], field: str, detail: str) -> None:
    assert_problem(api.get(f"/api/v1/meters/{qmeter}/query", params=params), 400, field=field, detail=detail)


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({ADV: "{"}, "advancedMeterGroupByFilters: must be a JSON object"),
        ({ADV: "[]"}, "advancedMeterGroupByFilters: must be a JSON object"),
        ({"from": "garbage"}, "from: invalid RFC 3339 date-time"),
        ({"to": "2025-01-01T00:00:00"}, "to: invalid RFC 3339 date-time"),
    ],
)
def test_query_unparsable_params(api: httpx.Client, qmeter: str, params: dict[str, str], detail: str) -> None:
    assert_problem(
        api.get(f"/api/v1/meters/{qmeter}/query", params=params), 400, field=detail.split(":")[0], detail=detail
    )


def test_group_by_values_of_an_unknown_key(api: httpx.Client, qmeter: str) -> None:
    response = api.get(f"/api/v1/meters/{qmeter}/group-by/nope/values")
    assert_problem(response, 400, field="groupByKey", detail="nope is not a group-by of meter")


def test_query_too_many_subjects(api: httpx.Client, qmeter: str) -> None:
    params = {"subject": [f"s{i}" for i in range(101)]}
    assert_problem(api.get(f"/api/v1/meters/{qmeter}/query", params=params), 400, field="subject", detail="at most 100")


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"from": T0, "to": T0}, "to", "from and to cannot be equal"),
        ({"from": "garbage"}, "from", "invalid RFC 3339 date-time 'garbage'"),
        ({"windowSize": "WEEK"}, "windowSize", "must be one of"),
        ({"groupBy": ["nope"]}, "groupBy", "invalid group by: nope"),
        ({"groupBy": "model"}, "groupBy", "Expected `array`, got `str`"),
        ({"filterGroupBy": {"nope": ["a"]}}, "filterGroupBy.nope", "not a group-by of the meter"),
        ({ADV: {"model": {"$eq": "a"}}, "filterGroupBy": {"model": ["a"]}}, ADV, "cannot be combined"),
        ([], "body", "Expected `object`, got `array`"),
    ],
)
def test_post_query_validation(api: httpx.Client, qmeter: str, body: Any, field: str, detail: str) -> None:
    assert_problem(api.post(f"/api/v1/meters/{qmeter}/query", json=body), 400, field=field, detail=detail)


def test_post_query_naive_time(api: httpx.Client, qmeter: str) -> None:
    response = api.post(f"/api/v1/meters/{qmeter}/query", json={"from": "2025-01-01T00:00:00"})
    assert_problem(response, 400, field="from", detail="invalid RFC 3339 date-time '2025-01-01T00:00:00'")


def test_query_unknown_meter_or_customer(api: httpx.Client, qmeter: str) -> None:
    assert_problem(api.get("/api/v1/meters/no_such_meter/query"), 404, detail="meter not found: no_such_meter")
    assert_problem(api.post("/api/v1/meters/no_such_meter/query", json={}), 404, detail="meter not found")
    response = api.get(f"/api/v1/meters/{qmeter}/query", params={"filterCustomerId": "no_such_customer"})
    assert_problem(response, 404, detail="customer not found: no_such_customer")


def test_query_without_data_is_empty(api: httpx.Client, qmeter: str) -> None:
    response = api.get(f"/api/v1/meters/{qmeter}/query", params={"from": T0, "to": T1, "windowSize": "HOUR"})
    assert response.status_code == 200
    assert response.json() == {"from": T0, "to": T1, "windowSize": "HOUR", "data": []}


# -- query results and CSV -------------------------------------------------------------------------


def test_query_json_and_csv(api: httpx.Client, unique: Unique) -> None:
    slug, etype = unique("csv"), unique("csv_type")
    named, anonymous = unique("named"), unique("anon")
    create_meter(api, **sum_meter(slug, etype, groupBy={"model": "$.model"}))
    ingest_ok(
        api,
        [
            event(type_=etype, subject=named, time_="2025-03-01T10:05:00Z", data={"tokens": 1.5, "model": "a"}),
            event(type_=etype, subject=named, time_="2025-03-01T10:40:00Z", data={"tokens": 2, "model": "b"}),
            event(type_=etype, subject=anonymous, time_="2025-03-01T10:50:00.5Z", data={"tokens": "3", "model": "a"}),
            event(type_=etype, subject=named, time_="2025-03-01T11:10:00+01:00", data={"tokens": 0.25, "model": "a"}),
            event(type_=etype, subject=named, time_="2025-03-01T11:20:00Z", data={"tokens": 1000, "model": "a"}),
        ],
    )
    window = {"from": "2025-03-01T10:00:00Z", "to": "2025-03-01T11:00:00Z"}
    wait_for(lambda: total(api, slug, **window) == 6.75, timeout=10)

    params = {**window, "windowSize": "MINUTE", "groupBy": "model"}
    response = api.get(f"/api/v1/meters/{slug}/query", params=params)
    assert response.status_code == 200
    assert response.json() == {
        "from": window["from"],
        "to": window["to"],
        "windowSize": "MINUTE",
        "data": [
            {"value": 1.5, "windowStart": "2025-03-01T10:05:00Z", "windowEnd": "2025-03-01T10:06:00Z",
             "subject": None, "groupBy": {"model": "a"}},
            {"value": 0.25, "windowStart": "2025-03-01T10:10:00Z", "windowEnd": "2025-03-01T10:11:00Z",
             "subject": None, "groupBy": {"model": "a"}},
            {"value": 2.0, "windowStart": "2025-03-01T10:40:00Z", "windowEnd": "2025-03-01T10:41:00Z",
             "subject": None, "groupBy": {"model": "b"}},
            {"value": 3.0, "windowStart": "2025-03-01T10:50:00Z", "windowEnd": "2025-03-01T10:51:00Z",
             "subject": None, "groupBy": {"model": "a"}},
        ],
    }  # fmt: skip

    csv = api.get(
        f"/api/v1/meters/{slug}/query",
        params={"from": "2025-03-01T10:00:00Z", "to": "2025-03-01T12:00:00Z", "windowSize": "HOUR", "groupBy": "model"},
        headers={"Accept": "text/csv"},
    )
    assert csv.status_code == 200, csv.text
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"] == f"attachment; filename={slug}.csv"
    assert csv.text == (
        "window_start,window_end,model,value\n"
        "2025-03-01T10:00:00Z,2025-03-01T11:00:00Z,a,4.750000\n"
        "2025-03-01T10:00:00Z,2025-03-01T11:00:00Z,b,2.000000\n"
        "2025-03-01T11:00:00Z,2025-03-01T12:00:00Z,a,1000.000000\n"
    )

    # grouped by subject, with a subject entity known for one of them: the display name column appears
    upsert = api.post("/api/v1/subjects", json=[{"key": named, "displayName": "Named, Inc."}])
    assert upsert.status_code == 200, upsert.text
    csv = api.get(
        f"/api/v1/meters/{slug}/query", params={**window, "groupBy": "subject"}, headers={"Accept": "text/csv"}
    )
    assert csv.status_code == 200, csv.text
    assert csv.text == (
        "window_start,window_end,subject,subject_display_name,value\n"
        f"2025-03-01T10:00:00Z,2025-03-01T11:00:00Z,{anonymous},,3.000000\n"
        f'2025-03-01T10:00:00Z,2025-03-01T11:00:00Z,{named},"Named, Inc.",3.750000\n'
    )  # rows ordered by subject

    # the POST form answers the same, and a CSV error is still problem+json
    posted = api.post(
        f"/api/v1/meters/{slug}/query", json={**window, "groupBy": ["subject"]}, headers={"Accept": "text/csv"}
    )
    assert posted.status_code == 200 and posted.text == csv.text
    bad = api.get(f"/api/v1/meters/{slug}/query", params={"windowSize": "WEEK"}, headers={"Accept": "text/csv"})
    assert bad.headers["content-type"] == PROBLEM and bad.status_code == 400
    assert msgspec.json.decode(bad.content)["status"] == 400
