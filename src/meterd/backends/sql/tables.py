"""Metadata tables (SQLAlchemy Core), one schema for SQLite (embedded) and PostgreSQL (cluster).
Soft-deleted rows keep their keys; uniqueness holds among live rows only (partial unique indexes)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DecimalText(TypeDecorator[Decimal]):
    """Exact decimals on every database: kept as their canonical text (SQLite has no exact NUMERIC)."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"not a finite Decimal: {value!r}")
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


metadata = MetaData()
_live = text("deleted_at IS NULL")

meters = Table(
    "meters",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("slug", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("description", Text),
    Column("aggregation", String(16), nullable=False),
    Column("event_type", Text, nullable=False),
    Column("value_property", Text),
    Column("group_by", JSON, nullable=False),
    Column("event_from", UTCDateTime),
    Column("metadata", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Index("meters_slug_live", "namespace", "slug", unique=True, sqlite_where=_live, postgresql_where=_live),
)

customers = Table(
    "customers",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("key", String(256)),
    Column("name", String(256), nullable=False),
    Column("subject_keys", JSON, nullable=False),  # as given; customer_subjects indexes key + these
    Column("description", Text),
    Column("primary_email", String(256)),
    Column("currency", String(3)),
    Column("billing_address", JSON),
    Column("metadata", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Index("customers_key_live", "namespace", "key", unique=True, sqlite_where=_live, postgresql_where=_live),
)

customer_subjects = Table(
    "customer_subjects",
    metadata,
    Column("namespace", String(64), primary_key=True),
    Column("subject_key", String(256), primary_key=True),
    Column("customer_id", String(26), ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
    Index("customer_subjects_customer", "customer_id"),
)

subjects = Table(
    "subjects",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("key", String(256), nullable=False),
    Column("display_name", String(256)),
    Column("metadata", JSON),
    Column("stripe_customer_id", String(256)),
    Column("current_period_start", UTCDateTime),
    Column("current_period_end", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("subjects_key", "namespace", "key", unique=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)


# -- features, entitlements, grants (issue 4) --------------------------------------------------------------
_active = text("archived_at IS NULL")

features = Table(
    "features",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("key", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("meter_slug", String(64)),
    Column("meter_group_by_filters", JSON),  # {key: value}
    Column("advanced_filters", JSON),  # {key: FilterString}
    Column("unit_cost", JSON),
    Column("metadata", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("archived_at", UTCDateTime),
    Index("features_key_active", "namespace", "key", unique=True, sqlite_where=_active, postgresql_where=_active),
    Index("features_meter", "namespace", "meter_slug"),
)

entitlements = Table(
    "entitlements",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("type", String(16), nullable=False),  # metered | boolean | static
    Column("feature_id", String(26), ForeignKey("features.id"), nullable=False),
    Column("feature_key", String(64), nullable=False),
    Column("customer_id", String(26), ForeignKey("customers.id"), nullable=False),
    Column("subject_key", String(256), nullable=False),  # the v1 API's subjectKey
    Column("measure_usage_from", UTCDateTime),
    Column("usage_period_interval", String(64)),  # ISO 8601 duration
    Column("usage_period_anchor", UTCDateTime),
    Column("is_soft_limit", Boolean, nullable=False, default=False),
    Column("issue_after_reset", DecimalText),
    Column("issue_after_reset_priority", Integer),
    Column("preserve_overage_at_reset", Boolean, nullable=False, default=False),
    Column("config", Text),  # static entitlements: a JSON object as text
    Column("metadata", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("active_from", UTCDateTime, nullable=False),
    Column("active_to", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Index(
        "entitlements_customer_feature_live",
        "namespace",
        "customer_id",
        "feature_id",
        unique=True,
        sqlite_where=_live,
        postgresql_where=_live,
    ),
    Index("entitlements_feature", "namespace", "feature_id"),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("entitlement_id", String(26), ForeignKey("entitlements.id"), nullable=False),
    Column("amount", DecimalText, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("effective_at", UTCDateTime, nullable=False),
    Column("expiration", JSON),  # {"duration": "DAY", "count": 30}
    Column("expires_at", UTCDateTime),
    Column("min_rollover", DecimalText, nullable=False),
    Column("max_rollover", DecimalText, nullable=False),
    Column("recurrence_interval", String(64)),
    Column("recurrence_anchor", UTCDateTime),
    Column("metadata", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("voided_at", UTCDateTime),
    Column("deleted_at", UTCDateTime),
    Index("grants_entitlement", "entitlement_id"),
)

entitlement_resets = Table(
    "entitlement_resets",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("entitlement_id", String(26), ForeignKey("entitlements.id"), nullable=False),
    Column("reset_at", UTCDateTime, nullable=False),
    Column("retain_anchor", Boolean, nullable=False),
    Column("preserve_overage", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("entitlement_resets_at", "entitlement_id", "reset_at"),
)

# The engine's state at a period start, so a value read need not replay every past period. Deleted (from a
# time on) when a backdated grant, reset or late event changes what happened after that time.
balance_snapshots = Table(
    "balance_snapshots",
    metadata,
    Column("entitlement_id", String(26), ForeignKey("entitlements.id"), primary_key=True),
    Column("at", UTCDateTime, primary_key=True),
    Column("period_start", UTCDateTime, nullable=False),
    Column("balances", JSON, nullable=False),  # {grant id: decimal text}
    Column("overage", DecimalText, nullable=False),
    Column("usage", DecimalText, nullable=False),
    Column("grant_usage", DecimalText, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)


# -- notifications: channels, rules, events and the webhook delivery outbox ----------------------------------
notification_channels = Table(
    "notification_channels",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("type", String(16), nullable=False),  # WEBHOOK
    Column("name", String(256), nullable=False),
    Column("url", Text, nullable=False),
    Column("custom_headers", JSON, nullable=False),
    Column("signing_secret", String(128), nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Index("notification_channels_namespace", "namespace"),
)

notification_rules = Table(
    "notification_rules",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("channels", JSON, nullable=False),  # [channel id]
    Column("features", JSON, nullable=False),  # [feature id or key], empty = every feature
    Column("thresholds", JSON, nullable=False),  # [{value: decimal text, type}]
    Column("metadata", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Index("notification_rules_namespace", "namespace"),
)

# An event's payload is kept as the exact JSON text that is signed and sent (numbers stay as written).
# The dedupe hash makes "once per threshold and usage period" hold across processes and crashes.
notification_events = Table(
    "notification_events",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("rule_id", String(26), ForeignKey("notification_rules.id"), nullable=False),
    Column("payload", Text, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("dedupe_hash", String(80)),
    Column("entitlement_id", String(26)),
    Column("feature_id", String(26)),
    Column("feature_key", String(64)),
    Column("subject_key", String(256)),
    Column("customer_id", String(26)),
    Column("created_at", UTCDateTime, nullable=False),
    Index("notification_events_dedupe", "namespace", "dedupe_hash", unique=True),
    Index("notification_events_created", "namespace", "created_at"),
    Index("notification_events_rule", "rule_id"),
)

# The outbox: one row per (event, channel). Due rows have next_attempt_at <= now; a claimed row's
# next_attempt_at is its lease expiry, so a claim whose process died is retried once the lease runs out.
notification_deliveries = Table(
    "notification_deliveries",
    metadata,
    Column("event_id", String(26), ForeignKey("notification_events.id"), primary_key=True),
    Column("channel_id", String(26), primary_key=True),
    Column("namespace", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # PENDING SENDING SUCCESS FAILED RESENDING
    Column("reason", Text, nullable=False),
    Column("attempts", JSON, nullable=False),  # [{timestamp, state, statusCode, durationMs, body, url}]
    Column("attempt_count", Integer, nullable=False),  # attempts claimed since creation or the last resend
    Column("next_attempt_at", UTCDateTime),  # NULL once SUCCESS or FAILED
    Column("claim_token", String(32)),
    Column("claimed_at", UTCDateTime),
    Column("version", Integer, nullable=False),  # compare-and-set for claims across processes
    Column("updated_at", UTCDateTime, nullable=False),
    Index("notification_deliveries_due", "next_attempt_at"),
    Index("notification_deliveries_channel", "channel_id"),
)
