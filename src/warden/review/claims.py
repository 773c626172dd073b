"""Claims: a reviewer holds a task for a lease so two people never work the same task.

An expired lease frees the task for anyone; the holder may claim again to renew it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from warden.auth.tokens import Principal, Role
from warden.errors import Conflict, WardenError
from warden.review.access import check_reviewer, check_role
from warden.review.changes import CLEAR_CLAIM, TaskChange, event, iso
from warden.review.tasks import ReviewTask, TaskStatus


def check_open(task: ReviewTask) -> None:
    if task.status is not TaskStatus.OPEN:
        raise Conflict(
            f"the review of '{task.decision_id}' is closed ({task.status.value}, outcome "
            f"{task.outcome!r}); nothing is left to do",
            field="id",
        )


def claimable(task: ReviewTask, who: Principal, now: datetime) -> bool:
    """Whether `claim` would succeed, without raising (used to pick the next task)."""
    try:
        check_reviewer(who, task)
    except WardenError:
        return False
    holder = task.holder(now)
    return task.status is TaskStatus.OPEN and holder in (None, who.actor)


def claim(task: ReviewTask, who: Principal, now: datetime) -> TaskChange:
    check_reviewer(who, task)
    check_open(task)
    holder = task.holder(now)
    if holder is not None and holder != who.actor:
        raise Conflict(
            f"the task is claimed by {holder} until {iso(task.lease_until)}; pick another task "
            "or wait until the lease ends",
            field="id",
        )
    renewed = holder == who.actor
    lease_until = now + timedelta(seconds=task.lease_seconds)
    claimed_at = task.claimed_at if renewed and task.claimed_at else now
    return TaskChange(
        values={
            "claimed_by": who.actor,
            "claim_method": who.method,
            "claimed_at": claimed_at,
            "lease_until": lease_until,
        },
        events=[
            event(
                "review.claimed",
                task,
                who.actor,
                now,
                {
                    "reviewer": who.actor,
                    "auth": who.method,
                    "lease_until": iso(lease_until),
                    "renewed": renewed,
                    "level": task.level,
                },
            )
        ],
    )


def release(task: ReviewTask, who: Principal, now: datetime) -> TaskChange:
    """The holder gives the task back; an admin may free someone else's claim."""
    check_role(who, task.point)
    check_open(task)
    holder = task.holder(now)
    if holder is None:
        raise Conflict("the task is not claimed; there is nothing to release", field="id")
    if holder != who.actor and not who.can(Role.ADMIN, task.point):
        raise Conflict(
            f"the task is claimed by {holder}, not by you; only they (or an admin) can release it",
            field="id",
        )
    held = (now - task.claimed_at).total_seconds() if task.claimed_at else None
    return TaskChange(
        values=dict(CLEAR_CLAIM),
        events=[
            event(
                "review.released",
                task,
                who.actor,
                now,
                {"reviewer": who.actor, "auth": who.method, "holder": holder, "held_seconds": held},
            )
        ],
    )
