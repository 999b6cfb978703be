"""API keys: random bearer tokens, stored only as SHA-256 hashes, scoped to a namespace, revocable.

A key is 32 random bytes, so a fast hash is safe against guessing; lookups go by hash and the final
comparison is constant-time. Keys given in settings (METERD_API_KEYS) live in memory only."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from meterd.core.errors import NotFoundError
from meterd.core.ids import new_ulid
from meterd.core.timeutil import utcnow

PREFIX = "mtd_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    namespace: str
    name: str
    prefix: str  # the first characters, to recognise a key in a list
    hash: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyStore(Protocol):
    def insert(self, key: ApiKey) -> None: ...

    def by_hash(self, digest: str) -> ApiKey | None: ...

    def list(self, namespace: str | None = None) -> list[ApiKey]: ...

    def revoke(self, id_or_prefix: str, at: datetime) -> ApiKey | None: ...

    def count(self) -> int:
        """Keys ever created, revoked ones included."""
        ...


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyService:
    def __init__(self, store: ApiKeyStore, static_keys: list[str], default_namespace: str) -> None:
        self._store = store
        self._static = {digest(k): default_namespace for k in static_keys}

    def enabled(self) -> bool:
        """Is authentication on? It is as soon as one key has been created (revoking the last key does
        not open the server) or one is configured."""
        return bool(self._static) or self._store.count() > 0

    def create(self, namespace: str, name: str) -> tuple[ApiKey, str]:
        secret = PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(new_ulid(), namespace, name, secret[:10], digest(secret), utcnow())
        self._store.insert(key)
        return key, secret

    def list(self, namespace: str | None = None) -> list[ApiKey]:
        return self._store.list(namespace)

    def revoke(self, id_or_prefix: str) -> ApiKey:
        key = self._store.revoke(id_or_prefix, utcnow())
        if key is None:
            raise NotFoundError(f"no active API key with id or prefix {id_or_prefix!r}")
        return key

    def namespace_for(self, secret: str) -> str | None:
        """The namespace a presented key grants, or None for an unknown or revoked key."""
        hashed = digest(secret)
        for known, namespace in self._static.items():
            if hmac.compare_digest(known, hashed):
                return namespace
        key = self._store.by_hash(hashed)
        if key is None or key.revoked_at is not None or not hmac.compare_digest(key.hash, hashed):
            return None
        return key.namespace
