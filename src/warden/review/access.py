"""Who may see and act on a review task. Each refusal says why and what would allow it."""

from __future__ import annotations

from warden.auth.principals import person_of
from warden.auth.tokens import Principal, Role
from warden.errors import Forbidden, NotFound
from warden.review.tasks import ReviewTask

VIEWERS = (Role.REVIEWER, Role.OWNER, Role.AUDITOR)


def may_view(who: Principal, point: str) -> bool:
    return any(who.can(role, point) for role in VIEWERS)


def check_any_view(who: Principal) -> None:
    """The queue is for reviewers, owners and auditors (of some point), not for callers."""
    if not who.roles & {*VIEWERS, Role.ADMIN}:
        raise Forbidden(
            "reading reviews needs the reviewer, owner, auditor or admin role",
            field="Authorization",
        )


def check_view(who: Principal, point: str) -> None:
    """404 for a point outside `who`'s scope (as for one that does not exist), else 403
    unless `who` may read its reviews."""
    if not who.may_see(point):
        raise NotFound(f"no decision point '{point}' among yours", field="point")
    if not may_view(who, point):
        raise Forbidden(
            f"this principal may not see reviews of point '{point}'; it needs the reviewer, "
            "owner or auditor role for that point",
            field="Authorization",
        )


def in_groups(who: Principal, task: ReviewTask) -> bool:
    """Admins act as break-glass reviewers; everyone else needs one of the task's groups."""
    return not task.groups or Role.ADMIN in who.roles or bool(who.groups & set(task.groups))


def check_role(who: Principal, point: str) -> None:
    if not who.can(Role.REVIEWER, point):
        check_view(who, point)
        raise Forbidden(
            f"reviewing point '{point}' needs the reviewer role for it; this principal "
            f"has {', '.join(sorted(who.roles)) or 'no roles'}",
            field="Authorization",
        )


def check_reviewer(who: Principal, task: ReviewTask) -> None:
    """Raise 403 unless `who` may claim or decide this task now."""
    check_role(who, task.point)
    if not in_groups(who, task):
        raise Forbidden(
            f"reviewing this task needs one of the groups {task.groups}; "
            f"{who.actor} is in {sorted(who.groups) or 'no group'} (add one with "
            "`warden token create --group` or `warden user create --group`)",
            field="Authorization",
        )
    if submitted_by_them(who, task):
        raise Forbidden(
            "you submitted this decision; another person must review it (any of your tokens "
            "and your console login count as you)",
            field="Authorization",
        )
    if who.person in {person_of(e) for e in task.excluded}:
        raise Forbidden(
            "you have already voted on this decision; it needs a different reviewer now",
            field="Authorization",
        )


def submitted_by_them(who: Principal, task: ReviewTask) -> bool:
    """Whether `who` is the person (any credential of theirs) who submitted the decision."""
    if task.submitted_by is None:
        return False
    return person_of(task.submitted_by) == who.person or task.submitted_by == who.actor
