"""A short cache of bearer-token lookups, so a hot path (the API, the MCP gateway over HTTP)
skips the database.

The cache is correct, not just fast: it keeps only successful lookups, drops each at the
credential's own expiry, and re-reads the credential epoch (bumped in the transaction of
every revocation, rotation or disabling, on any replica) at most every `EPOCH_SECONDS`;
when the epoch moved, everything cached is forgotten. A revoked token is therefore refused
everywhere within `EPOCH_SECONDS` plus one request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from warden.auth.principals import read_epoch
from warden.auth.tokens import Principal, authenticate
from warden.engine import Engine

CACHE_SECONDS = 30.0
EPOCH_SECONDS = 0.25
MAX_ENTRIES = 10_000


def utc_now() -> datetime:
    return datetime.now(UTC)


class TokenCache:
    """Successful token lookups, least recently used evicted first, invalidated by the epoch."""

    def __init__(
        self,
        *,
        ttl: float = CACHE_SECONDS,
        epoch_interval: float = EPOCH_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self.epoch_interval = epoch_interval
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._epoch_checked = float("-inf")

    def lookup(self, engine: Engine, secret: str) -> Principal | None:
        now = time.monotonic()
        if now - self._epoch_checked >= self.epoch_interval:
            self._check_epoch(engine.db, now)
        with self._lock:
            hit = self._entries.get(secret)
            if hit is not None:
                if hit[0] > now and _alive(hit[1], self.clock()):
                    self._entries.move_to_end(secret)
                    return hit[1]
                del self._entries[secret]
        with engine.db.connect() as conn:
            principal = authenticate(conn, secret, self.clock())
        if principal is not None:
            with self._lock:
                self._entries[secret] = (now + self.ttl, principal)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return principal

    def _check_epoch(self, db: sa.Engine, now: float) -> None:
        with db.connect() as conn:
            epoch = read_epoch(conn)
        with self._lock:
            self._epoch_checked = now
            if epoch != self._epoch:
                self._entries.clear()
                self._epoch = epoch

    def __len__(self) -> int:
        return len(self._entries)


def _alive(principal: Principal, now: datetime) -> bool:
    return principal.expires_at is None or principal.expires_at > now
