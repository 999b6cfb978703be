"""Entitlement rules: creating, overriding and deleting entitlements, issuing and voiding grants, resets.
Values and history are computed by meterd.entitlements.balance."""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import isodate

from meterd.core.errors import ConflictError, NotFoundError, Problem, ProblemCollector, ValidationError
from meterd.core.ids import new_ulid
from meterd.core.timeutil import ceil_minute, floor_minute, utcnow
from meterd.credit.periods import Interval, ManualReset, period_at
from meterd.customers.model import Customer
from meterd.customers.service import CustomerInput, CustomerService
from meterd.entitlements.features import FeatureService
from meterd.entitlements.model import Entitlement, EntitlementType, Feature, GrantRecord, ResetRecord
from meterd.entitlements.store import EntitlementStore, GrantStore, ResetStore
from meterd.meters.model import Aggregation, Meter

METERED_AGGREGATIONS = frozenset({Aggregation.SUM, Aggregation.COUNT, Aggregation.UNIQUE_COUNT})
EXPIRATION_UNITS = {"HOUR": "PT{}H", "DAY": "P{}D", "WEEK": "P{}W", "MONTH": "P{}M", "YEAR": "P{}Y"}
MAX_AMOUNT = Decimal("1e15")


@dataclass
class GrantInput:
    amount: Decimal
    effective_at: datetime
    priority: int = 1
    expiration: dict[str, Any] | None = None  # {"duration": "DAY", "count": 30}
    min_rollover: Decimal | None = None
    max_rollover: Decimal | None = None
    recurrence_interval: str | None = None
    recurrence_anchor: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)


@dataclass
class EntitlementInput:
    type: str
    feature_key: str | None = None
    feature_id: str | None = None
    usage_period_interval: str | None = None
    usage_period_anchor: datetime | None = None
    measure_usage_from: str | datetime | None = None  # CURRENT_PERIOD_START | NOW | a time
    is_soft_limit: bool = False
    issue_after_reset: Decimal | None = None
    issue_after_reset_priority: int | None = None
    preserve_overage_at_reset: bool = False
    config: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    grants: list[GrantInput] = field(default_factory=list)  # v2: issued with the entitlement
    v2_grants: bool = False  # v2 defaults: maxRolloverAmount = amount, expiration optional


@dataclass
class ResetInput:
    effective_at: datetime | None = None
    retain_anchor: bool = False
    preserve_overage: bool | None = None


class EntitlementService:
    def __init__(
        self,
        entitlements: EntitlementStore,
        grants: GrantStore,
        resets: ResetStore,
        features: FeatureService,
        customers: CustomerService,
        meters: Callable[[str, str], Meter],
    ) -> None:
        self._entitlements = entitlements
        self._grants = grants
        self._resets = resets
        self.features = features
        self.customers = customers
        self._meter = meters
        # told (namespace, entitlement id, earliest time whose state changed) after every change
        self.changed: list[Callable[[str, str, datetime | None], None]] = []
        self.reset_hooks: list[Callable[[Entitlement], None]] = []  # after a manual reset

    # -- owners --------------------------------------------------------------------------------------

    def customer(self, namespace: str, id_or_key: str) -> Customer:
        return self.customers.get(namespace, id_or_key)

    def customer_for_subject(self, namespace: str, subject: str, create: bool = False) -> Customer:
        """The v1 subject-scoped API: the customer the subject's usage is attributed to. Creating an
        entitlement for a subject that no customer owns creates that customer (key = subject)."""
        found = self.customers.by_subject(namespace, subject)
        if found is not None:
            return found
        if not create:
            raise NotFoundError(f"no customer is attributed subject {subject!r}")
        try:
            return self.customers.create(namespace, CustomerInput(name=subject, key=subject, subject_keys=[subject]))
        except ConflictError:  # created concurrently
            found = self.customers.by_subject(namespace, subject)
            if found is None:
                raise
            return found

    # -- entitlements --------------------------------------------------------------------------------

    def _build(self, namespace: str, customer: Customer, data: EntitlementInput) -> Entitlement:
        """A checked, not yet stored entitlement (create and override store it)."""
        problems = ProblemCollector()
        try:
            kind = EntitlementType(data.type)
        except ValueError:
            raise ValidationError(Problem("type", "must be one of metered, boolean, static")) from None
        if not data.feature_key and not data.feature_id:
            raise ValidationError(Problem("featureKey", "featureKey or featureId is required", "required"))
        feature = self.features.get(namespace, data.feature_id or data.feature_key or "", include_archived=False)
        if data.feature_key and data.feature_id and feature.key != data.feature_key:
            problems.add("featureKey", "featureKey and featureId name different features")
        now = utcnow()
        now_minute = floor_minute(now)
        values: dict[str, Any] = {}
        if kind is EntitlementType.METERED:
            values = self._metered_terms(namespace, feature, data, now_minute, problems)
        else:
            if data.usage_period_interval is not None:
                values = self._period(data, now_minute, problems)
            if kind is EntitlementType.STATIC:
                self._check_config(data.config, problems)
        problems.raise_if_any()
        subjects = customer.attributed_subjects()
        entitlement = Entitlement(
            id=new_ulid(),
            namespace=namespace,
            type=kind,
            feature_id=feature.id,
            feature_key=feature.key,
            customer_id=customer.id,
            subject_key=subjects[0] if subjects else customer.id,
            active_from=now,
            created_at=now,
            updated_at=now,
            config=data.config if kind is EntitlementType.STATIC else None,
            metadata=dict(data.metadata),
            **values,
        )
        return entitlement

    def _insert(self, entitlement: Entitlement, data: EntitlementInput, replaces: Entitlement | None = None) -> None:
        """Store a checked entitlement with its default and inline grants (create and override)."""
        grants = [self._grant_record(entitlement, g, data.v2_grants, f"grants[{i}]") for i, g in enumerate(data.grants)]
        if entitlement.issue_after_reset is not None:
            grants.append(self._issue_after_reset_grant(entitlement))
        self._entitlements.insert(entitlement, replaces=replaces)
        self._grants.insert(grants)
        if replaces is not None:
            self._notify(replaces, None)
        self._notify(entitlement, None)

    def add(self, namespace: str, customer: Customer, data: EntitlementInput) -> Entitlement:
        entitlement = self._build(namespace, customer, data)
        if self._entitlements.live_for(namespace, customer.id, entitlement.feature_id) is not None:
            raise ConflictError(f"the customer already has an active entitlement for feature {entitlement.feature_key}")
        self._insert(entitlement, data)
        return entitlement

    def override(self, namespace: str, customer: Customer, id_or_feature: str, data: EntitlementInput) -> Entitlement:
        """Replace the live entitlement with a new one for the same feature (OpenMeter: 400 "Feature in path
        and body do not match"); a deleted one cannot be overridden."""
        current = self.get_for(namespace, customer, id_or_feature)
        if current.deleted_at is not None:
            raise NotFoundError(f"entitlement not found: {id_or_feature} (deleted)")
        entitlement = self._build(namespace, customer, data)
        if entitlement.feature_id != current.feature_id:
            raise ValidationError(
                Problem("featureKey", f"must be the overridden entitlement's feature ({current.feature_key})")
            )
        self._insert(entitlement, data, replaces=current)
        return entitlement

    def _metered_terms(
        self, namespace: str, feature: Feature, data: EntitlementInput, now: datetime, problems: ProblemCollector
    ) -> dict[str, Any]:
        if feature.meter_slug is None:
            problems.add("featureKey", f"feature {feature.key} has no meter; a metered entitlement needs one")
        else:
            meter = self._meter(namespace, feature.meter_slug)
            if meter.aggregation not in METERED_AGGREGATIONS:
                problems.add(
                    "featureKey",
                    f"meter {meter.slug} aggregates with {meter.aggregation}; metered entitlements need SUM, COUNT "
                    "or UNIQUE_COUNT",
                )
        if data.usage_period_interval is None:
            problems.add("usagePeriod", "a metered entitlement needs a usage period", "required")
            return {}
        measure = data.measure_usage_from
        anchor_default = floor_minute(measure) if isinstance(measure, datetime) else now
        values = self._period(data, anchor_default, problems)
        if "usage_period_anchor" not in values:
            return {}
        interval = Interval.parse(values["usage_period_interval"])
        if measure is None or measure == "NOW":
            start = now
        elif measure == "CURRENT_PERIOD_START":
            start = period_at(interval, values["usage_period_anchor"], [], now)[0]
        elif isinstance(measure, datetime):
            start = floor_minute(measure)
        else:
            problems.add("measureUsageFrom", "must be CURRENT_PERIOD_START, NOW or an RFC 3339 time")
            start = now
        if data.issue_after_reset is not None:
            _check_amount("issueAfterReset", data.issue_after_reset, problems)
        priority = data.issue_after_reset_priority
        if priority is not None and not 1 <= priority <= 255:
            problems.add("issueAfterResetPriority", "must be between 1 and 255")
        return {
            **values,
            "measure_usage_from": start,
            "is_soft_limit": data.is_soft_limit,
            "issue_after_reset": data.issue_after_reset,
            "issue_after_reset_priority": (priority or 1) if data.issue_after_reset is not None else None,
            "preserve_overage_at_reset": data.preserve_overage_at_reset,
        }

    @staticmethod
    def _period(data: EntitlementInput, now: datetime, problems: ProblemCollector) -> dict[str, Any]:
        try:
            interval = Interval.parse(data.usage_period_interval or "")
        except ValueError as exc:
            problems.add("usagePeriod.interval", str(exc))
            return {}
        if not _at_least_an_hour(interval):
            problems.add("usagePeriod.interval", "must be at least 1 hour (PT1H)")
            return {}
        anchor = floor_minute(data.usage_period_anchor) if data.usage_period_anchor is not None else now
        return {"usage_period_interval": interval.iso, "usage_period_anchor": anchor}

    @staticmethod
    def _check_config(config: str | None, problems: ProblemCollector) -> None:
        if config is None:
            problems.add("config", "a static entitlement needs a config", "required")
            return
        try:
            parsed = json.loads(config)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            problems.add("config", "must be a JSON object encoded as a string")

    def get(self, namespace: str, entitlement_id: str) -> Entitlement:
        entitlement = self._entitlements.get(namespace, entitlement_id)
        if entitlement is None:
            raise NotFoundError(f"entitlement not found: {entitlement_id}")
        return entitlement

    def get_for(self, namespace: str, customer: Customer, id_or_feature: str) -> Entitlement:
        """The customer's entitlement by id, or its live entitlement for a feature id or key."""
        entitlement = self._entitlements.get(namespace, id_or_feature)
        if entitlement is not None and entitlement.customer_id == customer.id:
            return entitlement
        entitlement = self._entitlements.live_for(namespace, customer.id, id_or_feature)
        if entitlement is None:
            raise NotFoundError(f"entitlement not found: {id_or_feature}")
        return entitlement

    def list(self, namespace: str, **filters: Any) -> tuple[builtins.list[Entitlement], int]:
        return self._entitlements.list(namespace, **filters)

    def all_live(self) -> builtins.list[Entitlement]:
        return self._entitlements.list(None, limit=10_000_000)[0]

    def delete(self, namespace: str, customer: Customer, id_or_feature: str) -> None:
        entitlement = self.get_for(namespace, customer, id_or_feature)
        if entitlement.deleted_at is not None:
            raise NotFoundError(f"entitlement not found: {id_or_feature}")
        self._entitlements.delete(entitlement, utcnow())
        self._notify(entitlement, None)

    # -- grants --------------------------------------------------------------------------------------

    def add_grant(self, entitlement: Entitlement, data: GrantInput, v2: bool) -> GrantRecord:
        if entitlement.type is not EntitlementType.METERED:
            raise ValidationError("grants can only be issued to metered entitlements")
        if entitlement.deleted_at is not None:
            raise NotFoundError(f"entitlement not found: {entitlement.id}")
        record = self._grant_record(entitlement, data, v2, "")
        self._grants.insert([record])
        self._notify(entitlement, record.effective_at)
        return record

    def _grant_record(self, entitlement: Entitlement, data: GrantInput, v2: bool, where: str) -> GrantRecord:
        problems = ProblemCollector()
        prefix = f"{where}." if where else ""
        _check_amount(f"{prefix}amount", data.amount, problems)
        if not 1 <= data.priority <= 255:
            problems.add(f"{prefix}priority", "must be between 1 and 255")
        effective = ceil_minute(data.effective_at)
        expires_at = None
        if data.expiration is None:
            if not v2:
                problems.add(f"{prefix}expiration", "a grant needs an expiration", "required")
        else:
            expires_at = self._expires_at(effective, data.expiration, f"{prefix}expiration", problems)
        max_rollover = data.max_rollover if data.max_rollover is not None else (data.amount if v2 else Decimal(0))
        min_rollover = data.min_rollover if data.min_rollover is not None else Decimal(0)
        _check_amount(f"{prefix}maxRolloverAmount", max_rollover, problems)
        _check_amount(f"{prefix}minRolloverAmount", min_rollover, problems)
        if min_rollover > max_rollover:
            problems.add(f"{prefix}minRolloverAmount", "must not be greater than maxRolloverAmount")
        interval = None
        if data.recurrence_interval is not None:
            try:
                parsed = Interval.parse(data.recurrence_interval)
                interval = parsed.iso
            except ValueError as exc:
                problems.add(f"{prefix}recurrence.interval", str(exc))
            else:
                if not _at_least_an_hour(parsed):  # a refill every minute for months is a segment a minute
                    problems.add(f"{prefix}recurrence.interval", "must be at least 1 hour (PT1H)")
        problems.raise_if_any()
        now = utcnow()
        anchor = floor_minute(data.recurrence_anchor) if data.recurrence_anchor is not None else effective
        return GrantRecord(
            id=new_ulid(),
            namespace=entitlement.namespace,
            entitlement_id=entitlement.id,
            amount=data.amount,
            priority=data.priority,
            effective_at=effective,
            created_at=now,
            updated_at=now,
            min_rollover=min_rollover,
            max_rollover=max_rollover,
            expiration=data.expiration,
            expires_at=expires_at,
            recurrence_interval=interval,
            recurrence_anchor=anchor if interval is not None else None,
            metadata=dict(data.metadata),
            annotations=dict(data.annotations),
        )

    @staticmethod
    def _expires_at(
        effective: datetime, expiration: dict[str, Any], where: str, problems: ProblemCollector
    ) -> datetime | None:
        duration, count = expiration.get("duration"), expiration.get("count")
        if duration not in EXPIRATION_UNITS:
            problems.add(f"{where}.duration", "must be one of HOUR, DAY, WEEK, MONTH, YEAR")
            return None
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
            problems.add(f"{where}.count", "must be an integer between 1 and 1000")
            return None
        result: datetime = effective + isodate.parse_duration(EXPIRATION_UNITS[duration].format(count))
        return result

    def _issue_after_reset_grant(self, entitlement: Entitlement) -> GrantRecord:
        """issueAfterReset: a grant refilled to its amount at every reset (min = max rollover = amount)."""
        amount = entitlement.issue_after_reset
        assert amount is not None and entitlement.measure_usage_from is not None
        return GrantRecord(
            id=new_ulid(),
            namespace=entitlement.namespace,
            entitlement_id=entitlement.id,
            amount=amount,
            priority=entitlement.issue_after_reset_priority or 1,
            effective_at=entitlement.measure_usage_from,
            created_at=entitlement.created_at,
            updated_at=entitlement.created_at,
            min_rollover=amount,
            max_rollover=amount,
            annotations={"issueAfterReset": True},
        )

    def grants(self, entitlement: Entitlement, include_deleted: bool = False) -> builtins.list[GrantRecord]:
        return self._grants.list(
            entitlement.namespace, entitlement_ids=[entitlement.id], include_deleted=include_deleted, limit=100_000
        )[0]

    @staticmethod
    def next_recurrence(record: GrantRecord) -> datetime | None:
        if record.recurrence_interval is None or record.recurrence_anchor is None:
            return None
        interval = Interval.parse(record.recurrence_interval)
        return period_at(interval, record.recurrence_anchor, [], max(utcnow(), record.effective_at))[1]

    def list_grants(self, namespace: str, **filters: Any) -> tuple[builtins.list[GrantRecord], int]:
        return self._grants.list(namespace, **filters)

    def void_grant(self, namespace: str, grant_id: str, at: datetime | None = None) -> None:
        """Void from `at` (default now; the start of its minute): usage before it stays burnt from the grant."""
        record = self._grants.get(namespace, grant_id)
        if record is None or record.deleted_at is not None:
            raise NotFoundError(f"grant not found: {grant_id}")
        if record.voided_at is not None:
            raise ConflictError(f"grant {grant_id} is already voided")
        now = utcnow()
        if at is not None and at > now:
            raise ValidationError(Problem("at", "a grant cannot be voided in the future"))
        at = floor_minute(at if at is not None else now)
        self._grants.void(record, at, now)
        entitlement = self._entitlements.get(namespace, record.entitlement_id)
        if entitlement is not None:
            self._notify(entitlement, at)

    # -- resets --------------------------------------------------------------------------------------

    def resets(self, entitlement: Entitlement) -> builtins.list[ResetRecord]:
        return self._resets.for_entitlements([entitlement.id])[entitlement.id]

    def reset(self, entitlement: Entitlement, data: ResetInput) -> ResetRecord:
        if entitlement.type is not EntitlementType.METERED:
            raise ValidationError("only metered entitlements can be reset")
        if entitlement.deleted_at is not None:
            raise NotFoundError(f"entitlement not found: {entitlement.id}")
        now = utcnow()
        at = floor_minute(data.effective_at if data.effective_at is not None else now)
        if at > now:
            raise ValidationError(Problem("effectiveAt", "a reset cannot be in the future"))
        assert entitlement.measure_usage_from is not None
        if at <= entitlement.measure_usage_from:
            raise ValidationError(
                Problem("effectiveAt", "a reset must be after the entitlement started measuring usage")
            )
        previous = self.resets(entitlement)
        if previous and at <= previous[-1].reset_at:
            raise ConflictError("effectiveAt: a reset must be after the last reset")
        preserve = data.preserve_overage
        record = ResetRecord(
            id=new_ulid(),
            namespace=entitlement.namespace,
            entitlement_id=entitlement.id,
            reset_at=at,
            retain_anchor=data.retain_anchor,
            preserve_overage=entitlement.preserve_overage_at_reset if preserve is None else preserve,
            created_at=now,
        )
        self._resets.insert(record)
        self._notify(entitlement, at, reset=True)
        return record

    def manual_resets(self, entitlement: Entitlement) -> builtins.list[ManualReset]:
        return [ManualReset(r.reset_at, r.retain_anchor, r.preserve_overage) for r in self.resets(entitlement)]

    def current_period(self, entitlement: Entitlement, at: datetime | None = None) -> tuple[datetime, datetime] | None:
        if entitlement.usage_period_interval is None or entitlement.usage_period_anchor is None:
            return None
        interval = Interval.parse(entitlement.usage_period_interval)
        return period_at(interval, entitlement.usage_period_anchor, self.manual_resets(entitlement), at or utcnow())

    def _notify(self, entitlement: Entitlement, since: datetime | None, reset: bool = False) -> None:
        for listener in self.changed:
            listener(entitlement.namespace, entitlement.id, since)
        if reset:
            for hook in self.reset_hooks:
                hook(entitlement)


def _at_least_an_hour(interval: Interval) -> bool:
    """OpenMeter's rule for usage periods: shorter ones make the engine replay a period per minute."""
    return bool(interval.months or interval.days or interval.seconds >= 3600)


def _check_amount(where: str, amount: Decimal, problems: ProblemCollector) -> None:
    if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
        problems.add(where, "must be a number between 0 and 1e15")
