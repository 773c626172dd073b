"""Waiting for a pending decision to become final: the long-poll and the SDKs' `wait`.

Polling the database (not an in-process signal) lets a caller wait on any replica while a
reviewer decides on another. The interval grows from 50 ms to 1 s, so a short wait is snappy
and a long one costs about one query a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from warden.decision import Decision

MAX_WAIT_SECONDS = 60.0
FIRST_INTERVAL = 0.05
MAX_INTERVAL = 1.0


def _next(interval: float) -> float:
    return min(MAX_INTERVAL, interval * 2)


def wait_final(get: Callable[[], Decision], timeout: float) -> Decision:
    """The decision once final, or as it stands when `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    interval = FIRST_INTERVAL
    while True:
        decision = get()
        left = deadline - time.monotonic()
        if decision.is_final or left <= 0:
            return decision
        time.sleep(min(interval, left))
        interval = _next(interval)


async def await_final(get: Callable[[], Awaitable[Decision]], timeout: float) -> Decision:
    deadline = time.monotonic() + min(timeout, MAX_WAIT_SECONDS)
    interval = FIRST_INTERVAL
    while True:
        decision = await get()
        left = deadline - time.monotonic()
        if decision.is_final or left <= 0:
            return decision
        await asyncio.sleep(min(interval, left))
        interval = _next(interval)
