"""Features (what is sold: a meter, narrowed by group-by filters), entitlements (a customer's right to a
feature) and grants (an amount of a metered feature a customer may use)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from meterd.credit.engine import Grant, Recurrence


class EntitlementType(StrEnum):
    METERED = "metered"
    BOOLEAN = "boolean"
    STATIC = "static"


@dataclass(frozen=True)
class Feature:
    id: str
    namespace: str
    key: str
    name: str
    meter_slug: str | None = None
    meter_group_by_filters: dict[str, str] | None = None
    advanced_filters: dict[str, Any] | None = None
    unit_cost: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    archived_at: datetime | None = None


@dataclass(frozen=True)
class Entitlement:
    id: str
    namespace: str
    type: EntitlementType
    feature_id: str
    feature_key: str
    customer_id: str
    subject_key: str
    active_from: datetime
    created_at: datetime
    updated_at: datetime
    measure_usage_from: datetime | None = None  # metered only, minute-aligned
    usage_period_interval: str | None = None  # metered: ISO 8601 duration; optional for the others
    usage_period_anchor: datetime | None = None
    is_soft_limit: bool = False
    issue_after_reset: Decimal | None = None
    issue_after_reset_priority: int | None = None
    preserve_overage_at_reset: bool = False
    config: str | None = None  # static: a JSON object, as text
    metadata: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    active_to: datetime | None = None
    deleted_at: datetime | None = None

    def active_at(self, t: datetime) -> bool:
        """Active from creation (or, for a metered entitlement measuring usage from earlier, from then: its
        past values answer) until deleted or `active_to`."""
        if self.deleted_at is not None and t >= self.deleted_at:
            return False
        start = self.active_from
        if self.measure_usage_from is not None and self.measure_usage_from < start:
            start = self.measure_usage_from
        return start <= t and (self.active_to is None or t < self.active_to)


@dataclass(frozen=True)
class GrantRecord:
    """A grant as stored and shown; `engine()` is what the credit engine burns."""

    id: str
    namespace: str
    entitlement_id: str
    amount: Decimal
    priority: int
    effective_at: datetime
    created_at: datetime
    updated_at: datetime
    min_rollover: Decimal = Decimal(0)
    max_rollover: Decimal = Decimal(0)
    expiration: dict[str, Any] | None = None  # {"duration": "DAY", "count": 30}
    expires_at: datetime | None = None
    recurrence_interval: str | None = None
    recurrence_anchor: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    voided_at: datetime | None = None
    deleted_at: datetime | None = None

    def engine(self) -> Grant:
        recurrence = None
        if self.recurrence_interval is not None and self.recurrence_anchor is not None:
            recurrence = Recurrence(self.recurrence_interval, self.recurrence_anchor)
        voided = self.voided_at
        if self.deleted_at is not None and (voided is None or self.deleted_at < voided):
            voided = self.deleted_at
        return Grant(
            id=self.id,
            amount=self.amount,
            priority=self.priority,
            effective_at=self.effective_at,
            created_at=self.created_at,
            expires_at=self.expires_at,
            voided_at=voided,
            min_rollover=self.min_rollover,
            max_rollover=self.max_rollover,
            recurrence=recurrence,
        )


@dataclass(frozen=True)
class ResetRecord:
    id: str
    namespace: str
    entitlement_id: str
    reset_at: datetime
    retain_anchor: bool
    preserve_overage: bool
    created_at: datetime
