"""decide_many: a batch is decided, recorded and audited exactly like single decisions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_rollout import POINT, train
from warden.decision import Route
from warden.engine import Engine
from warden.errors import InvalidRequest
from warden.ledger.chain import verify_rows
from warden.policy.loader import load_points
from warden.store.schema import events

GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}


def test_batch_matches_single_decisions(engine: Engine) -> None:
    inputs = [{**GOOD, "credit_score": s} for s in (400, 700, 790, 820)] + [
        {**GOOD, "amount": 90000},
        {**GOOD, "country": "XX"},
    ]
    batch = engine.decide_many("loan_approval", inputs, actor="batch")
    single = [engine.decide("loan_approval", x) for x in inputs]
    assert [d.route for d in batch] == [d.route for d in single]
    assert [d.outcome for d in batch] == [d.outcome for d in single]
    assert [[r.code for r in d.reasons] for d in batch] == [
        [r.code for r in d.reasons] for d in single
    ]
    assert all(d.actor == "batch" for d in batch)
    with engine.db.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(events).order_by(events.c.seq)).mappings()]
    assert verify_rows(rows) is None
    logged = {r["decision_id"] for r in rows if r["type"] == "decision.created"}
    assert {d.id for d in batch} <= logged


def test_bad_rows_fail_alone(engine: Engine) -> None:
    inputs = [GOOD, {"amount": -5}, {**GOOD, "mode": "error"}, GOOD]
    decisions = engine.decide_many("loan_approval", inputs)
    assert [d.route for d in decisions] == [Route.AUTO, Route.REFUSED, Route.REVIEW, Route.AUTO]
    assert decisions[1].reasons[0].code == "invalid_input"
    assert decisions[2].reasons[0].code == "model_error"
    assert engine.get(decisions[1].id).route is Route.REFUSED


def test_kill_switch_and_empty_and_proposals(engine: Engine) -> None:
    assert engine.decide_many("loan_approval", []) == []
    engine.set_kill("loan_approval", True, actor="ops", reason="incident")
    assert {d.route for d in engine.decide_many("loan_approval", [GOOD] * 3)} == {Route.REVIEW}
    with pytest.raises(InvalidRequest):
        engine.decide_many("refund_agent", [{"order_id": "x", "amount": 1}])
    with pytest.raises(InvalidRequest, match="contexts"):
        engine.decide_many("loan_approval", [GOOD], contexts=[{}, {}])


def test_sklearn_batch_is_one_vectorised_call(tmp_path: Path, db: sa.Engine) -> None:
    train(tmp_path / "base.joblib", 1)
    (tmp_path / "credit.yaml").write_text(textwrap.dedent(POINT))
    engine = Engine(load_points(tmp_path), db, actor="test", model_cache=tmp_path / "cache")
    try:
        inputs = [
            {"amount": 1000.0, "income": 5000.0, "credit_score": s} for s in range(300, 850, 5)
        ]
        batch = engine.decide_many("credit", inputs)
        single = [engine.decide("credit", x) for x in inputs]
        assert [d.proposed_outcome for d in batch] == [d.proposed_outcome for d in single]
        assert [d.confidence for d in batch] == pytest.approx([d.confidence for d in single])
    finally:
        engine.close()
