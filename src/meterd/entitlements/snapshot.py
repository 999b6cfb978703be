"""What the balance worker publishes after it (re)computes a metered entitlement's value.

Notification rules read these: `entitlements.balance.threshold` compares `balance`, `usage` and
`total_available` with the rule's thresholds, `entitlements.reset` fires on `operation == "reset"`.
The JSON members are the API shapes, kept as they were at `calculated_at` (a notification payload is a
historical record, not a live view)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class EntitlementSnapshot:
    namespace: str
    operation: Literal["update", "reset"]
    calculated_at: datetime
    entitlement_id: str
    feature_id: str
    feature_key: str
    customer_id: str
    subject_key: str
    period_from: datetime  # the current usage period
    period_to: datetime
    measure_usage_from: datetime
    balance: Decimal
    usage: Decimal
    overage: Decimal
    total_available: Decimal  # totalAvailableGrantAmount
    has_access: bool
    entitlement: dict[str, Any]  # EntitlementMetered JSON (v1 shape, with customerId)
    feature: dict[str, Any]  # Feature JSON
    customer: dict[str, Any]  # Customer JSON
    subject: dict[str, Any]  # {"key": ...}, OpenMeter's Subject shape
    value: dict[str, Any]  # EntitlementValue JSON
