"""The metadata database: engine, sessions and schema migrations.

SQLite (the embedded default) runs in WAL mode with full fsync and a busy timeout, so the API
process and job processes can write at the same time and a killed process never leaves a
half-written transaction behind. PostgreSQL (``postgresql+psycopg://...``, for several API
replicas and workers) runs the same migrations; read-then-write sequences take row locks
(``SELECT ... FOR UPDATE``, which SQLite's ``BEGIN IMMEDIATE`` makes unnecessary and SQLAlchemy
leaves out there), and concurrent first starts serialise their migrations on an advisory lock.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "upgrade_schema"]

logger = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x5245434F4E4144  # "RECONAD": the advisory lock id of schema migrations


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
    finally:
        cursor.close()


def _json_dumps(value: Any) -> str:
    """JSON text of a JSON column's value: orjson, several times faster than the standard
    module on the stream rows' duplicate-detection lists (written for every request), and the
    standard module for what orjson refuses (integers beyond 64 bits). A NaN is written as
    null, as PostgreSQL needs (its json type refuses NaN)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


def json_column_values(stored: Sequence[Any]) -> list[Any]:
    """Many JSON column values as read raw (a select of the column coerced to text): text is
    parsed as one document with orjson (the standard module where orjson refuses, NaN tokens of
    rows written before :func:`_json_dumps`, say); what a driver parsed itself is kept."""
    if all(isinstance(v, str) for v in stored):
        try:
            parsed: list[Any] = orjson.loads("[" + ",".join(stored) + "]")
            return parsed
        except orjson.JSONDecodeError:
            return [json.loads(v) for v in stored]
    return [json.loads(v) if isinstance(v, str) else v for v in stored]


class Database:
    """An engine plus a session factory for one database URL.

    Parameters
    ----------
    url
        SQLAlchemy URL; for SQLite the parent folder is created.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        connect_args: dict[str, Any] = {}
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.is_postgresql = parsed.get_backend_name() == "postgresql"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            connect_args = {"check_same_thread": False, "timeout": 15}
        self.engine: Engine = create_engine(
            url, connect_args=connect_args, pool_pre_ping=True, json_serializer=_json_dumps
        )
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def session(self) -> Session:
        """Return a new session (the caller closes it)."""
        return self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Open a session in a transaction: committed on success, rolled back on error.

        For SQLite the transaction starts with ``BEGIN IMMEDIATE`` so that read-then-write
        sequences (allocating a version number, claiming a job) cannot interleave.
        """
        with self._sessions() as session:
            if self.is_sqlite:
                session.execute(text("BEGIN IMMEDIATE"))
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def named_lock(self, name: str) -> Iterator[None]:
        """Hold a lock named ``name`` shared by every process on this database.

        PostgreSQL: a transaction-scoped advisory lock (released even when the holder dies).
        SQLite (one machine): a lock of this process only.
        """
        if not self.is_postgresql:
            with self._local_lock(name):
                yield
            return
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
            yield

    def _local_lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def ping(self) -> None:
        """Run ``SELECT 1``; raises on an unreachable database."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def upgrade_schema(database: Database, revision: str = "head") -> None:
    """Apply the packaged Alembic migrations up to ``revision``.

    Parameters
    ----------
    database
        The database to migrate.
    revision
        Target revision (``"head"``: the latest).
    """
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database.url.replace("%", "%%"))
    with database.engine.begin() as connection:
        if database.is_sqlite:
            # Serialise concurrent first starts (server and CLI): the second waits, then sees head.
            connection.execute(text("BEGIN IMMEDIATE"))
        elif database.is_postgresql:
            # Replicas starting at once: one migrates, the others wait and then see head.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    logger.debug("database schema at %s", revision)
