"""models: a 'deleted' state (the bundle's files removed, the row kept so the version is never reused)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW = "state IN ('registered', 'promoted', 'retired', 'deleted')"
OLD = "state IN ('registered', 'promoted', 'retired')"


def upgrade() -> None:
    with op.batch_alter_table("models") as b:
        b.drop_constraint(op.f("ck_models_state"), type_="check")
        b.create_check_constraint("state", NEW)


def downgrade() -> None:
    # The old schema has no 'deleted': such rows become 'retired' (their files are gone either way).
    op.execute("UPDATE models SET state = 'retired' WHERE state = 'deleted'")
    with op.batch_alter_table("models") as b:
        b.drop_constraint(op.f("ck_models_state"), type_="check")
        b.create_check_constraint("state", OLD)
