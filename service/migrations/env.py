"""Alembic environment: runs on the connection handed over by ``service.db.upgrade_schema``.

Standalone use (``alembic -c service/migrations/alembic.ini upgrade head``) opens
``sqlalchemy.url`` from the ini file or ``RECONAD_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from service.tables import Base

target_metadata = Base.metadata
config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = os.environ.get("RECONAD_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set RECONAD_DATABASE_URL or sqlalchemy.url to run migrations")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
