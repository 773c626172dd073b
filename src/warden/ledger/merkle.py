"""The Merkle tree of RFC 9162 (Certificate Transparency v2): tree hash, inclusion and
consistency proofs, and their verification.

Leaves are hashed `SHA-256(0x00 || data)` and inner nodes `SHA-256(0x01 || left || right)`, so a
leaf can never pass for a node. Proofs are built against a `SubtreeHash` — any function giving
MTH(D[start:end]) — so the same algorithms serve an in-memory list and the stored ledger.
The verification functions follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step: they are
the part an auditor runs, and hand-made variants of them have had published holes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

SubtreeHash = Callable[[int, int], bytes]

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32
_sha256 = hashlib.sha256


def _hashes(*values: bytes) -> bool:
    """Every value is a SHA-256 digest: an empty or short 'hash' must never compare equal."""
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def hash_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 9162 splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


class Frontier:
    """The compact range [0, size): one perfect subtree hash per set bit of `size`.

    Appending costs one hash on average and the root O(log n), so a running tree never re-hashes
    what it has seen. `on_subtree(height, index, hash)` hears of every perfect subtree completed.
    """

    def __init__(self, on_subtree: Callable[[int, int, bytes], None] | None = None) -> None:
        self.size = 0
        self._stack: list[bytes] = []
        self._on_subtree = on_subtree

    def append(self, leaf: bytes) -> None:
        node = leaf
        size = self.size
        height = 0
        while size & 1:
            node = _sha256(b"\x01" + self._stack.pop() + node).digest()
            size >>= 1
            height += 1
            if self._on_subtree is not None:
                self._on_subtree(height, (self.size + 1 >> height) - 1, node)
        self._stack.append(node)
        self.size += 1

    def root(self, tail: bytes | None = None) -> bytes:
        """MTH of the range; with `tail`, of the range followed by fewer leaves than its smallest
        subtree holds, `tail` being their MTH (they hang below every subtree kept here)."""
        nodes = self._stack if tail is None else [*self._stack, tail]
        if not nodes:
            return EMPTY_ROOT
        node = nodes[-1]
        for left in reversed(nodes[:-1]):
            node = hash_children(left, node)
        return node


def subtree_hashes(leaves: Sequence[bytes], height: int) -> list[bytes]:
    """The hashes of the consecutive perfect subtrees of 2**height leaves that `leaves` is made of.

    Level by level, one list comprehension per level: the same hashes as `Frontier.append`, at
    a fraction of the interpreter's work per hash.
    """
    if len(leaves) % (1 << height):
        raise ValueError(f"{len(leaves)} leaves do not make whole subtrees of height {height}")
    level = list(leaves)
    for _ in range(height):
        pairs = iter(level)
        level = [
            _sha256(b"\x01" + left + right).digest()
            for left, right in zip(pairs, pairs, strict=True)
        ]
    return level


class MemoryTree:
    """A tree over leaf hashes held in memory, every level kept: the reference for tests and
    for small trees (a proof bundle's own checks)."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [hash_children(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    @property
    def leaves(self) -> list[bytes]:
        return self.levels[0]

    def subtree(self, start: int, end: int) -> bytes:
        width = end - start
        if width == 0:
            return EMPTY_ROOT
        if width & (width - 1) == 0 and start % width == 0:
            return self.levels[width.bit_length() - 1][start // width]
        mid = start + split_point(width)
        return hash_children(self.subtree(start, mid), self.subtree(mid, end))


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 2.1.3.1, leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + split_point(end - start)
        if index < mid:
            path.append(subtree(mid, end))
            end = mid
        else:
            path.append(subtree(start, mid))
            start = mid
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, subtree: SubtreeHash) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 2.1.4.1; empty when the sizes are equal."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    path: list[bytes] = []
    start, end, m, complete = 0, new_size, old_size, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        path.append(subtree(start, end))
    path.reverse()
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does `proof` show leaf hash `leaf` at `index` in the tree `root_hash`?

    Hashes of any length but 32 bytes are refused first: with an empty leaf and root, the
    algorithm alone would accept a one-leaf tree.
    """
    if index >= size or index < 0 or len(proof) > 64:
        return False
    if not _hashes(leaf, root_hash, *proof):
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree `new_root` an append-only extension of `old_root`?

    A proof from size 0 is refused (RFC 9162 defines none: the empty tree is extended by any),
    and so is any hash that is not 32 bytes.
    """
    if old_size < 1 or new_size < old_size or len(proof) > 64:
        return False
    if not _hashes(old_root, new_root, *proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not 0 < old_size < new_size or not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
