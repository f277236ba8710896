"""control_requests: control commands written to the database (the path that works while Redis is down)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "control_requests",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=True),
        sa.Column("ts_requested", sa.BigInteger(), nullable=False),
        sa.Column("ts_handled", sa.BigInteger(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("state", sa.String(16), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_requests")),
        sa.UniqueConstraint("request_id", name=op.f("uq_control_requests_request_id")),
    )
    op.create_index(op.f("ix_control_requests_ts_handled"), "control_requests", ["ts_handled"])


def downgrade() -> None:
    op.drop_index(op.f("ix_control_requests_ts_handled"), table_name="control_requests")
    op.drop_table("control_requests")
