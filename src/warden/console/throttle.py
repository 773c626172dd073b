"""Console sign-in rate limit: failed attempts per user and per address, in a sliding window.

Guessing passwords costs an attacker a slow Argon2id hash per try already; this caps the
tries. After `per_user` failures for one username, or `per_address` from one client address,
within `window` seconds, further attempts are refused (HTTP 429, with when to try again)
without checking the password at all. A successful sign-in clears the user's count. The
counts live in each replica's memory: with N replicas behind a balancer the cap is N times
as high, which is still a cap.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_KEYS = 100_000


@dataclass
class LoginThrottle:
    per_user: int = 5
    per_address: int = 20
    window: float = 900.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, username: str | None, address: str | None) -> float | None:
        """Seconds until another try is allowed, or None when it is allowed now."""
        found = self.blocked(username, address)
        return found[0] if found else None

    def blocked(self, username: str | None, address: str | None) -> tuple[float, str] | None:
        """(seconds to wait, "user" or "address") for the longest cap reached, else None."""
        now = self.clock()
        waits = []
        with self._lock:
            for key, limit in self._keys(username, address):
                times = self._trim(key, now)
                if times is not None and len(times) >= limit:
                    waits.append((times[0] + self.window - now, key.split(":", 1)[0]))
        return max(waits) if waits else None

    def failed(self, username: str | None, address: str | None) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > MAX_KEYS:  # bounded memory under a spray of names
                self._failures = {
                    k: v for k, v in self._failures.items() if v and v[-1] > now - self.window
                }
            for key, _ in self._keys(username, address):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str | None) -> None:
        if username:
            with self._lock:
                self._failures.pop(f"user:{username.lower()}", None)

    def _keys(self, username: str | None, address: str | None) -> list[tuple[str, int]]:
        keys = []
        if username:
            keys.append((f"user:{username.lower()}", self.per_user))
        if address:
            keys.append((f"address:{address}", self.per_address))
        return keys

    def _trim(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times
