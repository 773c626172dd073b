"""state projection: an index of the events that are not about one decision

`warden audit verify` folds these (kill switches, tokens, users, policies, models, rollouts,
alerts) in seq order; the partial index reads them without scanning every decision's event.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

WHERE = sa.text("decision_id IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_events_state_seq",
        "events",
        ["seq"],
        sqlite_where=WHERE,
        postgresql_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_events_state_seq", table_name="events")
