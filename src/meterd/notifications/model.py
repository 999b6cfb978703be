"""Channels, rules, events and deliveries: the values the notification service stores and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

BALANCE_THRESHOLD = "entitlements.balance.threshold"
ENTITLEMENT_RESET = "entitlements.reset"
INVOICE_TYPES = ("invoice.created", "invoice.updated")  # OpenMeter's; meterd has no invoices yet
RULE_TYPES = (BALANCE_THRESHOLD, ENTITLEMENT_RESET)
WEBHOOK = "WEBHOOK"

ANNOTATION_RULE_TEST = "notification.rule.test"
ANNOTATION_DEDUPE_HASH = "event.balance.dedupe.hash"

# balance_value compares the balance; the others (and the deprecated PERCENT / NUMBER) compare usage.
THRESHOLD_TYPES = ("balance_value", "usage_percentage", "usage_value", "PERCENT", "NUMBER")
_CANONICAL = {"PERCENT": "usage_percentage", "NUMBER": "usage_value"}


class DeliveryState(StrEnum):
    PENDING = "PENDING"  # waiting for its first attempt
    SENDING = "SENDING"  # an attempt is in flight, or failed and a retry is scheduled (nextAttempt)
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"  # the last attempt failed; resend to try again
    RESENDING = "RESENDING"  # a resend was asked for; waiting for its first attempt


@dataclass(frozen=True, slots=True)
class Threshold:
    value: Decimal
    type: str  # one of THRESHOLD_TYPES, as the caller wrote it

    @property
    def canonical_type(self) -> str:
        return _CANONICAL.get(self.type, self.type)

    @property
    def kind(self) -> Literal["usage", "balance"]:
        return "balance" if self.type == "balance_value" else "usage"


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    namespace: str
    name: str
    url: str
    signing_secret: str
    custom_headers: dict[str, str] = field(default_factory=dict)
    disabled: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    type: str = WEBHOOK


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    namespace: str
    type: str
    name: str
    channels: tuple[str, ...]
    features: tuple[str, ...] = ()  # feature ids or keys; empty = every feature
    thresholds: tuple[Threshold, ...] = ()
    disabled: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None

    def covers_feature(self, feature_id: str, feature_key: str) -> bool:
        return not self.features or feature_id in self.features or feature_key in self.features


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    namespace: str
    type: str
    rule_id: str
    payload: bytes  # the exact JSON body that is signed and sent
    created_at: datetime
    annotations: dict[str, Any] = field(default_factory=dict)
    dedupe_hash: str | None = None
    entitlement_id: str | None = None
    feature_id: str | None = None
    feature_key: str | None = None
    subject_key: str | None = None
    customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    timestamp: datetime
    state: DeliveryState  # SUCCESS or FAILED: how this attempt ended
    status_code: int | None  # None when no HTTP response came back
    duration_ms: int
    body: str  # the response body (cut short), or what went wrong
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    channel_id: str
    namespace: str
    state: DeliveryState
    reason: str
    updated_at: datetime
    attempts: tuple[Attempt, ...] = ()
    attempt_count: int = 0  # attempts claimed since the event was created or last resent
    next_attempt_at: datetime | None = None
    claim_token: str | None = None
    claimed_at: datetime | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class EventView:
    """An event as the API shows it: with its rule (as it is now) and each channel's delivery status."""

    event: Event
    rule: Rule
    deliveries: tuple[Delivery, ...]
