"""Signing and reading lanes checkpoints: every lane's size and root at one moment, one note.

The heads are read in one snapshot, so the checkpoint is a consistent cut: a barrier (a
transaction that spans every lane) is wholly in it or wholly out. Lane 0's root comes from the
stored tree (tiles); the other lanes' roots are hashed from their leaves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from warden.errors import InvalidRequest
from warden.ledger import identity, merkle, remembered
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
from warden.ledger.tree import LedgerTree
from warden.ledger.verify import snapshot
from warden.store.database import write_connection
from warden.store.schema import events, lane_checkpoints, ledger_head

_LEAVES = sa.text("SELECT leaf_hash FROM events WHERE lane = :lane AND seq <= :size ORDER BY seq")
_NEW_LEAVES = sa.text(
    "SELECT seq, leaf_hash FROM events WHERE lane = :lane AND seq > :start AND seq <= :size "
    "ORDER BY seq"
)


class LaneTrees:
    """The running Merkle frontier of each lane above 0, so a lanes checkpoint hashes only the
    leaves added since the last one (the first one in a process hashes them all). Derived data:
    `warden audit verify` re-derives every lane's root at every lanes checkpoint."""

    def __init__(self) -> None:
        self.control = LedgerTree()
        self._frontiers: dict[int, tuple[int, merkle.Frontier]] = {}
        self._marked: dict[tuple[int, int], bytes] = {}  # (lane, size) -> root passed on the way
        self._lock = threading.Lock()

    def root(self, conn: sa.Connection, lane: int, size: int, mark: int | None = None) -> bytes:
        """The lane's root at `size`; with `mark`, the root at that smaller size is kept for
        `root_at` when the frontier passes it (the signer's remembered size, checked for free)."""
        if lane == CONTROL:
            return self.control.root(conn, size)
        with self._lock:
            have, frontier = self._frontiers.get(lane, (0, merkle.Frontier()))
            if have > size:  # an older size than the one kept: hash it from the leaves
                return merkle.root(_lane_leaves(conn, lane, size))
            if mark == have:
                self._marked[lane, mark] = frontier.root()
            rows = conn.execute(_NEW_LEAVES, {"lane": lane, "start": have, "size": size}).all()
            for offset, (seq, leaf) in enumerate(rows):
                if seq != have + 1 + offset:
                    raise InvalidRequest(
                        f"event {have + 1 + offset} of lane {lane} is missing; run "
                        "`warden audit verify` to see what happened"
                    )
                frontier.append(bytes.fromhex(leaf))
                if mark == frontier.size:
                    self._marked[lane, mark] = frontier.root()
            if have + len(rows) != size:
                raise InvalidRequest(
                    f"lane {lane} holds {have + len(rows)} of its {size} events; run "
                    "`warden audit verify` to see what happened"
                )
            self._frontiers[lane] = (size, frontier)
            return frontier.root()

    def root_at(self, conn: sa.Connection, lane: int, size: int) -> bytes:
        """The lane's root over its first `size` events as `conn` sees them now: kept from the
        last pass when it went by `size`, else hashed from the leaves."""
        if lane == CONTROL:
            return self.control.root(conn, size)
        with self._lock:
            kept = self._marked.pop((lane, size), None)
        return kept if kept is not None else merkle.root(_lane_leaves(conn, lane, size))


@dataclass(frozen=True)
class LanesCheckpoint:
    origin: str
    heads: list[LaneHead]
    note: str  # the signed index
    lane_notes: list[str]  # each lane's own tlog-checkpoint, for its witnesses


def lane_heads(
    conn: sa.Connection, trees: LaneTrees | None = None, marks: dict[int, int] | None = None
) -> list[LaneHead]:
    """Every lane's size and Merkle root as `conn` sees the ledger (`marks`: see LaneTrees)."""
    sizes = {
        int(id_) - 1: int(seq)
        for id_, seq in conn.execute(sa.select(ledger_head.c.id, ledger_head.c.seq)).all()
    }
    trees = trees or LaneTrees()
    heads = []
    for lane in range(lane_count(conn)):
        size = sizes.get(lane, 0)
        mark = (marks or {}).get(lane)
        heads.append(LaneHead(lane, size, trees.root(conn, lane, size, mark)))
    return heads


def make_lanes_checkpoint(
    db: sa.Engine, key: SigningKey, trees: LaneTrees | None = None
) -> LanesCheckpoint:
    """Sign every lane as it is now, in one snapshot, and store the signed index.

    Every lane must extend the last lanes checkpoint this signer made (remembered beside the key,
    outside the database): a lane rewritten or truncated since is refused, named, not signed.
    """
    origin = identity.ensure_origin(db)
    trees = trees or LaneTrees()
    memory = remembered.lanes_path_for(key)
    state = remembered.load_lanes(memory)
    marks = {head.lane: head.size for head in state[1]} if state is not None else None
    with snapshot(db) as conn:
        try:
            heads = lane_heads(conn, trees, marks)
        except InvalidRequest as exc:  # a lane's events are missing: no tree, no signature
            if state is None:
                raise
            raise remembered.LedgerForked(f"refusing to sign the lanes checkpoint: {exc}") from None
        remembered.check_lanes_extend(
            memory, origin, heads, lambda lane, size: trees.root_at(conn, lane, size), state
        )
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


def _lane_leaves(conn: sa.Connection, lane: int, size: int) -> list[bytes]:
    leaves = [
        bytes.fromhex(leaf) for (leaf,) in conn.execute(_LEAVES, {"lane": lane, "size": size}).all()
    ]
    if len(leaves) != size:
        raise InvalidRequest(
            f"lane {lane} holds {len(leaves)} of its {size} events; run `warden audit verify` "
            "to see what happened"
        )
    return leaves


def lane_consistency(conn: sa.Connection, lane: int, old: int, new: int) -> list[bytes]:
    """The RFC 9162 consistency proof of one lane from size `old` to `new`."""
    if old == 0 or old == new:
        return []
    leaves = _lane_leaves(conn, lane, new)
    return merkle.consistency_proof(old, new, merkle.MemoryTree(leaves).subtree)


def prove_event(conn: sa.Connection, checkpoint: LanesCheckpoint, lane: int, seq: int) -> LaneProof:
    """Event `seq` of `lane` proved against a lanes checkpoint: in its lane, its lane in the index."""
    head = checkpoint.heads[lane]
    if not 1 <= seq <= head.size:
        raise InvalidRequest(f"event {seq} of lane {lane} is not under this lanes checkpoint")
    leaves = _lane_leaves(conn, lane, head.size)
    body = conn.execute(
        sa.select(events.c.body).where(events.c.lane == lane, events.c.seq == seq)
    ).scalar_one()
    return LaneProof(
        body=body,
        lane=lane,
        seq=seq,
        inclusion=merkle.inclusion_proof(seq - 1, head.size, merkle.MemoryTree(leaves).subtree),
        lane_inclusion=index_inclusion(checkpoint.origin, checkpoint.heads, lane),
        index_note=checkpoint.note,
    )
