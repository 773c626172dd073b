"""safe change: model registry, rollouts, shadow results

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_artifacts",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_model_artifacts")),
    )
    op.create_table(
        "model_versions",
        sa.Column("point", sa.String(64), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("registered_by", sa.String(255), nullable=False),
        sa.Column("registered_at", Timestamp, nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("point", "version", name=op.f("pk_model_versions")),
    )
    op.create_table(
        "model_aliases",
        sa.Column("point", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(32), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("moved_by", sa.String(255), nullable=False),
        sa.Column("moved_at", Timestamp, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("point", "alias", name=op.f("pk_model_aliases")),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("point", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("champion", sa.String(128), nullable=False),
        sa.Column("challenger", sa.String(128), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", Timestamp, nullable=False),
        sa.Column("started_by", sa.String(255), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index(op.f("ix_rollouts_point_state"), "rollouts", ["point", "state"])
    op.create_table(
        "shadow_results",
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("point", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(128), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("failure", sa.String(32), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "model_version", name=op.f("pk_shadow_results")),
    )
    op.create_index(
        op.f("ix_shadow_results_point_created_at"), "shadow_results", ["point", "created_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_shadow_results_point_created_at"), table_name="shadow_results")
    op.drop_table("shadow_results")
    op.drop_index(op.f("ix_rollouts_point_state"), table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_table("model_aliases")
    op.drop_table("model_versions")
    op.drop_table("model_artifacts")
