"""Meters in the metadata database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from meterd.backends.sql.dialect import code_point_order
from meterd.backends.sql.tables import meters
from meterd.core.errors import ConflictError
from meterd.meters.model import Aggregation, Meter


def _row(meter: Meter) -> dict[str, Any]:
    return {
        "id": meter.id,
        "namespace": meter.namespace,
        "slug": meter.slug,
        "name": meter.name,
        "description": meter.description,
        "aggregation": meter.aggregation.value,
        "event_type": meter.event_type,
        "value_property": meter.value_property,
        "group_by": meter.group_by,
        "event_from": meter.event_from,
        "metadata": meter.metadata,
        "created_at": meter.created_at,
        "updated_at": meter.updated_at,
        "deleted_at": meter.deleted_at,
    }


def _meter(row: Any) -> Meter:
    return Meter(
        id=row.id,
        namespace=row.namespace,
        slug=row.slug,
        name=row.name,
        aggregation=Aggregation(row.aggregation),
        event_type=row.event_type,
        value_property=row.value_property,
        group_by=dict(row.group_by or {}),
        event_from=row.event_from,
        description=row.description,
        metadata=dict(row.metadata or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
    )


class SQLMeterStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, meter: Meter) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(meters).values(**_row(meter)))
        except IntegrityError:
            raise ConflictError(f"meter with the same slug already exists: {meter.slug}") from None

    def update(self, meter: Meter) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(meters).where(meters.c.id == meter.id).values(**_row(meter)))

    def get(self, namespace: str, id_or_slug: str, include_deleted: bool = False) -> Meter | None:
        query = select(meters).where(
            meters.c.namespace == namespace, or_(meters.c.id == id_or_slug, meters.c.slug == id_or_slug)
        )
        if not include_deleted:
            query = query.where(meters.c.deleted_at.is_(None))
        query = query.order_by(meters.c.deleted_at.is_not(None), meters.c.created_at.desc())
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _meter(row) if row else None

    def all_live(self) -> list[Meter]:
        """Every live meter of every namespace (the event store keeps their rollups)."""
        with self._engine.connect() as conn:
            return [_meter(row) for row in conn.execute(select(meters).where(meters.c.deleted_at.is_(None)))]

    def list(self, namespace: str, include_deleted: bool = False) -> list[Meter]:
        query = select(meters).where(meters.c.namespace == namespace)
        if not include_deleted:
            query = query.where(meters.c.deleted_at.is_(None))
        with self._engine.connect() as conn:
            return [
                _meter(row)
                for row in conn.execute(query.order_by(meters.c.created_at, code_point_order(meters.c.slug)))
            ]
