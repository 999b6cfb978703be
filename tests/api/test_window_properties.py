"""Property tests of meter query windows over real HTTP: windowTimeZone, windowSize, from and to (compat reference
2.2 and 10.4), against an independent model built on zoneinfo.

The data: a COUNT meter over events around every UTC offset change of 2019 in the tz database (every zone's DST
starts and ends, Lord Howe's half hours, Morocco's Ramadan), one every 15 minutes for 26 hours either side and
one a microsecond before each, so that every window edge of every zone has an event on it and one just before
it. 2019, because the tz database versions of Python and ClickHouse agree about it (they differ for 2026 in a
few zones, e.g. America/Vancouver).

The model (OpenMeter's semantics): `from` inclusive, `to` exclusive; tumbling windows aligned in the zone, only
those with events, not clipped to from/to, edges returned in UTC. A DAY runs from a local midnight to the next
(23 to 25 hours); a MONTH from the local midnight starting its first day; an HOUR is a whole hour counted from the
start of the local day, which is the wall clock's hour wherever offsets move by whole hours (ClickHouse's
toStartOfHour; Lord Howe's half-hour DST is where the two differ). Without a window there is one row, from/to or
the minutes of the first and last event. Malformed values are 400s naming the field."""

from __future__ import annotations

import bisect
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import httpx
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from tests.api.helpers import CE_BATCH, barrier, create_meter, ingest_ok
from tests.api.properties import ODD_TIMES, examples, refused, refused_one_of, render, rfc3339, time_texts
from tests.conftest import Server, wait_for

ZONES = sorted(available_timezones() - {"localtime"})  # localtime: the host's zone, refused on purpose
YEAR = 2019
US, MINUTE, HOUR, DAY = (timedelta(microseconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1))
SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")


def transitions(name: str, year: int = YEAR) -> list[datetime]:
    """The UTC instants in `year` at which the zone's UTC offset changes (to the minute)."""
    zone = ZoneInfo(name)

    def offset(moment: datetime) -> timedelta | None:
        return moment.astimezone(zone).utcoffset()

    found = []
    moment, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    while moment < end:
        low, high = moment, moment + DAY
        if offset(low) != offset(high):
            while high - low > MINUTE:  # bisect the day; the offset changes once a day at most
                middle = low + (high - low) // 2 // MINUTE * MINUTE
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            found.append(high)
        moment += DAY
    return found


# -- the model ---------------------------------------------------------------------------------------


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """The start of a local day (a midnight in a DST gap resolves to the gap's end; a repeated one to its first)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def window(moment: datetime, size: str, name: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(name)
    local = moment.astimezone(zone)
    if size == "MINUTE":
        start = moment - timedelta(seconds=local.second, microseconds=local.microsecond)
        return start, start + MINUTE
    if size == "HOUR":
        day, _ = window(moment, "DAY", name)
        start = day + (moment - day) // HOUR * HOUR
        return start, start + HOUR
    first = local.date() if size == "DAY" else local.date().replace(day=1)
    following = first + DAY if size == "DAY" else (first + 32 * DAY).replace(day=1)
    return _midnight(first, zone), _midnight(following, zone)


Row = tuple[datetime, datetime, float]


def expected(
    times: list[datetime], start: datetime | None, end: datetime | None, size: str | None, tz: str
) -> list[Row]:
    chosen = times[bisect.bisect_left(times, start) if start else 0 : bisect.bisect_left(times, end) if end else None]
    if not chosen:
        return []
    if size is None:
        first = start or chosen[0].replace(second=0, microsecond=0)
        return [(first, end or chosen[-1].replace(second=0, microsecond=0) + MINUTE, float(len(chosen)))]
    counts = Counter(window(t, size, tz) for t in chosen)
    return sorted((s, e, float(n)) for (s, e), n in counts.items())


# -- the data ----------------------------------------------------------------------------------------


class Dataset:
    """Not a dataclass: hypothesis would print every field of one (9,000 times) with a failing example."""

    def __init__(self, slug: str, times: list[datetime]) -> None:
        self.slug = slug
        self.times = times  # sorted

    def __repr__(self) -> str:
        return f"Dataset({self.slug!r}, {len(self.times)} events)"


@cache
def _marks() -> dict[str, list[datetime]]:
    return {name: found for name in ZONES if (found := transitions(name))}


@cache
def _times() -> list[datetime]:
    grid = {t + k * 15 * MINUTE for found in _marks().values() for t in found for k in range(-104, 105)}
    return sorted(grid | {t - US for t in grid})


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def dataset(client: httpx.Client) -> Iterator[Dataset]:
    suffix = uuid.uuid4().hex[:10]
    slug = f"windows_{suffix}"
    create_meter(client, slug=slug, eventType=slug, aggregation="COUNT")
    times = _times()
    events = [
        {"specversion": "1.0", "id": f"{slug}-{i}", "source": "windows", "type": slug, "subject": "tz"}
        | {"time": render(t, 0, 6)}
        for i, t in enumerate(times)
    ]
    for i in range(0, len(events), 5000):
        ingest_ok(client, events[i : i + 5000], CE_BATCH)
    barrier(client)

    def complete() -> bool:  # both the raw events and the meter's rollup (no window) have every event
        rows = [
            client.get(f"/api/v1/meters/{slug}/query", params=p).json()["data"] for p in ({}, {"windowSize": "DAY"})
        ]
        return all(sum(r["value"] for r in got) == len(times) for got in rows)

    wait_for(complete, timeout=30)
    yield Dataset(slug, times)
    client.delete(f"/api/v1/meters/{slug}")  # its rollup view would feed on every later insert


# -- sending a query ---------------------------------------------------------------------------------


def send(api: httpx.Client, slug: str, method: str, fields: dict[str, str | None]) -> httpx.Response:
    """GET with query parameters, or POST with a JSON body; None leaves a field out."""
    sent = {name: value for name, value in fields.items() if value is not None}
    url = f"/api/v1/meters/{slug}/query"
    return api.post(url, json=sent) if method == "POST" else api.get(url, params=sent)


def rows_of(response: httpx.Response) -> list[Row]:
    assert response.status_code == 200, response.text
    return [
        (datetime.fromisoformat(r["windowStart"]), datetime.fromisoformat(r["windowEnd"]), r["value"])
        for r in response.json()["data"]
    ]


def moment_texts(times: list[datetime]) -> st.SearchStrategy[str]:
    """RFC 3339 texts of instants near the data (any offset and precision) or anywhere in years 2-9998."""
    near = st.builds(lambda t, shift: t + shift * US, st.sampled_from(times), st.integers(-(10**10), 10**10))
    anywhere = st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=st.just(UTC))
    return time_texts(near | near | anywhere)


# -- properties --------------------------------------------------------------------------------------


@st.composite
def zoned_queries(draw: st.DrawFn) -> tuple[str, str, datetime, datetime, str, dict[str, str | None]]:
    """(zone, DAY or HOUR, from, to, method, fields): a range of up to 60 hours around one of the zone's offset
    changes in the data (or anywhere in it, for zones without one in 2019), sent at random offsets."""
    tz = draw(st.sampled_from(ZONES))
    size = draw(st.sampled_from(["DAY", "HOUR"]))
    marks = _marks().get(tz) or _times()[::97]
    center = marks[draw(st.integers(0, 999)) % len(marks)]
    start = center - draw(st.integers(0, 30 * 60)) * MINUTE - draw(st.sampled_from([0, 0, 1])) * US
    end = center + draw(st.integers(1, 30 * 60)) * MINUTE + draw(st.sampled_from([0, 0, 1])) * US
    fields: dict[str, str | None] = {
        "windowSize": size,
        "windowTimeZone": tz,
        "from": render(start, draw(st.integers(-1439, 1439)), 6),
        "to": render(end, draw(st.integers(-1439, 1439)), 6),
    }
    return tz, size, start, end, draw(st.sampled_from(["GET", "POST"])), fields


@examples(40)
@given(query=zoned_queries())
def test_day_and_hour_windows_in_any_zone(
    client: httpx.Client, dataset: Dataset, query: tuple[str, str, datetime, datetime, str, dict[str, str | None]]
) -> None:
    tz, size, start, end, method, fields = query
    note(f"{method} {fields}")
    response = send(client, dataset.slug, method, fields)
    assert rows_of(response) == expected(dataset.times, start, end, size, tz)
    assert response.json()["windowSize"] == size


NEAR_MISS_ZONES = [
    "europe/paris",
    "EUROPE/PARIS",
    "Europe/Paris ",
    " UTC",
    "utc",
    "right/UTC",
    "posix/Europe/Paris",
    "localtime",
    "posixrules",
    "Europe//Paris",
    "Europe/../Europe/Paris",
    "/usr/share/zoneinfo/UTC",
    "../../etc/passwd",
    "UTC\x00",
    "+01:00",
    "GMT+1",
    "Etc/GMT+13",
    "Mars/Olympus_Mons",
    "zone.tab",
    "tzdata.zi",
    "Europe",
    "America/",
    "US/Pacific-New",
]


@examples(60)
@given(
    name=st.sampled_from(NEAR_MISS_ZONES)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
    | st.sampled_from(ZONES),
    method=st.sampled_from(["GET", "POST"]),
)
def test_window_time_zone_is_a_tz_database_name(client: httpx.Client, dataset: Dataset, name: str, method: str) -> None:
    response = send(client, dataset.slug, method, {"windowSize": "DAY", "windowTimeZone": name})
    if name in ZONES or name == "":  # empty: the default, UTC
        assert rows_of(response) == expected(dataset.times, None, None, "DAY", name or "UTC")
    else:
        refused(response, "windowTimeZone")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_every_near_miss_zone_and_time_is_refused(client: httpx.Client, dataset: Dataset, method: str) -> None:
    """The fixed lists the properties sample from, each sent once (hypothesis may not draw every one)."""
    for name in NEAR_MISS_ZONES:
        refused(send(client, dataset.slug, method, {"windowSize": "DAY", "windowTimeZone": name}), "windowTimeZone")
    for text in ODD_TIMES:
        for field in ("from", "to"):
            response = send(client, dataset.slug, method, {field: text})
            if text or method == "POST":  # an empty query parameter is no parameter
                refused(response, field)


@examples(80)
@given(data=st.data())
def test_window_size_from_and_to(client: httpx.Client, dataset: Dataset, data: st.DataObject) -> None:
    """Random windowSize texts and from/to texts (near the data, far in the past or future, or malformed), in a
    handful of zones (whole-hour, half-hour and 45-minute offsets, a half-hour DST, DST at midnight)."""
    method = data.draw(st.sampled_from(["GET", "POST"]))
    size = data.draw(
        st.sampled_from([None, *SIZES, *SIZES])
        | st.sampled_from(["day", "Day", " DAY", "WEEK", "SECOND", "YEAR", "", "MINUTES", "HOUR\x00"])
        | st.text(max_size=8),
        label="windowSize",
    )
    tz = data.draw(
        st.sampled_from(["UTC", "Europe/Budapest", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"])
        | st.sampled_from(["Australia/Lord_Howe", "America/Santiago", "Africa/Casablanca"]),
        label="windowTimeZone",
    )
    texts = st.none() | moment_texts(dataset.times) | st.sampled_from(ODD_TIMES)
    fields = {"windowSize": size, "windowTimeZone": tz, "from": data.draw(texts), "to": data.draw(texts)}
    note(f"{method} {fields}")
    response = send(client, dataset.slug, method, fields)

    given_ = {name: value for name, value in fields.items() if value is not None and (value or method == "POST")}
    bad = {name for name in ("from", "to") if name in given_ and rfc3339(given_[name]) is None}
    if "windowSize" in given_ and given_["windowSize"] not in SIZES:
        bad.add("windowSize")
    start, end = (rfc3339(given_[name]) if name in given_ else None for name in ("from", "to"))
    if start is not None and end is not None and start >= end:
        bad.add("to" if start == end else "from")
    if bad:
        refused_one_of(response, bad)
        return
    assert rows_of(response) == expected(dataset.times, start, end, given_.get("windowSize"), tz)
    body: dict[str, Any] = response.json()
    for name, moment in (("from", start), ("to", end)):  # from/to are echoed, in UTC
        assert (datetime.fromisoformat(body[name]) if name in body else None) == moment
    assert body.get("windowSize") == given_.get("windowSize")


def test_the_model_knows_a_dst_day() -> None:
    """Europe/Budapest's 2019-03-31 is 23 hours long; its 03:00 local is two hours after its midnight."""
    start, end = window(datetime(2019, 3, 31, 12, tzinfo=UTC), "DAY", "Europe/Budapest")
    assert (start, end - start) == (datetime(2019, 3, 30, 23, tzinfo=UTC), timedelta(hours=23))
    assert window(datetime(2019, 3, 31, 1, 30, tzinfo=UTC), "HOUR", "Europe/Budapest")[0] == datetime(
        2019, 3, 31, 1, tzinfo=UTC
    )
    assert json.dumps(transitions("Europe/Budapest"), default=str) == json.dumps(
        [datetime(2019, 3, 31, 1, tzinfo=UTC), datetime(2019, 10, 27, 1, tzinfo=UTC)], default=str
    )
