"""RFC 9162 Merkle proofs: every leaf of many tree sizes, consistency between many sizes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warden.ledger import merkle
from warden.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    MemoryTree,
    consistency_proof,
    hash_children,
    hash_leaf,
    inclusion_proof,
    subtree_hashes,
    verify_consistency,
    verify_inclusion,
)
from warden.ledger.tree import TILE, TILE_HEIGHT, TiledFrontier


def _leaves(n: int) -> list[bytes]:
    return [hash_leaf(f"event {i}".encode()) for i in range(n)]


def _reference_root(leaves: list[bytes]) -> bytes:
    """MTH written exactly as RFC 9162 2.1.1 defines it, recursively."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hash_children(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


LEAVES = _leaves(3000)
SIZES = [*range(1, 301), 511, 512, 513, 1000, 1023, 1024, 1025, 2047, 2048, 2049, 3000]


def test_known_answer_for_rfc_hashing() -> None:
    assert EMPTY_ROOT.hex() == hashlib.sha256(b"").hexdigest()
    assert hash_leaf(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert merkle.root([hash_leaf(b"")]) == hash_leaf(b"")


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 7, 8, 9, 255, 256, 257, 1000, 3000])
def test_root_matches_the_rfc_definition(size: int) -> None:
    assert merkle.root(LEAVES[:size]) == _reference_root(LEAVES[:size])


def test_inclusion_proof_for_every_leaf_of_many_sizes() -> None:
    for size in SIZES:
        tree = MemoryTree(LEAVES[:size])
        root = merkle.root(tree.leaves)
        for index in range(size):
            proof = inclusion_proof(index, size, tree.subtree)
            assert verify_inclusion(LEAVES[index], index, size, proof, root), (index, size)


def test_inclusion_proof_fails_for_a_changed_leaf_index_or_root() -> None:
    size = 77
    tree = MemoryTree(LEAVES[:size])
    root = merkle.root(tree.leaves)
    for index in range(size):
        proof = inclusion_proof(index, size, tree.subtree)
        assert not verify_inclusion(hash_leaf(b"forged"), index, size, proof, root)
        assert not verify_inclusion(LEAVES[index], (index + 1) % size, size, proof, root)
        assert not verify_inclusion(LEAVES[index], index, size, proof, hash_leaf(b"x"))
        if proof:
            bent = [*proof[:-1], hash_leaf(b"bent")]
            assert not verify_inclusion(LEAVES[index], index, size, bent, root)
            assert not verify_inclusion(LEAVES[index], index, size, proof[:-1], root)


def test_consistency_proofs_between_many_pairs() -> None:
    tree = MemoryTree(LEAVES[:1100])
    roots = {n: merkle.root(LEAVES[:n]) for n in range(1, 1101)}
    pairs = [(m, n) for n in range(1, 70) for m in range(1, n + 1)]
    pairs += [(m, n) for m in (1, 2, 3, 255, 256, 257, 511, 700) for n in (700, 1024, 1025, 1100)]
    for m, n in pairs:
        if m > n:
            continue
        proof = consistency_proof(m, n, tree.subtree)
        assert verify_consistency(m, n, roots[m], roots[n], proof), (m, n)
        if m < n:
            assert not verify_consistency(m, n, roots[m], merkle.root(LEAVES[1 : n + 1]), proof)
            assert not verify_consistency(m, n, hash_leaf(b"x"), roots[n], proof)


def test_consistency_proof_of_a_rewritten_history_fails() -> None:
    honest = MemoryTree(LEAVES[:40])
    rewritten = MemoryTree([*LEAVES[:10], hash_leaf(b"rewritten"), *LEAVES[11:60]])
    proof = consistency_proof(20, 60, rewritten.subtree)
    old_root = merkle.root(honest.leaves[:20])
    assert not verify_consistency(20, 60, old_root, merkle.root(rewritten.leaves), proof)


def test_bad_arguments_are_refused() -> None:
    tree = MemoryTree(LEAVES[:4])
    with pytest.raises(ValueError):
        inclusion_proof(4, 4, tree.subtree)
    with pytest.raises(ValueError):
        consistency_proof(5, 4, tree.subtree)
    assert not verify_inclusion(LEAVES[0], 4, 4, [], EMPTY_ROOT)
    assert not verify_consistency(2, 4, EMPTY_ROOT, EMPTY_ROOT, [])


def test_frontier_reports_every_perfect_subtree() -> None:
    seen: dict[tuple[int, int], bytes] = {}
    frontier = Frontier(lambda height, index, node: seen.__setitem__((height, index), node))
    for leaf in LEAVES[:1030]:
        frontier.append(leaf)
    assert frontier.root() == merkle.root(LEAVES[:1030])
    for (height, index), node in seen.items():
        width = 1 << height
        assert node == merkle.root(LEAVES[index * width : (index + 1) * width])
    assert (10, 0) in seen and (3, 127) in seen


@pytest.mark.parametrize("height", [0, 1, 3, TILE_HEIGHT])
def test_subtree_hashes_are_the_roots_of_perfect_subtrees(height: int) -> None:
    width = 1 << height
    expected = [merkle.root(LEAVES[i * width : (i + 1) * width]) for i in range(5)]
    assert subtree_hashes(LEAVES[: 5 * width], height) == expected
    if height:
        with pytest.raises(ValueError):
            subtree_hashes(LEAVES[: 5 * width + 1], height)


@given(st.lists(st.integers(0, 3 * TILE), max_size=12))
def test_tiled_frontier_gives_the_root_after_every_batch(batches: list[int]) -> None:
    tree = TiledFrontier()
    done = 0
    for count in batches:
        tree.extend(LEAVES[done : done + count])
        done += count
        assert tree.size == done
        assert tree.root() == _reference_root(LEAVES[:done])
    assert tree.tiles == subtree_hashes(LEAVES[: done - done % TILE], TILE_HEIGHT)


@given(st.integers(1, 2000), st.data())
def test_any_leaf_of_any_size_is_provable(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    tree = MemoryTree(LEAVES[:size])
    proof = inclusion_proof(index, size, tree.subtree)
    assert len(proof) <= size.bit_length()
    assert verify_inclusion(LEAVES[index], index, size, proof, merkle.root(tree.leaves))


@given(st.integers(1, 2000), st.data())
def test_any_two_sizes_are_consistent(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new))
    tree = MemoryTree(LEAVES[:new])
    proof = consistency_proof(old, new, tree.subtree)
    old_root, new_root = merkle.root(LEAVES[:old]), merkle.root(LEAVES[:new])
    assert verify_consistency(old, new, old_root, new_root, proof)
    if old < new:
        flipped = bytes([proof[0][0] ^ 1]) + proof[0][1:]
        assert not verify_consistency(old, new, old_root, new_root, [flipped, *proof[1:]])
