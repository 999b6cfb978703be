"""Shared pieces of the API property tests (tests/api/test_*_properties.py): hypothesis settings, the check every
refused input must pass, an RFC 3339 model written from the RFC (not from meterd), and a paged read of stored
events.

METERD_PROPERTY_EXAMPLES sets max_examples for every property (each has its own default, sized to keep the suite
under a minute and a half on two cores); e.g. METERD_PROPERTY_EXAMPLES=500 for a long run."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from tests.api.helpers import assert_problem


def examples(default: int) -> settings:
    """The HTTP client is stateless, so sharing a function-scoped one between examples is safe. No explain phase:
    strategies here depend on earlier draws (a zone's DST changes), which it reports as a FlakyStrategyDefinition
    in place of the failure it explains."""
    return settings(
        max_examples=int(os.environ.get("METERD_PROPERTY_EXAMPLES", str(default))),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        phases=[phase for phase in Phase if phase is not Phase.explain],
    )


def never_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)


def refused(response: httpx.Response, field: str, status: int = 400) -> dict[str, Any]:
    """A problem+json `status` that names `field`: in its detail, and among its validationErrors (a field there
    may be deeper, e.g. advancedMeterGroupByFilters.g.$eq for advancedMeterGroupByFilters) when it has any."""
    body = assert_problem(response, status)
    assert field in body["detail"], (field, body)
    named = [e["field"] for e in body.get("extensions", {}).get("validationErrors", [])]
    if named:
        assert any(n == field or n.startswith((f"{field}.", f"{field}[")) for n in named), (field, body)
    return body


def refused_one_of(response: httpx.Response, fields: set[str]) -> set[str]:
    """A 400 problem+json naming only these fields (or places inside them), for inputs with several faults of
    which meterd may report the first it meets or all: by its validationErrors, each also in its detail, or, for
    a problem without them, by the "<field>: " its detail starts with. Returns the fields named."""
    body = assert_problem(response, 400)
    named = {e["field"] for e in body.get("extensions", {}).get("validationErrors", [])}
    if not named:
        named = {body["detail"].split(": ", 1)[0]}
    for name in named:
        assert any(name == f or name.startswith((f"{f}.", f"{f}[")) for f in fields), (named, fields, body)
        assert name in body["detail"], body
    return named


# RFC 3339 section 5.6 date-time: full-date "T" full-time, "T" and "Z" in either case, a time-offset of Z or
# +hh:mm/-hh:mm, an optional fraction of any length. Section 5.7 bounds hours, minutes and offsets; leap seconds
# (:60) are left out, as Go's time.Parse and Python's datetime leave them out.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))", re.ASCII
)


def rfc3339(text: str) -> datetime | None:
    """The UTC instant of an RFC 3339 date-time, fractions finer than a microsecond cut off (times count from the
    start of their second, as OpenMeter's whole seconds do); None when the text is not one or the instant falls
    outside the years 1-9999."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if int(off_h or 0) > 23 or int(off_m or 0) > 59:
        return None
    offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0)) * (-1 if sign == "-" else 1)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro)
        return (local - offset).replace(tzinfo=UTC) if not zulu else local.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def render(moment: datetime, offset_minutes: int, digits: int, upper: bool = True, nanos: int = 0) -> str:
    """`moment` (UTC) as RFC 3339 text at a UTC offset, with `digits` fraction digits: up to six cut the instant
    to them, the 7th to 9th are `nanos` (sub-microsecond digits, which meterd must ignore)."""
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    if digits:
        text += "." + f"{local.microsecond:06d}{nanos:03d}"[:digits]
    if offset_minutes == 0 and upper:
        text += "Z"
    else:
        sign = "-" if offset_minutes < 0 else "+"
        text += f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    return text if upper else text.lower()


OFFSETS = st.sampled_from([0, 0, 60, -300, 330, 345, 840, -720]) | st.integers(-1439, 1439)  # minutes


def time_texts(moments: st.SearchStrategy[datetime]) -> st.SearchStrategy[str]:
    """RFC 3339 texts of these instants at any offset, with 0-9 fraction digits, in either case."""
    return st.builds(render, moments, OFFSETS, st.integers(0, 9), st.booleans(), st.integers(0, 999))


# Texts that only look like RFC 3339 date-times, or name instants outside what meterd keeps.
ODD_TIMES = [
    "0000-01-01T00:00:00Z",
    "10000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59-00:01",
    "2023-02-29T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-00-10T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T23:60:00Z",
    "2024-12-31T23:59:60Z",
    "2025-01-01T00:00:00+24:00",
    "2025-01-01T00:00:00+01:60",
    "2025-01-01T00:00:00+0100",
    "2025-01-01T00:00:00",
    "2025-01-01 00:00:00Z",
    "2025-01-01",
    "2025-W01-1T00:00:00Z",
    "2025-001T00:00:00Z",
    "20250101T000000Z",
    "2025-01-01T00:00Z",
    "2025-01-01T00:00:00,5Z",
    "2025-01-01T00:00:00.Z",
    " 2025-01-01T00:00:00Z",
    "2025-01-01T00:00:00Z ",
    "\uff12025-01-01T00:00:00Z",
    "2025-1-1T0:0:0Z",
    "1700000000",
    "now",
    "",
]


def stored_events(api: httpx.Client, event_type: str) -> list[dict[str, Any]]:
    """Every stored event of one type, through /api/v2/events' cursor pages (no 32-day limit there)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"filter": json.dumps({"type": {"$eq": event_type}}), "limit": "100"}
        if cursor:
            params["cursor"] = cursor
        response = api.get("/api/v2/events", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items += [item["event"] for item in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            return items
