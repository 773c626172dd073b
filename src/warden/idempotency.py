"""Which idempotency keys this process has seen committed, so that a retry is recognised
before the model is called again, without reading the database for every new key.

A key that is not here may still be taken (by another replica, or before a restart): the
unique index on (point, idempotency_key) refuses it at commit, and the first decision is
returned then. The set only spares a retry to the same process the model call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

CAPACITY = 50_000  # about 5 MB of recent keys; older ones fall back to the commit-time check


class RecentKeys:
    """A bounded, thread-safe set of the most recently committed (point, key) pairs."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, item: tuple[str, str]) -> bool:
        with self._lock:
            return item in self._keys

    def add(self, point: str, key: str) -> None:
        with self._lock:
            self._keys[(point, key)] = None
            self._keys.move_to_end((point, key))
            if len(self._keys) > self._capacity:
                self._keys.popitem(last=False)
