"""A circuit breaker with resilience4j semantics, so a failing model is given a rest instead of
being hammered by every decision.

CLOSED counts the last `window` calls; once at least `min_calls` of them are in, a failure rate
at or above `failure_rate` opens it. OPEN refuses calls for `open_for` seconds; the next call after
that moves it to HALF_OPEN, which lets exactly `half_open_calls` trial calls through. When all of
them have completed it opens again if their failure rate reaches the threshold, otherwise it
closes with an empty window.

Like resilience4j, a result is recorded against the state at the time it arrives: results that
arrive while OPEN are ignored, and a straggler that was admitted while CLOSED but completes during
HALF_OPEN counts as a trial.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from warden.policy.schema import BreakerSpec

_log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


Transition = tuple[BreakerState, BreakerState]


class CircuitBreaker:
    def __init__(
        self,
        spec: BreakerSpec,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._spec = spec
        self._clock = clock
        self.on_transition = on_transition
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        # resilience4j caps min_calls at the window size; otherwise the breaker could never open.
        self._min_calls = min(spec.min_calls, spec.window)
        self._outcomes = [False] * spec.window  # ring buffer: True is a failure
        self._next = 0
        self._calls = 0
        self._failures = 0
        self._opened_at = 0.0
        self._trials_permitted = 0
        self._trials_done = 0
        self._trial_failures = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def try_acquire(self) -> bool:
        """Whether a call may go ahead; a True must be followed by on_success or on_failure."""
        with self._lock:
            state = self._state
            if state is BreakerState.CLOSED:
                return True
            transition = None
            if state is BreakerState.OPEN:
                if self._clock() - self._opened_at < self._spec.open_for:
                    return False
                transition = self._half_open()
            permitted = self._trials_permitted < self._spec.half_open_calls
            if permitted:
                self._trials_permitted += 1
        self._notify(transition)
        return permitted

    def on_success(self) -> None:
        self._record(failed=False)

    def on_failure(self) -> None:
        self._record(failed=True)

    def _record(self, *, failed: bool) -> None:
        with self._lock:
            if self._state is BreakerState.CLOSED:
                transition = self._record_closed(failed)
            elif self._state is BreakerState.HALF_OPEN:
                transition = self._record_trial(failed)
            else:
                return
        self._notify(transition)

    def _record_closed(self, failed: bool) -> Transition | None:
        window = self._spec.window
        if self._calls == window:
            self._failures -= self._outcomes[self._next]
        else:
            self._calls += 1
        self._outcomes[self._next] = failed
        self._failures += failed
        self._next = (self._next + 1) % window
        if self._calls >= self._min_calls and self._rate(self._failures, self._calls):
            return self._open()
        return None

    def _record_trial(self, failed: bool) -> Transition | None:
        self._trials_done += 1
        self._trial_failures += failed
        if self._trials_done < self._spec.half_open_calls:
            return None
        if self._rate(self._trial_failures, self._trials_done):
            return self._open()
        return self._close()

    def _rate(self, failures: int, calls: int) -> bool:
        # A division, not `failures >= rate * calls`: 0.07 * 100 is 7.000000000000001.
        return failures / calls >= self._spec.failure_rate

    def _open(self) -> Transition:
        self._opened_at = self._clock()
        return self._move(BreakerState.OPEN)

    def _half_open(self) -> Transition:
        self._trials_permitted = self._trials_done = self._trial_failures = 0
        return self._move(BreakerState.HALF_OPEN)

    def _close(self) -> Transition:
        self._next = self._calls = self._failures = 0
        return self._move(BreakerState.CLOSED)

    def _move(self, to: BreakerState) -> Transition:
        previous, self._state = self._state, to
        return previous, to

    def _notify(self, transition: Transition | None) -> None:
        """Called outside the lock, so a listener may read the breaker without deadlocking."""
        listener = self.on_transition
        if transition is None or listener is None:
            return
        try:
            listener(*transition)
        except Exception:
            _log.exception("circuit breaker transition listener failed")
