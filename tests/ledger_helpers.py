"""Building real ledgers in a real database, and tampering with them the way an attacker would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from warden.ledger.chain import EventDraft, leaf_hash, next_chain_hash, seal
from warden.ledger.checkpoint import make_checkpoint
from warden.ledger.keys import SigningKey
from warden.store.recorder import Change, Recorder
from warden.store.schema import checkpoints, events, ledger_head, ledger_tiles

BASE_TIME = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def draft(n: int) -> EventDraft:
    """A varied event: different types, points, decisions and payload shapes."""
    # Types no fold knows: these ledgers have no state rows, so none is implied.
    kinds = ["test.decided", "test.reviewed", "test.switched", "test.loaded"]
    return EventDraft(
        type=kinds[n % len(kinds)],
        actor=f"token:t{n % 3}:caller" if n % 5 else "cli:auditor é",
        point=None if n % 7 == 0 else ("loan_approval", "refund_agent")[n % 2],
        decision_id=None if n % 4 == 3 else f"d-{n // 2:06d}",
        payload={"n": n, "amount": n * 12.5, "note": "ü" * (n % 3), "tags": list(range(n % 4))},
        ts=BASE_TIME + timedelta(seconds=n, microseconds=(n * 7919) % 1_000_000),
    )


def record(db: sa.Engine, start: int, end: int) -> None:
    """Events start..end-1, submitted concurrently so the recorder batches them."""
    recorder = Recorder(db)
    try:
        futures = [recorder.submit(Change(events=[draft(n)])) for n in range(start, end)]
        for future in futures:
            future.result(timeout=60)
    finally:
        recorder.close()


def build(db: sa.Engine, key: SigningKey, sizes: list[int]) -> None:
    """A ledger with a signed checkpoint at each of `sizes` (ascending)."""
    done = 0
    for size in sizes:
        record(db, done, size)
        make_checkpoint(db, key)
        done = size


class Snapshot:
    """Everything verify reads, saved so each example can tamper and then put it back."""

    def __init__(self, db: sa.Engine) -> None:
        self.db = db
        with db.connect() as conn:
            self.events = [dict(r) for r in conn.execute(sa.select(events)).mappings()]
            self.head = dict(conn.execute(sa.select(ledger_head)).mappings().one())
            self.checkpoints = [dict(r) for r in conn.execute(sa.select(checkpoints)).mappings()]
            self.tiles = [dict(r) for r in conn.execute(sa.select(ledger_tiles)).mappings()]
        self.size = len(self.events)

    def row(self, seq: int) -> dict[str, Any]:
        return dict(self.events[seq - 1])

    def restore(self) -> None:
        with self.db.begin() as conn:
            for table in (events, checkpoints, ledger_tiles):
                conn.execute(table.delete())
            conn.execute(events.insert(), self.events)
            conn.execute(checkpoints.insert(), self.checkpoints)
            if self.tiles:
                conn.execute(ledger_tiles.insert(), self.tiles)
            conn.execute(ledger_head.update().values(**self.head))


def _rewrite_body(row: dict[str, Any], change: str) -> str:
    body = orjson.loads(row["body"])
    body["payload"]["n"] = f"forged {change}"
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()


def modify_body(db: sa.Engine, snap: Snapshot, seq: int) -> None:
    with db.begin() as conn:
        conn.execute(
            events.update()
            .where(events.c.seq == seq)
            .values(body=_rewrite_body(snap.row(seq), "body"))
        )


def modify_and_rehash(db: sa.Engine, snap: Snapshot, seq: int) -> None:
    """Change an event and recompute its own hashes — but not those of the events after it."""
    row = snap.row(seq)
    body = _rewrite_body(row, "rehash")
    leaf = leaf_hash(body.encode())
    with db.begin() as conn:
        conn.execute(
            events.update()
            .where(events.c.seq == seq)
            .values(
                body=body,
                leaf_hash=leaf.hex(),
                chain_hash=next_chain_hash(row["prev_hash"], leaf),
            )
        )


COLUMN_CHANGES: dict[str, Any] = {
    "actor": "token:someone:else",
    "type": "decision.deleted",
    "point": "other_point",
    "decision_id": "d-forged",
    "ts": BASE_TIME - timedelta(days=3),
}


def modify_column(db: sa.Engine, seq: int, column: str) -> None:
    with db.begin() as conn:
        conn.execute(
            events.update().where(events.c.seq == seq).values({column: COLUMN_CHANGES[column]})
        )


def delete(db: sa.Engine, seq: int) -> None:
    with db.begin() as conn:
        conn.execute(events.delete().where(events.c.seq == seq))


def _shift(conn: sa.Connection, first: int, by: int) -> None:
    """Renumber events from `first` on by `by`, in two steps so no key collides on the way."""
    conn.execute(events.update().where(events.c.seq >= first).values(seq=-events.c.seq))
    conn.execute(events.update().where(events.c.seq < 0).values(seq=-events.c.seq + by))


def insert(db: sa.Engine, snap: Snapshot, seq: int) -> None:
    """Slip a well-formed forged event in at `seq`, renumbering the rest and the head."""
    prev = snap.row(seq - 1)["chain_hash"] if seq > 1 else "0" * 64
    forged = seal(seq, prev, EventDraft(type="decision.created", actor="forger", payload={}))
    with db.begin() as conn:
        _shift(conn, seq, 1)
        conn.execute(events.insert().values(**forged.row()))
        conn.execute(ledger_head.update().values(seq=snap.size + 1))


def append_behind_head(db: sa.Engine, snap: Snapshot) -> None:
    """A well-formed event appended straight into the table, not through Warden."""
    last = snap.row(snap.size)
    forged = seal(snap.size + 1, last["chain_hash"], EventDraft("decision.created", "forger", {}))
    with db.begin() as conn:
        conn.execute(events.insert().values(**forged.row()))


def swap(db: sa.Engine, first: int, second: int) -> None:
    with db.begin() as conn:
        conn.execute(events.update().where(events.c.seq == first).values(seq=-1))
        conn.execute(events.update().where(events.c.seq == second).values(seq=first))
        conn.execute(events.update().where(events.c.seq == -1).values(seq=second))


def truncate_and_rewrite(db: sa.Engine, snap: Snapshot, seq: int, count: int) -> int:
    """Cut the log before `seq` and write `count` new, perfectly chained events; new length."""
    prev = snap.row(seq - 1)["chain_hash"] if seq > 1 else "0" * 64
    forged = []
    for n in range(count):
        event = seal(seq + n, prev, EventDraft("decision.created", "rewriter", {"n": n}))
        prev = event.chain_hash
        forged.append(event.row())
    with db.begin() as conn:
        conn.execute(events.delete().where(events.c.seq >= seq))
        if forged:
            conn.execute(events.insert(), forged)
        conn.execute(ledger_head.update().values(seq=seq - 1 + count, chain_hash=prev))
    return seq - 1 + count


def assert_state_agrees(db: sa.Engine) -> None:
    """Every state row is what the ledger's events imply (`warden audit verify`'s state check)."""
    from warden.ledger.verify import verify_ledger

    report = verify_ledger(db, [])
    assert report.projection is not None
    assert report.ok, report.problems or [d.message for d in report.projection.disagreements[:5]]
