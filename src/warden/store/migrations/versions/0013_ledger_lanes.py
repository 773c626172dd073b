"""ledger lanes: every event names its lane; an event's place is (lane, seq)

Existing events become lane 0 and verify exactly as before (their bodies have no lane). On
PostgreSQL the primary key becomes (lane, seq), so several lanes can each count from 1; on
SQLite, which has one lane, the table keeps its primary key `seq` and is not rebuilt.
`lane_checkpoints` keeps the signed lanes checkpoints of a ledger with several lanes.
`warden_append` (0011) learns lanes: head row `p_head` is lane `p_head - 1`, its events are
inserted in that lane, and the guard events it looks for after the writer's guard state are
those of lane 0 (where every guard event is), numbered in lane 0.

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


APPEND_LANES = r"""
CREATE OR REPLACE FUNCTION warden_append(
    p_head integer,
    p_guard_seq bigint,
    p_heads bytea[],
    p_tails bytea[],
    p_types text[],
    p_points text[],
    p_decision_ids text[],
    p_actors text[],
    p_ts timestamptz[]
) RETURNS TABLE (last_seq bigint, last_hash text, locked_at double precision)
LANGUAGE plpgsql AS $$
DECLARE
    head_seq bigint;
    head_hash text;
    locked double precision;
    prev bytea;
    body bytea;
    leaf bytea;
    link bytea;
    n integer := coalesce(array_length(p_heads, 1), 0);
    bodies text[] := '{}';
    prevs text[] := '{}';
    leaves text[] := '{}';
    links text[] := '{}';
BEGIN
    SELECT h.seq, h.chain_hash INTO head_seq, head_hash
    FROM ledger_head h WHERE h.id = p_head FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ledger_head row % is missing; run warden init', p_head
            USING ERRCODE = 'WA001';
    END IF;
    locked := extract(epoch FROM clock_timestamp());
    IF (p_head <> 1 OR head_seq > p_guard_seq) AND EXISTS (
        SELECT 1 FROM events e
        WHERE e.lane = 0 AND e.seq > p_guard_seq
          AND (starts_with(e.type, 'kill_switch.') OR starts_with(e.type, 'model.alias')
               OR starts_with(e.type, 'policy.') OR starts_with(e.type, 'rollout.'))
    ) THEN
        RAISE EXCEPTION 'the guard state changed after event %', p_guard_seq
            USING ERRCODE = 'WA002';
    END IF;
    prev := decode(head_hash, 'hex');
    FOR i IN 1 .. n LOOP
        body := p_heads[i] || convert_to((head_seq + i)::text, 'UTF8') || p_tails[i];
        leaf := sha256('\x00'::bytea || body);
        link := sha256(prev || leaf);
        bodies := array_append(bodies, convert_from(body, 'UTF8'));
        prevs := array_append(prevs, encode(prev, 'hex'));
        leaves := array_append(leaves, encode(leaf, 'hex'));
        links := array_append(links, encode(link, 'hex'));
        prev := link;
    END LOOP;
    INSERT INTO events
        (lane, seq, type, point, decision_id, actor, ts, body, prev_hash, leaf_hash, chain_hash)
    SELECT p_head - 1, head_seq + u.i, u.t, u.p, u.d, u.a, u.ts, u.b, u.pr, u.lf, u.ch
    FROM unnest(p_types, p_points, p_decision_ids, p_actors, p_ts, bodies, prevs, leaves, links)
        WITH ORDINALITY AS u(t, p, d, a, ts, b, pr, lf, ch, i);
    UPDATE ledger_head SET seq = head_seq + n, chain_hash = encode(prev, 'hex')
    WHERE id = p_head;
    RETURN QUERY SELECT head_seq + n, encode(prev, 'hex'), locked;
END
$$
"""


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
        op.execute(APPEND_LANES)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        scripts = op.get_context().script
        previous = scripts.get_revision("0011") if scripts is not None else None
        assert previous is not None and previous.module is not None
        op.execute(previous.module.APPEND)
        op.drop_constraint("pk_events", "events", type_="primary")
        op.create_primary_key("pk_events", "events", ["seq"])
    with op.batch_alter_table("events") as batch:
        batch.drop_column("lane")
    op.drop_table("lane_checkpoints")
