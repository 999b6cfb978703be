"""Customers, their subject attribution, and subjects in the metadata database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from meterd.backends.sql.dialect import code_point_order, has_nul, upsert
from meterd.backends.sql.tables import customer_subjects, customers, subjects
from meterd.core.errors import ConflictError
from meterd.customers.model import Customer, Subject


def _customer_row(c: Customer) -> dict[str, Any]:
    return {
        "id": c.id,
        "namespace": c.namespace,
        "key": c.key,
        "name": c.name,
        "subject_keys": list(c.subject_keys),
        "description": c.description,
        "primary_email": c.primary_email,
        "currency": c.currency,
        "billing_address": c.billing_address,
        "metadata": c.metadata,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "deleted_at": c.deleted_at,
    }


class SQLCustomerStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _attribute(self, conn: Connection, customer: Customer) -> None:
        conn.execute(delete(customer_subjects).where(customer_subjects.c.customer_id == customer.id))
        rows = [  # in key order: concurrent writers lock the keys in one order (no deadlock on PostgreSQL)
            {"namespace": customer.namespace, "subject_key": s, "customer_id": customer.id}
            for s in sorted(customer.attributed_subjects())
        ]
        if rows:
            conn.execute(insert(customer_subjects), rows)

    def insert(self, customer: Customer) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(customers).values(**_customer_row(customer)))
                self._attribute(conn, customer)
        except IntegrityError:
            raise ConflictError(
                "a live customer already has this key, or one of its subject keys belongs to another customer"
            ) from None

    def replace(self, customer: Customer) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(update(customers).where(customers.c.id == customer.id).values(**_customer_row(customer)))
                self._attribute(conn, customer)
        except IntegrityError:
            raise ConflictError(
                "a live customer already has this key, or one of its subject keys belongs to another customer"
            ) from None

    def soft_delete(self, customer: Customer) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(customers).where(customers.c.id == customer.id).values(deleted_at=customer.deleted_at))
            conn.execute(delete(customer_subjects).where(customer_subjects.c.customer_id == customer.id))

    @staticmethod
    def _load(rows: Sequence[Any]) -> list[Customer]:
        return [
            Customer(
                id=r.id,
                namespace=r.namespace,
                name=r.name,
                key=r.key,
                subject_keys=tuple(r.subject_keys or ()),
                description=r.description,
                primary_email=r.primary_email,
                currency=r.currency,
                billing_address=r.billing_address,
                metadata=dict(r.metadata or {}),
                created_at=r.created_at,
                updated_at=r.updated_at,
                deleted_at=r.deleted_at,
            )
            for r in rows
        ]

    def get(self, namespace: str, id_or_key: str) -> Customer | None:
        query = select(customers).where(
            customers.c.namespace == namespace,
            customers.c.deleted_at.is_(None),
            or_(customers.c.id == id_or_key, customers.c.key == id_or_key),
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).fetchall()
            found = self._load(rows)
        return found[0] if found else None

    def list(
        self,
        namespace: str,
        *,
        offset: int,
        limit: int,
        include_deleted: bool = False,
        key: str | None = None,
        name: str | None = None,
        subject: str | None = None,
    ) -> tuple[list[Customer], int]:
        query = select(customers).where(customers.c.namespace == namespace)
        if not include_deleted:
            query = query.where(customers.c.deleted_at.is_(None))
        if key:
            query = query.where(customers.c.key == key)
        if name:
            query = query.where(func.lower(customers.c.name).contains(name.lower(), autoescape=True))
        if subject:
            owners = select(customer_subjects.c.customer_id).where(
                func.lower(customer_subjects.c.subject_key).contains(subject.lower(), autoescape=True)
            )
            query = query.where(customers.c.id.in_(owners))
        with self._engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(
                query.order_by(code_point_order(customers.c.name), customers.c.id).offset(offset).limit(limit)
            ).fetchall()
            return self._load(rows), int(total)

    def by_subjects(self, namespace: str, subject_keys: Sequence[str]) -> dict[str, Customer]:
        subject_keys = [s for s in subject_keys if not has_nul(s)]  # events may have them; no customer can
        if not subject_keys:
            return {}
        with self._engine.connect() as conn:
            links = conn.execute(
                select(customer_subjects).where(
                    customer_subjects.c.namespace == namespace,
                    customer_subjects.c.subject_key.in_(list(subject_keys)),
                )
            ).fetchall()
            ids = {link.customer_id for link in links}
            rows = conn.execute(select(customers).where(customers.c.id.in_(ids))).fetchall() if ids else []
            by_id = {c.id: c for c in self._load(rows)}
        return {link.subject_key: by_id[link.customer_id] for link in links if link.customer_id in by_id}


def _subject(row: Any) -> Subject:
    return Subject(
        id=row.id,
        namespace=row.namespace,
        key=row.key,
        display_name=row.display_name,
        metadata=row.metadata,
        stripe_customer_id=row.stripe_customer_id,
        current_period_start=row.current_period_start,
        current_period_end=row.current_period_end,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SQLSubjectStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def upsert(self, subject: Subject) -> Subject:
        values = {
            "id": subject.id,
            "namespace": subject.namespace,
            "key": subject.key,
            "display_name": subject.display_name,
            "metadata": subject.metadata,
            "stripe_customer_id": subject.stripe_customer_id,
            "current_period_start": subject.current_period_start,
            "current_period_end": subject.current_period_end,
            "created_at": subject.created_at,
            "updated_at": subject.updated_at,
        }
        with self._engine.begin() as conn:  # one statement: concurrent first upserts of a key agree on one row
            statement = upsert(conn, subjects, values, conflict=("namespace", "key"), keep=("id", "created_at"))
            return _subject(conn.execute(statement.returning(*subjects.c)).one())

    def get(self, namespace: str, id_or_key: str) -> Subject | None:
        query = select(subjects).where(
            subjects.c.namespace == namespace, or_(subjects.c.id == id_or_key, subjects.c.key == id_or_key)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _subject(row) if row else None

    def list(self, namespace: str) -> list[Subject]:
        query = select(subjects).where(subjects.c.namespace == namespace).order_by(code_point_order(subjects.c.key))
        with self._engine.connect() as conn:
            return [_subject(r) for r in conn.execute(query)]

    def delete(self, namespace: str, key: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(subjects).where(subjects.c.namespace == namespace, subjects.c.key == key))
