"""policy change control: status and approver of each stored policy version

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policies") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="live"))
        batch.add_column(sa.Column("approved_by", sa.String(255), nullable=True))
        batch.add_column(sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True))
    # Before change control every loaded version counted; keep only the newest live per point.
    op.execute(
        "UPDATE policies SET status = 'superseded' WHERE first_loaded_at < "
        "(SELECT MAX(p2.first_loaded_at) FROM policies p2 WHERE p2.point = policies.point)"
    )


def downgrade() -> None:
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("approved_at")
        batch.drop_column("approved_by")
        batch.drop_column("status")
