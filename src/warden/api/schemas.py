"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from warden.decision import Decision

NO_NUL = "^[^\\x00]*$"  # PostgreSQL cannot store NUL in text; no name or reason needs one
# A reason must say something: whitespace alone is refused.
NOT_BLANK = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    point: str = Field(description="The decision point, e.g. `loan_approval`.")
    input: dict[str, Any] = Field(description="Must match the point's input schema.")
    context: dict[str, Any] = Field(
        default_factory=dict, description="Extra facts rules may read as `context`."
    )
    output: Any = Field(default=None, description="Proposal mode only: the AI's outcome.")
    confidence: Any = Field(default=None, description="Proposal mode only: its confidence.")
    model_version: str | None = Field(
        default=None, max_length=128, description="Proposal mode only."
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2000,
        description="Gets the decision as a signed webhook if it goes to review and becomes final.",
    )


class GroundTruthRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: str = Field(description="What actually turned out to be right.")


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, pattern=NOT_BLANK, description="Why; recorded in the ledger.")


class DecisionPage(BaseModel):
    data: list[Decision]
    next_cursor: str | None


class ModelInfo(BaseModel):
    kind: str
    version: str | None
    breaker: str | None


class PointInfo(BaseModel):
    point: str
    owner: str
    description: str | None
    policy_version: str
    outcomes: list[str]
    model: ModelInfo
    killed: bool
    rules: dict[str, list[dict[str, Any]]]
    status: str = Field(
        default="serving",
        description="'serving', or 'unavailable' when its file or model did not load",
    )
    error: str | None = Field(default=None, description="`file:line: problem` when unavailable")


class KillSwitchInfo(BaseModel):
    scope: str
    engaged: bool
    actor: str
    reason: str
    changed_at: str | None
