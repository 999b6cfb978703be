"""An independent, pure-Python model of OpenMeter meter queries (compat reference 2.1 and 2.2), written from the
reference and not from meterd's code. The property test compares meterd's HTTP answers with it.

Values are read like ClickHouse's JSON_VALUE: a scalar as text, '' when the path is missing or leads to an object
or array, 'null' for JSON null, numbers normalised (1.0 -> "1", 1e3 -> "1000", 1.50 -> "1.5"). Numeric aggregations
parse that text like toFloat64OrNull and drop NULL, NaN and infinities."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

MISSING: Any = object()  # a property left out of the event data

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Event:
    subject: str
    time: datetime  # aware, UTC, microseconds
    data: dict[str, Any]


@dataclass(frozen=True)
class Query:
    aggregation: str
    start: datetime | None = None
    end: datetime | None = None
    window: str | None = None  # MINUTE, HOUR, DAY, MONTH
    tz: str = "UTC"
    group_by: tuple[str, ...] = ()  # "subject" and/or meter group-by keys, in request order
    subjects: tuple[str, ...] = ()
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {"$eq": v} / {"$in": [...]} ...


@dataclass(frozen=True)
class Row:
    value: float
    window_start: datetime
    window_end: datetime
    subject: str | None
    group_by: dict[str, str]


def lookup(data: Any, path: str) -> Any:
    """The JSON value at a simple `$.a.b` path, or MISSING."""
    node = data
    for part in path.removeprefix("$.").split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def json_value(data: Any, path: str) -> str:
    """ClickHouse JSON_VALUE(data, path)."""
    value = lookup(data, path)
    if value is MISSING or isinstance(value, dict | list):
        return ""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "-0" if math.copysign(1.0, value) < 0 else "0"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def number(text: str) -> float | None:
    """ifNotFinite(toFloat64OrNull(text), NULL)."""
    if not _NUMBER.fullmatch(text):
        return None
    parsed = float(text)
    return parsed if math.isfinite(parsed) else None


def aggregate(aggregation: str, events: list[Event], value_path: str) -> float | None:
    """The aggregate of one group, None when it is NULL (the row is then left out)."""
    if aggregation == "COUNT":
        return float(len(events))
    texts = [json_value(e.data, value_path) for e in events]
    if aggregation == "UNIQUE_COUNT":
        return float(len({t for t in texts if t != "null"}))
    numbers = [(e.time, n) for e, t in zip(events, texts, strict=True) if (n := number(t)) is not None]
    if not numbers:
        return None
    values = [n for _, n in numbers]
    if aggregation == "SUM":
        return math.fsum(values)
    if aggregation == "AVG":
        return math.fsum(values) / len(values)
    if aggregation == "MIN":
        return min(values)
    if aggregation == "MAX":
        return max(values)
    if aggregation == "LATEST":
        return max(numbers, key=lambda pair: pair[0])[1]
    raise ValueError(aggregation)


def window_of(time: datetime, window: str, tz: str) -> tuple[datetime, datetime]:
    """The tumbling window holding `time`, aligned in zone `tz`, as UTC instants."""
    zone = ZoneInfo(tz)
    local = time.astimezone(zone)  # astimezone sets `fold` in a repeated hour; replace() keeps it
    if window == "MINUTE":
        start = local.replace(second=0, microsecond=0).astimezone(UTC)
        return start, start + timedelta(minutes=1)
    if window == "HOUR":
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return start, start + timedelta(hours=1)
    if window == "DAY":
        day = local.date()
        following = day + timedelta(days=1)
    elif window == "MONTH":
        day = local.date().replace(day=1)
        following = (day + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(window)
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    end = datetime(following.year, following.month, following.day, tzinfo=zone).astimezone(UTC)
    return start, end


def _matches(text: str, spec: dict[str, Any]) -> bool:
    for op, arg in spec.items():
        if op == "$eq" and text != arg:
            return False
        if op == "$ne" and text == arg:
            return False
        if op == "$in" and text not in arg:
            return False
        if op == "$nin" and text in arg:
            return False
    return True


def _selected(query: Query, events: list[Event], meter_group_by: dict[str, str]) -> list[Event]:
    chosen = []
    for e in events:
        if query.start is not None and e.time < query.start:  # from is inclusive
            continue
        if query.end is not None and e.time >= query.end:  # to is exclusive
            continue
        if query.subjects and e.subject not in query.subjects:
            continue
        if all(_matches(json_value(e.data, meter_group_by[k]), spec) for k, spec in query.filters.items()):
            chosen.append(e)
    return chosen


def _minute(time: datetime) -> datetime:
    return time.replace(second=0, microsecond=0)


def run(query: Query, events: list[Event], value_path: str, meter_group_by: dict[str, str]) -> list[Row]:
    """The rows of a meter query, in the order the API returns them."""
    by_subject = bool(query.subjects) or "subject" in query.group_by
    keys = sorted(k for k in dict.fromkeys(query.group_by) if k != "subject")
    groups: dict[tuple[Any, ...], list[Event]] = {}
    for e in _selected(query, events, meter_group_by):
        window = window_of(e.time, query.window, query.tz) if query.window else None
        subject = e.subject if by_subject else None
        values = tuple(json_value(e.data, meter_group_by[k]) for k in keys)
        groups.setdefault((window, subject, values), []).append(e)
    rows = []
    for (window, subject, values), members in groups.items():
        value = aggregate(query.aggregation, members, value_path)
        if value is None:
            continue
        if window is not None:
            start, end = window
        else:
            start = query.start or _minute(min(e.time for e in members))
            end = query.end or _minute(max(e.time for e in members)) + timedelta(minutes=1)
        rows.append(Row(value, start, end, subject, dict(zip(keys, values, strict=True))))
    return sorted(rows, key=lambda row: order_key(row, windowed=query.window is not None))


def order_key(row: Row, windowed: bool) -> tuple[Any, ...]:
    """Rows are ordered by window start (windowed queries only), then subject, then group-by values (keys sorted
    by name; strings compare as UTF-8 bytes, which is code point order)."""
    groups = tuple(row.group_by[k] for k in sorted(row.group_by))
    return (row.window_start if windowed else None, row.subject or "", groups)
