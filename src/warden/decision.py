"""The plain data every part of Warden exchanges about one decision."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Route(StrEnum):
    """Where the policy sent a decision."""

    AUTO = "auto"
    REVIEW = "review"
    FALLBACK = "fallback"
    REFUSED = "refused"


class Status(StrEnum):
    """Whether a decision is settled (`final`) or still waits for a person (`pending`)."""

    PENDING = "pending"
    FINAL = "final"


class Reason(BaseModel):
    """Why a decision took its route: a rule that fired, a failure, a switch."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(description="Rule id or a built-in code such as `model_timeout`.")
    kind: str = Field(
        description="refuse | review | auto | failure | kill | sample | default; once a "
        "reviewer or the SLA settles it: approve | reject | override | expire"
    )
    message: str = ""
    when: str | None = Field(default=None, description="The CEL text of the rule, if any.")
    field: str | None = Field(default=None, description="The offending input field, if any.")


class Decision(BaseModel):
    """One governed decision, as callers, reviewers and auditors see it."""

    id: str
    point: str
    route: Route
    status: Status
    outcome: str | None = Field(description="The applied outcome; null while pending or refused.")
    proposed_outcome: str | None = Field(description="What the model proposed, if it answered.")
    confidence: float | None
    reasons: list[Reason]
    policy_version: str
    model_version: str | None
    input: dict[str, Any]
    context: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    actor: str | None = Field(default=None, description="Who submitted the decision.")
    created_at: datetime
    decided_at: datetime | None = None
    ground_truth: str | None = None
    ground_truth_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status is Status.FINAL
