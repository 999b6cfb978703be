"""Time helpers. Inside meterd every datetime is timezone-aware UTC; naive datetimes are a bug."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from meterd.core.errors import Problem, ValidationError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime")
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


# RFC 3339 section 5.6 date-time: "T" and "Z" in either case, a fraction of any length, an offset of Z or
# +hh:mm/-hh:mm with hh 00-23 and mm 00-59. Ranges of the date and time fields are left to datetime.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)", re.ASCII
)


def rfc3339_utc(text: str) -> datetime | None:
    """The UTC instant of an RFC 3339 date-time, or None when `text` is not one or its instant falls outside
    the years 1-9999. Digits past the microsecond are cut, not rounded: an instant never moves into the next
    microsecond (or second, or window)."""
    if _RFC3339.fullmatch(text) is None:
        return None
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)  # fromisoformat cuts at microseconds
    except (ValueError, OverflowError):  # e.g. February 30th; 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        return None


def parse_rfc3339(value: str, field: str) -> datetime:
    """Parse an RFC 3339 timestamp that carries an offset; answer a ValidationError naming `field`."""
    moment = rfc3339_utc(value)
    if moment is None:
        raise ValidationError(
            Problem(field, f"invalid RFC 3339 date-time {value!r} (expected e.g. 2026-01-31T12:00:00Z)")
        )
    return moment


def as_utc(value: datetime, field: str) -> datetime:
    """A decoded date-time in UTC; a ValidationError naming `field` when it has no offset or its UTC instant
    is outside the years 1-9999 (0001-01-01T00:00:00+01:00)."""
    if value.tzinfo is None:
        raise ValidationError(Problem(field, "must be RFC 3339 with a UTC offset or Z"))
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError(Problem(field, "out of range: the instant must fall in the years 1-9999 UTC")) from None


def floor_minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


def ceil_minute(dt: datetime) -> datetime:
    """The next whole minute, or `dt` itself when it is one (the credit engine's resolution)."""
    floor = floor_minute(dt)
    return floor if floor == dt else floor + timedelta(minutes=1)


def format_rfc3339(dt: datetime) -> str:
    """UTC, `Z` suffix, milliseconds only when they are not zero (like Go's time.Time JSON, trimmed)."""
    dt = dt.astimezone(UTC)
    # not strftime: glibc's %Y does not pad years before 1000 to four digits ("1-01-01T...")
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    if dt.microsecond:
        return f"{text}.{dt.microsecond:06d}".rstrip("0") + "Z"
    return text + "Z"


@cache
def _zone_names() -> frozenset[str]:
    """The tz database's zone names. ZoneInfo also opens right/* (leap-second clocks, which ClickHouse cannot
    load), posix/* and other files under the zoneinfo directory; `localtime` is this host's zone, which the
    event store's host need not share."""
    return frozenset(available_timezones() - {"localtime"})


def zone(name: str | None, field: str = "windowTimeZone") -> ZoneInfo:
    """An IANA time zone by name; UTC when none is given."""
    if not name:
        return ZoneInfo("UTC")
    if name not in _zone_names():
        raise ValidationError(Problem(field, f"invalid time zone {name!r}"))
    return ZoneInfo(name)
