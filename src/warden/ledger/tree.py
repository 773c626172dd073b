"""The ledger's Merkle tree as stored: leaf i is the leaf hash of event i + 1 (of one lane).

Perfect subtrees of 64 leaves ("tiles", as in Tessera) are hashed once and kept in
`ledger_tiles` (lane 0) or `lane_tiles` (lanes above 0); the levels above them live in memory. A root or a proof over a million events then
reads a tile or two of leaves and hashes about a hundred nodes, instead of re-hashing the
whole log. Tiles are derived data, never trusted: `warden audit verify` re-derives and checks
them, and every proof is checked against a signed checkpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import sqlalchemy as sa

from warden.errors import WardenError
from warden.ledger import merkle
from warden.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    MemoryTree,
    SubtreeHash,
    hash_children,
    split_point,
    subtree_hashes,
)
from warden.store.database import write_connection
from warden.store.schema import lane_tiles, ledger_tiles

TILE_HEIGHT = 6
TILE = 1 << TILE_HEIGHT
_CACHED_CHUNKS = 64
_TILES_PER_PASS = 4096


class LedgerDamaged(WardenError):
    """The stored events cannot form the tree (an event is missing); `verify` says more."""

    type = "ledger_damaged"
    http_status = 500


_LEAVES = sa.text(
    "SELECT seq, leaf_hash FROM events WHERE lane = :lane AND seq > :start AND seq <= :end "
    "ORDER BY seq"
)


def read_leaves(
    conn: sa.Connection, start: int, end: int, *, at_least: int | None = None, lane: int = 0
) -> list[bytes]:
    """Leaf hashes of leaves [start, end) of `lane`, i.e. of its events start+1 .. end.

    With `at_least`, fewer are fine (the ledger may end inside the range) but not fewer than that.
    A prepared text statement: proofs read a tile at a time, and building a select costs more.
    """
    rows = conn.execute(_LEAVES, {"lane": lane, "start": start, "end": end}).all()
    for offset, (seq, _) in enumerate(rows):
        if seq != start + 1 + offset:
            raise _missing(start + 1 + offset, lane)
    if len(rows) < (end - start if at_least is None else at_least):
        raise _missing(start + 1 + len(rows), lane)
    return [bytes.fromhex(leaf) for _, leaf in rows]


def _missing(seq: int, lane: int = 0) -> LedgerDamaged:
    where = f"event {seq} of lane {lane}" if lane else f"event {seq}"
    return LedgerDamaged(
        f"{where} is missing from the ledger, so no Merkle tree can be built over it; "
        "run `warden audit verify` to see what happened",
        seq=seq,
    )


class LedgerTree:
    """Subtree hashes over one lane of the stored ledger (lane 0 unless told). One instance may
    serve many requests."""

    def __init__(self, lane: int = 0) -> None:
        self.lane = lane
        self._levels: list[list[bytes]] = [[]]
        self._chunks: dict[int, MemoryTree] = {}
        self._lock = threading.Lock()

    @property
    def tiles(self) -> int:
        return len(self._levels[0])

    def hasher(self, conn: sa.Connection) -> SubtreeHash:
        """MTH(D[start:end]) for the ledger as `conn` sees it."""
        self._load_tiles(conn)

        def subtree(start: int, end: int) -> bytes:
            return self._subtree(conn, start, end)

        return subtree

    def root(self, conn: sa.Connection, size: int) -> bytes:
        return self.hasher(conn)(0, size) if size else EMPTY_ROOT

    def inclusion(self, conn: sa.Connection, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, self.hasher(conn))

    def consistency(self, conn: sa.Connection, old_size: int, new_size: int) -> list[bytes]:
        return merkle.consistency_proof(old_size, new_size, self.hasher(conn))

    def store_tiles(self, db: sa.Engine, size: int) -> int:
        """Hash and store every complete tile below `size` not stored yet; returns how many.

        Works through the log a few thousand tiles at a time, so memory stays flat at any size.
        """
        with db.connect() as conn:
            self._load_tiles(conn)
        first, last = self.tiles, size // TILE
        for start in range(first, last, _TILES_PER_PASS):
            end = min(start + _TILES_PER_PASS, last)
            with db.connect() as conn:
                leaves = read_leaves(conn, start * TILE, end * TILE, lane=self.lane)
            rows = [
                {
                    "tile": start + i,
                    "hash": digest.hex(),
                    **({"lane": self.lane} if self.lane else {}),
                }
                for i, digest in enumerate(subtree_hashes(leaves, TILE_HEIGHT))
            ]
            with write_connection(db) as conn, conn.begin():
                conn.execute(_insert_ignore(db, self.lane), rows)
            with db.connect() as conn:
                self._load_tiles(conn)
        return max(0, last - first)

    def _load_tiles(self, conn: sa.Connection) -> None:
        with self._lock:
            have = self.tiles
            table = lane_tiles if self.lane else ledger_tiles
            query = sa.select(table.c.tile, table.c.hash).where(table.c.tile >= have)
            if self.lane:
                query = query.where(lane_tiles.c.lane == self.lane)
            stored = conn.execute(query.order_by(table.c.tile)).all()
            for offset, (tile, digest) in enumerate(stored):
                if tile != have + offset:
                    break  # a gap: use the tiles below it, hash the rest from leaves
                self._levels[0].append(bytes.fromhex(digest))
            self._grow()

    def _grow(self) -> None:
        level = 0
        while len(self._levels[level]) > 1:
            below = self._levels[level]
            if level + 1 == len(self._levels):
                self._levels.append([])
            above = self._levels[level + 1]
            for i in range(2 * len(above), len(below) - 1, 2):
                above.append(hash_children(below[i], below[i + 1]))
            level += 1

    def _subtree(self, conn: sa.Connection, start: int, end: int) -> bytes:
        width = end - start
        if width == 0:
            return EMPTY_ROOT
        if width & (width - 1) == 0 and start % width == 0:
            return self._perfect(conn, start, width)
        mid = start + split_point(width)
        return hash_children(self._subtree(conn, start, mid), self._subtree(conn, mid, end))

    def _perfect(self, conn: sa.Connection, start: int, width: int) -> bytes:
        if width >= TILE:
            level = width.bit_length() - 1 - TILE_HEIGHT
            if level < len(self._levels) and start // width < len(self._levels[level]):
                return self._levels[level][start // width]
            half = width // 2
            return hash_children(
                self._perfect(conn, start, half), self._perfect(conn, start + half, half)
            )
        offset = start % TILE
        return self._chunk(conn, start // TILE, offset + width).subtree(offset, offset + width)

    def _chunk(self, conn: sa.Connection, tile: int, needed: int) -> MemoryTree:
        """The tree of one tile's leaves (at least `needed` of them); events never change, so
        keep the most recent ones."""
        cached = self._chunks.get(tile)
        if cached is not None and len(cached.leaves) >= needed:
            return cached
        chunk = MemoryTree(
            read_leaves(conn, tile * TILE, (tile + 1) * TILE, at_least=needed, lane=self.lane)
        )
        with self._lock:
            if tile not in self._chunks and len(self._chunks) >= _CACHED_CHUNKS:
                self._chunks.pop(next(iter(self._chunks)))
            self._chunks[tile] = chunk
        return chunk


class TiledFrontier:
    """The tree over a stream of leaf hashes that arrive in batches, as verification reads them.

    Whole tiles are hashed level by level and only their hashes go through a `Frontier`, so a
    million leaves cost six list comprehensions per batch rather than a Python call per leaf.
    `tiles` keeps every complete tile's hash, to compare with the stored ones.
    """

    def __init__(self) -> None:
        self.size = 0
        self.tiles: list[bytes] = []
        self._above = Frontier()
        self._partial: list[bytes] = []  # the leaves of the tile not yet complete

    def extend(self, leaves: Sequence[bytes]) -> None:
        pending = [*self._partial, *leaves]
        whole = len(pending) - len(pending) % TILE
        for tile in subtree_hashes(pending[:whole], TILE_HEIGHT):
            self.tiles.append(tile)
            self._above.append(tile)
        self._partial = pending[whole:]
        self.size += len(leaves)

    def root(self) -> bytes:
        if not self._partial:
            return self._above.root()
        return self._above.root(tail=merkle.root(self._partial))


def _insert_ignore(db: sa.Engine, lane: int = 0) -> sa.Insert:
    table = lane_tiles if lane else ledger_tiles
    if db.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()
