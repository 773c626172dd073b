"""The evidence for judging a rollout step, read from recorded decisions and shadow results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from warden.models.base import MODEL_FAILURES
from warden.rollout.analysis import Arm, StepEvidence
from warden.rollout.rollouts import Rollout
from warden.store.schema import decisions, shadow_results


def collect(db: sa.Engine, rollout: Rollout) -> StepEvidence:
    """Counts for champion and challenger since the current step began.

    Counted by the database, not by reading the rows: a step of an hour at thousands of
    decisions a second is millions of rows, and a controller tick that read them all stalled
    the server it runs in.
    """
    since = rollout.step_started_at
    champion, challenger = rollout.champion, rollout.challenger
    d, s = decisions.c, shadow_results.c
    in_step = sa.and_(
        d.point == rollout.point,
        d.id >= id_floor(since - timedelta(seconds=1)),  # the (point, id) index: ids are UUIDv7
        d.created_at >= since,
    )
    shadows_in_step = sa.and_(s.point == rollout.point, s.created_at >= since)
    with db.connect() as conn:
        arms = {v: _decision_arm(conn, in_step, v) for v in (champion, challenger)}
        shadow_arm = _shadow_arm(conn, shadows_in_step, challenger)
        if shadow_arm.decisions:  # shadow mode: the challenger only answered copies
            compared, agreed = _agreement(conn, in_step, shadows_in_step, champion, challenger)
            challenger_arm = shadow_arm
        else:  # canary: the champion answered copies of the challenger's decisions
            compared, agreed = _agreement(conn, in_step, shadows_in_step, challenger, champion)
            challenger_arm = arms[challenger]
    return StepEvidence(
        challenger=challenger_arm, champion=arms[champion], compared=compared, agreed=agreed
    )


def id_floor(moment: datetime) -> str:
    """The smallest UUIDv7 of `moment`'s millisecond: every id made at or after it sorts after."""
    if moment.tzinfo is None:  # SQLite hands back naive UTC; never read it as local time
        moment = moment.replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    digits = f"{ms:012x}"
    return f"{digits[:8]}-{digits[8:]}-0000-0000-000000000000"


def _count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def _model_failed(reasons: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """A model failure among the reasons. Reasons are written by Warden alone, as compact JSON
    with `code` first, so their text can be matched."""
    text = sa.cast(reasons, sa.Text)
    return sa.or_(*(text.like(f'%"code":"{code}"%') for code in sorted(MODEL_FAILURES)))


def _decision_arm(conn: sa.Connection, in_step: sa.ColumnElement[bool], version: str) -> Arm:
    d = decisions.c
    mine = sa.and_(in_step, d.model_version == version)
    reviewed = sa.and_(d.route == "review", d.status == "final", d.proposed_outcome.is_not(None))
    totals = conn.execute(
        sa.select(
            sa.func.count(),
            _count(_model_failed(d.reasons)),
            _count(d.route == "review"),
            _count(reviewed),
            _count(sa.and_(reviewed, d.outcome.is_distinct_from(d.proposed_outcome))),
        ).where(mine)
    ).one()
    outcomes = conn.execute(
        sa.select(d.proposed_outcome, sa.func.count())
        .where(mine, d.proposed_outcome.is_not(None))
        .group_by(d.proposed_outcome)
    ).all()
    return Arm(
        decisions=totals[0],
        errors=int(totals[1]),
        reviews=int(totals[2]),
        reviewed=int(totals[3]),
        overrides=int(totals[4]),
        outcomes={outcome: count for outcome, count in outcomes},
    )


def _shadow_arm(conn: sa.Connection, in_step: sa.ColumnElement[bool], version: str) -> Arm:
    s = shadow_results.c
    mine = sa.and_(in_step, s.model_version == version)
    total, errors = conn.execute(
        sa.select(sa.func.count(), _count(s.failure.is_not(None))).where(mine)
    ).one()
    outcomes = conn.execute(
        sa.select(s.outcome, sa.func.count())
        .where(mine, s.outcome.is_not(None))
        .group_by(s.outcome)
    ).all()
    return Arm(
        decisions=total, errors=int(errors), outcomes={outcome: n for outcome, n in outcomes}
    )


def _agreement(
    conn: sa.Connection,
    decisions_in_step: sa.ColumnElement[bool],
    shadows_in_step: sa.ColumnElement[bool],
    decided_by: str,
    shadowed_by: str,
) -> tuple[int, int]:
    """Decisions by `decided_by` that `shadowed_by` answered too: how many, how many alike."""
    d, s = decisions.c, shadow_results.c
    compared, agreed = conn.execute(
        sa.select(sa.func.count(), _count(s.outcome == d.proposed_outcome))
        .select_from(shadow_results.join(decisions, d.id == s.decision_id))
        .where(
            decisions_in_step,
            shadows_in_step,
            d.model_version == decided_by,
            s.model_version == shadowed_by,
            d.proposed_outcome.is_not(None),
            s.outcome.is_not(None),
        )
    ).one()
    return compared, int(agreed)
