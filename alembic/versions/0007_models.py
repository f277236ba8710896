"""models: the model registry (versions of model bundles per name, one promoted per name)

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-12
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PROMOTED = sa.text("state = 'promoted'")


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("onnx_sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("promoted_by", sa.String(64), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_by", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint("state IN ('registered', 'promoted', 'retired')", name=op.f("ck_models_state")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_models_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_models_name_version")),
    )
    op.create_index("uq_models_promoted_name", "models", ["name"], unique=True,
                    sqlite_where=PROMOTED, postgresql_where=PROMOTED)


def downgrade() -> None:
    op.drop_index("uq_models_promoted_name", table_name="models")
    op.drop_table("models")
