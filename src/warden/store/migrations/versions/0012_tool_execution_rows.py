"""tool executions: the rows of calls executed before the table existed

Before 0008 the single-use claim of an approval was the `tool_call.executed` event alone; 0008
made it a `tool_executions` row but left the table empty. Each decision executed before then
gets its row from its first `tool_call.executed` event (its point, actor and time), so the
primary key also refuses a second execution of those approvals, and the state check derives
every row from the ledger.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        INSERT INTO tool_executions (decision_id, point, actor, executed_at)
        SELECT e.decision_id, e.point, e.actor, e.ts
        FROM events e
        WHERE e.type = 'tool_call.executed'
          AND e.decision_id IS NOT NULL
          AND e.point IS NOT NULL
          AND e.seq = (
            SELECT min(f.seq) FROM events f
            WHERE f.decision_id = e.decision_id AND f.type = 'tool_call.executed'
          )
          AND NOT EXISTS (SELECT 1 FROM tool_executions t WHERE t.decision_id = e.decision_id)
        """
    )


def downgrade() -> None:
    pass  # the rows are facts of the ledger; 0008's downgrade drops the table
