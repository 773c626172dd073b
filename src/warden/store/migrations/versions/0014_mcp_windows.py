"""mcp windows: the gateway's rate limit and loop detector windows, shared by its processes

One row per window (a principal's calls of a tool under one limit, or one repeated call): the
newest call times within the window, at most `cap` of them, as a JSON array. A call's count is
one upsert of its row, so gateways sharing the database count together and a restart keeps the
count. `expires_at` (the newest call plus the window) lets stale rows be pruned by an index scan.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mcp_windows",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("stamps", sa.Text, nullable=False),
        sa.Column("span", sa.Float, nullable=False),
        sa.Column("cap", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_mcp_windows"),
    )
    op.create_index("ix_mcp_windows_expires_at", "mcp_windows", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_mcp_windows_expires_at", table_name="mcp_windows")
    op.drop_table("mcp_windows")
