"""Tables of the Azure Anomaly Detector compatible API: multivariate models and batch results.

Revision ID: 0005
Revises: 0006
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "azure_models",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "model_id",
            sa.String(32),
            sa.ForeignKey("models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("variable_states", sa.JSON(), nullable=False),
        sa.Column("correlations", sa.JSON(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_azure_models_model_id", "azure_models", ["model_id"])
    op.create_table(
        "azure_results",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "azure_model_id",
            sa.String(36),
            sa.ForeignKey("azure_models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("setup", sa.JSON(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("variable_states", sa.JSON(), nullable=False),
        sa.Column("result_key", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_azure_results_azure_model_id", "azure_results", ["azure_model_id"])
    op.create_index("ix_azure_results_created_at", "azure_results", ["created_at"])


def downgrade() -> None:
    op.drop_table("azure_results")
    op.drop_table("azure_models")
