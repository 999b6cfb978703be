"""The meter storage protocol (implemented by meterd.backends.sql.meters)."""

from __future__ import annotations

from typing import Protocol

from meterd.meters.model import Meter


class MeterStore(Protocol):
    def insert(self, meter: Meter) -> None:
        """Raises ConflictError when a live meter has the slug."""
        ...

    def update(self, meter: Meter) -> None: ...

    def get(self, namespace: str, id_or_slug: str, include_deleted: bool = False) -> Meter | None: ...

    def list(self, namespace: str, include_deleted: bool = False) -> list[Meter]: ...
