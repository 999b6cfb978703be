"""Features: a key customers are entitled to, optionally bound to a meter narrowed by group-by filters."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from meterd.core.errors import ConflictError, NotFoundError, ProblemCollector
from meterd.core.ids import new_ulid
from meterd.core.timeutil import utcnow
from meterd.entitlements.model import Feature
from meterd.entitlements.store import EntitlementStore, FeatureStore
from meterd.meters.model import SLUG_RE, Meter
from meterd.usage.service import check_filter


class MeterLookup(Protocol):
    def get(self, namespace: str, id_or_slug: str) -> Meter: ...


@dataclass
class FeatureInput:
    key: str
    name: str
    meter_slug: str | None = None
    meter_group_by_filters: dict[str, str] | None = None
    advanced_filters: dict[str, Any] | None = None
    unit_cost: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class FeatureService:
    def __init__(self, store: FeatureStore, entitlements: EntitlementStore, meters: MeterLookup) -> None:
        self._store = store
        self._entitlements = entitlements
        self._meters = meters
        self.changed: list[Callable[[str], None]] = []  # told the namespace after an archive

    def create(self, namespace: str, data: FeatureInput) -> Feature:
        problems = ProblemCollector()
        if not SLUG_RE.match(data.key) or len(data.key) > 64:
            problems.add("key", "must be 1-64 characters of a-z, 0-9 and single underscores (e.g. gpt_tokens)")
        if not 1 <= len(data.name) <= 256:
            problems.add("name", "must be 1-256 characters")
        if data.meter_slug is None:
            if data.meter_group_by_filters or data.advanced_filters:
                problems.add("meterSlug", "group-by filters need a meter", "required")
            problems.raise_if_any()
        else:
            problems.raise_if_any()
            meter = self._meters.get(namespace, data.meter_slug)  # 404 when it does not exist
            for key in data.meter_group_by_filters or {}:
                if key not in meter.group_by:
                    problems.add(f"meterGroupByFilters.{key}", f"{key} is not a group-by of meter {meter.slug}")
            for key, spec in (data.advanced_filters or {}).items():
                where = f"advancedMeterGroupByFilters.{key}"
                if key not in meter.group_by:
                    problems.add(where, f"{key} is not a group-by of meter {meter.slug}")
                else:
                    check_filter(spec, where, problems)
            problems.raise_if_any()
        if self._store.get(namespace, data.key, include_archived=False) is not None:
            raise ConflictError(f"a feature with key {data.key!r} already exists")
        now = utcnow()
        feature = Feature(
            id=new_ulid(),
            namespace=namespace,
            key=data.key,
            name=data.name,
            meter_slug=data.meter_slug,
            meter_group_by_filters=data.meter_group_by_filters or None,
            advanced_filters=data.advanced_filters or None,
            unit_cost=data.unit_cost,
            metadata=dict(data.metadata),
            created_at=now,
            updated_at=now,
        )
        self._store.insert(feature)
        return feature

    def get(self, namespace: str, id_or_key: str, include_archived: bool = True) -> Feature:
        feature = self._store.get(namespace, id_or_key, include_archived=include_archived)
        if feature is None:
            raise NotFoundError(f"feature not found: {id_or_key}")
        return feature

    def list(self, namespace: str, **filters: Any) -> tuple[builtins.list[Feature], int]:
        return self._store.list(namespace, **filters)

    def archive(self, namespace: str, id_or_key: str) -> None:
        feature = self.get(namespace, id_or_key)
        if feature.archived_at is not None:
            return
        if self._entitlements.live_for_feature(namespace, feature.id):
            raise ConflictError(f"feature {feature.key} has active entitlements; delete them first")
        self._store.archive(feature, utcnow())
        for listener in self.changed:
            listener(namespace)

    def meter_in_use(self, meter: Meter) -> str | None:
        """Why the meter cannot be deleted: active features use it."""
        used = self._store.active_for_meter(meter.namespace, meter.slug)
        if not used:
            return None
        return "features use it: " + ", ".join(sorted(f.key for f in used)[:10])

    def group_by_in_use(self, meter: Meter, keys: set[str]) -> str | None:
        """Why these group-bys cannot be dropped from the meter: active features filter on them."""
        used: set[str] = set()
        users = []
        for feature in self._store.active_for_meter(meter.namespace, meter.slug):
            hit = keys & {*(feature.meter_group_by_filters or {}), *(feature.advanced_filters or {})}
            if hit:
                used |= hit
                users.append(feature.key)
        if not users:
            return None
        names = ", ".join(sorted(users)[:10])
        return f"group-by {', '.join(sorted(used))} cannot be dropped: features filter on it: {names}"
