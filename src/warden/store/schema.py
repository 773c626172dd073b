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
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), autoincrement=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("point", sa.String(64)),
    sa.Column("decision_id", sa.String(36)),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("ts", Timestamp, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("leaf_hash", sa.String(64), nullable=False),
    sa.Column("chain_hash", sa.String(64), nullable=False),
    # the event's lane (migration 0013): `seq` counts within it; lane 0 is the whole ledger
    # of a one-lane deployment. On SQLite (one lane) the stored primary key stays `seq`.
    sa.Column("lane", sa.SmallInteger, nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("lane", "seq"),
    sa.Index(None, "decision_id"),
    # events not about one decision, folded by the state check (migration 0010)
    sa.Index(
        "ix_events_state_seq",
        "seq",
        sqlite_where=sa.text("decision_id IS NULL"),
        postgresql_where=sa.text("decision_id IS NULL"),
    ),
)

# one row per lane, id = lane + 1 (`warden.ledger.lanes`)
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

# -- principals and credential lifecycle (migration 0010) ---------------------------------

principals = sa.Table(
    "principals",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("disabled_at", Timestamp),
)

# One row: bumped in the transaction of every revocation, disabling or rotation, so each
# replica's credential cache learns of it with one cheap read.
auth_epoch = sa.Table(
    "auth_epoch",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
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
    sa.Column("groups", sa.JSON, server_default=sa.text("'[]'")),  # reviewer groups (0003)
    sa.Column("principal_id", sa.String(32)),  # 0009: the person or service it belongs to
    sa.Column("expires_at", Timestamp),  # 0009
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
    sa.Column("status", sa.String(16), nullable=False, server_default="live"),
    sa.Column("approved_by", sa.String(255)),
    sa.Column("approved_at", Timestamp),
)

# -- human review (migration 0003) ---------------------------------------------------------

review_tasks = sa.Table(
    "review_tasks",
    metadata,
    sa.Column("decision_id", sa.String(36), primary_key=True),
    sa.Column("point", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("groups", sa.JSON, nullable=False),
    sa.Column("escalate_to", sa.JSON, nullable=False),
    sa.Column("required", sa.Integer, nullable=False),
    sa.Column("escalation_required", sa.Integer),  # 0009: agreeing votes once escalated
    sa.Column("four_eyes", sa.Boolean, nullable=False),
    sa.Column("votes", sa.JSON, nullable=False),
    sa.Column("excluded", sa.JSON, nullable=False),
    sa.Column("submitted_by", sa.String(255)),
    sa.Column("on_expiry", sa.String(128)),
    sa.Column("sla_seconds", sa.Float),
    sa.Column("lease_seconds", sa.Float, nullable=False),
    sa.Column("callback_url", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("due_at", Timestamp),
    sa.Column("claimed_by", sa.String(255)),
    sa.Column("claim_method", sa.String(32)),
    sa.Column("claimed_at", Timestamp),
    sa.Column("lease_until", Timestamp),
    sa.Column("decided_at", Timestamp),
    sa.Column("outcome", sa.String(128)),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Index(None, "status", "point", "decision_id"),
    sa.Index(None, "status", "due_at"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("points", sa.JSON, nullable=False),
    sa.Column("groups", sa.JSON, nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("disabled_at", Timestamp),
    sa.Column("principal_id", sa.String(32)),  # 0009
)

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("token_id", sa.String(32)),
    sa.Column("username", sa.String(64)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("decision_id", sa.String(36), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", Timestamp, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "decision_id"),
)

server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

# -- safe change: model registry, rollouts, shadow results ------------------------------------

model_artifacts = sa.Table(
    "model_artifacts",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("point", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(128), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("registered_by", sa.String(255), nullable=False),
    sa.Column("registered_at", Timestamp, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("point", sa.String(64), primary_key=True),
    sa.Column("alias", sa.String(32), primary_key=True),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("moved_by", sa.String(255), nullable=False),
    sa.Column("moved_at", Timestamp, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("point", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("champion", sa.String(128), nullable=False),
    sa.Column("challenger", sa.String(128), nullable=False),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("step_started_at", Timestamp, nullable=False),
    sa.Column("started_by", sa.String(255), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index(None, "point", "state"),
)

shadow_results = sa.Table(
    "shadow_results",
    metadata,
    sa.Column("decision_id", sa.String(36), primary_key=True),
    sa.Column("model_version", sa.String(128), primary_key=True),
    sa.Column("point", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(128)),
    sa.Column("confidence", sa.Float),
    sa.Column("failure", sa.String(32)),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "point", "created_at"),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root", sa.String(64), nullable=False),
    sa.Column("signed_at", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
    sa.Column("note", sa.Text),  # the same checkpoint as a C2SP signed note (migration 0007)
)

# signed lanes checkpoints of a ledger with several lanes (migration 0013, `warden.ledger.lanes`)
lane_checkpoints = sa.Table(
    "lane_checkpoints",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("signed_at", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
)

ledger_tiles = sa.Table(
    "ledger_tiles",
    metadata,
    sa.Column("tile", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# the tiles of lanes above 0, as ledger_tiles for lane 0 (migration 0015)
lane_tiles = sa.Table(
    "lane_tiles",
    metadata,
    sa.Column("lane", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("tile", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# -- ledger trust (migration 0007) -----------------------------------------------------------

ledger_identity = sa.Table(
    "ledger_identity",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("origin", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

ledger_keys = sa.Table(
    "ledger_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("added_at", Timestamp, nullable=False),
    sa.Column("replaced_by", sa.String(64)),
)

checkpoint_cosignatures = sa.Table(
    "checkpoint_cosignatures",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("witness", sa.String(255), primary_key=True),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
)

# what witnesses cosigned of lane k's own checkpoint (origin ORIGIN/lane/k; migration 0015)
lane_cosignatures = sa.Table(
    "lane_cosignatures",
    metadata,
    sa.Column("lane", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("witness", sa.String(255), primary_key=True),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
)

# -- monitoring (migration 0004) ------------------------------------------------------------

monitor_references = sa.Table(
    "monitor_references",
    metadata,
    sa.Column("point", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("profile", sa.JSON, nullable=False),
    sa.Column("built_at", Timestamp, nullable=False),
)

monitor_windows = sa.Table(
    "monitor_windows",
    metadata,
    sa.Column("point", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("opened_at", Timestamp, nullable=False),
    sa.Column("closed_at", Timestamp, nullable=False),
    sa.Column("first_event", sa.BigInteger),
    sa.Column("last_event", sa.BigInteger, nullable=False),
    sa.Column("decisions", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("drift", sa.JSON, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Index(None, "point", "closed_at"),
)

monitor_alerts = sa.Table(
    "monitor_alerts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("point", sa.String(64), nullable=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("metric", sa.String(128), nullable=False),
    sa.Column("op", sa.String(2), nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("fired_at", Timestamp),
    sa.Column("resolved_at", Timestamp),
    sa.Column("resolved_by", sa.String(255)),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index(None, "point", "state"),
)

monitor_protections = sa.Table(
    "monitor_protections",
    metadata,
    sa.Column("point", sa.String(64), primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("alert_id", sa.String(36), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("engaged_at", Timestamp, nullable=False),
)

monitor_leases = sa.Table(
    "monitor_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("cursor", sa.BigInteger, nullable=False),
)

# -- agents' tool calls (migration 0008) -----------------------------------------------------

tool_executions = sa.Table(
    "tool_executions",
    metadata,
    # One row per executed decision: the primary key makes an approval single-use, checked by
    # the database in the transaction that records `tool_call.executed`.
    sa.Column("decision_id", sa.String(36), primary_key=True),
    sa.Column("point", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("executed_at", Timestamp, nullable=False),
)

# -- the MCP gateway's limit and loop windows (migration 0014) -------------------------------

mcp_windows = sa.Table(
    "mcp_windows",
    metadata,
    # sha256 of the window's identity; `stamps` the newest call times (epoch seconds) within
    # `span` seconds, at most `cap`; stale once `expires_at` passes.
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("stamps", sa.Text, nullable=False),
    sa.Column("span", sa.Float, nullable=False),
    sa.Column("cap", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)
