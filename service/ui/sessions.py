"""Console sign-in: an API key becomes a server-side session behind an HttpOnly cookie.

The browser holds only a random session token; the database holds its SHA-256 digest, the key
it stands for and a CSRF token (synchronizer pattern: every state change sends it back in the
``X-CSRF-Token`` header or a ``csrf_token`` form field). A session ends on sign-out, on expiry
(``ui_session_ttl_s``), when its key is revoked, or when the key signs in more than
``ui_max_sessions_per_key`` times (the oldest ends). Sessions live in the shared database, so
every replica of a scale-out deployment accepts them.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from service.auth import AuthService, Principal, Scope, hash_key
from service.db import Database
from service.errors import ForbiddenError
from service.tables import ApiKey, ConsoleSession, utcnow

__all__ = ["COOKIE", "ConsoleSessions", "ConsoleUser", "check_csrf"]

#: The session cookie's name (path ``/ui``).
COOKIE = "reconad_session"


@dataclass(frozen=True)
class ConsoleUser:
    """A signed-in browser: the key's principal, its name and the session's CSRF token."""

    principal: Principal
    key_name: str
    csrf_token: str
    session_id: str

    def allows(self, needed: Scope) -> bool:
        """Whether the key's scope includes ``needed``."""
        return self.principal.allows(needed)


def check_csrf(user: ConsoleUser, presented: str | None) -> None:
    """Refuse a state change whose CSRF token is missing or not this session's.

    Raises
    ------
    service.errors.ForbiddenError
        When ``presented`` is not the session's token.
    """
    if not presented or not hmac.compare_digest(presented.encode(), user.csrf_token.encode()):
        raise ForbiddenError("missing or wrong CSRF token: reload the console page and try again")


class ConsoleSessions:
    """Creates, looks up and ends console sessions.

    Parameters
    ----------
    db
        The metadata database.
    auth
        Verifies the key presented at sign-in.
    ttl_s
        Session lifetime in seconds.
    max_per_key
        Sessions one key may hold; a new sign-in beyond it ends the oldest.
    """

    def __init__(self, db: Database, auth: AuthService, ttl_s: float, max_per_key: int) -> None:
        self._db = db
        self._auth = auth
        self._ttl = timedelta(seconds=ttl_s)
        self._max = max_per_key

    def sign_in(self, key: str) -> tuple[str, ConsoleUser]:
        """Verify ``key`` and open a session; return the cookie token and the user.

        Raises
        ------
        service.errors.UnauthorizedError
            For a missing, malformed, unknown or revoked key.
        """
        principal = self._auth.verify(key.strip())
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utcnow()
        with self._db.transaction() as session:
            session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
            held = list(
                session.scalars(
                    select(ConsoleSession.id)
                    .where(ConsoleSession.key_id == principal.key_id)
                    .order_by(ConsoleSession.created_at.desc())
                )
            )
            stale = held[self._max - 1 :]
            if stale:
                session.execute(delete(ConsoleSession).where(ConsoleSession.id.in_(stale)))
            session.add(
                ConsoleSession(
                    id=hash_key(token),
                    key_id=principal.key_id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=now + self._ttl,
                )
            )
            key_row = session.get(ApiKey, principal.key_id)
            name = key_row.name if key_row is not None else ""
        return token, ConsoleUser(principal, name, csrf, hash_key(token))

    def lookup(self, token: str | None) -> ConsoleUser | None:
        """The user of a session cookie, or ``None`` when it is unknown, expired or revoked."""
        if not token or len(token) > 200:
            return None
        digest = hash_key(token)
        with self._db.session() as session:
            row = session.execute(
                select(ConsoleSession, ApiKey)
                .join(ApiKey, ApiKey.id == ConsoleSession.key_id)
                .where(ConsoleSession.id == digest)
            ).first()
        if row is None:
            return None
        console, key = row
        now = utcnow()
        if (
            console.expires_at <= now
            or key.revoked_at is not None
            or (key.expires_at is not None and key.expires_at <= now)
        ):
            return None
        principal = Principal(key_id=key.id, scope=key.scope)  # type: ignore[arg-type]
        return ConsoleUser(principal, key.name, console.csrf_token, digest)

    def sign_out(self, user: ConsoleUser) -> None:
        """End a session."""
        with self._db.transaction() as session:
            session.execute(delete(ConsoleSession).where(ConsoleSession.id == user.session_id))
