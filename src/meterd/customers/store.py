"""Storage protocols for customers and subjects (implemented in meterd.backends.sql.customers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from meterd.customers.model import Customer, Subject


class CustomerStore(Protocol):
    def insert(self, customer: Customer) -> None:
        """Raises ConflictError for a live key or a subject key owned by another customer."""
        ...

    def replace(self, customer: Customer) -> None: ...

    def soft_delete(self, customer: Customer) -> None: ...

    def get(self, namespace: str, id_or_key: str) -> Customer | None: ...

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
    ) -> tuple[list[Customer], int]: ...

    def by_subjects(self, namespace: str, subjects: Sequence[str]) -> dict[str, Customer]: ...


class SubjectStore(Protocol):
    def upsert(self, subject: Subject) -> Subject: ...

    def get(self, namespace: str, id_or_key: str) -> Subject | None: ...

    def list(self, namespace: str) -> list[Subject]: ...

    def delete(self, namespace: str, key: str) -> None: ...
