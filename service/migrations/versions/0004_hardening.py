"""Hardening: model names unique regardless of case, schedules record why a run queued no job,
API keys may expire.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Fails if two existing names differ only in case: rename one first (the API refuses such
    # names from this revision on).
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("name_key", sa.String(length=64), nullable=True))
    op.execute("UPDATE models SET name_key = lower(name)")
    with op.batch_alter_table("models") as batch:
        batch.alter_column("name_key", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint("uq_models_name_key", ["name_key"])
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("failures", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("failures")
        batch.drop_column("last_error")
    with op.batch_alter_table("models") as batch:
        batch.drop_constraint("uq_models_name_key", type_="unique")
        batch.drop_column("name_key")
