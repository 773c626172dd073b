"""RFC 6962 reference vectors, and the malformed proofs a verifier must refuse.

The leaves, roots and proofs below are the RFC 6962 test data that Certificate Transparency and
transparency-dev/merkle (testonly/constants.go, Apache-2.0) publish; they are used as data only.
Cases not copied from there are derived in the test from the RFC's own recursive definitions,
written here independently of Warden's code.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.ledger import merkle

LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [  # (leaf index, tree size, proof)
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CONSISTENCY = [  # (old size, new size, proof)
    (
        2,
        8,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 2.1, over leaf hashes, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _k(len(leaves))
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 2.1.1."""
    if len(leaves) == 1:
        return []
    k = _k(len(leaves))
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def _subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 2.1.2."""
    n = len(leaves)
    if m == n:
        return [] if complete else [_mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), _mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), _mth(leaves[:k])]


HASHED = [_leaf(d) for d in LEAVES]


def test_roots_for_every_size() -> None:
    for size, expected in enumerate(ROOTS):
        assert merkle.root(HASHED[:size]).hex() == expected
        assert _mth(HASHED[:size]).hex() == expected


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    path = [bytes.fromhex(p) for p in proof]
    tree = merkle.MemoryTree(HASHED[:size])
    assert merkle.inclusion_proof(index, size, tree.subtree) == path == _path(index, HASHED)
    root = bytes.fromhex(ROOTS[size])
    assert merkle.verify_inclusion(HASHED[index], index, size, path, root)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_reference_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    path = [bytes.fromhex(p) for p in proof]
    tree = merkle.MemoryTree(HASHED[:new])
    assert merkle.consistency_proof(old, new, tree.subtree) == path
    assert path == _subproof(old, HASHED[:new], True)
    old_root, new_root = bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new])
    assert merkle.verify_consistency(old, new, old_root, new_root, path)


def test_empty_leaf_and_root_are_refused() -> None:
    """transparency-dev/merkle's 'empty hashes' case: a one-leaf tree with no proof."""
    assert not merkle.verify_inclusion(b"", 0, 1, [], b"")
    assert not merkle.verify_inclusion(HASHED[0][:31], 0, 1, [], HASHED[0][:31])
    assert merkle.verify_inclusion(HASHED[0], 0, 1, [], bytes.fromhex(ROOTS[1]))


def test_consistency_from_size_zero_is_refused() -> None:
    empty = bytes.fromhex(ROOTS[0])
    for new in range(0, 9):
        assert not merkle.verify_consistency(0, new, empty, bytes.fromhex(ROOTS[new]), [])
        assert not merkle.verify_consistency(
            0, new, empty, bytes.fromhex(ROOTS[new]), [bytes.fromhex(ROOTS[new])]
        )


def test_bad_lengths_and_sizes_are_refused() -> None:
    old, new, proof = CONSISTENCY[0]
    path = [bytes.fromhex(p) for p in proof]
    good = (bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]))
    assert merkle.verify_consistency(old, new, *good, path)
    assert not merkle.verify_consistency(old, new, good[0] + b"\x00", good[1], path)
    assert not merkle.verify_consistency(old, new, good[0], good[1], [*path[:-1], path[-1][:16]])
    assert not merkle.verify_consistency(new, old, good[1], good[0], path)
    assert not merkle.verify_consistency(old, new, *good, [*path, path[-1]])
    assert not merkle.verify_consistency(old, new, *good, path * 40)  # more than 64 hashes
    index, size, inclusion = INCLUSION[0]
    ipath = [bytes.fromhex(p) for p in inclusion]
    root = bytes.fromhex(ROOTS[size])
    assert not merkle.verify_inclusion(HASHED[index], index, size, [b"", *ipath[1:]], root)
    assert not merkle.verify_inclusion(HASHED[index], -1, size, ipath, root)
    assert not merkle.verify_inclusion(HASHED[index], index, size, [*ipath, ipath[0]], root)


@settings(max_examples=60, deadline=None)
@given(new=st.integers(1, 70), data=st.data())
def test_independent_definitions_agree(new: int, data: st.DataObject) -> None:
    """Derived cases: Warden's proofs equal the RFC's recursive PATH and SUBPROOF, and verify."""
    leaves = [_leaf(i.to_bytes(2, "big")) for i in range(new)]
    tree = merkle.MemoryTree(leaves)
    old = data.draw(st.integers(1, new))
    index = data.draw(st.integers(0, new - 1))
    assert merkle.inclusion_proof(index, new, tree.subtree) == _path(index, leaves)
    consistency = _subproof(old, leaves, True)
    assert merkle.consistency_proof(old, new, tree.subtree) == consistency
    assert merkle.verify_consistency(old, new, _mth(leaves[:old]), _mth(leaves), consistency)
    assert merkle.verify_inclusion(leaves[index], index, new, _path(index, leaves), _mth(leaves))
