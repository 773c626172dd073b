"""Verdicts: approve, reject, override, and how votes combine under four-eyes.

Each verdict is one vote at the task's current level. When `required` votes agree the decision
is final; any disagreement escalates to `escalate_to` (or the same groups), where reviewers who
have not voted yet — as many as the policy's `escalation_approvals`, by default as many as
before — decide.
"""

from __future__ import annotations

import re
from datetime import datetime

from warden.auth.tokens import Principal
from warden.decision import Decision, Reason
from warden.errors import Conflict, InvalidRequest
from warden.review.access import check_reviewer
from warden.review.changes import CLEAR_CLAIM, POLICY_ACTOR, TaskChange, event, iso
from warden.review.claims import check_open
from warden.review.finalize import final_decision
from warden.review.tasks import ReviewTask, TaskStatus, Verdict, Vote

MAX_REASON = 2000
REASON_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
EVENT = {
    Verdict.APPROVE: "review.approved",
    Verdict.REJECT: "review.rejected",
    Verdict.OVERRIDE: "review.overridden",
}


def check_holder(task: ReviewTask, who: Principal, now: datetime) -> datetime:
    """The reviewer must hold a live claim; returns when they claimed (their `opened_at`)."""
    if task.claimed_by == who.actor and task.claimed(now) and task.claimed_at is not None:
        return task.claimed_at
    if task.claimed_by == who.actor:
        raise Conflict(
            f"your claim expired at {iso(task.lease_until)}; claim the task again, then decide",
            field="id",
        )
    holder = task.holder(now)
    if holder is not None:
        raise Conflict(f"the task is claimed by {holder}; only they can decide it now", field="id")
    raise Conflict(
        f"claim the task before deciding it (POST /v1/reviews/{task.decision_id}/claim)",
        field="id",
    )


def vote_outcome(
    verdict: Verdict, decision: Decision, outcome: str | None, outcomes: list[str]
) -> str | None:
    if verdict is Verdict.APPROVE:
        if outcome is not None and outcome != decision.proposed_outcome:
            raise InvalidRequest(
                "approve applies the proposed outcome; to choose another, use override",
                field="outcome",
            )
        if decision.proposed_outcome is None:
            raise InvalidRequest(
                "there is no proposed outcome to approve (the model gave none); override with "
                f"one of {outcomes} or reject",
                field="outcome",
            )
        return decision.proposed_outcome
    if verdict is Verdict.REJECT:
        return None
    if outcome is None:
        raise InvalidRequest(f"override needs an outcome, one of {outcomes}", field="outcome")
    if outcome not in outcomes:
        raise InvalidRequest(
            f"'{outcome}' is not an outcome of '{decision.point}'; choose one of {outcomes}",
            field="outcome",
        )
    if outcome == decision.proposed_outcome:
        raise InvalidRequest(
            f"'{outcome}' is the proposed outcome; approve it instead of overriding",
            field="outcome",
        )
    return outcome


def check_reason(verdict: Verdict, reason: str | None, reason_code: str | None) -> None:
    text = (reason or "").strip()
    if verdict is not Verdict.APPROVE and not text:
        raise InvalidRequest(f"{verdict.value} needs a reason; say why", field="reason")
    if len(text) > MAX_REASON:
        raise InvalidRequest(f"the reason is longer than {MAX_REASON} characters", field="reason")
    if verdict is Verdict.REJECT and not reason_code:
        raise InvalidRequest(
            "reject needs a reason_code, e.g. missing_documents", field="reason_code"
        )
    if reason_code is not None and not REASON_CODE.match(reason_code):
        raise InvalidRequest(
            "reason_code is 1-64 lower-case letters, digits and '_', starting with a letter",
            field="reason_code",
        )


def final_reason(vote: Vote, agreed: int) -> Reason:
    who = "reviewers" if agreed > 1 else "reviewer"
    if vote.verdict is Verdict.REJECT:
        assert vote.reason_code is not None
        return Reason(code=vote.reason_code, kind="reject", message=vote.reason or "")
    if vote.verdict is Verdict.OVERRIDE:
        return Reason(code="reviewer_override", kind="override", message=vote.reason or "")
    return Reason(
        code="reviewer_approved",
        kind="approve",
        message=vote.reason or f"approved by {agreed} {who}",
    )


def decide(
    task: ReviewTask,
    decision: Decision,
    who: Principal,
    now: datetime,
    verdict: Verdict,
    *,
    outcomes: list[str],
    outcome: str | None = None,
    reason: str | None = None,
    reason_code: str | None = None,
) -> TaskChange:
    """Plan one verdict. Raises 403/409/400 before anything is written."""
    check_reviewer(who, task)
    check_open(task)
    opened_at = check_holder(task, who, now)
    check_reason(verdict, reason, reason_code)
    applied = vote_outcome(verdict, decision, outcome, outcomes)
    vote = Vote(
        reviewer=who.actor,
        auth=who.method,
        verdict=verdict,
        outcome=applied,
        reason=(reason or "").strip() or None,
        reason_code=reason_code if verdict is Verdict.REJECT else None,
        level=task.level,
        opened_at=opened_at,
        submitted_at=now,
        seconds=round((now - opened_at).total_seconds(), 3),
    )
    prior = task.level_votes()
    votes = [*(v.model_dump(mode="json") for v in task.votes), vote.model_dump(mode="json")]
    agree = all(v.verdict is vote.verdict and v.outcome == vote.outcome for v in prior)
    final = agree and len(prior) + 1 >= task.required
    payload = {
        **vote.model_dump(mode="json"),
        "vote": len(prior) + 1,
        "required": task.required,
        "final": final,
        "escalated": not agree,
        "proposed_outcome": decision.proposed_outcome,
        "policy_version": decision.policy_version,
    }
    events = [event(EVENT[verdict], task, who.actor, now, payload)]
    values = {**CLEAR_CLAIM, "votes": votes}
    if final:
        values.update(status=TaskStatus.DECIDED.value, decided_at=now, outcome=applied)
        settled = final_decision(decision, applied, final_reason(vote, len(prior) + 1), now)
        return TaskChange(values=values, events=events, final=settled)
    voters = [v.reviewer for v in prior] + [who.actor]
    values["excluded"] = sorted({*task.excluded, *voters})
    if agree:
        return TaskChange(values=values, events=events)
    groups = task.escalate_to_groups()
    required = task.required_after_escalation()
    values.update(level=task.level + 1, groups=groups, required=required)
    events.append(
        event(
            "review.escalated",
            task,
            POLICY_ACTOR,
            now,
            {
                "why": "reviewers disagreed",
                "votes": [
                    {"reviewer": v.reviewer, "verdict": v.verdict.value, "outcome": v.outcome}
                    for v in [*prior, vote]
                ],
                "level": task.level + 1,
                "groups": groups,
                "required": required,
                "excluded": values["excluded"],
            },
        )
    )
    return TaskChange(values=values, events=events)
