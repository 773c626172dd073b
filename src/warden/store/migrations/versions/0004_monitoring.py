"""monitoring: reference profiles, windows, alerts, protections, the monitor's lease

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "monitor_references",
        sa.Column("point", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("built_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("point", "fingerprint", name=op.f("pk_monitor_references")),
    )
    op.create_table(
        "monitor_windows",
        sa.Column("point", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("opened_at", Timestamp, nullable=False),
        sa.Column("closed_at", Timestamp, nullable=False),
        sa.Column("first_event", sa.BigInteger(), nullable=True),
        sa.Column("last_event", sa.BigInteger(), nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("drift", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("point", "seq", name=op.f("pk_monitor_windows")),
    )
    with op.batch_alter_table("monitor_windows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_monitor_windows_point_closed_at"), ["point", "closed_at"], unique=False
        )
    op.create_table(
        "monitor_alerts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("point", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("op", sa.String(length=2), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("fired_at", Timestamp, nullable=True),
        sa.Column("resolved_at", Timestamp, nullable=True),
        sa.Column("resolved_by", sa.String(length=255), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_alerts")),
    )
    with op.batch_alter_table("monitor_alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_monitor_alerts_point_state"), ["point", "state"], unique=False
        )
    op.create_table(
        "monitor_protections",
        sa.Column("point", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("engaged_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("point", "rule", name=op.f("pk_monitor_protections")),
    )
    op.create_table(
        "monitor_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_monitor_leases")),
    )


def downgrade() -> None:
    op.drop_table("monitor_leases")
    op.drop_table("monitor_protections")
    with op.batch_alter_table("monitor_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitor_alerts_point_state"))
    op.drop_table("monitor_alerts")
    with op.batch_alter_table("monitor_windows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitor_windows_point_closed_at"))
    op.drop_table("monitor_windows")
    op.drop_table("monitor_references")
