"""The evidence a rollout step is judged on, counted by the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from warden.engine import Engine
from warden.ids import new_id
from warden.rollout.evidence import collect, id_floor
from warden.rollout.plan import RolloutPlan
from warden.rollout.rollouts import Mode, Rollout, State
from warden.store.schema import decisions, shadow_results


def _rollout(mode: Mode, since: datetime) -> Rollout:
    return Rollout(
        id="r1",
        point="loan_approval",
        mode=mode,
        champion="7",
        challenger="8",
        plan=RolloutPlan(steps=[50, 100]),
        state=State.RUNNING,
        step=0,
        step_started_at=since,
        started_by="t",
        started_at=since,
        updated_at=since,
        reason="",
    )


def _application(score: int, **extra: object) -> dict[str, object]:
    return {"amount": 100, "income": 1, "credit_score": score, **extra}


def test_canary_arms_count_errors_reviews_overrides_and_agreement(engine: Engine) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    champion = [engine.decide("loan_approval", _application(s)) for s in (800, 820, 400)]
    challenger = [engine.decide("loan_approval", _application(s)) for s in (810, 500)]
    failed = engine.decide("loan_approval", _application(800, mode="error"))
    with engine.db.begin() as conn:  # the challenger's: two answers and one model failure
        ids = [d.id for d in [*challenger, failed]]
        conn.execute(decisions.update().where(decisions.c.id.in_(ids)).values(model_version="8"))
        conn.execute(  # a person overturned the challenger's review
            decisions.update()
            .where(decisions.c.id == challenger[1].id)
            .values(status="final", outcome="approve")
        )
        conn.execute(
            shadow_results.insert(),
            [  # the champion answering copies of the challenger's decisions
                _shadow(challenger[0].id, "7", challenger[0].proposed_outcome),
                _shadow(challenger[1].id, "7", "approve"),
            ],
        )
    evidence = collect(engine.db, _rollout(Mode.CANARY, since))
    assert evidence.champion.decisions == 3 and evidence.champion.errors == 0
    assert evidence.champion.reviews == 1 and evidence.champion.reviewed == 0
    assert evidence.challenger.decisions == 3 and evidence.challenger.errors == 1
    assert evidence.challenger.reviews == 2  # the low score, and the failure's review path
    assert (evidence.challenger.reviewed, evidence.challenger.overrides) == (1, 1)
    assert sum(evidence.challenger.outcomes.values()) == 2
    assert (evidence.compared, evidence.agreed) == (2, 1)
    assert champion[0].id >= id_floor(since)


def test_shadow_mode_judges_the_challenger_by_its_shadow_answers(engine: Engine) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    decided = [engine.decide("loan_approval", _application(s)) for s in (800, 820, 840)]
    with engine.db.begin() as conn:
        conn.execute(
            shadow_results.insert(),
            [
                _shadow(decided[0].id, "8", decided[0].proposed_outcome),
                _shadow(decided[1].id, "8", "decline"),
                _shadow(decided[2].id, "8", None, failure="model_timeout"),
            ],
        )
    evidence = collect(engine.db, _rollout(Mode.SHADOW, since))
    assert evidence.challenger.decisions == 3 and evidence.challenger.errors == 1
    assert (evidence.compared, evidence.agreed) == (2, 1)
    later = collect(engine.db, _rollout(Mode.SHADOW, datetime.now(UTC) + timedelta(seconds=5)))
    assert later.challenger.decisions == 0 and later.champion.decisions == 0


def test_id_floor_orders_before_every_id_of_its_millisecond() -> None:
    before = datetime.now(UTC)
    ids = [new_id() for _ in range(50)]
    assert all(i > id_floor(before) for i in ids)
    assert all(i < id_floor(datetime.now(UTC) + timedelta(seconds=1)) for i in ids)


def _shadow(
    decision_id: str, version: str, outcome: str | None, failure: str | None = None
) -> dict[str, object]:
    return {
        "decision_id": decision_id,
        "model_version": version,
        "point": "loan_approval",
        "outcome": outcome,
        "confidence": None if outcome is None else 0.9,
        "failure": failure,
        "latency_ms": 1.0,
        "created_at": datetime.now(UTC),
    }


def test_the_reasons_text_matches_only_real_failure_codes(engine: Engine) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    decision = engine.decide("loan_approval", _application(400))
    with engine.db.begin() as conn:  # a reason whose message quotes a failure code
        conn.execute(
            decisions.update()
            .where(decisions.c.id == decision.id)
            .values(
                reasons=[
                    {"code": "low_confidence", "kind": "review", "message": '"code":"model_error"'}
                ]
            )
        )
    assert collect(engine.db, _rollout(Mode.CANARY, since)).champion.errors == 0


def test_id_floor_reads_a_naive_time_as_utc() -> None:
    moment = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert id_floor(moment.replace(tzinfo=None)) == id_floor(moment)
