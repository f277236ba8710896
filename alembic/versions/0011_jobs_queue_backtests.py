"""jobs on the task queue (type, payload, result, progress, cancellation, worker lease) and backtests

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NEW = "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')"
OLD = "status IN ('queued', 'running', 'done', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        b.drop_constraint(op.f("ck_jobs_status"), type_="check")
    op.execute("UPDATE jobs SET status = 'completed' WHERE status = 'done'")
    with op.batch_alter_table("jobs") as b:
        b.alter_column("kind", new_column_name="type", existing_type=sa.String(32), existing_nullable=False)
        b.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        b.add_column(sa.Column("result", sa.JSON(), nullable=True))
        b.add_column(sa.Column("progress", sa.Float(), server_default="0", nullable=False))
        b.add_column(sa.Column("progress_note", sa.String(256), server_default="", nullable=False))
        b.add_column(sa.Column("task_id", sa.String(64), server_default="", nullable=False))
        b.add_column(sa.Column("worker", sa.String(128), server_default="", nullable=False))
        b.add_column(sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False))
        b.add_column(sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False))
        b.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("parent_id", ID, nullable=True))
        b.create_foreign_key(op.f("fk_jobs_parent_id_jobs"), "jobs", ["parent_id"], ["id"], ondelete="SET NULL")
        b.create_check_constraint("status", NEW)
    op.create_index(op.f("ix_jobs_type"), "jobs", ["type"])
    op.create_table(
        "backtests",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("label", sa.String(128), server_default="", nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("config_digest", sa.String(64), server_default="", nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("timeseries_path", sa.String(1024), server_default="", nullable=False),
        sa.Column("trades_path", sa.String(1024), server_default="", nullable=False),
        sa.Column("ticks", ID, server_default="0", nullable=False),
        sa.Column("orders", ID, server_default="0", nullable=False),
        sa.Column("fills", ID, server_default="0", nullable=False),
        sa.Column("duration_s", sa.Float(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(NEW, name=op.f("ck_backtests_status")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_backtests_job_id_jobs"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtests")),
    )
    op.create_index(op.f("ix_backtests_job_id"), "backtests", ["job_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_backtests_job_id"), table_name="backtests")
    op.drop_table("backtests")
    op.drop_index(op.f("ix_jobs_type"), table_name="jobs")
    with op.batch_alter_table("jobs") as b:
        b.drop_constraint(op.f("ck_jobs_status"), type_="check")
        b.drop_constraint(op.f("fk_jobs_parent_id_jobs"), type_="foreignkey")
        for col in ("parent_id", "heartbeat_at", "cancel_requested", "attempts", "worker", "task_id",
                    "progress_note", "progress", "result", "payload"):
            b.drop_column(col)
        b.alter_column("type", new_column_name="kind", existing_type=sa.String(32), existing_nullable=False)
    # A downgrade keeps every row: statuses the old schema lacks fold into the nearest one it has.
    op.execute("UPDATE jobs SET status = 'done' WHERE status = 'completed'")
    op.execute("UPDATE jobs SET status = 'failed' WHERE status = 'cancelled'")
    with op.batch_alter_table("jobs") as b:
        b.create_check_constraint("status", OLD)
