"""API keys in the metadata database (hashes only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, insert, or_, select, update

from meterd.auth.keys import ApiKey
from meterd.backends.sql.tables import api_keys


def _key(row: Any) -> ApiKey:
    return ApiKey(row.id, row.namespace, row.name, row.prefix, row.hash, row.created_at, row.revoked_at)


class SQLApiKeyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, key: ApiKey) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    namespace=key.namespace,
                    name=key.name,
                    prefix=key.prefix,
                    hash=key.hash,
                    created_at=key.created_at,
                    revoked_at=key.revoked_at,
                )
            )

    def by_hash(self, digest: str) -> ApiKey | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.hash == digest)).first()
        return _key(row) if row else None

    def list(self, namespace: str | None = None) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if namespace is not None:
            query = query.where(api_keys.c.namespace == namespace)
        with self._engine.connect() as conn:
            return [_key(r) for r in conn.execute(query)]

    def revoke(self, id_or_prefix: str, at: datetime) -> ApiKey | None:
        match = or_(api_keys.c.id == id_or_prefix, api_keys.c.prefix == id_or_prefix)
        with self._engine.begin() as conn:
            row = conn.execute(select(api_keys).where(match, api_keys.c.revoked_at.is_(None))).first()
            if row is None:
                return None
            conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(revoked_at=at))
        return _key(row)

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(api_keys)).scalar_one())
