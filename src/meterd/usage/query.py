"""The logical meter query: what a caller asked for, already validated against the meter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meterd.meters.model import Aggregation, WindowSize

# A FilterString as OpenMeter defines it: {"$eq": "x"}, {"$in": [...]}, {"$and": [FilterString, ...]}, ...
FilterString = dict[str, Any]

STRING_OPS = frozenset(
    {
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$like",
        "$nlike",
        "$ilike",
        "$nilike",
        "$contains",
        "$ncontains",
    }
)
LIST_OPS = frozenset({"$in", "$nin"})
LOGIC_OPS = frozenset({"$and", "$or"})
FILTER_OPS = STRING_OPS | LIST_OPS | LOGIC_OPS | {"$exists"}


@dataclass(frozen=True)
class MeterQuery:
    namespace: str
    event_type: str
    aggregation: Aggregation
    value_property: str | None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    window_size: WindowSize | None = None
    time_zone: str = "UTC"
    subjects: tuple[str, ...] | None = None  # filter
    group_by_subject: bool = False
    # customer attribution: subject -> customer id, for filterCustomerId / group by customer_id
    customer_of: dict[str, str] | None = None
    group_by_customer: bool = False
    group_by: dict[str, str] = field(default_factory=dict)  # requested meter group-by key -> JSONPath
    filters: dict[str, tuple[str, FilterString]] = field(default_factory=dict)  # key -> (JSONPath, filter)
    seq_range: tuple[int, int] | None = None  # only events stored by these journal batches (balance deltas)


@dataclass(frozen=True)
class UsageRow:
    value: float
    window_start: datetime
    window_end: datetime
    subject: str | None
    customer_id: str | None
    group_by: dict[str, str]
