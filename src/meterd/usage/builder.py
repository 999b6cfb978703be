"""A pure builder from MeterQuery to ClickHouse SQL. Every value the caller chose travels as a bound
parameter ({name:Type}); the only text spliced into the SQL is meterd's own (column names, functions).

The aggregation rules are OpenMeter's (compat reference 2.1): values are read with JSON_VALUE, numeric
aggregations skip missing, non-numeric, NaN and infinite values, numeric strings count, COUNT counts
rows, UNIQUE_COUNT counts distinct stringified values, LATEST takes the value of the latest event
(ties broken by arrival order), and a group whose aggregate is NULL is left out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meterd.core.timeutil import to_us
from meterd.meters.model import Aggregation, WindowSize
from meterd.usage.query import FilterString, MeterQuery

EVENTS_TABLE = "events"


@dataclass
class CompiledQuery:
    sql: str
    params: dict[str, Any]
    group_keys: list[str]  # meter group-by keys, in the order of their columns g0, g1, ...
    windowed: bool
    with_subject: bool
    with_customer: bool


@dataclass
class Params:
    values: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, type_: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{type_}}}"


def _number(path_param: str) -> str:
    return f"ifNotFinite(toFloat64OrNull(JSON_VALUE(data, {path_param})), NULL)"


def _aggregate(query: MeterQuery, params: Params) -> str:
    agg = query.aggregation
    if agg is Aggregation.COUNT:
        return "toFloat64(count())"
    assert query.value_property is not None
    path = params.bind(query.value_property, "String")
    if agg is Aggregation.UNIQUE_COUNT:
        return f"toFloat64(uniqExact(nullIf(JSON_VALUE(data, {path}), 'null')))"
    value = _number(path)
    if agg is Aggregation.LATEST:
        return f"argMax({value}, (time, seq))"
    function = {
        Aggregation.SUM: "sum",
        Aggregation.AVG: "avg",
        Aggregation.MIN: "min",
        Aggregation.MAX: "max",
    }
    return f"{function[agg]}({value})"


def window_start(size: WindowSize, tz: str) -> str:
    """Unix seconds of the start of the window holding the event, windows aligned in zone `tz`."""
    if size is WindowSize.MINUTE:
        start = f"toStartOfMinute(time, {tz})"
    elif size is WindowSize.HOUR:
        start = f"toStartOfHour(time, {tz})"
    elif size is WindowSize.DAY:
        start = f"toStartOfDay(time, {tz})"
    else:
        start = f"toDateTime(toStartOfMonth(time, {tz}), {tz})"
    return f"toUnixTimestamp({start})"


def window_end(size: WindowSize, tz: str) -> str:
    """Unix seconds of the end of the window starting at `ws` (unix seconds), DST-correct in zone `tz`."""
    if size is WindowSize.MINUTE:
        return "ws + 60"
    if size is WindowSize.HOUR:
        return "ws + 3600"
    start = f"toDateTime(ws, {tz})"
    if size is WindowSize.DAY:
        # a day lasts 23 to 25 hours, so 36 hours after its start is always inside the next day
        return f"toUnixTimestamp(toStartOfDay({start} + INTERVAL 36 HOUR, {tz}))"
    return f"toUnixTimestamp(toDateTime(addMonths(toStartOfMonth({start}, {tz}), 1), {tz}))"


def filter_sql(column: str, spec: FilterString, params: Params) -> str:
    """One FilterString on a string column, as a SQL predicate. `spec` is already validated."""
    parts: list[str] = []
    for op, arg in spec.items():
        if op == "$and" or op == "$or":
            joined = f" {op[1:].upper()} ".join(filter_sql(column, sub, params) for sub in arg)
            parts.append(f"({joined})")
        elif op == "$in" or op == "$nin":
            neg = "NOT " if op == "$nin" else ""
            parts.append(f"{column} {neg}IN {params.bind(list(arg), 'Array(String)')}")
        elif op == "$exists":
            parts.append(f"({column} != '') = {params.bind(bool(arg), 'Bool')}")
        else:
            parts.append(_compare(column, op, params.bind(str(arg), "String")))
    return " AND ".join(parts) if len(parts) > 1 else parts[0]


_COMPARE = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_LIKE = {"$like": "like", "$nlike": "notLike", "$ilike": "ilike", "$nilike": "notILike"}


def _compare(column: str, op: str, param: str) -> str:
    if op in _COMPARE:
        return f"{column} {_COMPARE[op]} {param}"
    if op in _LIKE:
        return f"{_LIKE[op]}({column}, {param})"
    if op == "$contains":
        return f"position({column}, {param}) > 0"
    if op == "$ncontains":
        return f"position({column}, {param}) = 0"
    raise ValueError(f"unknown filter operator {op}")


def grouping(
    query: MeterQuery, params: Params, tz: str, group_exprs: list[str], first: str, last: str
) -> tuple[list[str], list[str]]:
    """SELECT items and GROUP BY keys both builders share: window edges (or, unwindowed, the minutes of the
    first and last event), subject, customer, then the meter's group-bys as g0, g1, ..."""
    select: list[str] = []
    group: list[str] = []
    if query.window_size is not None:
        select += [f"{window_start(query.window_size, tz)} AS ws", f"{window_end(query.window_size, tz)} AS we"]
        group.append("ws")
    else:
        select += [
            f"toUnixTimestamp(toStartOfMinute(min({first}))) AS ws",
            f"toUnixTimestamp(toStartOfMinute(max({last}))) + 60 AS we",
        ]
    if query.group_by_subject:
        select.append("subject")
        group.append("subject")
    if query.group_by_customer:
        assert query.customer_of is not None
        subjects = params.bind(list(query.customer_of.keys()), "Array(String)")
        customers = params.bind(list(query.customer_of.values()), "Array(String)")
        select.append(f"transform(subject, {subjects}, {customers}, '') AS customer_id")
        group.append("customer_id")
    for index, expr in enumerate(group_exprs):
        select.append(expr if expr == f"g{index}" else f"{expr} AS g{index}")
        group.append(f"g{index}")
    return select, group


def assemble(
    query: MeterQuery,
    params: Params,
    keys: list[str],
    select: list[str],
    source: str,
    group: list[str],
    having: str,
) -> CompiledQuery:
    """The statement around a SELECT list: rows come ordered by their grouping keys."""
    sql = f"SELECT {', '.join(select)}\nFROM {source}"
    if group:
        sql += f"\nGROUP BY {', '.join(group)}"
    sql += f"\nHAVING {having} AND value IS NOT NULL"
    if group:
        sql += f"\nORDER BY {', '.join(group)}"
    return CompiledQuery(
        sql=sql,
        params=params.values,
        group_keys=keys,
        windowed=query.window_size is not None,
        with_subject=query.group_by_subject,
        with_customer=query.group_by_customer,
    )


def build(query: MeterQuery, table: str = EVENTS_TABLE) -> CompiledQuery:
    params = Params()
    tz = params.bind(query.time_zone, "String")
    keys = sorted(query.group_by)
    exprs = [f"JSON_VALUE(data, {params.bind(query.group_by[key], 'String')})" for key in keys]
    select, group = grouping(query, params, tz, exprs, "time", "time")
    select.append(f"{_aggregate(query, params)} AS value")

    namespace = params.bind(query.namespace, "String")
    where = [f"namespace = {namespace}", f"type = {params.bind(query.event_type, 'String')}"]
    if query.start is not None:
        where.append(f"time >= fromUnixTimestamp64Micro({params.bind(to_us(query.start), 'Int64')}, 'UTC')")
    if query.end is not None:
        where.append(f"time < fromUnixTimestamp64Micro({params.bind(to_us(query.end), 'Int64')}, 'UTC')")
    if query.subjects is not None:
        where.append(f"subject IN {params.bind(list(query.subjects), 'Array(String)')}")
    if query.customer_of is not None:
        where.append(f"subject IN {params.bind(list(query.customer_of.keys()), 'Array(String)')}")
    if query.seq_range is not None:
        low, high = (params.bind(n, "UInt64") for n in query.seq_range)
        where.append(f"seq BETWEEN {low} AND {high}")
    for key in sorted(query.filters):
        path, spec = query.filters[key]
        column = f"JSON_VALUE(data, {params.bind(path, 'String')})"
        where.append(f"({filter_sql(column, spec, params)})")
    return assemble(query, params, keys, select, f"{table}\nWHERE {' AND '.join(where)}", group, "count() > 0")
