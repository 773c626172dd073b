"""principals behind every credential, token expiry, the credential-change epoch, and the
approvals an escalated review task needs

Every existing token and console user gets the principal named after it (tokens of one name,
and the console user of that name, are one person), with the same id `principal_id_for`
gives new ones, so the ledger's older events still imply the rows. Tasks already open keep
needing, once escalated, as many approvals as they do now (NULL reads as `required`).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def _principal_id(name: str) -> str:
    return "p_" + hashlib.sha256(name.encode()).hexdigest()[:16]


def upgrade() -> None:
    principals = op.create_table(
        "principals",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("disabled_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_principals")),
        sa.UniqueConstraint("name", name=op.f("uq_principals_name")),
    )
    epoch = op.create_table(
        "auth_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_epoch")),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("principal_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("expires_at", Timestamp, nullable=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("principal_id", sa.String(length=32), nullable=True))
    with op.batch_alter_table("review_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalation_required", sa.Integer(), nullable=True))
    op.bulk_insert(epoch, [{"id": 1, "epoch": 0}])

    conn = op.get_bind()
    names = {r[0] for r in conn.execute(sa.text("SELECT name FROM tokens"))}
    names |= {r[0] for r in conn.execute(sa.text("SELECT username FROM users"))}
    now = datetime.now(UTC)
    op.bulk_insert(
        principals,
        [
            {
                "id": _principal_id(n),
                "name": n,
                "kind": "person",
                "created_by": "migration:0009",
                "created_at": now,
                "disabled_at": None,
            }
            for n in sorted(names)
        ],
    )
    for n in sorted(names):
        pid = _principal_id(n)
        conn.execute(
            sa.text("UPDATE tokens SET principal_id = :p WHERE name = :n"), {"p": pid, "n": n}
        )
        conn.execute(
            sa.text("UPDATE users SET principal_id = :p WHERE username = :n"), {"p": pid, "n": n}
        )


def downgrade() -> None:
    with op.batch_alter_table("review_tasks", schema=None) as batch_op:
        batch_op.drop_column("escalation_required")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("principal_id")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("principal_id")
    op.drop_table("auth_epoch")
    op.drop_table("principals")
