"""Metadata tables (SQLAlchemy Core), one schema for SQLite (embedded) and PostgreSQL (cluster).
Soft-deleted rows keep their keys; uniqueness holds among live rows only (partial unique indexes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
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
