"""Time helpers. Inside meterd every datetime is timezone-aware UTC; naive datetimes are a bug."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterd.core.errors import ValidationError

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


def parse_rfc3339(value: str, field: str) -> datetime:
    """Parse an RFC 3339 timestamp that carries an offset; answer a ValidationError naming `field`."""
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(_bad(field, value)) from None
    if dt.tzinfo is None or "T" not in text.upper():
        raise ValidationError(_bad(field, value))
    return dt.astimezone(UTC)


def _bad(field: str, value: str) -> str:
    return f"{field}: invalid RFC 3339 date-time {value!r} (expected e.g. 2026-01-31T12:00:00Z)"


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


def zone(name: str | None, field: str = "windowTimeZone") -> ZoneInfo:
    """An IANA time zone by name; UTC when none is given."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory, or a name too long
        raise ValidationError(f"{field}: invalid time zone {name!r}") from None
