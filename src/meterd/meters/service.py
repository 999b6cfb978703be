"""Meter rules (OpenMeter's, compat reference section 2): validation, create, update, soft delete."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from meterd.core.errors import ConflictError, NotFoundError, ProblemCollector
from meterd.core.ids import new_ulid
from meterd.core.timeutil import parse_rfc3339, utcnow
from meterd.meters.model import GROUP_KEY_RE, RESERVED_GROUP_KEYS, SLUG_RE, Aggregation, Meter
from meterd.meters.store import MeterStore


@dataclass
class MeterCreateInput:
    slug: str
    aggregation: str
    event_type: str
    name: str | None = None
    description: str | None = None
    value_property: str | None = None
    group_by: dict[str, str] = field(default_factory=dict)
    event_from: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class MeterUpdateInput:
    name: str | None = None
    description: str | None = None
    group_by: dict[str, str] | None = None
    metadata: dict[str, str] | None = None


class MeterListener(Protocol):
    """Told after a meter is saved or deleted (the event store keeps a rollup per meter)."""

    def ensure(self, meter: Meter) -> None: ...

    def drop(self, meter: Meter) -> None: ...


class MeterService:
    def __init__(
        self,
        store: MeterStore,
        json_path_ok: Callable[[str], bool],
        listener: MeterListener | None = None,
        caching: bool = True,
    ) -> None:
        self._store = store
        self._caching = caching  # False where other processes change meters too (cluster mode)
        self._json_path_ok = json_path_ok
        self._listener = listener
        # Why a meter cannot be deleted now (e.g. features use it), or None; set by bootstrap.
        self.in_use: Callable[[Meter], str | None] | None = None
        # Why these group-bys cannot be dropped from the meter (features filter on them), or None; set by bootstrap.
        self.group_by_in_use: Callable[[Meter, set[str]], str | None] | None = None
        self.changed: list[Callable[[Meter], None]] = []  # after an update or delete (balances recompute)
        self._cache: dict[tuple[str, str], Meter] = {}
        self._lock = threading.Lock()

    # -- reads -----------------------------------------------------------------------------------

    def get(self, namespace: str, id_or_slug: str) -> Meter:
        cached = self._cache.get((namespace, id_or_slug))
        if cached is not None:
            return cached
        meter = self._store.get(namespace, id_or_slug)
        if meter is None:
            raise NotFoundError(f"meter not found: {id_or_slug}")
        if self._caching:
            with self._lock:
                self._cache[(namespace, meter.id)] = meter
                self._cache[(namespace, meter.slug)] = meter
        return meter

    def list(self, namespace: str, include_deleted: bool = False) -> builtins.list[Meter]:
        return self._store.list(namespace, include_deleted)

    # -- writes ----------------------------------------------------------------------------------

    def create(self, namespace: str, data: MeterCreateInput) -> Meter:
        problems = ProblemCollector()
        if not SLUG_RE.match(data.slug) or len(data.slug) > 64:
            problems.add("slug", "must be 1-64 characters of a-z, 0-9 and single underscores (e.g. tokens_total)")
        aggregation = _aggregation(data.aggregation, problems)
        if not data.event_type:
            problems.add("eventType", "must not be empty", "required")
        self._check_name(data.name, data.description, problems)
        event_from = self._event_from(data.event_from, problems)
        value_property = data.value_property
        if aggregation is Aggregation.COUNT:
            if value_property:
                problems.add("valueProperty", "meter value property is not allowed when the aggregation is count")
            value_property = None
        elif aggregation is not None:
            if not value_property:
                problems.add("valueProperty", "meter value property is required for this aggregation", "required")
            else:
                self._check_path("valueProperty", value_property, problems)
        self._check_group_by(data.group_by, value_property, problems)
        problems.raise_if_any()
        assert aggregation is not None
        now = utcnow()
        meter = Meter(
            id=new_ulid(),
            namespace=namespace,
            slug=data.slug,
            name=data.name or data.slug,
            aggregation=aggregation,
            event_type=data.event_type,
            value_property=value_property,
            group_by=dict(data.group_by),
            event_from=event_from,
            description=data.description,
            metadata=dict(data.metadata),
            created_at=now,
            updated_at=now,
        )
        self._store.insert(meter)
        if self._listener is not None:
            self._listener.ensure(meter)
        return meter

    def update(self, namespace: str, id_or_slug: str, data: MeterUpdateInput) -> Meter:
        meter = self.get(namespace, id_or_slug)
        problems = ProblemCollector()
        self._check_name(data.name, data.description, problems)
        group_by = data.group_by if data.group_by is not None else {}
        self._check_group_by(group_by, meter.value_property, problems)
        problems.raise_if_any()
        dropped = set(meter.group_by) - set(group_by)
        reason = self.group_by_in_use(meter, dropped) if dropped and self.group_by_in_use is not None else None
        if reason is not None:
            raise ConflictError(f"meter {meter.slug}: {reason}")
        updated = replace(
            meter,
            name=data.name or meter.slug,
            description=data.description,
            group_by=dict(group_by),
            metadata=dict(data.metadata or {}),
            updated_at=utcnow(),
        )
        self._store.update(updated)
        self._forget(meter)
        if self._listener is not None:
            self._listener.ensure(updated)
        for listener in self.changed:
            listener(updated)
        return updated

    def delete(self, namespace: str, id_or_slug: str) -> None:
        meter = self._store.get(namespace, id_or_slug, include_deleted=True)
        if meter is None:
            raise NotFoundError(f"meter not found: {id_or_slug}")
        reason = self.in_use(meter) if self.in_use is not None and meter.deleted_at is None else None
        if reason is not None:
            raise ConflictError(f"meter {meter.slug} cannot be deleted: {reason}")
        if meter.deleted_at is None:
            self._store.update(replace(meter, deleted_at=utcnow()))
        self._forget(meter)
        if self._listener is not None:
            self._listener.drop(meter)
        for listener in self.changed:
            listener(meter)

    def _forget(self, meter: Meter) -> None:
        with self._lock:
            self._cache.pop((meter.namespace, meter.id), None)
            self._cache.pop((meter.namespace, meter.slug), None)

    # -- validation helpers ----------------------------------------------------------------------

    def _check_path(self, where: str, path: str, problems: ProblemCollector) -> None:
        if not path.startswith("$"):
            problems.add(where, f"invalid JSONPath {path!r}: must start with $")
        elif not self._json_path_ok(path):
            problems.add(where, f"invalid JSONPath {path!r}")

    def _check_group_by(self, group_by: dict[str, str], value_property: str | None, problems: ProblemCollector) -> None:
        for key, path in group_by.items():
            where = f"groupBy.{key}"
            if not GROUP_KEY_RE.match(key):
                problems.add(where, "group-by key must match ^[a-zA-Z_][0-9a-zA-Z_]*$")
            elif key in RESERVED_GROUP_KEYS:
                problems.add(where, f"group-by key {key!r} is reserved")
            if value_property and path == value_property:
                problems.add(where, "group-by property must differ from the value property")
            self._check_path(where, path, problems)

    @staticmethod
    def _check_name(name: str | None, description: str | None, problems: ProblemCollector) -> None:
        if name is not None and not 1 <= len(name) <= 256:
            problems.add("name", "must be 1-256 characters")
        if description is not None and not 1 <= len(description) <= 1024:
            problems.add("description", "must be 1-1024 characters when given")

    @staticmethod
    def _event_from(value: str | None, problems: ProblemCollector) -> datetime | None:
        if value is None:
            return None
        try:
            return parse_rfc3339(value, "eventFrom")
        except Exception as exc:
            problems.add("eventFrom", str(exc).removeprefix("eventFrom: "))
            return None


def _aggregation(value: str, problems: ProblemCollector) -> Aggregation | None:
    try:
        return Aggregation(value)
    except ValueError:
        problems.add("aggregation", f"must be one of {', '.join(a.value for a in Aggregation)}")
        return None
