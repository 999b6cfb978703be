"""Documentation-only shapes of meterd's responses, for the OpenAPI document.

The handlers build their JSON by hand (wire.py, entitlement_wire.py, notification_wire.py); these structs
describe what those encoders write (the server never decodes into them; tests/unit/test_openapi.py decodes
the encoders' output into them to hold the two together). A field that is always written is
required; `X | None` is written and may be null; `= UNSET` may be left out. Decimals are written as JSON
numbers (`decimal_format="number"`), so they are `float` here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from meterd.ingest.events import NonEmpty

T = TypeVar("T")
Time = Annotated[datetime, msgspec.Meta(tz=True)]  # RFC 3339, UTC with a Z (tz=True: documented as date-time)


class Doc(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A response shape: every field it may carry is listed (documented as `additionalProperties: false`)."""


class Event(msgspec.Struct):
    """A CloudEvent as meterd accepts it (the decoder keeps `data` as raw JSON; this is its documented shape)."""

    id: NonEmpty
    source: NonEmpty
    specversion: str
    type: NonEmpty
    subject: NonEmpty
    time: datetime | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: dict[str, Any] | None = None


class Problem(Doc):
    """An RFC 7807 problem, in OpenMeter's shape: extension members nested under `extensions`."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | UnsetType = UNSET
    extensions: dict[str, Any] | UnsetType = UNSET


class Page(Doc, Generic[T]):
    """One page of a list: `page` counts from 1; `totalCount` counts every match."""

    items: list[T]
    page: int
    pageSize: int
    totalCount: int


# -- events and meters ---------------------------------------------------------------------------------------


class StoredEvent(Doc):
    id: str
    source: str
    specversion: str
    type: str
    subject: str
    time: Time
    datacontenttype: str
    data: Any


class IngestedEvent(Doc):
    event: StoredEvent
    ingestedAt: Time
    storedAt: Time
    customerId: str | UnsetType = UNSET
    validationError: str | UnsetType = UNSET


class EventCursorPage(Doc):
    items: list[IngestedEvent]
    nextCursor: str | None


Aggregation = Literal["SUM", "COUNT", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST"]


class Meter(Doc):
    id: str
    slug: str
    name: str
    aggregation: Aggregation
    eventType: str
    groupBy: dict[str, str]
    metadata: dict[str, str]
    createdAt: Time
    updatedAt: Time
    description: str | UnsetType = UNSET
    valueProperty: str | UnsetType = UNSET
    eventFrom: Time | UnsetType = UNSET
    deletedAt: Time | UnsetType = UNSET


class MeterQueryRow(Doc):
    value: float
    windowStart: Time
    windowEnd: Time
    subject: str | None
    groupBy: dict[str, str]
    customerId: str | UnsetType = UNSET


class MeterQueryResult(Doc):
    """`from`, `to` and `windowSize` echo the query when it gave them."""

    data: list[MeterQueryRow]
    from_: Time | UnsetType = msgspec.field(default=UNSET, name="from")
    to: Time | UnsetType = UNSET
    windowSize: Literal["MINUTE", "HOUR", "DAY", "MONTH"] | UnsetType = UNSET


# -- customers and subjects ----------------------------------------------------------------------------------


class CustomerUsageAttribution(Doc):
    subjectKeys: list[str]


class Customer(Doc):
    id: str
    name: str
    usageAttribution: CustomerUsageAttribution
    metadata: dict[str, str]
    createdAt: Time
    updatedAt: Time
    key: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    primaryEmail: str | UnsetType = UNSET
    currency: str | UnsetType = UNSET
    billingAddress: dict[str, Any] | UnsetType = UNSET
    deletedAt: Time | UnsetType = UNSET


class Subject(Doc):
    id: str
    key: str
    createdAt: Time
    updatedAt: Time
    displayName: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    stripeCustomerId: str | UnsetType = UNSET
    currentPeriodStart: Time | UnsetType = UNSET
    currentPeriodEnd: Time | UnsetType = UNSET


# -- system --------------------------------------------------------------------------------------------------


class Health(Doc):
    status: Literal["ok"]


class Readiness(Doc):
    """200 when every check passes, 503 (the same shape) when one fails."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, bool]
    journalDepth: int


# -- features, entitlements, grants --------------------------------------------------------------------------


class Feature(Doc):
    id: str
    key: str
    name: str
    metadata: dict[str, str]
    meterSlug: str | None
    meterGroupByFilters: dict[str, str] | None
    advancedMeterGroupByFilters: dict[str, dict[str, Any]] | None
    unitCost: dict[str, Any] | None
    createdAt: Time
    updatedAt: Time
    deletedAt: Time | None
    archivedAt: Time | None


class Period(Doc):
    """A recurrence: `interval` is DAY, WEEK, MONTH or YEAR when it is one of those, else the ISO 8601 duration."""

    interval: str
    intervalISO: str
    anchor: Time


class TimeRange(Doc):
    from_: Time = msgspec.field(name="from")
    to: Time


EntitlementType = Literal["metered", "static", "boolean"]


class _Entitlement(Doc):
    id: str
    type: EntitlementType
    featureId: str
    featureKey: str
    metadata: dict[str, str]
    annotations: dict[str, Any]
    activeFrom: Time
    activeTo: Time | None
    createdAt: Time
    updatedAt: Time
    deletedAt: Time | None
    usagePeriod: Period | UnsetType = UNSET
    currentUsagePeriod: TimeRange | UnsetType = UNSET
    config: str | UnsetType | None = UNSET  # static: the JSON config, as text
    # metered only:
    isSoftLimit: bool | UnsetType = UNSET
    issueAfterReset: float | UnsetType | None = UNSET
    issueAfterResetPriority: int | UnsetType | None = UNSET
    preserveOverageAtReset: bool | UnsetType = UNSET
    measureUsageFrom: Time | UnsetType | None = UNSET
    lastReset: Time | UnsetType | None = UNSET


class Entitlement(_Entitlement, kw_only=True):
    """An entitlement as the v1 (subject-scoped) routes show it."""

    subjectKey: str
    isUnlimited: bool | UnsetType = UNSET  # metered only


class Issue(Doc):
    amount: float
    priority: int | None


class EntitlementV2(_Entitlement, kw_only=True):
    """An entitlement as the v2 (customer-scoped) routes show it."""

    customerId: str
    customerKey: str | None
    issue: Issue | UnsetType = UNSET  # metered, when it issues a grant after each reset


class Expiration(Doc):
    duration: str
    count: int


class Grant(Doc):
    id: str
    entitlementId: str
    amount: float
    priority: int
    effectiveAt: Time
    expiration: Expiration | None
    expiresAt: Time | None
    maxRolloverAmount: float
    minRolloverAmount: float
    metadata: dict[str, str]
    annotations: dict[str, Any]
    createdAt: Time
    updatedAt: Time
    deletedAt: Time | None
    voidedAt: Time | None
    recurrence: Period | UnsetType = UNSET
    nextRecurrence: Time | UnsetType | None = UNSET


class EntitlementValue(Doc):
    """Balance, usage, overage and totalAvailableGrantAmount for metered entitlements; config for static ones."""

    hasAccess: bool
    balance: float | UnsetType = UNSET
    usage: float | UnsetType = UNSET
    overage: float | UnsetType = UNSET
    totalAvailableGrantAmount: float | UnsetType = UNSET
    config: str | UnsetType = UNSET


class EntitlementValueV2(EntitlementValue, kw_only=True):
    """The v2 value adds each active grant's balance (metered entitlements)."""

    grantBalances: dict[str, float] | UnsetType = UNSET


class CustomerAccess(Doc):
    """Every entitlement value of a customer, by feature key."""

    entitlements: dict[str, EntitlementValue]


class WindowedUsage(Doc):
    period: TimeRange
    usage: float
    balanceAtStart: float


class GrantUsage(Doc):
    grantId: str
    usage: float


class BurndownSegment(Doc):
    period: TimeRange
    usage: float
    overage: float
    balanceAtStart: float
    grantBalancesAtStart: dict[str, float]
    balanceAtEnd: float
    grantBalancesAtEnd: dict[str, float]
    grantUsages: list[GrantUsage]


class EntitlementHistory(Doc):
    windowedHistory: list[WindowedUsage]
    burndownHistory: list[BurndownSegment]


# -- notifications -------------------------------------------------------------------------------------------


class ChannelRef(Doc):
    id: str
    type: Literal["WEBHOOK"]


class Channel(Doc):
    id: str
    type: Literal["WEBHOOK"]
    name: str
    url: str
    disabled: bool
    signingSecret: str
    customHeaders: dict[str, str]
    metadata: dict[str, str]
    createdAt: Time
    updatedAt: Time
    deletedAt: Time | UnsetType = UNSET


class Threshold(Doc):
    value: float
    type: str


class FeatureRef(Doc):
    """{id, key} of a known feature; just {id: what the rule names} when the feature is unknown."""

    id: str
    key: str | UnsetType = UNSET


class Rule(Doc):
    id: str
    type: str
    name: str
    disabled: bool
    channels: list[ChannelRef]
    metadata: dict[str, str]
    createdAt: Time
    updatedAt: Time
    thresholds: list[Threshold] | UnsetType = UNSET  # balance threshold rules
    features: list[FeatureRef] | UnsetType = UNSET  # left out when the rule covers every feature
    deletedAt: Time | UnsetType = UNSET


DeliveryState = Literal["PENDING", "SENDING", "SUCCESS", "FAILED", "RESENDING"]


class AttemptResponse(Doc):
    body: str
    durationMs: int
    statusCode: int | UnsetType = UNSET
    url: str | UnsetType = UNSET


class Attempt(Doc):
    state: DeliveryState
    timestamp: Time
    response: AttemptResponse


class Delivery(Doc):
    state: DeliveryState
    reason: str
    updatedAt: Time
    channel: ChannelRef
    attempts: list[Attempt]
    nextAttempt: Time | UnsetType = UNSET


class NotificationEvent(Doc):
    id: str
    type: str
    createdAt: Time
    rule: Rule
    deliveryStatus: list[Delivery]
    payload: dict[str, Any]  # the exact JSON body sent to the channels
    annotations: dict[str, Any] | UnsetType = UNSET
