"""Property tests of POST /api/v1/events over real HTTP with generated CloudEvents, good and malformed (compat
reference 3 and 10.1), against a model of the rules written from the reference:

* `id`, `source`, `type`, `subject` are required non-empty strings, `specversion` is required and "1.0";
  `time` is optional or null, else an RFC 3339 date-time with an offset between 1970 and 2100 (meterd's store
  range); `datacontenttype` is null or "application/json", `dataschema` a string or null, `data` an object or
  null; other attributes are extensions, accepted and dropped.
* A request with any bad event is a 400 problem+json naming `$[i].<attribute>` (`$.<attribute>` for a single
  event) of one of the bad events, and none of its events is stored: meterd's batches are all-or-nothing, as
  OpenMeter's validator rejects the whole request (docs/api-compatibility.md).
* A good request is a 204, and each of its events is stored with exactly the values sent: the time at the
  microsecond, finer digits cut off (not rounded), the default time the time of arrival, `data` as sent.
* Bodies that are not JSON, or not events, and unknown content types are 400s, never 5xx."""

from __future__ import annotations

import itertools
import json
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import event, given, note
from hypothesis import strategies as st

from tests.api.helpers import CE_BATCH, CE_SINGLE, assert_problem, barrier, post_events
from tests.api.properties import (
    ODD_TIMES,
    examples,
    never_5xx,
    refused,
    refused_one_of,
    rfc3339,
    stored_events,
    time_texts,
)

Unique = Callable[[str], str]
JSON_CT = "application/json"
SERIAL = itertools.count()
LOW, HIGH = datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)  # NUL, RTL marks, emoji...
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), text
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
)
json_objects = st.dictionaries(text, json_values, max_size=4)
wrong_types = st.sampled_from([0, -1.5, True, None, [], {}, ["x"], {"a": "b"}])

# -- times -------------------------------------------------------------------------------------------

LEAP_DAYS = [datetime(y, 2, 29, h, tzinfo=UTC) for y in (1972, 2000, 2024, 2096) for h in (0, 23)]


good_times = time_texts(
    st.datetimes(LOW.replace(tzinfo=None), datetime(2099, 12, 31, 23, 59, 59, 999999), timezones=st.just(UTC))
    | st.sampled_from([*LEAP_DAYS, LOW, HIGH - timedelta(microseconds=1)])
)
# instants anywhere in years 2-9998 (mostly outside the store's range) and texts that only look like times
odd_times = (
    time_texts(
        st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=st.just(UTC))
        | st.sampled_from([HIGH, LOW - timedelta(microseconds=1), datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)])
    )
    | st.sampled_from(ODD_TIMES)
    | text
)


# -- events ------------------------------------------------------------------------------------------

REQUIRED = ("id", "source", "specversion", "type", "subject")
# attribute -> (strategy of good values, strategy of mostly bad ones); _optional_ok() judges each value
OPTIONAL: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "time": (st.none() | good_times, odd_times | wrong_types.filter(lambda v: v is not None)),
    "datacontenttype": (st.sampled_from([None, JSON_CT]), st.sampled_from(["text/plain", "application/xml", "", 5])),
    "dataschema": (st.none() | text, st.sampled_from([5, [], {}, True])),
    "data": (st.none() | json_objects, json_values),
}
EXTENSION_NAMES = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8).map(lambda s: "x" + s)


@st.composite
def cloudevents(draw: st.DrawFn, etype: str) -> tuple[dict[str, Any], set[str]]:
    """An event and the attributes that make it bad (none for a good one)."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"{draw(text)}#{next(SERIAL)}",  # unique: a repeated (source, id) would be a duplicate
        "source": draw(text),
        "type": etype,
        "subject": draw(text),
    }
    bad: set[str] = set()
    broken = draw(st.sampled_from([False, False, True]))  # mostly good events, so that many batches are good
    for name in draw(st.lists(st.sampled_from(REQUIRED), max_size=2 if broken else 0, unique=True)):
        how = draw(st.sampled_from(["drop", "empty", "wrong type"]))
        if how == "drop":
            del event[name]
        elif how == "empty" or name == "specversion":
            event[name] = draw(st.sampled_from(["", "0.3", "1", "1.0 ", "2.0"])) if name == "specversion" else ""
        else:
            event[name] = draw(wrong_types)
        bad.add(name)
    for name, (good, odd) in OPTIONAL.items():
        if draw(st.sampled_from([True, True, name == "time"])):
            event[name] = value = draw(odd if broken and draw(st.booleans()) else good)
            if not _optional_ok(name, value):
                bad.add(name)
    for name in draw(st.lists(EXTENSION_NAMES, max_size=2, unique=True)):
        event[name] = draw(json_values)
    order = draw(st.permutations(list(event)))
    return {name: event[name] for name in order}, bad


def _optional_ok(name: str, value: Any) -> bool:
    if value is None:
        return True
    if name == "time":
        moment = rfc3339(value) if isinstance(value, str) else None
        return moment is not None and LOW <= moment < HIGH
    if name == "datacontenttype":
        return value == JSON_CT
    if name == "dataschema":
        return isinstance(value, str)
    return isinstance(value, dict)  # data


@st.composite
def requests(draw: st.DrawFn, etype: str) -> tuple[str, Any, list[tuple[dict[str, Any], set[str]]]]:
    """(content type, body, events): a batch of up to 5, or one event on its own."""
    events = draw(st.lists(cloudevents(etype), min_size=1, max_size=5))
    kind = draw(st.sampled_from([CE_BATCH, CE_SINGLE, JSON_CT, JSON_CT + "-array"]))
    if kind in (CE_BATCH, JSON_CT + "-array"):
        return kind.removesuffix("-array"), [e for e, _ in events], events
    return kind, events[0][0], events[:1]


def test_generated_events_are_stored_exactly_or_refused_naming_the_field(api: httpx.Client, unique: Unique) -> None:
    etype = unique("ingest_property")
    accepted: dict[str, dict[str, Any]] = {}
    started = datetime.now(UTC)

    @examples(120)
    @given(request=requests(etype))
    def ingest(request: tuple[str, Any, list[tuple[dict[str, Any], set[str]]]]) -> None:
        content_type, body, events = request
        note(f"{content_type}: {json.dumps(body)}")
        response = post_events(api, json.dumps(body).encode(), content_type)
        where = "$[{}]" if isinstance(body, list) else "$"
        bad = {f"{where.format(i)}.{name}" for i, (_, names) in enumerate(events) for name in names}
        if not bad:
            event("accepted")
            assert response.status_code == 204, response.text
            accepted.update((e["id"], e) for e, _ in events)
            return
        assert refused_one_of(response, bad) <= bad  # the attribute itself, not a place inside it

    ingest()
    barrier(api)
    finished = datetime.now(UTC)
    stored = {e["id"]: e for e in stored_events(api, etype)}
    assert sorted(stored) == sorted(accepted), "a refused request stored events, or an accepted one lost some"
    for id_, sent in accepted.items():
        got = stored[id_]
        assert (got["source"], got["subject"], got["type"], got["specversion"]) == (
            sent["source"],
            sent["subject"],
            etype,
            "1.0",
        )
        assert got["data"] == sent.get("data"), (sent, got)
        when = datetime.fromisoformat(got["time"])
        if sent.get("time") is None:
            assert started <= when <= finished, (sent, got)
        else:
            assert when == rfc3339(sent["time"]), (sent["time"], got["time"])


@examples(60)
@given(
    body=st.one_of(
        st.binary(max_size=40),
        text.map(str.encode),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.lists(json_values, max_size=3).map(lambda v: json.dumps(v).encode()),
        st.sampled_from([b"", b"   ", b"[]", b"{}", b"[{}]", b"\xff\xfe", b'{"a": "\\ud800"}', b"[" * 300]),
    ),
    content_type=st.sampled_from([CE_BATCH, CE_SINGLE, JSON_CT]),
)
def test_bodies_that_are_not_events_are_400s(api: httpx.Client, body: bytes, content_type: str) -> None:
    refused(post_events(api, body, content_type), "$")


MEDIA_TYPES = [CE_BATCH, CE_SINGLE, JSON_CT]


def _content_type_ok(header: str) -> bool:
    """meterd parses the media type (case-insensitive, parameters allowed) and takes UTF-8 only."""
    main, _, params = header.partition(";")
    if main.strip().lower() not in MEDIA_TYPES:
        return False
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


@examples(60)
@given(
    header=st.one_of(
        st.text(string.printable.strip() + " ", max_size=40).map(str.strip),  # h11 sends no edge spaces
        st.builds(
            lambda base, suffix, upper: (base.upper() if upper else base) + suffix,
            st.sampled_from([*MEDIA_TYPES, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]),
            st.sampled_from(["", ";charset=utf-8", "; charset=UTF8", "; charset=latin-1", '; charset="utf-8"', ";"]),
            st.booleans(),
        ),
    )
)
def test_content_types_outside_the_three_are_400s(api: httpx.Client, unique: Unique, header: str) -> None:
    body = [{"specversion": "1.0", "id": f"ct{next(SERIAL)}", "source": "s", "type": unique("ct"), "subject": "s"}]
    content = json.dumps(body if "batch" in header.lower() else body[0]).encode()
    response = api.post("/api/v1/events", content=content, headers={"Content-Type": header})
    never_5xx(response)
    if _content_type_ok(header):
        assert response.status_code == 204, (header, response.text)
    else:
        problem = assert_problem(response, 400)
        assert problem["extensions"]["contentType"] == header, problem
