"""CloudEvent decoding and validation, without a server."""

from __future__ import annotations

import pytest

from meterd.core.errors import UnsupportedMediaError, ValidationError
from meterd.ingest.events import BATCH, JSON, SINGLE, decode, media_type

GOOD = (
    b'{"specversion": "1.0", "type": "t", "id": "1", "source": "s", "subject": "u",'
    b' "time": "2026-11-23T07:27:46.546345+00:00", "data": {"total_tokens": 30}}'
)


def test_litellm_event_decodes_with_microseconds() -> None:
    [record] = decode(GOOD, SINGLE)
    assert (record.id, record.source, record.type, record.subject) == ("1", "s", "t", "u")
    assert record.time_us == 1795418866546345
    assert record.data == b'{"total_tokens": 30}'


def test_json_content_type_takes_one_or_many() -> None:
    assert len(decode(GOOD, JSON)) == 1
    assert len(decode(b"[" + GOOD + b"," + GOOD.replace(b'"1"', b'"2"') + b"]", JSON)) == 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/cloudevents+json", SINGLE),
        ("application/cloudevents-batch+json; charset=utf-8", BATCH),
        ("Application/JSON;charset=UTF-8", JSON),
    ],
)
def test_media_types(header: str, expected: str) -> None:
    assert media_type(header) == expected


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/json; charset=latin-1"])
def test_bad_media_types(header: str | None) -> None:
    with pytest.raises(UnsupportedMediaError):
        media_type(header)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (GOOD.replace(b'"subject": "u",', b""), "$.subject"),
        (GOOD.replace(b'"id": "1"', b'"id": ""'), "$.id"),
        (GOOD.replace(b'"id": "1"', b'"id": 1'), "$.id"),
        (GOOD.replace(b'"1.0"', b'"0.3"'), "$.specversion"),
        (GOOD.replace(b'{"total_tokens": 30}', b"[1]"), "$.data"),
        (GOOD.replace(b"+00:00", b""), "$.time"),
        (b"{not json", "$"),
        (b"", "$"),
    ],
)
def test_invalid_single_events_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode(body, SINGLE)
    assert [p.field for p in info.value.problems] == [field]


def test_a_bad_event_in_a_batch_names_its_index() -> None:
    bad = GOOD.replace(b'"type": "t",', b"")
    with pytest.raises(ValidationError) as info:
        decode(b"[" + GOOD + b"," + bad + b"]", BATCH)
    assert info.value.problems[0].field == "$[1].type"


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(ValidationError, match="no events"):
        decode(b"[]", BATCH)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z"])
def test_times_outside_the_store_range_are_refused(moment: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode(GOOD.replace(b"2026-11-23T07:27:46.546345+00:00", moment.encode()), SINGLE)
    assert info.value.problems[0].field == "$.time"


def test_range_edges_are_accepted() -> None:
    for moment in (b"1970-01-01T00:00:00Z", b"2099-12-31T23:59:59.999999Z"):
        assert decode(GOOD.replace(b"2026-11-23T07:27:46.546345+00:00", moment), SINGLE)


def test_rfc3339_pads_early_years() -> None:
    from datetime import UTC, datetime

    from meterd.core.timeutil import format_rfc3339

    assert format_rfc3339(datetime(99, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)) == "0099-01-02T03:04:05.25Z"


def test_documented_event_shape_matches_the_decoder() -> None:
    """The OpenAPI document describes CloudEvent with its own struct (the decoder keeps `data` raw); keep the
    two field lists the same."""
    from meterd.http.openapi import Event
    from meterd.ingest.events import CloudEvent

    assert Event.__struct_fields__ == CloudEvent.__struct_fields__
