"""Customers (who is billed) and subjects (the `subject` of events). A customer owns subject keys; an
event's subject is attributed to the customer whose key or usageAttribution.subjectKeys contains it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Customer:
    id: str
    namespace: str
    name: str
    key: str | None
    subject_keys: tuple[str, ...]
    description: str | None = None
    primary_email: str | None = None
    currency: str | None = None
    billing_address: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None

    def attributed_subjects(self) -> list[str]:
        """Subjects whose events belong to this customer: its subject keys, and its own key."""
        keys = list(self.subject_keys)
        if self.key and self.key not in keys:
            keys.append(self.key)
        return keys


@dataclass(frozen=True)
class Subject:
    id: str
    namespace: str
    key: str
    display_name: str | None = None
    metadata: dict[str, Any] | None = None
    stripe_customer_id: str | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
