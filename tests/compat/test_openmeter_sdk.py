"""The official OpenMeter Python SDK (openmeter==1.0.0b236) against a running meterd.

The SDK raises on any status other than the exact one it expects, and deserializes responses into its models, so
every call here checks both the status contract and the wire shape; the assertions check the values."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Server, wait_for

openmeter = pytest.importorskip("openmeter")

from corehttp.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError  # noqa: E402
from openmeter import Client  # noqa: E402
from openmeter.models import (  # noqa: E402
    CustomerCreate,
    CustomerReplaceUpdate,
    CustomerUsageAttribution,
    Event,
    MeterCreate,
    MeterQueryRequest,
    MeterUpdate,
    SubjectUpsert,
)

pytestmark = pytest.mark.compat


@dataclass
class Dataset:
    """A meter and the events ingested for it through the SDK's three ingest methods."""

    slug: str
    event_type: str
    base: datetime
    subjects: tuple[str, str, str]
    ids: dict[str, str]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    with Client(endpoint=server.url) as sdk:
        yield sdk


def _rows(result: Any) -> list[tuple[str | None, dict[str, str], float]]:
    return sorted(((r.subject, dict(r.group_by or {}), r.value) for r in result.data), key=repr)


def _event(event_id: str, etype: str, subject: str, at: datetime, model: str, tokens: int) -> Event:
    return Event(
        id=event_id,
        source="sdk-compat",
        specversion="1.0",
        type=etype,
        subject=subject,
        time=at,
        data={"model": model, "tokens": tokens},
    )


@pytest.fixture(scope="module")
def dataset(client: Client) -> Dataset:
    """Six events over three UTC hours, three subjects, two models:

    | offset   | subject | model | tokens | sent with                         |
    | 0m30s    | s1      | m1    | 10     | ingest_event                      |
    | 1m10s    | s1      | m2    | 20     | ingest_events (batch)             |
    | 45m      | s2      | m1    | 5      | ingest_events (batch)             |
    | 61m      | s2      | m2    | 7      | ingest_events_json(Event)         |
    | 62m      | s1      | m1    | 3      | ingest_events_json([Event, dict]) |
    | 125m     | s3      | m1    | 100    | ingest_events_json([Event, dict]) |
    """
    suffix = uuid.uuid4().hex[:8]
    slug, etype = f"sdk_tokens_{suffix}", f"sdk_llm_{suffix}"
    subjects = (f"sdk-s1-{suffix}", f"sdk-s2-{suffix}", f"sdk-s3-{suffix}")
    s1, s2, s3 = subjects
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    ids = {name: f"{name}-{suffix}" for name in ("e1", "e2", "e3", "e4", "e5", "e6")}

    client.meters.create(
        MeterCreate(
            slug=slug,
            name="SDK tokens",
            aggregation="SUM",
            event_type=etype,
            value_property="$.tokens",
            group_by={"model": "$.model"},
        )
    )
    client.events.ingest_event(_event(ids["e1"], etype, s1, base + timedelta(seconds=30), "m1", 10))
    client.events.ingest_events(
        [
            _event(ids["e2"], etype, s1, base + timedelta(minutes=1, seconds=10), "m2", 20),
            _event(ids["e3"], etype, s2, base + timedelta(minutes=45), "m1", 5),
        ]
    )
    # S4: a plain dict on its own would be sent as an empty body; an Event model or a list is serialized.
    client.events.ingest_events_json(_event(ids["e4"], etype, s2, base + timedelta(minutes=61), "m2", 7))
    as_dict = {
        "id": ids["e6"],
        "source": "sdk-compat",
        "specversion": "1.0",
        "type": etype,
        "subject": s3,
        "time": (base + timedelta(minutes=125)).isoformat(),
        "data": {"model": "m1", "tokens": 100},
    }
    client.events.ingest_events_json([_event(ids["e5"], etype, s1, base + timedelta(minutes=62), "m1", 3), as_dict])

    wait_for(lambda: client.meters.query_json(slug).data[:1] and client.meters.query_json(slug).data[0].value == 145)
    return Dataset(slug=slug, event_type=etype, base=base, subjects=subjects, ids=ids)


def test_meter_crud(client: Client) -> None:
    suffix = uuid.uuid4().hex[:8]
    slug = f"sdk_crud_{suffix}"
    created = client.meters.create(
        MeterCreate(
            slug=slug,
            name="Requests",
            description="calls",
            aggregation="COUNT",
            event_type=f"sdk_crud_{suffix}",
            group_by={"route": "$.route"},
            metadata={"team": "billing"},
        )
    )
    assert created.slug == slug and created.aggregation == "COUNT" and created.event_type == f"sdk_crud_{suffix}"
    assert created.group_by == {"route": "$.route"} and created.metadata == {"team": "billing"}
    assert created.id and created.created_at is not None and created.deleted_at is None

    assert client.meters.get(slug).id == created.id
    assert client.meters.get(created.id).slug == slug
    assert slug in {m.slug for m in client.meters.list()}

    updated = client.meters.update(
        slug, MeterUpdate(name="Requests v2", group_by={"route": "$.route", "method": "$.method"})
    )
    assert updated.name == "Requests v2" and updated.group_by == {"route": "$.route", "method": "$.method"}
    assert updated.aggregation == "COUNT" and updated.id == created.id
    assert client.meters.get(slug).group_by == {"route": "$.route", "method": "$.method"}

    with pytest.raises((ResourceExistsError, HttpResponseError)) as conflict:
        client.meters.create(MeterCreate(slug=slug, aggregation="COUNT", event_type="other"))
    assert conflict.value.status_code == 409

    assert client.meters.delete(slug) is None
    with pytest.raises(ResourceNotFoundError) as missing:
        client.meters.get(slug)
    assert missing.value.status_code == 404
    assert slug not in {m.slug for m in client.meters.list()}
    deleted = [m for m in client.meters.list(include_deleted=True) if m.slug == slug]
    assert len(deleted) == 1 and deleted[0].deleted_at is not None


def test_not_found_raises(client: Client) -> None:
    missing = f"sdk_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ResourceNotFoundError):
        client.meters.get(missing)
    with pytest.raises(ResourceNotFoundError):
        client.meters.query_json(missing)
    with pytest.raises(ResourceNotFoundError):
        client.customers.get(missing)
    with pytest.raises(ResourceNotFoundError):
        client.subjects.get(missing)


def test_query_totals_and_groups(client: Client, dataset: Dataset) -> None:
    s1, s2, s3 = dataset.subjects
    total = client.meters.query_json(dataset.slug)
    assert [(r.value, r.subject, dict(r.group_by or {})) for r in total.data] == [(145, None, {})]

    by_model = client.meters.query_json(dataset.slug, group_by=["model"])
    assert _rows(by_model) == sorted([(None, {"model": "m1"}, 118), (None, {"model": "m2"}, 27)], key=repr)

    by_subject = client.meters.query_json(dataset.slug, group_by=["subject"])
    assert {r.subject: r.value for r in by_subject.data} == {s1: 33, s2: 12, s3: 100}

    filtered = client.meters.query_json(dataset.slug, subject=[s1, s2], group_by=["model"])
    assert _rows(filtered) == sorted(
        [(s1, {"model": "m1"}, 13), (s1, {"model": "m2"}, 20), (s2, {"model": "m1"}, 5), (s2, {"model": "m2"}, 7)],
        key=repr,
    )


def test_query_windows_and_range(client: Client, dataset: Dataset) -> None:
    base = dataset.base
    hourly = client.meters.query_json(dataset.slug, window_size="HOUR", from_parameter=base)
    assert hourly.window_size == "HOUR"
    assert [(r.window_start, r.window_end, r.value) for r in hourly.data] == [
        (base, base + timedelta(hours=1), 35),
        (base + timedelta(hours=1), base + timedelta(hours=2), 10),
        (base + timedelta(hours=2), base + timedelta(hours=3), 100),
    ]

    # Asia/Kolkata is UTC+05:30: its hours start half-way through UTC hours. Edges come back in UTC.
    kolkata = client.meters.query_json(
        dataset.slug, window_size="HOUR", window_time_zone="Asia/Kolkata", from_parameter=base - timedelta(minutes=30)
    )
    half = timedelta(minutes=30)
    assert [(r.window_start, r.value) for r in kolkata.data] == [
        (base - half, 30),
        (base + half, 15),
        (base + 3 * half, 100),
    ]
    assert all(r.window_start.utcoffset() == timedelta(0) for r in kolkata.data)

    ranged = client.meters.query_json(
        dataset.slug, from_parameter=base + timedelta(minutes=1), to=base + timedelta(hours=2)
    )
    assert [r.value for r in ranged.data] == [35]
    assert ranged.from_property == base + timedelta(minutes=1) and ranged.to == base + timedelta(hours=2)

    minutes = client.meters.query_json(
        dataset.slug, window_size="MINUTE", from_parameter=base, to=base + timedelta(minutes=2), group_by=["model"]
    )
    assert sorted((r.window_start - base, r.group_by["model"], r.value) for r in minutes.data) == [
        (timedelta(0), "m1", 10),
        (timedelta(minutes=1), "m2", 20),
    ]


def test_query_advanced_filter_get(client: Client, dataset: Dataset) -> None:
    s1, s2, _ = dataset.subjects
    # S3: FilterString models make the SDK raise TypeError client-side; a plain dict is sent as a JSON string.
    result = client.meters.query_json(
        dataset.slug, advanced_meter_group_by_filters={"model": {"$eq": "m2"}}, group_by=["subject"]
    )
    assert {r.subject: r.value for r in result.data} == {s1: 20, s2: 7}
    result = client.meters.query_json(dataset.slug, advanced_meter_group_by_filters={"model": {"$ne": "m2"}})
    assert [r.value for r in result.data] == [118]


def test_query_post(client: Client, dataset: Dataset) -> None:
    s1, _, _ = dataset.subjects
    result = client.meters.query(
        dataset.slug,
        MeterQueryRequest(subject=[s1], group_by=["model"], filter_group_by={"model": ["m1"]}),
    )
    assert _rows(result) == [(s1, {"model": "m1"}, 13)]

    windowed = client.meters.query(
        dataset.slug,
        MeterQueryRequest(
            from_property=dataset.base,
            to=dataset.base + timedelta(hours=3),
            window_size="HOUR",
            advanced_meter_group_by_filters={"model": {"$in": ["m1"]}},
        ),
    )
    assert [(r.window_start - dataset.base, r.value) for r in windowed.data] == [
        (timedelta(0), 15),
        (timedelta(hours=1), 3),
        (timedelta(hours=2), 100),
    ]


def test_query_csv(client: Client, dataset: Dataset) -> None:
    text = client.meters.query_csv(dataset.slug, group_by=["model"], from_parameter=dataset.base)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["window_start", "window_end", "model", "value"]
    assert sorted((row[2], float(row[3])) for row in rows[1:]) == [("m1", 118.0), ("m2", 27.0)]

    s1, _, _ = dataset.subjects
    text = client.meters.query_csv(dataset.slug, subject=[s1], window_size="HOUR", from_parameter=dataset.base)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["window_start", "window_end", "subject"] and rows[0][-1] == "value"
    assert [(row[2], float(row[-1])) for row in rows[1:]] == [(s1, 30.0), (s1, 3.0)]


def test_meter_subjects_and_group_by_values(client: Client, dataset: Dataset) -> None:
    assert sorted(client.meters.list_subjects(dataset.slug)) == sorted(dataset.subjects)
    assert sorted(client.meters.list_group_by_values(dataset.slug, "model")) == ["m1", "m2"]


def test_events_list(client: Client, dataset: Dataset) -> None:
    s1, _, _ = dataset.subjects
    events = client.events.list(subject=s1, from_parameter=dataset.base, limit=100)
    assert sorted(e.event.id for e in events) == sorted([dataset.ids["e1"], dataset.ids["e2"], dataset.ids["e5"]])
    by_id = {e.event.id: e for e in events}
    first = by_id[dataset.ids["e1"]]
    assert first.event.type == dataset.event_type and first.event.source == "sdk-compat"
    assert first.event.subject == s1 and first.event.data == {"model": "m1", "tokens": 10}
    assert first.event.time == dataset.base + timedelta(seconds=30)
    assert first.ingested_at is not None and first.stored_at is not None

    one = client.events.list(id=dataset.ids["e4"], from_parameter=dataset.base)
    assert [e.event.id for e in one] == [dataset.ids["e4"]]


def test_events_v2_cursor_paging(client: Client, dataset: Dataset) -> None:
    s1, _, _ = dataset.subjects
    # The SDK json.dumps the filter itself, so (as with S3) it must be a plain dict, not a ListRequestFilter model.
    paged = client.events_v2.list(limit=2, filter={"subject": {"$eq": s1}, "type": {"$eq": dataset.event_type}})
    pages = [[e.event.id for e in page] for page in paged.by_page()]
    assert [len(page) for page in pages] in ([2, 1], [2, 1, 0])
    assert sorted(i for page in pages for i in page) == sorted(
        [dataset.ids["e1"], dataset.ids["e2"], dataset.ids["e5"]]
    )


def test_subjects_crud(client: Client) -> None:
    key = f"sdk-subject-{uuid.uuid4().hex[:8]}"
    out = client.subjects.upsert([SubjectUpsert(key=key, display_name="Subject One", metadata={"tier": "gold"})])
    assert len(out) == 1 and out[0].key == key and out[0].display_name == "Subject One"
    assert out[0].metadata == {"tier": "gold"} and out[0].id

    again = client.subjects.upsert([SubjectUpsert(key=key, display_name="Renamed")])
    assert again[0].display_name == "Renamed" and again[0].id == out[0].id

    got = client.subjects.get(key)
    assert got.key == key and got.display_name == "Renamed" and got.metadata == {"tier": "gold"}
    assert key in {s.key for s in client.subjects.list()}

    assert client.subjects.delete(key) is None
    with pytest.raises(ResourceNotFoundError):
        client.subjects.get(key)
    assert key not in {s.key for s in client.subjects.list()}


def test_customers_crud_and_usage(client: Client, dataset: Dataset) -> None:
    s1, s2, _ = dataset.subjects
    key = f"sdk-customer-{uuid.uuid4().hex[:8]}"
    created = client.customers.create(
        CustomerCreate(
            name="Acme",
            key=key,
            usage_attribution=CustomerUsageAttribution(subject_keys=[s1]),
            primary_email="billing@acme.test",
            metadata={"plan": "pro"},
        )
    )
    assert created.id and created.key == key and created.name == "Acme"
    assert created.usage_attribution.subject_keys == [s1] and created.primary_email == "billing@acme.test"

    assert client.customers.get(key).id == created.id
    assert client.customers.get(created.id).key == key
    page = client.customers.list(key=key)
    assert page.total_count == 1 and [c.id for c in page.items_property] == [created.id]
    assert page.page == 1 and page.page_size >= 1

    usage = client.meters.query_json(dataset.slug, filter_customer_id=[created.id])
    assert [(r.customer_id, r.value) for r in usage.data] == [(created.id, 33)]

    updated = client.customers.update(
        created.id,
        CustomerReplaceUpdate(
            name="Acme Inc", key=key, usage_attribution=CustomerUsageAttribution(subject_keys=[s1, s2])
        ),
    )
    assert updated.name == "Acme Inc" and sorted(updated.usage_attribution.subject_keys) == sorted([s1, s2])
    usage = client.meters.query(dataset.slug, MeterQueryRequest(filter_customer_id=[key], group_by=["model"]))
    assert sorted((r.customer_id, r.group_by["model"], r.value) for r in usage.data) == [
        (created.id, "m1", 18),
        (created.id, "m2", 27),
    ]
    attributed = client.events.list(customer_id=[created.id], from_parameter=dataset.base)
    assert len(attributed) == 5 and {e.customer_id for e in attributed} == {created.id}

    assert client.customers.delete(created.id) is None
    assert client.customers.list(key=key).total_count == 0
    assert client.customers.list(key=key, include_deleted=True).items_property[0].deleted_at is not None
