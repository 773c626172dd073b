"""Signing and reading lanes checkpoints: every lane's size and root at one moment, one note.

The heads are read in one snapshot, so the checkpoint is a consistent cut: a barrier (a
transaction that spans every lane) is wholly in it or wholly out. Every lane's root comes from
its stored tree (tiles), so a checkpoint hashes only what its lanes gained.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from warden.errors import InvalidRequest
from warden.ledger import identity, remembered
from warden.ledger import note as notes
from warden.ledger.keys import SigningKey
from warden.ledger.lanes import (
    CONTROL,
    LaneHead,
    LaneProof,
    index_inclusion,
    lane_count,
    parse_index_body,
    sign_lanes,
)
from warden.ledger.tree import LedgerDamaged, LedgerTree
from warden.ledger.verify import snapshot
from warden.store.database import write_connection
from warden.store.schema import events, lane_checkpoints, ledger_head


class LaneTrees:
    """One stored Merkle tree per lane (`LedgerTree`: tiles of 64 events kept in the database,
    the levels above them in memory), so a lanes checkpoint, a proof or a consistency proof in
    any lane reads a tile or two of leaves instead of the whole lane, in a new process too.
    Tiles are derived data: `warden audit verify` re-derives every lane's tiles and roots."""

    def __init__(self) -> None:
        self._trees: dict[int, LedgerTree] = {}
        self._lock = threading.Lock()

    @property
    def control(self) -> LedgerTree:
        return self.tree(CONTROL)

    def tree(self, lane: int) -> LedgerTree:
        with self._lock:
            found = self._trees.get(lane)
            if found is None:
                found = self._trees[lane] = LedgerTree(lane)
            return found

    def store_tiles(self, db: sa.Engine, sizes: Sequence[int]) -> None:
        """Hash and store every lane's complete tiles below its size not stored yet."""
        for lane, size in enumerate(sizes):
            self.tree(lane).store_tiles(db, size)

    def root(self, conn: sa.Connection, lane: int, size: int) -> bytes:
        return self.tree(lane).root(conn, size)

    def inclusion(self, conn: sa.Connection, lane: int, index: int, size: int) -> list[bytes]:
        return self.tree(lane).inclusion(conn, index, size)

    def consistency(self, conn: sa.Connection, lane: int, old: int, new: int) -> list[bytes]:
        if old == 0 or old == new:
            return []
        return self.tree(lane).consistency(conn, old, new)


@dataclass(frozen=True)
class LanesCheckpoint:
    origin: str
    heads: list[LaneHead]
    note: str  # the signed index
    lane_notes: list[str]  # each lane's own tlog-checkpoint, for its witnesses


def lane_heads(conn: sa.Connection, trees: LaneTrees | None = None) -> list[LaneHead]:
    """Every lane's size and Merkle root as `conn` sees the ledger."""
    sizes = {
        int(id_) - 1: int(seq)
        for id_, seq in conn.execute(sa.select(ledger_head.c.id, ledger_head.c.seq)).all()
    }
    trees = trees or LaneTrees()
    heads = []
    for lane in range(lane_count(conn)):
        size = sizes.get(lane, 0)
        heads.append(LaneHead(lane, size, trees.root(conn, lane, size)))
    return heads


def make_lanes_checkpoint(
    db: sa.Engine, key: SigningKey, trees: LaneTrees | None = None
) -> LanesCheckpoint:
    """Sign every lane as it is now, in one snapshot, and store the signed index.

    Every lane must extend the last lanes checkpoint this signer made (remembered beside the key,
    outside the database): a lane rewritten or truncated since is refused, named, not signed.
    """
    origin = identity.ensure_origin(db)
    with db.connect() as conn:
        current = identity.active(conn)
    if current is not None and current.key_id != key.public.key_id:
        raise identity.KeyChanged(
            f"the ledger now signs with key {current.key_id}, not {key.public.key_id}: the key "
            "was rotated; load the current key"
        )
    trees = trees or LaneTrees()
    memory = remembered.lanes_path_for(key)
    state = remembered.load_lanes(memory)
    try:
        with db.connect() as conn:
            trees.store_tiles(db, head_sizes(conn))
        with snapshot(db) as conn:
            heads = lane_heads(conn, trees)
            remembered.check_lanes_extend(
                memory, origin, heads, lambda lane, size: trees.root(conn, lane, size), state
            )
    except LedgerDamaged as exc:  # a lane's events are missing: no tree, no signature
        if state is None:
            raise
        raise remembered.LedgerForked(f"refusing to sign the lanes checkpoint: {exc}") from None
    note, per_lane = sign_lanes(origin, heads, key.key)
    signed_at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    with write_connection(db) as conn, conn.begin():
        conn.execute(
            lane_checkpoints.insert().values(
                signed_at=signed_at, key_id=key.public.key_id, note=note
            )
        )
    remembered.remember_lanes(memory, note, heads)
    return LanesCheckpoint(origin, heads, note, per_lane)


def latest_sizes(conn: sa.Connection) -> list[int] | None:
    """Each lane's size at the newest stored lanes checkpoint, or None if there is none."""
    text = conn.execute(
        sa.select(lane_checkpoints.c.note).order_by(lane_checkpoints.c.id.desc()).limit(1)
    ).scalar()
    if text is None:
        return None
    try:
        return [h.size for h in parse_index_body(notes.parse_note(text).body)[1]]
    except notes.NoteError:
        return None  # unreadable: verify names it; sign a new one


def head_sizes(conn: sa.Connection) -> list[int]:
    """Each lane's head, lane 0 first."""
    rows = conn.execute(sa.select(ledger_head.c.id, ledger_head.c.seq).order_by(ledger_head.c.id))
    return [int(seq) for _, seq in rows.all()]


def lane_consistency(
    conn: sa.Connection, lane: int, old: int, new: int, trees: LaneTrees | None = None
) -> list[bytes]:
    """The RFC 9162 consistency proof of one lane from size `old` to `new`."""
    return (trees or LaneTrees()).consistency(conn, lane, old, new)


def prove_event(
    conn: sa.Connection,
    checkpoint: LanesCheckpoint,
    lane: int,
    seq: int,
    trees: LaneTrees | None = None,
) -> LaneProof:
    """Event `seq` of `lane` proved against a lanes checkpoint: in its lane, its lane in the index."""
    head = checkpoint.heads[lane]
    if not 1 <= seq <= head.size:
        raise InvalidRequest(f"event {seq} of lane {lane} is not under this lanes checkpoint")
    body = conn.execute(
        sa.select(events.c.body).where(events.c.lane == lane, events.c.seq == seq)
    ).scalar_one()
    return LaneProof(
        body=body,
        lane=lane,
        seq=seq,
        inclusion=(trees or LaneTrees()).inclusion(conn, lane, seq - 1, head.size),
        lane_inclusion=index_inclusion(checkpoint.origin, checkpoint.heads, lane),
        index_note=checkpoint.note,
    )
