"""SLA expiry: a task nobody decided in time gets the policy's safe outcome.

The deadline is stored with the task, so expiry survives restarts: a worker that starts late
expires everything overdue on its first pass. With several replicas each runs a worker; the
versioned update inside the ledger lock lets exactly one of them apply each expiry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from warden.decision import Decision, Reason
from warden.review.changes import CLEAR_CLAIM, POLICY_ACTOR, TaskChange, event, iso
from warden.review.finalize import final_decision
from warden.review.tasks import ReviewTask, TaskStatus

log = logging.getLogger(__name__)


def expire(task: ReviewTask, decision: Decision, now: datetime) -> TaskChange | None:
    """Escalate once to `escalate_to` (with a fresh SLA), else apply `on_expiry`."""
    if task.level == 0 and task.escalate_to and task.sla_seconds is not None:
        due_at = now + timedelta(seconds=task.sla_seconds)
        return TaskChange(
            values={
                **CLEAR_CLAIM,
                "level": 1,
                "groups": list(task.escalate_to),
                "required": task.required_after_escalation(),
                "due_at": due_at,
            },
            events=[
                event(
                    "review.escalated",
                    task,
                    POLICY_ACTOR,
                    now,
                    {
                        "why": "sla expired",
                        "level": 1,
                        "groups": list(task.escalate_to),
                        "required": task.required_after_escalation(),
                        "missed_due_at": iso(task.due_at),
                        "due_at": iso(due_at),
                        "policy_version": decision.policy_version,
                    },
                )
            ],
        )
    if task.on_expiry is None:
        return None
    sla = _human(task.sla_seconds) if task.sla_seconds is not None else "its SLA"
    reason = Reason(
        code="sla_expired",
        kind="expire",
        message=f"no reviewer decided within {sla}; the policy applied '{task.on_expiry}'",
    )
    return TaskChange(
        values={
            **CLEAR_CLAIM,
            "status": TaskStatus.EXPIRED.value,
            "decided_at": now,
            "outcome": task.on_expiry,
        },
        events=[
            event(
                "review.expired",
                task,
                POLICY_ACTOR,
                now,
                {
                    "decided_by": POLICY_ACTOR,
                    "rule": "review.on_expiry",
                    "outcome": task.on_expiry,
                    "due_at": iso(task.due_at),
                    "sla_seconds": task.sla_seconds,
                    "votes": len(task.votes),
                    "level": task.level,
                    "policy_version": decision.policy_version,
                },
            )
        ],
        final=final_decision(decision, task.on_expiry, reason, now),
    )


def _human(seconds: float) -> str:
    """`4h`, `90m`, `45s`: the SLA as a policy author would write it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class ExpiryWorker:
    """Runs `sweep()` every `interval` seconds in a background thread, until stopped."""

    def __init__(self, sweep: Callable[[], int], *, interval: float = 1.0) -> None:
        self.sweep = sweep
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="warden-expiry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.sweep() > 0
            except Exception:
                log.exception("review expiry pass failed; retrying")
                busy = False
            if not busy:
                self._stop.wait(self.interval)
