"""Time-ordered decision ids (UUIDv7), strictly increasing within a process.

Ids sort by creation, so they serve as pagination cursors and as "oldest first" order. Within
one millisecond the 12-bit `rand_a` field counts up (RFC 9562, method 1), so two ids made in
the same millisecond by one process still sort in the order they were made.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id() -> str:
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                ms += 1
                _counter = 0
        else:
            _counter = int.from_bytes(os.urandom(1), "big")  # leave room to count up
        _last_ms = ms
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return uuid_text(value)


def uuid_text(value: int) -> str:
    """`str(uuid.UUID(int=value))` for a 128-bit `value`, without building the UUID object (a
    decision's id is made on every decision)."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
