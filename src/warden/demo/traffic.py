"""Demo traffic: loan applications sent over HTTP, and their ground truth some time later.

It only ever talks to 127.0.0.1 and always stops by itself, after `duration` seconds or
`max_decisions` applications, whichever comes first.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warden.decision import Route
from warden.demo.data import SEED, Application, applications
from warden.demo.point import POINT
from warden.errors import InvalidInput
from warden.sdk.http import WardenClient

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class TrafficCounts:
    """A snapshot of what the generator has seen so far."""

    routes: dict[str, int]
    invalid: int
    errors: int
    outcomes: int
    elapsed: float
    last_error: str | None = None

    @property
    def total(self) -> int:
        return sum(self.routes.values())


@dataclass
class _Tally:
    routes: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    errors: int = 0
    outcomes: int = 0
    last_error: str | None = None
    last_decision_at: float = 0.0


class Traffic:
    """Sends generated applications to a local Warden from a few threads at a target rate.

    A small share is deliberately invalid (to show the input schema refusing them); for a share
    of the others the right outcome is posted back after `outcome_delay` seconds, as ground
    truth arrives in a real lender's systems.
    """

    def __init__(
        self,
        port: int,
        token: str,
        *,
        rate: float = 20.0,
        duration: float = 3600.0,
        max_decisions: int = 100_000,
        threads: int = 4,
        outcome_share: float = 0.3,
        outcome_delay: float = 2.0,
        invalid_share: float = 0.005,
        drift_after: int | None = None,
        seed: int = SEED + 1,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.base_url = f"http://{LOCALHOST}:{port}"
        self.rate = rate
        self.duration = duration
        self.max_decisions = max_decisions
        self.outcome_share = outcome_share
        self.outcome_delay = outcome_delay
        self.invalid_share = invalid_share
        self._token = token
        self._stream = applications(seed=seed, drift_after=drift_after)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tally = _Tally()
        self._issued = 0
        self._started = 0.0
        self._due_outcomes: deque[tuple[float, str, str]] = deque()
        self._workers = [
            threading.Thread(
                target=self._send_decisions, daemon=True, name=f"warden-demo-traffic-{i}"
            )
            for i in range(threads)
        ]
        self._reporter = threading.Thread(
            target=self._send_outcomes, daemon=True, name="warden-demo-outcomes"
        )

    def start(self) -> None:
        self._started = time.monotonic()
        for thread in (*self._workers, self._reporter):
            thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until all applications are sent and due outcomes posted; True when done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in (*self._workers, self._reporter):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
            if thread.is_alive():
                return False
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """Stop now: requests in flight finish, outcomes not yet due are dropped."""
        self._stop.set()
        self.wait(timeout)

    def counts(self) -> TrafficCounts:
        """`elapsed` ends with the last decision, so the rate excludes the ground-truth tail."""
        sending = any(w.is_alive() for w in self._workers)
        with self._lock:
            t = self._tally
            end = time.monotonic() if sending else t.last_decision_at
            elapsed = max(0.0, end - self._started) if self._started else 0.0
            return TrafficCounts(
                dict(t.routes), t.invalid, t.errors, t.outcomes, elapsed, t.last_error
            )

    def _next(self) -> tuple[float, Application, bool, bool] | None:
        """The next application with its scheduled send time, or None when traffic is over."""
        with self._lock:
            due = self._started + self._issued / self.rate
            over = max(due, time.monotonic()) - self._started > self.duration
            if self._stop.is_set() or over or self._issued >= self.max_decisions:
                return None
            self._issued += 1
            invalid, report = self._rng.random(2) < (self.invalid_share, self.outcome_share)
            return due, next(self._stream), bool(invalid), bool(report)

    def _send_decisions(self) -> None:
        with WardenClient(self.base_url, self._token) as client:
            while (claimed := self._next()) is not None:
                due, application, invalid, report = claimed
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                self._decide(client, application, invalid, report)

    def _decide(
        self, client: WardenClient, application: Application, invalid: bool, report: bool
    ) -> None:
        data: dict[str, Any] = application.input
        if invalid:  # an upstream bug: a score outside the scale
            data = {**data, "credit_score": 912}
        try:
            decision = client.decide(POINT, data)
        except InvalidInput:
            with self._lock:
                self._tally.routes[Route.REFUSED.value] += 1
                self._tally.invalid += 1
                self._tally.last_decision_at = time.monotonic()
            return
        except Exception as exc:  # a load generator counts failures and keeps going
            self._count_error(exc)
            return
        with self._lock:
            self._tally.routes[decision.route.value] += 1
            self._tally.last_decision_at = time.monotonic()
            if report and decision.route is not Route.REFUSED:
                due = time.monotonic() + self.outcome_delay
                self._due_outcomes.append((due, decision.id, application.right_outcome))

    def _send_outcomes(self) -> None:
        with WardenClient(self.base_url, self._token) as client:
            while not self._stop.is_set():
                with self._lock:
                    head = self._due_outcomes[0] if self._due_outcomes else None
                if head is None:
                    if not any(w.is_alive() for w in self._workers):
                        return
                    self._stop.wait(0.05)
                    continue
                due, decision_id, outcome = head
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                with self._lock:
                    self._due_outcomes.popleft()
                try:
                    client.record_outcome(decision_id, outcome)
                except Exception as exc:
                    self._count_error(exc)
                    continue
                with self._lock:
                    self._tally.outcomes += 1

    def _count_error(self, exc: Exception) -> None:
        with self._lock:
            self._tally.errors += 1
            self._tally.last_error = f"{type(exc).__name__}: {exc}"
