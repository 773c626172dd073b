"""ledger append in one round trip: a PostgreSQL function that locks the head, chains, inserts

The writer prepares each event's canonical bytes on either side of its sequence number; this
function, called in the writer's transaction right before COMMIT, takes the head row lock,
hashes (leaf = SHA-256(0x00 || body), chain = SHA-256(prev || leaf)), inserts the events and
advances the head — so the lock is held by the database alone, never across a round trip to
the writer. It refuses (SQLSTATE WA002) when an event that changes the guard state (kill
switches, rollouts, aliases, live policies) was written after the writer last read that state;
the writer then re-reads it under the lock. SQLite: nothing to do.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

APPEND = r"""
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
    IF head_seq > p_guard_seq AND EXISTS (
        SELECT 1 FROM events e
        WHERE e.seq > p_guard_seq
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
        (seq, type, point, decision_id, actor, ts, body, prev_hash, leaf_hash, chain_hash)
    SELECT head_seq + u.i, u.t, u.p, u.d, u.a, u.ts, u.b, u.pr, u.lf, u.ch
    FROM unnest(p_types, p_points, p_decision_ids, p_actors, p_ts, bodies, prevs, leaves, links)
        WITH ORDINALITY AS u(t, p, d, a, ts, b, pr, lf, ch, i);
    UPDATE ledger_head SET seq = head_seq + n, chain_hash = encode(prev, 'hex')
    WHERE id = p_head;
    RETURN QUERY SELECT head_seq + n, encode(prev, 'hex'), locked;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS warden_append("
            "integer, bigint, bytea[], bytea[], text[], text[], text[], text[], timestamptz[])"
        )
