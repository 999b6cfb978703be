"""Wire shapes of features, entitlements, grants, values and history (OpenMeter's v1 and v2 names)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from meterd.core.errors import Problem, ValidationError
from meterd.core.timeutil import as_utc, from_us, rfc3339_utc
from meterd.credit.engine import Segment
from meterd.credit.periods import Interval
from meterd.customers.model import Customer
from meterd.entitlements.balance import Value, WindowRow
from meterd.entitlements.model import Entitlement, EntitlementType, Feature, GrantRecord
from meterd.entitlements.service import EntitlementInput, GrantInput, ResetInput
from meterd.http.wire import Str256, ts
from meterd.ingest.events import MAX_TIME_US, MIN_TIME_US


class FeatureBody(msgspec.Struct):
    key: str
    name: Str256
    meterSlug: str | None = None
    meterGroupByFilters: dict[str, str] | None = None
    advancedMeterGroupByFilters: dict[str, dict[str, Any]] | None = None
    unitCost: dict[str, Any] | None = None
    metadata: dict[str, str] = {}


class PeriodBody(msgspec.Struct):
    interval: str
    anchor: datetime | None = None


class ExpirationBody(msgspec.Struct):
    duration: str
    count: int


class GrantBody(msgspec.Struct):
    amount: Decimal
    effectiveAt: datetime
    priority: int = 1
    expiration: ExpirationBody | None = None
    maxRolloverAmount: Decimal | None = None
    minRolloverAmount: Decimal | None = None
    recurrence: PeriodBody | None = None
    metadata: dict[str, str] = {}
    annotations: dict[str, Any] = {}


class IssueBody(msgspec.Struct):
    amount: Decimal
    priority: Annotated[int, msgspec.Meta(ge=1, le=255)] | None = None


class EntitlementBody(msgspec.Struct):
    type: str
    featureKey: str | None = None
    featureId: str | None = None
    usagePeriod: PeriodBody | None = None
    measureUsageFrom: str | None = None
    isSoftLimit: bool = False
    isUnlimited: bool = False
    issueAfterReset: Decimal | None = None
    issueAfterResetPriority: int | None = None
    issue: IssueBody | None = None
    preserveOverageAtReset: bool = False
    config: str | None = None
    metadata: dict[str, str] = {}
    grants: list[GrantBody] = []


class ResetBody(msgspec.Struct):
    effectiveAt: datetime | None = None
    retainAnchor: bool = False
    preserveOverage: bool | None = None


EARLIEST, LATEST = from_us(MIN_TIME_US), from_us(MAX_TIME_US)


def in_range(value: datetime, field: str) -> datetime:
    """Times the event store can hold (as events may carry): later ones overflow window and period arithmetic."""
    if not EARLIEST <= value < LATEST:
        raise ValidationError(Problem(field, "must be between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z"))
    return value


def _aware(value: datetime | None, field: str) -> datetime | None:
    """A time with an offset, as UTC (the credit engine and the stores work in UTC)."""
    if value is None:
        return None
    return in_range(as_utc(value, field), field)  # as_utc: a 400 for no offset, or year 0 in UTC


def grant_input(body: GrantBody, where: str = "") -> GrantInput:
    prefix = f"{where}." if where else ""
    effective = _aware(body.effectiveAt, f"{prefix}effectiveAt")
    assert effective is not None
    return GrantInput(
        amount=body.amount,
        effective_at=effective,
        priority=body.priority,
        expiration={"duration": body.expiration.duration, "count": body.expiration.count} if body.expiration else None,
        min_rollover=body.minRolloverAmount,
        max_rollover=body.maxRolloverAmount,
        recurrence_interval=body.recurrence.interval if body.recurrence else None,
        recurrence_anchor=_aware(body.recurrence.anchor, f"{prefix}recurrence.anchor") if body.recurrence else None,
        metadata=body.metadata,
        annotations=body.annotations,
    )


def entitlement_input(body: EntitlementBody, v2: bool) -> EntitlementInput:
    if body.isUnlimited:
        raise ValidationError(Problem("isUnlimited", "unlimited entitlements are not supported; use isSoftLimit"))
    measure: str | datetime | None = body.measureUsageFrom
    if measure is not None and measure not in ("CURRENT_PERIOD_START", "NOW"):
        parsed = rfc3339_utc(str(measure))  # None also for 0001-01-01T00:00:00+01:00 (year 0 in UTC)
        if parsed is None:
            raise ValidationError(
                Problem("measureUsageFrom", "must be CURRENT_PERIOD_START, NOW or an RFC 3339 time with an offset")
            )
        measure = in_range(parsed, "measureUsageFrom")
    issue_amount, issue_priority = body.issueAfterReset, body.issueAfterResetPriority
    if body.issue is not None:
        issue_amount, issue_priority = body.issue.amount, body.issue.priority or issue_priority
    period = body.usagePeriod
    return EntitlementInput(
        type=body.type,
        feature_key=body.featureKey,
        feature_id=body.featureId,
        usage_period_interval=period.interval if period else None,
        usage_period_anchor=_aware(period.anchor, "usagePeriod.anchor") if period else None,
        measure_usage_from=measure,
        is_soft_limit=body.isSoftLimit,
        issue_after_reset=issue_amount,
        issue_after_reset_priority=issue_priority,
        preserve_overage_at_reset=body.preserveOverageAtReset,
        config=body.config,
        metadata=body.metadata,
        grants=[grant_input(g, f"grants[{i}]") for i, g in enumerate(body.grants)],
        v2_grants=v2,
    )


def reset_input(body: ResetBody) -> ResetInput:
    return ResetInput(
        effective_at=_aware(body.effectiveAt, "effectiveAt"),
        retain_anchor=body.retainAnchor,
        preserve_overage=body.preserveOverage,
    )


# -- responses ---------------------------------------------------------------------------------------

_NAMED = {"P1D": "DAY", "P1W": "WEEK", "P1M": "MONTH", "P1Y": "YEAR"}


def period_json(interval: str, anchor: datetime) -> dict[str, Any]:
    iso = Interval.parse(interval).iso
    return {"interval": _NAMED.get(iso, iso), "intervalISO": iso, "anchor": ts(anchor)}


def feature_json(f: Feature) -> dict[str, Any]:
    return {
        "id": f.id,
        "key": f.key,
        "name": f.name,
        "metadata": f.metadata,
        "meterSlug": f.meter_slug,
        "meterGroupByFilters": f.meter_group_by_filters,
        "advancedMeterGroupByFilters": f.advanced_filters,
        "unitCost": f.unit_cost,
        "createdAt": ts(f.created_at),
        "updatedAt": ts(f.updated_at),
        "deletedAt": None,
        "archivedAt": ts(f.archived_at),
    }


def entitlement_json(
    e: Entitlement, customer: Customer | None, period: tuple[datetime, datetime] | None, v2: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "type": e.type.value,
        "featureId": e.feature_id,
        "featureKey": e.feature_key,
        "metadata": e.metadata,
        "annotations": e.annotations,
        "activeFrom": ts(e.active_from),
        "activeTo": ts(e.active_to),
        "createdAt": ts(e.created_at),
        "updatedAt": ts(e.updated_at),
        "deletedAt": ts(e.deleted_at),
    }
    if v2:
        out["customerId"] = e.customer_id
        out["customerKey"] = customer.key if customer is not None else None
    else:
        out["subjectKey"] = e.subject_key
    if e.usage_period_interval is not None and e.usage_period_anchor is not None:
        out["usagePeriod"] = period_json(e.usage_period_interval, e.usage_period_anchor)
        if period is not None:
            out["currentUsagePeriod"] = {"from": ts(period[0]), "to": ts(period[1])}
    if e.type is EntitlementType.STATIC:
        out["config"] = e.config
    if e.type is EntitlementType.METERED:
        out.update(
            isSoftLimit=e.is_soft_limit,
            issueAfterReset=e.issue_after_reset,
            issueAfterResetPriority=e.issue_after_reset_priority,
            preserveOverageAtReset=e.preserve_overage_at_reset,
            measureUsageFrom=ts(e.measure_usage_from),
            lastReset=ts(period[0]) if period is not None else ts(e.measure_usage_from),
        )
        if v2:
            if e.issue_after_reset is not None:
                out["issue"] = {"amount": e.issue_after_reset, "priority": e.issue_after_reset_priority}
        else:
            out["isUnlimited"] = False
    return out


def grant_json(g: GrantRecord, next_recurrence: datetime | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": g.id,
        "entitlementId": g.entitlement_id,
        "amount": g.amount,
        "priority": g.priority,
        "effectiveAt": ts(g.effective_at),
        "expiration": g.expiration,
        "expiresAt": ts(g.expires_at),
        "maxRolloverAmount": g.max_rollover,
        "minRolloverAmount": g.min_rollover,
        "metadata": g.metadata,
        "annotations": g.annotations,
        "createdAt": ts(g.created_at),
        "updatedAt": ts(g.updated_at),
        "deletedAt": ts(g.deleted_at),
        "voidedAt": ts(g.voided_at),
    }
    if g.recurrence_interval is not None and g.recurrence_anchor is not None:
        out["recurrence"] = period_json(g.recurrence_interval, g.recurrence_anchor)
        out["nextRecurrence"] = ts(next_recurrence)
    return out


def value_json(v: Value, v2: bool = False) -> dict[str, Any]:
    """EntitlementValue; v2 (EntitlementValueV2) adds each active grant's balance, as OpenMeter does."""
    out: dict[str, Any] = {"hasAccess": v.has_access}
    if v.balance is not None:
        out.update(
            balance=plain(v.balance),
            usage=plain(v.usage),
            overage=plain(v.overage),
            totalAvailableGrantAmount=plain(v.total_available),
        )
        if v2 and v.grant_balances is not None:
            out["grantBalances"] = _balances(v.grant_balances)
    if v.config is not None:
        out["config"] = v.config
    return out


def plain(value: Decimal | None) -> Decimal | None:
    """A decimal as people write it: 1000 rather than 1000.00000000000000 or 1E+3, 0 rather than 0E-14."""
    if value is None:
        return None
    if value == value.to_integral_value():
        return Decimal(int(value))
    return value.normalize()


def _balances(balances: Any) -> dict[str, Decimal | None]:
    return {k: plain(Decimal(v)) for k, v in balances.items()}


def history_json(windows: list[WindowRow], segments: tuple[Segment, ...]) -> dict[str, Any]:
    return {
        "windowedHistory": [
            {
                "period": {"from": ts(w.start), "to": ts(w.end)},
                "usage": plain(w.usage),
                "balanceAtStart": plain(w.balance_at_start),
            }
            for w in windows
        ],
        "burndownHistory": [
            {
                "period": {"from": ts(s.start), "to": ts(s.end)},
                "usage": plain(s.usage),
                "overage": plain(s.overage),
                "balanceAtStart": plain(s.balance_at_start),
                "grantBalancesAtStart": _balances(s.balances_at_start),
                "balanceAtEnd": plain(s.balance_at_end),
                "grantBalancesAtEnd": _balances(s.balances_at_end),
                "grantUsages": [{"grantId": u.grant_id, "usage": plain(u.usage)} for u in s.grant_usages],
            }
            for s in segments
        ],
    }
