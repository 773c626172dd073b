"""Rate limits per principal and tool, and the loop detector, over sliding windows.

Windows live in the gateway's memory: they bound what one gateway process lets through, and
start empty when it restarts (run one gateway per agent fleet, or accept the restart's reset).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from warden.mcp.config import Limit, Loop

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Exceeded:
    """A limit the call went over: what to do with it and why, in words for agent and reviewer."""

    action: str  # "review" | "refused"
    code: str
    message: str


class Limiter:
    def __init__(
        self, limits: Sequence[Limit], loop: Loop | None, *, clock: Clock = time.monotonic
    ) -> None:
        self.limits = list(limits)
        self.loop = loop
        self.clock = clock
        self._windows: dict[tuple[object, ...], deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, principal: str, server: str, tool: str, call_digest: str) -> Exceeded | None:
        """Count this call and say whether it exceeds a limit (refusals first)."""
        from fnmatch import fnmatchcase

        now = self.clock()
        found: list[Exceeded] = []
        with self._lock:
            for index, limit in enumerate(self.limits):
                if not (fnmatchcase(server, limit.server) and fnmatchcase(tool, limit.tool)):
                    continue
                seen = self._count((principal, index, tool), now, limit.per)
                if seen > limit.max:
                    found.append(
                        Exceeded(
                            limit.exceed,
                            "rate_limit",
                            f"more than {limit.max} calls of {tool} in {limit.per:g} s by "
                            f"{principal} (this is call {seen})",
                        )
                    )
            if self.loop is not None:
                loop = self.loop
                seen = self._count((principal, "loop", server, tool, call_digest), now, loop.within)
                if seen >= loop.repeats:
                    found.append(
                        Exceeded(
                            loop.exceed,
                            "loop_detected",
                            f"the same call of {tool} with the same arguments {seen} times in "
                            f"{loop.within:g} s; the agent looks stuck in a loop",
                        )
                    )
        found.sort(key=lambda e: e.action != "refused")
        return found[0] if found else None

    def _count(self, key: tuple[object, ...], now: float, window: float) -> int:
        stamps = self._windows.setdefault(key, deque())
        while stamps and stamps[0] <= now - window:
            stamps.popleft()
        stamps.append(now)
        return len(stamps)
