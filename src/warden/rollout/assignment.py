"""Sticky canary assignment: a key's bucket never changes, so raising the share only adds keys.

A key in the 5 % stays in at 25 %: bucket < 500 implies bucket < 2500. Lowering the share to
0 sends nobody to the challenger — the comparison is strict, with no rounding to leak through.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000


def bucket(key: str, salt: str = "") -> int:
    """A stable bucket in [0, 10000) for a caller-chosen key (customer id, session...)."""
    digest = hashlib.sha256(f"warden-canary:{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_canary(key: str, percent: float, salt: str = "") -> bool:
    """Whether `key` goes to the challenger when `percent` % of traffic does."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    return bucket(key, salt) < round(percent * BUCKETS / 100)
