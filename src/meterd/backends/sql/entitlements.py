"""Features, entitlements, grants and resets in the metadata database."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Select, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from meterd.backends.sql.dialect import insert_or_skip
from meterd.backends.sql.tables import (
    balance_snapshots,
    customer_subjects,
    entitlement_resets,
    entitlements,
    features,
    grants,
    meters,
)
from meterd.core.errors import ConflictError
from meterd.credit.engine import Snapshot
from meterd.entitlements.model import Entitlement, EntitlementType, Feature, GrantRecord, ResetRecord


def _feature(row: Any) -> Feature:
    return Feature(
        id=row.id,
        namespace=row.namespace,
        key=row.key,
        name=row.name,
        meter_slug=row.meter_slug,
        meter_group_by_filters=row.meter_group_by_filters,
        advanced_filters=row.advanced_filters,
        unit_cost=row.unit_cost,
        metadata=dict(row.metadata or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        archived_at=row.archived_at,
    )


def _entitlement(row: Any) -> Entitlement:
    values = dict(row._mapping)
    values["type"] = EntitlementType(values["type"])
    values["metadata"] = dict(values["metadata"] or {})
    values["annotations"] = dict(values["annotations"] or {})
    return Entitlement(**values)


def _grant(row: Any) -> GrantRecord:
    values = dict(row._mapping)
    values["metadata"] = dict(values["metadata"] or {})
    values["annotations"] = dict(values["annotations"] or {})
    return GrantRecord(**values)


def _page(query: Select[Any], offset: int, limit: int) -> Select[Any]:
    return query.offset(offset).limit(limit)


class SQLFeatureStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, feature: Feature) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(features).values(**asdict(feature)))
        except IntegrityError:
            raise ConflictError(f"a feature with key {feature.key!r} already exists") from None

    def archive(self, feature: Feature, at: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(features).where(features.c.id == feature.id).values(archived_at=at, updated_at=at))

    def get(self, namespace: str, id_or_key: str, include_archived: bool = True) -> Feature | None:
        """By id, or by key (the active feature with that key first, then the latest archived one)."""
        query = select(features).where(
            features.c.namespace == namespace, or_(features.c.id == id_or_key, features.c.key == id_or_key)
        )
        if not include_archived:
            query = query.where(features.c.archived_at.is_(None))
        query = query.order_by((features.c.id == id_or_key).desc(), features.c.archived_at.is_not(None))
        with self._engine.connect() as conn:
            row = conn.execute(query.order_by(features.c.created_at.desc())).first()
        return _feature(row) if row else None

    def by_ids(self, ids: Sequence[str]) -> dict[str, Feature]:
        if not ids:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(select(features).where(features.c.id.in_(list(ids))))
            return {row.id: _feature(row) for row in rows}

    def list(
        self,
        namespace: str,
        *,
        meter_slugs: Sequence[str] = (),
        include_archived: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[Feature], int]:
        query = select(features).where(features.c.namespace == namespace)
        if meter_slugs:
            query = query.where(features.c.meter_slug.in_(list(meter_slugs)))
        if not include_archived:
            query = query.where(features.c.archived_at.is_(None))
        with self._engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(_page(query.order_by(features.c.created_at, features.c.id), offset, limit))
            return [_feature(row) for row in rows], total

    def active_for_meter(self, namespace: str, meter_slug: str) -> builtins.list[Feature]:
        return self.list(namespace, meter_slugs=[meter_slug], limit=1_000_000)[0]


class SQLEntitlementStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, entitlement: Entitlement, replaces: Entitlement | None = None) -> None:
        """Insert; with `replaces`, soft-delete that one in the same transaction (an override)."""
        try:
            with self._engine.begin() as conn:
                if replaces is not None:
                    conn.execute(
                        update(entitlements)
                        .where(entitlements.c.id == replaces.id)
                        .values(deleted_at=entitlement.created_at, updated_at=entitlement.created_at)
                    )
                conn.execute(insert(entitlements).values(**asdict(entitlement)))
        except IntegrityError:
            raise ConflictError(
                f"the customer already has an active entitlement for feature {entitlement.feature_key!r}"
            ) from None

    def delete(self, entitlement: Entitlement, at: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(entitlements).where(entitlements.c.id == entitlement.id).values(deleted_at=at, updated_at=at)
            )

    def get(self, namespace: str, entitlement_id: str) -> Entitlement | None:
        query = select(entitlements).where(entitlements.c.namespace == namespace, entitlements.c.id == entitlement_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _entitlement(row) if row else None

    def by_id(self, entitlement_id: str) -> Entitlement | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(entitlements).where(entitlements.c.id == entitlement_id)).first()
        return _entitlement(row) if row else None

    def routes(self) -> builtins.list[tuple[str, str, str, str]]:
        """(namespace, event type, subject, entitlement id) for every live metered entitlement: which
        stored events can change which balances."""
        query = (
            select(entitlements.c.namespace, meters.c.event_type, customer_subjects.c.subject_key, entitlements.c.id)
            .join(features, features.c.id == entitlements.c.feature_id)
            .join(
                meters,
                (meters.c.namespace == entitlements.c.namespace)
                & (meters.c.slug == features.c.meter_slug)
                & meters.c.deleted_at.is_(None),
            )
            .join(customer_subjects, customer_subjects.c.customer_id == entitlements.c.customer_id)
            .where(entitlements.c.deleted_at.is_(None), entitlements.c.type == "metered")
        )
        with self._engine.connect() as conn:
            return [(row[0], row[1], row[2], row[3]) for row in conn.execute(query)]

    def live_for(self, namespace: str, customer_id: str, feature_id_or_key: str) -> Entitlement | None:
        query = select(entitlements).where(
            entitlements.c.namespace == namespace,
            entitlements.c.customer_id == customer_id,
            entitlements.c.deleted_at.is_(None),
            or_(entitlements.c.feature_id == feature_id_or_key, entitlements.c.feature_key == feature_id_or_key),
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _entitlement(row) if row else None

    def list(
        self,
        namespace: str | None,
        *,
        customer_ids: Sequence[str] = (),
        features: Sequence[str] = (),
        types: Sequence[str] = (),
        include_deleted: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[Entitlement], int]:
        query = select(entitlements)
        if namespace is not None:
            query = query.where(entitlements.c.namespace == namespace)
        if customer_ids:
            query = query.where(entitlements.c.customer_id.in_(list(customer_ids)))
        if features:
            keys = list(features)
            query = query.where(or_(entitlements.c.feature_id.in_(keys), entitlements.c.feature_key.in_(keys)))
        if types:
            query = query.where(entitlements.c.type.in_(list(types)))
        if not include_deleted:
            query = query.where(entitlements.c.deleted_at.is_(None))
        with self._engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(_page(query.order_by(entitlements.c.created_at, entitlements.c.id), offset, limit))
            return [_entitlement(row) for row in rows], total

    def live_for_feature(self, namespace: str, feature_id: str) -> int:
        query = select(func.count()).where(
            entitlements.c.namespace == namespace,
            entitlements.c.feature_id == feature_id,
            entitlements.c.deleted_at.is_(None),
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


class SQLGrantStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, records: Sequence[GrantRecord]) -> None:
        if records:
            with self._engine.begin() as conn:
                conn.execute(insert(grants), [asdict(r) for r in records])

    def void(self, record: GrantRecord, at: datetime, now: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(grants).where(grants.c.id == record.id).values(voided_at=at, updated_at=now))

    def get(self, namespace: str, grant_id: str) -> GrantRecord | None:
        query = select(grants).where(grants.c.namespace == namespace, grants.c.id == grant_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _grant(row) if row else None

    def for_entitlements(self, entitlement_ids: Sequence[str]) -> dict[str, list[GrantRecord]]:
        out: dict[str, list[GrantRecord]] = {e: [] for e in entitlement_ids}
        if not entitlement_ids:
            return out
        query = select(grants).where(grants.c.entitlement_id.in_(list(entitlement_ids)))
        with self._engine.connect() as conn:
            for row in conn.execute(query.order_by(grants.c.created_at, grants.c.id)):
                out[row.entitlement_id].append(_grant(row))
        return out

    def list(
        self,
        namespace: str,
        *,
        entitlement_ids: Sequence[str] | None = None,
        include_deleted: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[GrantRecord], int]:
        query = select(grants).where(grants.c.namespace == namespace)
        if entitlement_ids is not None:
            query = query.where(grants.c.entitlement_id.in_(list(entitlement_ids)))
        if not include_deleted:
            query = query.where(grants.c.deleted_at.is_(None))
        with self._engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(_page(query.order_by(grants.c.created_at, grants.c.id), offset, limit))
            return [_grant(row) for row in rows], total


class SQLResetStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, reset: ResetRecord) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(entitlement_resets).values(**asdict(reset)))

    def for_entitlements(self, entitlement_ids: Sequence[str]) -> dict[str, list[ResetRecord]]:
        out: dict[str, list[ResetRecord]] = {e: [] for e in entitlement_ids}
        if not entitlement_ids:
            return out
        query = select(entitlement_resets).where(entitlement_resets.c.entitlement_id.in_(list(entitlement_ids)))
        with self._engine.connect() as conn:
            for row in conn.execute(query.order_by(entitlement_resets.c.reset_at, entitlement_resets.c.id)):
                out[row.entitlement_id].append(ResetRecord(**dict(row._mapping)))
        return out


class SQLSnapshotStore:
    """Period-start engine states, so a restart does not replay every past period."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def latest(self) -> dict[str, datetime]:
        """Entitlement id -> time of its latest stored snapshot."""
        out: dict[str, datetime] = {}
        query = select(balance_snapshots.c.entitlement_id, balance_snapshots.c.at)
        with self._engine.connect() as conn:
            for entitlement_id, at in conn.execute(query):
                if entitlement_id not in out or at > out[entitlement_id]:
                    out[entitlement_id] = at
        return out

    def load(self, entitlement_id: str) -> builtins.list[Snapshot]:
        query = select(balance_snapshots).where(balance_snapshots.c.entitlement_id == entitlement_id)
        with self._engine.connect() as conn:
            return [
                Snapshot(
                    at=row.at,
                    period_start=row.period_start,
                    balances={k: Decimal(v) for k, v in row.balances.items()},
                    overage=row.overage,
                    usage=row.usage,
                    grant_usage=row.grant_usage,
                )
                for row in conn.execute(query.order_by(balance_snapshots.c.at))
            ]

    def save(self, entitlement_id: str, snapshots: Sequence[Snapshot], now: datetime) -> None:
        rows = [
            {
                "entitlement_id": entitlement_id,
                "at": s.at,
                "period_start": s.period_start,
                "balances": {k: str(v) for k, v in s.balances.items()},
                "overage": s.overage,
                "usage": s.usage,
                "grant_usage": s.grant_usage,
                "created_at": now,
            }
            for s in snapshots
        ]
        if rows:  # a snapshot already stored (by another process too) is kept
            with self._engine.begin() as conn:
                conn.execute(insert_or_skip(conn, balance_snapshots, conflict=("entitlement_id", "at")), rows)

    def delete_after(self, entitlement_id: str, since: datetime | None) -> None:
        query = delete(balance_snapshots).where(balance_snapshots.c.entitlement_id == entitlement_id)
        if since is not None:
            query = query.where(balance_snapshots.c.at > since)
        with self._engine.begin() as conn:
            conn.execute(query)
