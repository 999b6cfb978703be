"""Hourly pre-aggregates ("rollups") of a meter, and the pure builder that answers a query from them.

A meter's rollup keeps, per (namespace, subject, UTC hour, group-by values), the number of events, the
first and last event time and the aggregate's partial state (sumState, argMaxState, uniqExactState...).
It is filled by a materialized view on every event-store insert, so it is never behind the raw events.
A query reads whole hours inside [from, to) from the rollup and the partial hours at the edges from the
raw events, merges the states and gets exactly the raw answer (the property tests check this), only
without parsing JSON for most events.

A rollup serves windows that are whole hours in the query's time zone: no window (totals), HOUR, DAY and
MONTH in zones whose UTC offset is a whole number of hours (UTC, Europe/*, America/New_York, ...). MINUTE
windows and zones like Asia/Kolkata (+05:30) are answered from raw events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from meterd.core.timeutil import to_us
from meterd.meters.model import Aggregation, WindowSize
from meterd.usage.builder import CompiledQuery, Params, assemble, filter_sql, grouping
from meterd.usage.query import MeterQuery

HOUR = timedelta(hours=1)
_LAST_HOUR = datetime.max.replace(tzinfo=UTC) - HOUR

# value state type and merge function per aggregation (COUNT needs no state: the row count is the value)
STATE = {
    Aggregation.SUM: ("AggregateFunction(sum, Nullable(Float64))", "sumMerge", "sumState"),
    Aggregation.AVG: ("AggregateFunction(avg, Nullable(Float64))", "avgMerge", "avgState"),
    Aggregation.MIN: ("AggregateFunction(min, Nullable(Float64))", "minMerge", "minState"),
    Aggregation.MAX: ("AggregateFunction(max, Nullable(Float64))", "maxMerge", "maxState"),
    Aggregation.UNIQUE_COUNT: ("AggregateFunction(uniqExact, Nullable(String))", "uniqExactMerge", "uniqExactState"),
    Aggregation.LATEST: (
        "AggregateFunction(argMax, Nullable(Float64), Tuple(DateTime64(6, 'UTC'), UInt64))",
        "argMaxMerge",
        "argMaxState",
    ),
}


@dataclass(frozen=True)
class Rollup:
    """A ready rollup of one meter: its table and the column of each group-by key."""

    table: str
    columns: dict[str, str]  # meter group-by key -> column (g0, g1, ... in sorted key order)


def group_columns(group_by: dict[str, str]) -> dict[str, str]:
    return {key: f"g{index}" for index, key in enumerate(sorted(group_by))}


def state_expression(aggregation: Aggregation, value_path: str) -> str | None:
    """The partial-state expression over raw events (`value_path` is SQL: a bound parameter or a literal)."""
    if aggregation is Aggregation.COUNT:
        return None
    _, _, state = STATE[aggregation]
    if aggregation is Aggregation.UNIQUE_COUNT:
        return f"{state}(nullIf(JSON_VALUE(data, {value_path}), 'null'))"
    number = f"ifNotFinite(toFloat64OrNull(JSON_VALUE(data, {value_path})), NULL)"
    if aggregation is Aggregation.LATEST:
        return f"{state}({number}, (time, seq))"
    return f"{state}({number})"


@cache
def whole_hour_zone(name: str) -> bool:
    """Is every UTC offset of the zone from 1970 to 2100 a whole number of hours? (checked daily)"""
    tz = ZoneInfo(name)
    moment = datetime(1970, 1, 1, tzinfo=UTC)
    while moment.year < 2100:
        offset = moment.astimezone(tz).utcoffset()
        if offset is None or offset.total_seconds() % 3600:
            return False
        moment += timedelta(days=1)
    return True


def usable(query: MeterQuery) -> bool:
    if query.window_size is WindowSize.MINUTE or query.seq_range is not None:
        return False
    return query.window_size is None or whole_hour_zone(query.time_zone)


def _ceil_hour(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR


def build_rollup(query: MeterQuery, rollup: Rollup, events_table: str) -> CompiledQuery | None:
    """The query answered from the rollup plus raw edges, or None when the raw builder should answer."""
    if not usable(query):
        return None
    if any(key not in rollup.columns for key in query.filters):
        return None  # a feature's filter on a group-by the meter has since dropped: the raw builder answers
    if query.start is not None and query.start > _LAST_HOUR:
        return None  # its next whole hour is past what datetime can hold: the raw builder answers
    first_hour = _ceil_hour(query.start) if query.start is not None else None
    end_hour = query.end.replace(minute=0, second=0, microsecond=0) if query.end is not None else None
    if first_hour is not None and end_hour is not None and first_hour >= end_hour:
        return None  # less than an hour: the raw events are the cheaper source
    params = Params()
    tz = params.bind(query.time_zone, "String")
    keys = sorted(query.group_by)
    parts = [_rollup_part(query, rollup, keys, first_hour, end_hour, params)]
    edges = []
    if query.start is not None and first_hour is not None and query.start < first_hour:
        edges.append((query.start, first_hour))
    if query.end is not None and end_hour is not None and end_hour < query.end:
        edges.append((end_hour, query.end))
    if edges:
        parts.append(_raw_part(query, keys, edges, events_table, params))
    return _outer(query, keys, "\nUNION ALL\n".join(parts), tz, params)


def _select_keys(query: MeterQuery, group_exprs: list[str]) -> list[str]:
    return ["subject", *[f"{expr} AS g{i}" for i, expr in enumerate(group_exprs)]]


def _subject_filters(query: MeterQuery, params: Params) -> list[str]:
    where = []
    if query.subjects is not None:
        where.append(f"subject IN {params.bind(list(query.subjects), 'Array(String)')}")
    if query.customer_of is not None:
        where.append(f"subject IN {params.bind(list(query.customer_of.keys()), 'Array(String)')}")
    return where


def _rollup_part(
    query: MeterQuery,
    rollup: Rollup,
    keys: list[str],
    first_hour: datetime | None,
    end_hour: datetime | None,
    params: Params,
) -> str:
    columns = [rollup.columns[k] for k in keys]
    select = ["bucket AS time", *_select_keys(query, columns), "rows", "first", "last"]
    if query.aggregation is not Aggregation.COUNT:
        select.append("value")
    where = [f"namespace = {params.bind(query.namespace, 'String')}"]
    if first_hour is not None:
        where.append(f"bucket >= toDateTime({params.bind(int(first_hour.timestamp()), 'Int64')}, 'UTC')")
    if end_hour is not None:
        where.append(f"bucket < toDateTime({params.bind(int(end_hour.timestamp()), 'Int64')}, 'UTC')")
    where += _subject_filters(query, params)
    for key in sorted(query.filters):
        _, spec = query.filters[key]
        # qualified: the SELECT renames the table's columns (g1 AS g0), and an alias would win over the column
        where.append(f"({filter_sql('r.' + rollup.columns[key], spec, params)})")
    return f"SELECT {', '.join(select)}\nFROM {rollup.table} AS r\nWHERE {' AND '.join(where)}"


def _raw_part(
    query: MeterQuery, keys: list[str], edges: list[tuple[datetime, datetime]], table: str, params: Params
) -> str:
    group_exprs = [f"JSON_VALUE(data, {params.bind(query.group_by[k], 'String')})" for k in keys]
    select = [
        "toDateTime(toStartOfHour(time), 'UTC') AS bucket",
        *_select_keys(query, group_exprs),
        "count() AS rows",
        "min(time) AS first",
        "max(time) AS last",
    ]
    if query.aggregation is not Aggregation.COUNT:
        assert query.value_property is not None
        state = state_expression(query.aggregation, params.bind(query.value_property, "String"))
        select.append(f"{state} AS value")
    where = [
        f"namespace = {params.bind(query.namespace, 'String')}",
        f"type = {params.bind(query.event_type, 'String')}",
    ]
    ranges = []
    for lo, hi in edges:
        lo_p, hi_p = params.bind(to_us(lo), "Int64"), params.bind(to_us(hi), "Int64")
        ranges.append(
            f"(time >= fromUnixTimestamp64Micro({lo_p}, 'UTC') AND time < fromUnixTimestamp64Micro({hi_p}, 'UTC'))"
        )
    where.append(f"({' OR '.join(ranges)})")
    where += _subject_filters(query, params)
    for key in sorted(query.filters):
        path, spec = query.filters[key]
        column = f"JSON_VALUE(data, {params.bind(path, 'String')})"
        where.append(f"({filter_sql(column, spec, params)})")
    group = ["bucket", "subject", *[f"g{i}" for i in range(len(keys))]]
    return f"SELECT {', '.join(select)}\nFROM {table}\nWHERE {' AND '.join(where)}\nGROUP BY {', '.join(group)}"


def _merged_value(aggregation: Aggregation) -> str:
    if aggregation is Aggregation.COUNT:
        return "toFloat64(sum(rows))"
    merge = STATE[aggregation][1]
    if aggregation is Aggregation.UNIQUE_COUNT:
        return f"toFloat64({merge}(value))"
    return f"{merge}(value)"


def _outer(query: MeterQuery, keys: list[str], inner: str, tz: str, params: Params) -> CompiledQuery:
    select, group = grouping(query, params, tz, [f"g{i}" for i in range(len(keys))], "first", "last")
    select.append(f"{_merged_value(query.aggregation)} AS value")
    return assemble(query, params, keys, select, f"(\n{inner}\n)", group, "sum(rows) > 0")
