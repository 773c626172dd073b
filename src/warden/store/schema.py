"""The tables. State rows and the ledger's `events` live side by side so one transaction writes both."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Timestamp = sa.DateTime(timezone=True)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("point", sa.String(64), nullable=False),
    sa.Column("route", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(128)),
    sa.Column("proposed_outcome", sa.String(128)),
    sa.Column("confidence", sa.Float),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("policy_version", sa.String(64), nullable=False),
    sa.Column("model_version", sa.String(128)),
    sa.Column("input", sa.JSON, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("request_hash", sa.String(64)),
    sa.Column("actor", sa.String(255)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("decided_at", Timestamp),
    sa.Column("ground_truth", sa.String(128)),
    sa.Column("ground_truth_at", Timestamp),
    sa.UniqueConstraint("point", "idempotency_key"),
    sa.Index(None, "point", "id"),
    sa.Index(None, "status", "point"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("point", sa.String(64)),
    sa.Column("decision_id", sa.String(36)),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("ts", Timestamp, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("leaf_hash", sa.String(64), nullable=False),
    sa.Column("chain_hash", sa.String(64), nullable=False),
    sa.Index(None, "decision_id"),
)

ledger_head = sa.Table(
    "ledger_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("chain_hash", sa.String(64), nullable=False),
)

kill_switches = sa.Table(
    "kill_switches",
    metadata,
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("engaged", sa.Boolean, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("changed_at", Timestamp, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("points", sa.JSON, nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("revoked_at", Timestamp),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("point", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("content", sa.JSON, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("loaded_by", sa.String(255), nullable=False),
    sa.Column("first_loaded_at", Timestamp, nullable=False),
)
