"""Customer and subject rules."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from meterd.core.errors import ConflictError, NotFoundError, ProblemCollector
from meterd.core.ids import new_ulid
from meterd.core.timeutil import utcnow
from meterd.customers.model import Customer, Subject
from meterd.customers.store import CustomerStore, SubjectStore


@dataclass
class CustomerInput:
    name: str
    key: str | None = None
    subject_keys: list[str] = field(default_factory=list)
    description: str | None = None
    primary_email: str | None = None
    currency: str | None = None
    billing_address: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class SubjectInput:
    key: str
    display_name: str | None = None
    metadata: dict[str, Any] | None = None
    stripe_customer_id: str | None = None
    current_period_start: Any = None
    current_period_end: Any = None
    given: frozenset[str] = frozenset()  # which optional fields the caller sent (upsert = partial update)


def _validate(data: CustomerInput) -> None:
    problems = ProblemCollector()
    if not 1 <= len(data.name) <= 256:
        problems.add("name", "must be 1-256 characters")
    if data.key is not None and not 1 <= len(data.key) <= 256:
        problems.add("key", "must be 1-256 characters")
    for index, key in enumerate(data.subject_keys):
        if not key:
            problems.add(f"usageAttribution.subjectKeys[{index}]", "must not be empty")
    if len(set(data.subject_keys)) != len(data.subject_keys):
        problems.add("usageAttribution.subjectKeys", "must not repeat a key")
    if data.currency is not None and (len(data.currency) != 3 or not data.currency.isalpha()):
        problems.add("currency", "must be a 3-letter ISO 4217 code")
    problems.raise_if_any()


class CustomerService:
    def __init__(self, customers: CustomerStore, subjects: SubjectStore) -> None:
        self._customers = customers
        self._subjects = subjects
        # why a customer cannot be deleted now (e.g. it has active entitlements), or None; set by bootstrap
        self.in_use: Callable[[Customer], str | None] | None = None
        self.changed: list[Callable[[str, str], None]] = []  # (namespace, customer id) after a replace or delete

    def create(self, namespace: str, data: CustomerInput) -> Customer:
        _validate(data)
        now = utcnow()
        customer = Customer(
            id=new_ulid(),
            namespace=namespace,
            name=data.name,
            key=data.key,
            subject_keys=tuple(data.subject_keys),
            description=data.description,
            primary_email=data.primary_email,
            currency=data.currency,
            billing_address=data.billing_address,
            metadata=dict(data.metadata),
            created_at=now,
            updated_at=now,
        )
        self._customers.insert(customer)
        return customer

    def get(self, namespace: str, id_or_key: str) -> Customer:
        customer = self._customers.get(namespace, id_or_key)
        if customer is None:
            raise NotFoundError(f"customer not found: {id_or_key}")
        return customer

    def list(self, namespace: str, **filters: Any) -> tuple[builtins.list[Customer], int]:
        return self._customers.list(namespace, **filters)

    def replace(self, namespace: str, id_or_key: str, data: CustomerInput) -> Customer:
        _validate(data)
        current = self.get(namespace, id_or_key)
        updated = replace(
            current,
            name=data.name,
            key=data.key,
            subject_keys=tuple(data.subject_keys),
            description=data.description,
            primary_email=data.primary_email,
            currency=data.currency,
            billing_address=data.billing_address,
            metadata=dict(data.metadata),
            updated_at=utcnow(),
        )
        self._customers.replace(updated)
        self._changed(updated)
        return updated

    def delete(self, namespace: str, id_or_key: str) -> None:
        customer = self.get(namespace, id_or_key)
        reason = self.in_use(customer) if self.in_use is not None else None
        if reason is not None:
            raise ConflictError(f"customer {id_or_key} cannot be deleted: {reason}")
        self._customers.soft_delete(replace(customer, deleted_at=utcnow()))
        self._changed(customer)

    def _changed(self, customer: Customer) -> None:
        for listener in self.changed:
            listener(customer.namespace, customer.id)

    def by_subject(self, namespace: str, subject: str) -> Customer | None:
        """The live customer the subject's usage is attributed to, if any."""
        return self._customers.by_subjects(namespace, [subject]).get(subject)

    def attribution(self, namespace: str, subjects: Sequence[str]) -> dict[str, str]:
        """subject -> customer id, for the subjects that belong to a customer."""
        return {s: c.id for s, c in self._customers.by_subjects(namespace, subjects).items()}

    def subject_map(self, namespace: str, customer_ids: Sequence[str]) -> dict[str, str]:
        """subject -> customer id for the given customers (ids or keys); 404 if one is unknown."""
        mapping: dict[str, str] = {}
        for id_or_key in customer_ids:
            customer = self.get(namespace, id_or_key)
            for subject in customer.attributed_subjects():
                mapping[subject] = customer.id
        return mapping

    # -- subjects (deprecated in OpenMeter in favour of customers, still served) ------------------

    def upsert_subject(self, namespace: str, data: SubjectInput) -> Subject:
        now = utcnow()
        current = self._subjects.get(namespace, data.key)
        if current is None:
            subject = Subject(
                id=new_ulid(),
                namespace=namespace,
                key=data.key,
                display_name=data.display_name,
                metadata=data.metadata,
                stripe_customer_id=data.stripe_customer_id,
                current_period_start=data.current_period_start,
                current_period_end=data.current_period_end,
                created_at=now,
                updated_at=now,
            )
        else:
            changes = {name: getattr(data, name) for name in data.given}
            subject = replace(current, **changes, updated_at=now)
        return self._subjects.upsert(subject)

    def get_subject(self, namespace: str, id_or_key: str) -> Subject:
        subject = self._subjects.get(namespace, id_or_key)
        if subject is None:
            raise NotFoundError(f"subject not found: {id_or_key}")
        return subject

    def list_subjects(self, namespace: str) -> builtins.list[Subject]:
        return self._subjects.list(namespace)

    def subject_display_names(self, namespace: str) -> dict[str, str]:
        return {s.key: s.display_name or "" for s in self._subjects.list(namespace)}

    def delete_subject(self, namespace: str, id_or_key: str) -> None:
        subject = self.get_subject(namespace, id_or_key)
        self._subjects.delete(namespace, subject.key)
