"""ledger lanes: every event names its lane; an event's place is (lane, seq)

Existing events become lane 0 and verify exactly as before (their bodies have no lane). On
PostgreSQL the primary key becomes (lane, seq), so several lanes can each count from 1; on
SQLite, which has one lane, the table keeps its primary key `seq` and is not rebuilt.
`lane_checkpoints` keeps the signed lanes checkpoints of a ledger with several lanes.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lane_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("signed_at", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lane_checkpoints")),
    )
    op.add_column(
        "events", sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="0")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("pk_events", "events", type_="primary")
        op.create_primary_key("pk_events", "events", ["lane", "seq"])


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("pk_events", "events", type_="primary")
        op.create_primary_key("pk_events", "events", ["seq"])
    with op.batch_alter_table("events") as batch:
        batch.drop_column("lane")
    op.drop_table("lane_checkpoints")
