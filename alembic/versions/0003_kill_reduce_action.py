"""kill_switch_events.action: also 'reduce' (a scope put in REDUCING mode)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_kill_switch_events_action"


def upgrade() -> None:
    with op.batch_alter_table("kill_switch_events") as b:
        b.drop_constraint(op.f(_NAME), type_="check")
        b.create_check_constraint(op.f(_NAME), "action IN ('engage', 'reduce', 'release')")


def downgrade() -> None:
    # A 'reduce' row cannot be kept under the old rule: it becomes the engage it restricted like.
    op.execute("UPDATE kill_switch_events SET action = 'engage' WHERE action = 'reduce'")
    with op.batch_alter_table("kill_switch_events") as b:
        b.drop_constraint(op.f(_NAME), type_="check")
        b.create_check_constraint(op.f(_NAME), "action IN ('engage', 'release')")
