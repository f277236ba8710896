"""orders.stop_price: the trigger price of STOP orders (reloaded with open orders on restart)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# common.db.Amount: exact NUMERIC(28, 10); text on SQLite (its NUMERIC is a binary float).
AMOUNT = sa.Numeric(28, 10).with_variant(sa.String(40), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("orders") as b:
        b.add_column(sa.Column("stop_price", AMOUNT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as b:
        b.drop_column("stop_price")
