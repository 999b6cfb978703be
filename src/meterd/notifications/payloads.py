"""Event payloads (`{id, type, timestamp, data}`) as the exact JSON that is stored, signed and sent, the
dedupe hashes that make an event fire once, and the sample payloads of rule test events."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from meterd.core.timeutil import format_rfc3339
from meterd.entitlements.snapshot import EntitlementSnapshot
from meterd.notifications.model import BALANCE_THRESHOLD, ENTITLEMENT_RESET, Rule, Threshold

_encoder = msgspec.json.Encoder(decimal_format="number")


def encode(value: Any) -> bytes:
    """JSON with decimals written as exact numbers."""
    return _encoder.encode(value)


def threshold_json(threshold: Threshold) -> dict[str, Any]:
    return {"value": threshold.value, "type": threshold.type}


def _number(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def threshold_dedupe_hash(snapshot: EntitlementSnapshot, rule_id: str, threshold: Threshold) -> str:
    """Same rule, entitlement, feature, subject, usage period, measurement start and threshold = same hash."""
    return _hash(
        "threshold",
        snapshot,
        rule_id,
        threshold.canonical_type,
        _number(threshold.value),
    )


def reset_dedupe_hash(snapshot: EntitlementSnapshot, rule_id: str) -> str:
    """A reset starts a new usage period, so (rule, entitlement, new period) names one reset."""
    return _hash("reset", snapshot, rule_id)


def _hash(kind: str, snapshot: EntitlementSnapshot, rule_id: str, *extra: str) -> str:
    parts = [
        kind,
        rule_id,
        snapshot.namespace,
        snapshot.entitlement_id,
        snapshot.feature_id,
        snapshot.subject_key,
        format_rfc3339(snapshot.period_from),
        format_rfc3339(snapshot.period_to),
        format_rfc3339(snapshot.measure_usage_from),
        *extra,
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"v1_{digest}"


def snapshot_data(snapshot: EntitlementSnapshot, threshold: Threshold | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "entitlement": snapshot.entitlement,
        "feature": snapshot.feature,
        "subject": snapshot.subject,
        "value": snapshot.value,
    }
    if snapshot.customer:
        data["customer"] = snapshot.customer
    if threshold is not None:
        data["threshold"] = threshold_json(threshold)
    return data


def payload(event_id: str, event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    return encode({"id": event_id, "type": event_type, "timestamp": format_rfc3339(created_at), "data": data})


def sample_data(rule: Rule, now: datetime) -> dict[str, Any]:
    """What a rule test sends: a made-up entitlement in the real shapes, so a receiver can be built against it."""
    day = timedelta(days=1)
    start, end = now - day / 2, now + day / 2
    feature = {
        "id": "01J0000000000000000000FEAT",
        "key": "test_feature",
        "name": "Test feature",
        "meterSlug": "test_meter",
        "metadata": {},
        "createdAt": format_rfc3339(now - 30 * day),
        "updatedAt": format_rfc3339(now - 30 * day),
    }
    entitlement = {
        "id": "01J00000000000000000000ENT",
        "type": "metered",
        "featureId": feature["id"],
        "featureKey": feature["key"],
        "subjectKey": "test_subject",
        "customerId": "01J0000000000000000000CVST",
        "isSoftLimit": False,
        "isUnlimited": False,
        "issueAfterReset": Decimal(1000),
        "preserveOverageAtReset": False,
        "usagePeriod": {"interval": "DAY", "intervalISO": "P1D", "anchor": format_rfc3339(start)},
        "currentUsagePeriod": {"from": format_rfc3339(start), "to": format_rfc3339(end)},
        "measureUsageFrom": format_rfc3339(now - 30 * day),
        "lastReset": format_rfc3339(start),
        "metadata": {},
        "createdAt": format_rfc3339(now - 30 * day),
        "updatedAt": format_rfc3339(now - 30 * day),
    }
    data: dict[str, Any] = {
        "entitlement": entitlement,
        "feature": feature,
        "subject": {"key": "test_subject"},
        "customer": {
            "id": entitlement["customerId"],
            "key": "test_customer",
            "name": "Test customer",
            "usageAttribution": {"subjectKeys": ["test_subject"]},
            "metadata": {},
            "createdAt": format_rfc3339(now - 30 * day),
            "updatedAt": format_rfc3339(now - 30 * day),
        },
        "value": {
            "hasAccess": True,
            "balance": Decimal(200),
            "usage": Decimal(800),
            "overage": Decimal(0),
            "totalAvailableGrantAmount": Decimal(1000),
        },
    }
    if rule.type == BALANCE_THRESHOLD:
        first = rule.thresholds[0] if rule.thresholds else Threshold(Decimal(80), "usage_percentage")
        data["threshold"] = threshold_json(first)
    elif rule.type != ENTITLEMENT_RESET:  # pragma: no cover - rules are validated on the way in
        raise ValueError(f"no sample payload for {rule.type}")
    return data
