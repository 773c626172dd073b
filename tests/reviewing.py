"""Helpers for the review tests: a point with a review block, tokens, and a clock to move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import AGENT_POINT, LOAN_POINT, write_points
from warden.auth.tokens import Principal, create_token
from warden.engine import Engine

REVIEW_BLOCK = """review:
  reviewers: [credit-officers]
  four_eyes_when: "input.amount > 250000"
  sla: 4h
  on_expiry: decline
  lease: 15m
"""
LOAN_WITH_REVIEW = LOAN_POINT.replace("failure:\n", REVIEW_BLOCK + "failure:\n", 1)
REVIEW_INPUT = {"amount": 90000, "income": 50000, "credit_score": 800}  # large_amount -> review
FOUR_EYES_INPUT = {**REVIEW_INPUT, "amount": 300000}
AUTO_INPUT = {"amount": 1000, "income": 5000, "credit_score": 800}


def review_points(folder: Path, loan: str = LOAN_WITH_REVIEW) -> Path:
    return write_points(folder, loan, AGENT_POINT)


class Clock:
    """A clock the test moves by hand, so SLAs and leases expire without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def token(
    engine: Engine,
    roles: list[str],
    *,
    points: list[str] | None = None,
    groups: list[str] | None = None,
    name: str = "t",
) -> tuple[dict[str, str], Principal]:
    secret, principal = create_token(
        engine.recorder,
        name=name,
        roles=roles,
        points=points or ["loan_approval"],
        groups=groups,
        actor="test",
    )
    return {"Authorization": f"Bearer {secret}"}, principal


def reviewer(engine: Engine, name: str = "alice") -> tuple[dict[str, str], Principal]:
    return token(engine, ["reviewer"], groups=["credit-officers"], name=name)
