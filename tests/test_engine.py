"""The governed decision flow end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from warden.decision import Route, Status
from warden.engine import Engine, Proposal
from warden.errors import (
    Conflict,
    InvalidInput,
    InvalidRequest,
    NotFound,
    PointUnavailable,
)
from warden.ledger.chain import verify_rows
from warden.policy.loader import load_points
from warden.store.recorder import Recorder
from warden.store.schema import decisions, events

GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}


def _events(engine: Engine) -> list[dict[str, object]]:
    with engine.db.connect() as conn:
        rows = conn.execute(sa.select(events).order_by(events.c.seq)).mappings().all()
    return [dict(r) for r in rows]


def test_auto_decision_is_recorded_with_its_event(engine: Engine) -> None:
    decision = engine.decide("loan_approval", GOOD, actor="alice")
    assert decision.route is Route.AUTO and decision.status is Status.FINAL
    assert decision.outcome == "approve" and decision.proposed_outcome == "approve"
    assert decision.model_version == "7"
    assert decision.policy_version == engine.points["loan_approval"].version
    assert [r.code for r in decision.reasons] == ["confident"]
    assert engine.get(decision.id) == decision
    created = [e for e in _events(engine) if e["decision_id"] == decision.id]
    assert [e["type"] for e in created] == ["decision.created"]
    assert created[0]["actor"] == "alice"
    assert verify_rows(_events(engine)) is None


def test_review_is_pending_with_reasons(engine: Engine) -> None:
    decision = engine.decide("loan_approval", {**GOOD, "amount": 80000})
    assert decision.route is Route.REVIEW and decision.status is Status.PENDING
    assert decision.outcome is None and decision.proposed_outcome == "approve"
    assert [r.code for r in decision.reasons] == ["large_amount"]
    assert decision.reasons[0].message == "above delegated authority"


def test_refused_by_rule(engine: Engine) -> None:
    decision = engine.decide("loan_approval", {**GOOD, "country": "XX"})
    assert decision.route is Route.REFUSED and decision.outcome is None
    assert decision.status is Status.FINAL


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("error", "model_error"),
        ("slow", "model_timeout"),
        ("bad_outcome", "invalid_output"),
        ("bad_confidence", "invalid_output"),
    ],
)
def test_model_failures_follow_on_error_never_auto(engine: Engine, mode: str, code: str) -> None:
    decision = engine.decide("loan_approval", {**GOOD, "mode": mode})
    assert decision.route is Route.REVIEW
    assert decision.reasons[0].code == code
    assert decision.outcome is None


def test_breaker_opens_and_skips_the_model(engine: Engine) -> None:
    for _ in range(4):
        engine.decide("loan_approval", {**GOOD, "mode": "error"})
    decision = engine.decide("loan_approval", GOOD)
    assert decision.route is Route.REVIEW
    assert decision.reasons[0].code == "breaker_open"


def test_invalid_input_is_refused_recorded_and_names_the_field(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as info:
        engine.decide("loan_approval", {**GOOD, "credit_score": 9000})
    assert info.value.field == "credit_score"
    assert "credit_score" in info.value.message
    recorded = engine.get(info.value.extra["decision_id"])
    assert recorded.route is Route.REFUSED and recorded.reasons[0].code == "invalid_input"
    with pytest.raises(InvalidInput) as missing:
        engine.decide("loan_approval", {"amount": 1})
    assert "income" in missing.value.message or "credit_score" in missing.value.message


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(engine: Engine, bad: float) -> None:
    with pytest.raises(InvalidInput, match="finite"):
        engine.decide("loan_approval", {**GOOD, "income": bad})


def test_unknown_point(engine: Engine) -> None:
    with pytest.raises(NotFound, match="loan_approval"):
        engine.decide("loan_aproval", GOOD)


def test_proposal_mode(engine: Engine) -> None:
    auto = engine.decide(
        "refund_agent",
        {"order_id": "o1", "amount": 20},
        proposal=Proposal("refund", 0.95, "agent-2"),
    )
    assert auto.route is Route.AUTO and auto.outcome == "refund"
    assert auto.model_version == "agent-2"
    bad = engine.decide(
        "refund_agent", {"order_id": "o2", "amount": 20}, proposal=Proposal("refund", float("nan"))
    )
    assert bad.route is Route.FALLBACK and bad.outcome == "deny"
    assert bad.reasons[0].code == "invalid_output"
    with pytest.raises(InvalidRequest):
        engine.decide("refund_agent", {"order_id": "o3", "amount": 20})
    with pytest.raises(InvalidRequest):
        engine.decide("loan_approval", GOOD, proposal=Proposal("approve", 0.9))


def test_idempotency_returns_the_first_decision(engine: Engine) -> None:
    first = engine.decide("loan_approval", GOOD, idempotency_key="k1")
    again = engine.decide("loan_approval", GOOD, idempotency_key="k1")
    assert again.id == first.id
    with pytest.raises(Conflict):
        engine.decide("loan_approval", {**GOOD, "amount": 5}, idempotency_key="k1")


def test_idempotency_under_concurrent_retries(engine: Engine) -> None:
    barrier = threading.Barrier(8)

    def submit(_: int) -> str:
        barrier.wait()
        return engine.decide("loan_approval", GOOD, idempotency_key="same").id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(8)))
    assert len(ids) == 1
    with engine.db.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(decisions)
            .where(decisions.c.idempotency_key == "same")
        ).scalar()
    assert count == 1


def test_retries_in_a_busy_batch_do_not_fail_the_batch(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retried key is refused inside the write lock, before the insert: the decisions
    sharing its batch commit together rather than one by one after a unique-index failure."""
    first = engine.decide("loan_approval", GOOD, idempotency_key="retried")
    failed_writes: list[BaseException] = []
    write = Recorder._write

    def spying(self: Recorder, batch: Any) -> Any:
        try:
            return write(self, batch)
        except Exception as exc:
            failed_writes.append(exc)
            raise

    monkeypatch.setattr(Recorder, "_write", spying)
    barrier = threading.Barrier(8)

    def submit(n: int) -> str:
        barrier.wait()
        key = "retried" if n % 2 else f"fresh-{n}"
        return engine.decide("loan_approval", GOOD, idempotency_key=key).id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(submit, range(8)))
    assert [ids[n] for n in (1, 3, 5, 7)] == [first.id] * 4
    assert len({ids[n] for n in (0, 2, 4, 6)}) == 4
    assert failed_writes == []


def test_a_retry_is_answered_without_calling_the_model_again(
    engine: Engine, points_dir: Path, db: sa.Engine
) -> None:
    guarded = engine.models["loan_approval"]
    assert guarded is not None
    calls: list[object] = []
    predict = guarded._model.predict
    guarded._model.predict = lambda input: calls.append(input) or predict(input)  # type: ignore[method-assign]
    first = engine.decide("loan_approval", GOOD, idempotency_key="once")
    assert engine.decide("loan_approval", GOOD, idempotency_key="once").id == first.id
    assert len(calls) == 1
    restarted = Engine(load_points(points_dir), db)  # knows no keys: the database does
    try:
        assert restarted.decide("loan_approval", GOOD, idempotency_key="once").id == first.id
    finally:
        restarted.close()


def test_kill_switch_stops_auto_and_survives_restart(engine: Engine, points_dir: Path) -> None:
    engine.set_kill("loan_approval", True, actor="ops", reason="drift incident")
    killed = engine.decide("loan_approval", GOOD)
    assert killed.route is Route.REVIEW and killed.reasons[0].code == "kill_switch"
    other = engine.decide(
        "refund_agent", {"order_id": "o", "amount": 1}, proposal=Proposal("deny", 0.99)
    )
    assert other.route is Route.AUTO
    restarted = Engine(load_points(points_dir), engine.db, actor="test")
    try:
        assert restarted.decide("loan_approval", GOOD).route is Route.REVIEW
        restarted.set_kill("loan_approval", False, actor="ops", reason="fixed")
    finally:
        restarted.close()
    types = [e["type"] for e in _events(engine)]
    assert "kill_switch.engaged" in types and "kill_switch.released" in types
    switch = next(k for k in engine.kill_switches() if k.scope == "loan_approval")
    assert (switch.engaged, switch.actor, switch.reason) == (False, "ops", "fixed")


def test_global_kill_switch_and_other_process_view(engine: Engine, points_dir: Path) -> None:
    other = Engine(load_points(points_dir), engine.db, actor="replica")
    try:
        other.set_kill("*", True, actor="ops", reason="incident")
        # this engine's cache has not seen the switch; the recorder re-checks inside the lock
        decision = engine.decide("loan_approval", GOOD)
        assert decision.route is Route.REVIEW
        assert decision.reasons[0].code == "kill_switch"
        assert engine.get(decision.id).route is Route.REVIEW
    finally:
        other.set_kill("*", False, actor="ops", reason="over")
        other.close()


def test_kill_switch_needs_a_reason_and_a_known_point(engine: Engine) -> None:
    with pytest.raises(InvalidRequest):
        engine.set_kill("loan_approval", True, actor="ops", reason="  ")
    with pytest.raises(NotFound):
        engine.set_kill("nope", True, actor="ops", reason="x")


def test_ground_truth_once(engine: Engine) -> None:
    decision = engine.decide("loan_approval", GOOD)
    updated = engine.record_ground_truth(decision.id, "decline", actor="crm")
    assert updated.ground_truth == "decline" and updated.ground_truth_at is not None
    with pytest.raises(Conflict):
        engine.record_ground_truth(decision.id, "approve", actor="crm")
    with pytest.raises(InvalidRequest):
        engine.record_ground_truth(decision.id, "maybe", actor="crm")


def test_policy_versions_recorded_once(engine: Engine, points_dir: Path) -> None:
    again = Engine(load_points(points_dir), engine.db, actor="test")
    again.close()
    loaded = [e for e in _events(engine) if e["type"] == "policy.loaded"]
    assert len(loaded) == 2


def test_concurrent_decisions_keep_one_chain(engine: Engine) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: engine.decide("loan_approval", {**GOOD, "amount": i}), range(300)))
    rows = _events(engine)
    assert verify_rows(rows) is None
    assert len([r for r in rows if r["type"] == "decision.created"]) == 300


def test_integers_beyond_64_bits_are_refused_not_crashed(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="64-bit"):
        engine.decide("loan_approval", {**GOOD, "income": 10**30})
    assert engine.decide("loan_approval", GOOD).route is Route.AUTO


def test_values_that_are_not_json_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="only JSON values"):
        engine.decide("loan_approval", {**GOOD, "country": {"a", "b"}})


def test_a_point_whose_model_cannot_load_names_its_file(tmp_path: Path, db: sa.Engine) -> None:
    from tests.test_rollout import POINT

    (tmp_path / "credit.yaml").write_text(POINT)  # its model file base.joblib does not exist
    engine = Engine(load_points(tmp_path), db, actor="test")
    try:
        (name,) = engine.broken
        error = engine.broken[name].error
        assert error.file.endswith("credit.yaml") and "base.joblib" in error.message
        assert name not in engine.points
        with pytest.raises(PointUnavailable, match=r"base\.joblib"):
            engine.decide(name, {})
    finally:
        engine.close()
