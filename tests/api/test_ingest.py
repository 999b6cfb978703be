"""POST /api/v1/events over real HTTP: content types, gzip, validation (all-or-nothing), limits, dedup."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import msgspec
import pytest

from tests.api.helpers import (
    CE_BATCH,
    CE_SINGLE,
    assert_problem,
    barrier,
    create_meter,
    ingest_ok,
    list_events,
    post_events,
    total,
)
from tests.conftest import Server, event, wait_for

Unique = Callable[[str], str]


def ids_of(api: httpx.Client, subject: str) -> list[str]:
    return sorted(item["event"]["id"] for item in list_events(api, subject=subject))


# -- content types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "batch"),
    [
        (CE_SINGLE, False),
        (f"{CE_SINGLE}; charset=utf-8", False),
        (CE_BATCH, True),
        (f"{CE_BATCH}; charset=utf-8", True),
        ("application/json", False),
        ("application/json", True),
        ("application/json; charset=utf-8", False),
        ("Application/JSON; charset=UTF-8", True),
    ],
)
def test_content_types_accepted(api: httpx.Client, unique: Unique, content_type: str, batch: bool) -> None:
    subject = unique("ct")
    events = [event(type_="ct_test", subject=subject, data={"n": i}) for i in range(2 if batch else 1)]
    response = post_events(api, events if batch else events[0], content_type)
    assert response.status_code == 204, response.text
    assert response.content == b""
    expected = sorted(e["id"] for e in events)
    assert wait_for(lambda: ids_of(api, subject) == expected or None, timeout=10)
    stored = {item["event"]["id"]: item["event"] for item in list_events(api, subject=subject)}
    for sent in events:
        assert stored[sent["id"]]["data"] == sent["data"]
        assert stored[sent["id"]]["source"] == "tests"


def test_gzip_body(api: httpx.Client, unique: Unique) -> None:
    subject = unique("gz")
    events = [event(type_="gz_test", subject=subject, data={"i": i}) for i in range(3)]
    body = gzip.compress(msgspec.json.encode(events))
    response = post_events(api, body, CE_BATCH, {"Content-Encoding": "gzip"})
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert wait_for(lambda: ids_of(api, subject) == sorted(e["id"] for e in events) or None)


def test_gzip_single_event_as_json(api: httpx.Client, unique: Unique) -> None:
    subject = unique("gz1")
    sent = event(type_="gz_test", subject=subject)
    response = post_events(
        api, gzip.compress(msgspec.json.encode(sent)), "application/json", {"Content-Encoding": "gzip"}
    )
    assert response.status_code == 204 and response.content == b""
    assert wait_for(lambda: ids_of(api, subject) == [sent["id"]] or None)


def test_malformed_gzip_is_400(api: httpx.Client) -> None:
    body = msgspec.json.encode([event(type_="gz_test")])
    response = post_events(api, body, CE_BATCH, {"Content-Encoding": "gzip"})
    assert_problem(response, 400, detail="malformed gzip data")


def test_unsupported_content_encoding_is_400(api: httpx.Client) -> None:
    response = post_events(api, [event(type_="x")], CE_BATCH, {"Content-Encoding": "br"})
    assert_problem(response, 400, field="Content-Encoding", detail="unsupported content encoding 'br'")


# -- event defaults --------------------------------------------------------------------------------


def test_missing_time_defaults_to_now(api: httpx.Client, unique: Unique) -> None:
    subject = unique("notime")
    before = datetime.now(UTC)
    ingest_ok(api, event(type_="notime", subject=subject), CE_SINGLE)
    after = datetime.now(UTC)
    items = wait_for(lambda: list_events(api, subject=subject))
    stamped = datetime.fromisoformat(items[0]["event"]["time"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= stamped <= after + timedelta(seconds=1)


def test_explicit_time_is_kept_in_utc_with_microseconds(api: httpx.Client, unique: Unique) -> None:
    subject = unique("tz")
    moment = datetime.now(UTC).replace(microsecond=123456) - timedelta(hours=1)
    zoned = moment.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert zoned.endswith("+02:00")
    ingest_ok(api, [event(type_="tz", subject=subject, time_=zoned)])
    items = wait_for(lambda: list_events(api, subject=subject))
    assert items[0]["event"]["time"] == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_event_matching_no_meter_is_accepted(api: httpx.Client, unique: Unique) -> None:
    subject, etype = unique("nometer"), unique("nometer_type")
    ingest_ok(api, event(type_=etype, subject=subject, data={"x": "not a number"}), CE_SINGLE)
    items = wait_for(lambda: list_events(api, subject=subject))
    assert items[0]["event"]["type"] == etype
    assert f"no meter found for event type: {etype}" in items[0]["validationError"].splitlines()


def test_extension_attributes_are_accepted_and_dropped(api: httpx.Client, unique: Unique) -> None:
    subject = unique("ext")
    body = {**event(type_="ext", subject=subject), "myextension": "abc", "datacontenttype": "application/json"}
    ingest_ok(api, body, CE_SINGLE)
    items = wait_for(lambda: list_events(api, subject=subject))
    assert "myextension" not in items[0]["event"]


# -- validation: every bad input is a 400 problem, and nothing of the request is kept --------------


def test_batch_with_one_bad_event_is_rejected_whole(api: httpx.Client, unique: Unique) -> None:
    subject = unique("atomic")
    good = [event(type_="atomic", subject=subject) for _ in range(3)]
    bad = event(type_="atomic", subject=subject)
    del bad["subject"]
    response = post_events(api, [good[0], good[1], bad, good[2]])
    body = assert_problem(response, 400, field="$[2].subject", detail="missing required field `subject`")
    assert body["extensions"]["validationErrors"][0]["code"] == "required"
    bad_type = {**event(type_="atomic", subject=subject), "data": [1, 2]}
    response = post_events(api, [*good, bad_type], "application/json")
    assert_problem(response, 400, field="$[3].data", detail="data must be a JSON object or null")
    barrier(api)
    assert list_events(api, subject=subject) == []


def _without(field: str) -> dict[str, Any]:
    body = event(type_="invalid")
    del body[field]
    return body


@pytest.mark.parametrize("field", ["id", "source", "specversion", "type", "subject"])
def test_missing_required_field(api: httpx.Client, field: str) -> None:
    response = post_events(api, _without(field), CE_SINGLE)
    assert_problem(response, 400, field=f"$.{field}", detail=f"missing required field `{field}`")
    response = post_events(api, [event(type_="invalid"), _without(field)], CE_BATCH)
    assert_problem(response, 400, field=f"$[1].{field}")


@pytest.mark.parametrize("field", ["id", "source", "type", "subject"])
def test_empty_required_field(api: httpx.Client, field: str) -> None:
    response = post_events(api, {**event(type_="invalid"), field: ""}, CE_SINGLE)
    assert_problem(response, 400, field=f"$.{field}", detail="length >= 1")


@pytest.mark.parametrize(
    ("override", "field", "detail"),
    [
        ({"id": 5}, "$.id", "Expected `str`, got `int`"),
        ({"subject": None}, "$.subject", "Expected `str`, got `null`"),
        ({"source": ["a"]}, "$.source", "Expected `str`, got `array`"),
        ({"type": {"a": 1}}, "$.type", "Expected `str`, got `object`"),
        ({"specversion": "0.3"}, "$.specversion", "unsupported specversion '0.3'"),
        ({"specversion": 1.0}, "$.specversion", "Expected `str`, got `float`"),
        ({"data": [1]}, "$.data", "data must be a JSON object or null"),
        ({"data": "text"}, "$.data", "data must be a JSON object or null"),
        ({"data": 42}, "$.data", "data must be a JSON object or null"),
        ({"time": "2024-01-01T00:00:00"}, "$.time", "time must be RFC 3339 with a UTC offset or Z"),
        ({"time": "yesterday"}, "$.time", "time must be RFC 3339 with a UTC offset or Z, not 'yesterday'"),
        ({"time": 1700000000}, "$.time", "Expected `str | null`, got `int`"),
        ({"datacontenttype": "text/plain"}, "$.datacontenttype", "only application/json"),
    ],
)
def test_invalid_event_fields(api: httpx.Client, override: dict[str, Any], field: str, detail: str) -> None:
    response = post_events(api, {**event(type_="invalid"), **override}, CE_SINGLE)
    assert_problem(response, 400, field=field, detail=detail)


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        (CE_SINGLE, b"{", "malformed JSON"),
        (CE_BATCH, b'[{"id": "a",]', "malformed JSON"),
        ("application/json", b"not json", "malformed JSON"),
        (CE_SINGLE, b"42", "Expected `object`, got `int`"),
        ("application/json", b"null", "Expected `object`, got `null`"),
        (CE_SINGLE, b"[]", "Expected `object`, got `array`"),
        (CE_BATCH, b"{}", "Expected `array`, got `object`"),
        (CE_BATCH, b"[1]", "Expected `object`, got `int`"),
        (CE_SINGLE, b"", "invalid event: no events found"),
        (CE_SINGLE, b"  \n ", "invalid event: no events found"),
        (CE_BATCH, b"[]", "invalid event: no events found"),
        ("application/json", b"[]", "invalid event: no events found"),
        ("application/json", b"", "invalid event: no events found"),
    ],
)
def test_malformed_bodies(api: httpx.Client, content_type: str, body: bytes, detail: str) -> None:
    assert_problem(post_events(api, body, content_type), 400, detail=detail)


@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        ("text/plain", "invalid content type: text/plain"),
        ("application/xml", "invalid content type: application/xml"),
        ("application/cloudevents", "invalid content type: application/cloudevents"),
        ("application/json; charset=latin-1", "unsupported charset: latin-1"),
    ],
)
def test_unknown_content_type(api: httpx.Client, content_type: str, detail: str) -> None:
    body = assert_problem(post_events(api, event(type_="ct"), content_type), 400, detail=detail)
    assert body["extensions"]["contentType"] == content_type


def test_missing_content_type(api: httpx.Client) -> None:
    response = api.post("/api/v1/events", content=msgspec.json.encode(event(type_="ct")))
    body = assert_problem(response, 400, detail="missing content type")
    assert body["extensions"]["contentType"] == ""


# -- limits (a second server with small limits) ----------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    srv = Server(
        tmp_path_factory.mktemp("small") / "data",
        env={"METERD_SERVER__MAX_BODY_BYTES": "2048", "METERD_INGEST__MAX_BATCH_EVENTS": "10"},
    ).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            yield client
    finally:
        srv.stop()


def test_body_over_limit_is_413(small: httpx.Client) -> None:
    big = event(type_="big", data={"pad": "x" * 3000})
    body = assert_problem(post_events(small, big, CE_SINGLE), 413, detail="request body larger than 2048 bytes")
    assert body["extensions"]["limit"] == 2048


def test_chunked_body_over_limit_is_413(small: httpx.Client) -> None:
    payload = msgspec.json.encode(event(type_="big", data={"pad": "x" * 3000}))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 500):
            yield payload[start : start + 500]

    response = small.post("/api/v1/events", content=chunks(), headers={"Content-Type": CE_SINGLE})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, detail="request body larger than 2048 bytes")


def test_gzip_body_over_limit_once_decompressed_is_413(small: httpx.Client) -> None:
    payload = gzip.compress(msgspec.json.encode(event(type_="big", data={"pad": "x" * 50_000})))
    assert len(payload) < 2048
    response = post_events(small, payload, CE_SINGLE, {"Content-Encoding": "gzip"})
    assert_problem(response, 413, detail="once decompressed")


def test_batch_over_event_limit_is_413(small: httpx.Client) -> None:
    response = post_events(small, [event(type_="n", id_=str(i)) for i in range(11)])
    assert_problem(response, 413, detail="batch of 11 events exceeds the limit of 10")


def test_batch_at_limits_is_accepted(small: httpx.Client) -> None:
    response = post_events(small, [event(type_="n") for _ in range(10)])
    assert response.status_code == 204, response.text
    near = event(type_="big", data={"pad": "x" * 1800})
    assert len(msgspec.json.encode(near)) <= 2048
    response = post_events(small, near, CE_SINGLE)
    assert response.status_code == 204, response.text


def test_other_json_bodies_are_limited_too(small: httpx.Client) -> None:
    body = {"slug": "big", "eventType": "big", "aggregation": "COUNT", "description": "d" * 3000}
    assert_problem(small.post("/api/v1/meters", json=body), 413, detail="request body larger than 2048 bytes")


# -- dedup by (source, id) -------------------------------------------------------------------------


def test_dedup_by_source_and_id(api: httpx.Client, unique: Unique) -> None:
    slug, etype, subject = unique("dedup"), unique("dedup_type"), unique("dedup_subject")
    create_meter(api, slug=slug, eventType=etype, aggregation="COUNT")
    first = event("evt-1", type_=etype, subject=subject, source="src-a")
    second = event("evt-2", type_=etype, subject=subject, source="src-a")
    ingest_ok(api, [first, first, second])  # the same (source, id) twice in one batch
    ingest_ok(api, [second, first])  # and again in a later batch
    ingest_ok(api, first, CE_SINGLE)  # and through another content type
    ingest_ok(api, {**first, "data": {"changed": True}}, "application/json")  # a changed body is still a duplicate
    ingest_ok(api, [{**first, "source": "src-b"}])  # the same id from another source is another event
    barrier(api)
    assert total(api, slug, subject=subject) == 3
    listed = list_events(api, subject=subject)
    assert sorted((item["event"]["source"], item["event"]["id"]) for item in listed) == [
        ("src-a", "evt-1"),
        ("src-a", "evt-2"),
        ("src-b", "evt-1"),
    ]
    assert (
        next(i for i in listed if i["event"]["id"] == "evt-1" and i["event"]["source"] == "src-a")["event"]["data"]
        is None
    )
