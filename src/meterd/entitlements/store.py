"""What the entitlement services need from storage (implemented by meterd.backends.sql.entitlements)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from meterd.entitlements.model import Entitlement, Feature, GrantRecord, ResetRecord


class FeatureStore(Protocol):
    def insert(self, feature: Feature) -> None: ...

    def archive(self, feature: Feature, at: datetime) -> None: ...

    def get(self, namespace: str, id_or_key: str, include_archived: bool = True) -> Feature | None: ...

    def list(
        self,
        namespace: str,
        *,
        meter_slugs: Sequence[str] = (),
        include_archived: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[Feature], int]: ...

    def active_for_meter(self, namespace: str, meter_slug: str) -> builtins.list[Feature]: ...


class EntitlementStore(Protocol):
    def insert(self, entitlement: Entitlement, replaces: Entitlement | None = None) -> None:
        """Insert; with `replaces`, soft-delete that one in the same transaction (an override)."""
        ...

    def delete(self, entitlement: Entitlement, at: datetime) -> None: ...

    def get(self, namespace: str, entitlement_id: str) -> Entitlement | None: ...

    def live_for(self, namespace: str, customer_id: str, feature_id_or_key: str) -> Entitlement | None: ...

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
    ) -> tuple[list[Entitlement], int]: ...

    def live_for_feature(self, namespace: str, feature_id: str) -> int: ...


class GrantStore(Protocol):
    def insert(self, records: Sequence[GrantRecord]) -> None: ...

    def void(self, record: GrantRecord, at: datetime, now: datetime) -> None: ...

    def get(self, namespace: str, grant_id: str) -> GrantRecord | None: ...

    def list(
        self,
        namespace: str,
        *,
        entitlement_ids: Sequence[str] | None = None,
        include_deleted: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[GrantRecord], int]: ...


class ResetStore(Protocol):
    def insert(self, reset: ResetRecord) -> None: ...

    def for_entitlements(self, entitlement_ids: Sequence[str]) -> dict[str, builtins.list[ResetRecord]]: ...
