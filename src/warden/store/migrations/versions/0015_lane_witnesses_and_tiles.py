"""lanes above 0: witnesses' cosignatures and stored Merkle tiles per lane

`lane_cosignatures` keeps what each witness cosigned of lane k's own tlog-checkpoint (origin
`ORIGIN/lane/k`), as `checkpoint_cosignatures` does for lane 0. `lane_tiles` keeps the hashes of
the perfect subtrees of 64 events of each lane above 0, as `ledger_tiles` does for lane 0, so a
new process neither hashes a lane in full nor proves against it in O(events in the lane). Both
are empty on a ledger of one lane.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lane_cosignatures",
        sa.Column("lane", sa.SmallInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("witness", sa.String(255), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lane", "size", "witness", name=op.f("pk_lane_cosignatures")),
    )
    op.create_table(
        "lane_tiles",
        sa.Column("lane", sa.SmallInteger(), nullable=False),
        sa.Column("tile", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("lane", "tile", name=op.f("pk_lane_tiles")),
    )


def downgrade() -> None:
    op.drop_table("lane_tiles")
    op.drop_table("lane_cosignatures")
