"""Meter queries: validate a request against its meter (OpenMeter's rules, compat reference 2.2),
compile it with the pure builder, run it on the event store, and shape the rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from meterd.core.errors import ProblemCollector, ValidationError
from meterd.core.timeutil import zone
from meterd.meters.model import Meter, WindowSize
from meterd.usage.builder import EVENTS_TABLE, CompiledQuery, build
from meterd.usage.query import FILTER_OPS, LIST_OPS, LOGIC_OPS, FilterString, MeterQuery, UsageRow
from meterd.usage.rollup import build_rollup
from meterd.usage.store import EventReader

MAX_LIST = 100
_LIKE_OPS = frozenset({"$like", "$nlike", "$ilike", "$nilike"})  # ClickHouse refuses a pattern ending in an escape


@dataclass
class QueryRequest:
    start: datetime | None = None
    end: datetime | None = None
    window_size: str | None = None
    window_time_zone: str | None = None
    subjects: list[str] = field(default_factory=list)
    customer_ids: list[str] = field(default_factory=list)
    group_by: list[str] = field(default_factory=list)
    filter_group_by: dict[str, list[str]] | None = None
    advanced_filters: dict[str, Any] | None = None


@dataclass(frozen=True)
class QueryResult:
    start: datetime | None
    end: datetime | None
    window_size: str | None
    group_by: list[str]  # meter group-by keys in the order asked
    rows: list[UsageRow]


def check_filter(spec: Any, where: str, problems: ProblemCollector, depth: int = 0) -> None:
    """Validate one FilterString (every operator, value type and nesting)."""
    if not isinstance(spec, dict) or not spec:
        problems.add(where, 'must be a non-empty filter object like {"$eq": "value"}')
        return
    if depth > 8:
        problems.add(where, "filters nest too deep")
        return
    for op, arg in spec.items():
        _check_operator(op, arg, f"{where}.{op}", problems, depth)


def _check_operator(op: str, arg: Any, here: str, problems: ProblemCollector, depth: int) -> None:
    if op not in FILTER_OPS:
        problems.add(here, f"unknown filter operator (use one of {', '.join(sorted(FILTER_OPS))})")
    elif op in LOGIC_OPS:
        if not isinstance(arg, list) or not arg:
            problems.add(here, "must be a non-empty list of filters")
            return
        for i, sub in enumerate(arg):
            check_filter(sub, f"{here}[{i}]", problems, depth + 1)
    elif op in LIST_OPS:
        if not isinstance(arg, list) or len(arg) > 1000 or not all(isinstance(v, str) for v in arg):
            problems.add(here, "must be a list of at most 1000 strings")
    elif op == "$exists":
        if not isinstance(arg, bool):
            problems.add(here, "must be true or false")
    elif not isinstance(arg, str):
        problems.add(here, "must be a string")
    elif op in _LIKE_OPS and (len(arg) - len(arg.rstrip("\\"))) % 2:
        problems.add(here, "a LIKE pattern cannot end with an unpaired backslash (escape one as \\\\)")


class UsageService:
    def __init__(
        self,
        reader: EventReader,
        subject_map: Callable[[str, Sequence[str]], dict[str, str]],
    ) -> None:
        self._reader = reader
        self._subject_map = subject_map  # (namespace, customer ids or keys) -> {subject: customer id}

    def compile(self, meter: Meter, req: QueryRequest) -> MeterQuery:
        problems = ProblemCollector()
        start = _range(meter, req, problems)
        window, tz_name = _window(req, problems)
        for name, values in (
            ("subject", req.subjects),
            ("filterCustomerId", req.customer_ids),
            ("groupBy", req.group_by),
        ):
            if len(values) > MAX_LIST:
                problems.add(name, f"at most {MAX_LIST} values")
        group_subject = bool(req.subjects) or "subject" in req.group_by
        group_customer = bool(req.customer_ids) or "customer_id" in req.group_by
        if "customer_id" in req.group_by and not req.customer_ids:
            problems.add("groupBy", "grouping by customer_id requires filterCustomerId")
        group_by: dict[str, str] = {}
        for key in req.group_by:
            if key in meter.group_by:
                group_by[key] = meter.group_by[key]
            elif key not in ("subject", "customer_id"):
                problems.add("groupBy", f"invalid group by: {key}")
        filters = self._filters(meter, req, problems)
        problems.raise_if_any()
        customer_of = self._subject_map(meter.namespace, req.customer_ids) if req.customer_ids else None
        return MeterQuery(
            namespace=meter.namespace,
            event_type=meter.event_type,
            aggregation=meter.aggregation,
            value_property=meter.value_property,
            start=start,
            end=req.end,
            window_size=window,
            time_zone=tz_name,
            subjects=tuple(req.subjects) if req.subjects else None,
            group_by_subject=group_subject,
            customer_of=customer_of,
            group_by_customer=group_customer,
            group_by=group_by,
            filters=filters,
        )

    @staticmethod
    def _filters(meter: Meter, req: QueryRequest, problems: ProblemCollector) -> dict[str, tuple[str, FilterString]]:
        if req.filter_group_by and req.advanced_filters:
            problems.add("advancedMeterGroupByFilters", "cannot be combined with filterGroupBy")
            return {}
        filters: dict[str, tuple[str, FilterString]] = {}
        for key, values in (req.filter_group_by or {}).items():
            if key not in meter.group_by:
                problems.add(f"filterGroupBy.{key}", f"invalid group by filter: {key} is not a group-by of the meter")
            else:
                filters[key] = (meter.group_by[key], {"$in": list(values)})
        for key, spec in (req.advanced_filters or {}).items():
            where = f"advancedMeterGroupByFilters.{key}"
            if key not in meter.group_by:
                problems.add(where, f"{key} is not a group-by of the meter")
                continue
            before = len(problems.problems)
            check_filter(spec, where, problems)
            if len(problems.problems) == before:
                filters[key] = (meter.group_by[key], spec)
        return filters

    def _run(self, meter: Meter, logical: MeterQuery) -> tuple[CompiledQuery, list[tuple[Any, ...]]]:
        rollup = self._reader.rollup_for(meter)
        compiled = build_rollup(logical, rollup, EVENTS_TABLE) if rollup is not None else None
        if compiled is None:
            compiled = build(logical)
        return compiled, self._reader.run(compiled)

    def total(
        self,
        meter: Meter,
        start: datetime,
        end: datetime,
        subjects: Sequence[str],
        filters: dict[str, tuple[str, FilterString]] | None = None,
    ) -> float:
        """The meter's value over [start, end) for events of these subjects, one number (0 when none):
        what an entitlement burns. Subjects are a filter, not a grouping, so UNIQUE_COUNT counts across them."""
        logical = _for_subjects(meter, start, end, subjects, filters)
        if not subjects or end is None or logical.start is None or logical.start >= end:
            return 0.0
        _, rows = self._run(meter, logical)
        return sum(float(row[-1]) for row in rows)

    def per_minute(
        self,
        meter: Meter,
        start: datetime,
        subjects: Sequence[str],
        filters: dict[str, tuple[str, FilterString]] | None = None,
        end: datetime | None = None,
        seq_range: tuple[int, int] | None = None,
    ) -> list[tuple[datetime, str, float]]:
        """(minute, subject, value) for the meter's events of these subjects from `start` (and, with
        `seq_range`, only those stored by these journal batches): the increments of live balances."""
        if not subjects:
            return []
        logical = _for_subjects(meter, start, end, subjects, filters)
        logical = replace(logical, window_size=WindowSize.MINUTE, group_by_subject=True, seq_range=seq_range)
        compiled = build(logical)
        return [(_utc(row[0]), row[2], float(row[3])) for row in self._reader.run(compiled)]

    def query(self, meter: Meter, req: QueryRequest) -> QueryResult:
        logical = self.compile(meter, req)
        compiled, rows = self._run(meter, logical)
        out: list[UsageRow] = []
        for row in rows:
            ws, we, *rest = row
            subject = rest.pop(0) if compiled.with_subject else None
            customer = rest.pop(0) if compiled.with_customer else None
            groups = {key: rest[i] for i, key in enumerate(compiled.group_keys)}
            value = rest[len(compiled.group_keys)]
            start = req.start if not compiled.windowed and req.start is not None else _utc(ws)
            end = req.end if not compiled.windowed and req.end is not None else _utc(we)
            out.append(UsageRow(float(value), start, end, subject, customer or None, groups))
        return QueryResult(req.start, req.end, req.window_size, [k for k in req.group_by if k in logical.group_by], out)


def _for_subjects(
    meter: Meter,
    start: datetime,
    end: datetime | None,
    subjects: Sequence[str],
    filters: dict[str, tuple[str, FilterString]] | None,
) -> MeterQuery:
    """The meter over [start, end) for events of these subjects (a filter, not a grouping), from the
    meter's eventFrom at the earliest: what entitlements burn."""
    if meter.event_from is not None and start < meter.event_from:
        start = meter.event_from
    return MeterQuery(
        namespace=meter.namespace,
        event_type=meter.event_type,
        aggregation=meter.aggregation,
        value_property=meter.value_property,
        start=start,
        end=end,
        subjects=tuple(subjects),
        filters=dict(filters or {}),
    )


def _range(meter: Meter, req: QueryRequest, problems: ProblemCollector) -> datetime | None:
    """Check from/to; the effective start is clamped to the meter's eventFrom."""
    start, end = req.start, req.end
    if start is not None and end is not None:
        if start == end:
            problems.add("to", "from and to cannot be equal")
        elif start > end:
            problems.add("from", "from must be before to")
    if meter.event_from is not None and (start is None or start < meter.event_from):
        start = meter.event_from
    return start


def _window(req: QueryRequest, problems: ProblemCollector) -> tuple[WindowSize | None, str]:
    window: WindowSize | None = None
    if req.window_size is not None:
        try:
            window = WindowSize(req.window_size)
        except ValueError:
            problems.add("windowSize", "must be one of MINUTE, HOUR, DAY, MONTH")
    tz_name = "UTC"
    if req.window_time_zone:
        try:
            tz_name = zone(req.window_time_zone).key
        except ValidationError:
            problems.add("windowTimeZone", f"invalid time zone: {req.window_time_zone!r}")
    return window, tz_name


@lru_cache(maxsize=65_536)
def _utc(seconds: int) -> datetime:
    """Window edges repeat across rows: build each datetime once."""
    return datetime.fromtimestamp(int(seconds), UTC)
