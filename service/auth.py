"""API keys: creation, hashing, verification and scopes.

A key reads ``rad_<id>_<secret>``: ``id`` (8 hex characters) is public and finds the row, the
secret carries 256 bits of randomness. Only ``sha256(key)`` is stored; verification compares
digests with :func:`hmac.compare_digest`. Scopes are ordered: ``admin`` implies ``write``, which
implies ``score``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select

from service.db import Database
from service.errors import ForbiddenError, NotFoundError, UnauthorizedError
from service.tables import ApiKey, utcnow

__all__ = ["SCOPES", "AuthService", "Principal", "Scope", "hash_key"]

logger = logging.getLogger(__name__)

Scope = Literal["score", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("score", "write", "admin")
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
_KEY_RE = re.compile(r"^rad_([0-9a-f]{8})_([A-Za-z0-9_-]{20,100})$")


def hash_key(key: str) -> str:
    """Return the hex SHA-256 digest stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The caller a verified key stands for."""

    key_id: str
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        """Whether this key's scope includes ``needed``."""
        return _RANK[self.scope] >= _RANK[needed]


class AuthService:
    """Creates, lists, revokes and verifies API keys.

    Parameters
    ----------
    db
        The metadata database.
    cache_ttl_s
        Seconds a verified key is trusted without asking the database again (revocations made
        by another process take effect within this delay).
    """

    def __init__(self, db: Database, cache_ttl_s: float = 5.0) -> None:
        self._db = db
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def create(
        self, scope: str, name: str = "", expires_at: datetime | None = None
    ) -> tuple[ApiKey, str]:
        """Create a key and return its row and the plain key (shown once, never stored).

        Parameters
        ----------
        scope
            ``score``, ``write`` or ``admin``.
        name
            A label.
        expires_at
            When the key stops working (timezone-aware; ``None``: never).

        Raises
        ------
        ValueError
            For an unknown scope or an expiry in the past.
        """
        if scope not in _RANK:
            raise ValueError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
        if expires_at is not None and expires_at <= utcnow():
            raise ValueError("expires_at must be in the future")
        with self._db.transaction() as session:
            while True:
                key_id = secrets.token_hex(4)
                if session.get(ApiKey, key_id) is None:
                    break
            plain = f"rad_{key_id}_{secrets.token_urlsafe(32)}"
            row = ApiKey(
                id=key_id,
                name=name[:100],
                scope=scope,
                key_hash=hash_key(plain),
                created_at=utcnow(),
                expires_at=expires_at,
            )
            session.add(row)
        return row, plain

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        with self._db.session() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by id.

        Raises
        ------
        service.errors.NotFoundError
            For an unknown id.
        """
        with self._db.transaction() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFoundError(
                    f"no API key with id {key_id!r}; `reconad keys list` shows them"
                )
            if row.revoked_at is None:
                row.revoked_at = utcnow()
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if v[0].key_id != key_id}
        return row

    def count(self) -> int:
        """Number of keys ever created (revoked ones included)."""
        with self._db.session() as session:
            return int(session.scalar(select(func.count()).select_from(ApiKey)) or 0)

    def bootstrap_admin(self) -> str | None:
        """Create an admin key when no key exists at all; return it (else ``None``)."""
        if self.count() > 0:
            return None
        _, plain = self.create("admin", name="bootstrap")
        return plain

    def cached(self, key: str | None) -> Principal | None:
        """The principal of a key verified less than ``cache_ttl_s`` ago (no database access)."""
        if not key:
            return None
        cached = self._cache.get(hash_key(key))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def verify(self, key: str | None) -> Principal:
        """Return the principal of a presented key.

        Raises
        ------
        service.errors.UnauthorizedError
            When the key is missing, malformed, unknown or revoked.
        """
        if not key:
            raise UnauthorizedError(
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        match = _KEY_RE.match(key)
        if match is None:
            raise UnauthorizedError("invalid API key")
        with self._db.session() as session:
            row = session.get(ApiKey, match.group(1))
        if (
            row is None
            or not hmac.compare_digest(row.key_hash.encode(), digest.encode())
            or row.revoked_at is not None
        ):
            raise UnauthorizedError("invalid or revoked API key")
        if row.expires_at is not None and row.expires_at <= utcnow():
            raise UnauthorizedError(
                f"API key {row.id} expired at {row.expires_at.isoformat()}; ask an admin for a "
                "new one"
            )
        principal = Principal(key_id=row.id, scope=row.scope)  # type: ignore[arg-type]
        ttl = self._ttl
        if row.expires_at is not None:  # never trust a cached key past its expiry
            ttl = min(ttl, (row.expires_at - utcnow()).total_seconds())
        if ttl > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (principal, now + ttl)
        return principal

    @staticmethod
    def require(principal: Principal, needed: Scope) -> Principal:
        """Return ``principal`` if its scope includes ``needed``.

        Raises
        ------
        service.errors.ForbiddenError
            Otherwise.
        """
        if not principal.allows(needed):
            raise ForbiddenError(
                f"this route needs a key with scope '{needed}' (yours: {principal.scope})"
            )
        return principal
