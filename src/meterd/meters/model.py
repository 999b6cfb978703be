"""The meter model: what to aggregate (an event type, a JSONPath value, an aggregation) and how to group it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Aggregation(StrEnum):
    SUM = "SUM"
    COUNT = "COUNT"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    AVG = "AVG"
    MIN = "MIN"
    MAX = "MAX"
    LATEST = "LATEST"


class WindowSize(StrEnum):
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"
    MONTH = "MONTH"


SLUG_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
GROUP_KEY_RE = re.compile(r"^[a-zA-Z_][0-9a-zA-Z_]*$")
RESERVED_GROUP_KEYS = frozenset({"subject", "customer_id"})


@dataclass(frozen=True)
class Meter:
    id: str
    namespace: str
    slug: str
    name: str
    aggregation: Aggregation
    event_type: str
    value_property: str | None
    group_by: dict[str, str]
    event_from: datetime | None
    description: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
