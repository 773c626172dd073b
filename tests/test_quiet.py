"""Quiet by default: answers reveal nothing outside the caller's scope, and reads never write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.reviewing import REVIEW_INPUT, review_points, token
from warden.api.app import create_app
from warden.engine import Engine, Proposal
from warden.policy.loader import load_points
from warden.store.schema import checkpoints

REFUND = {"order_id": "o-1", "amount": 900}


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "q")), db, actor="test")
    yield eng
    eng.close()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, workers=[])) as test_client:
        yield test_client


def test_a_mistyped_point_is_404_with_suggestions_among_the_callers_own(
    client: TestClient, engine: Engine
) -> None:
    caller, _ = token(engine, ["caller"], name="carl")  # loan_approval only
    typo = client.post(
        "/v1/decisions", json={"point": "loan_aproval", "input": REVIEW_INPUT}, headers=caller
    )
    assert typo.status_code == 404, typo.text
    assert "did you mean 'loan_approval'" in typo.json()["error"]["message"]
    assert "refund_agent" not in typo.text
    other = client.post(
        "/v1/decisions", json={"point": "refund_agent", "input": REFUND}, headers=caller
    )
    unknown = client.post(
        "/v1/decisions", json={"point": "payroll", "input": REFUND}, headers=caller
    )
    assert other.status_code == unknown.status_code == 404
    assert other.json()["error"]["message"].replace("refund_agent", "X") == unknown.json()["error"][
        "message"
    ].replace("payroll", "X")


def test_a_decision_outside_the_scope_reads_as_unknown(client: TestClient, engine: Engine) -> None:
    hidden = engine.decide(
        "refund_agent", REFUND, actor="someone", proposal=Proposal("refund", 0.95)
    )
    reader, _ = token(engine, ["owner"], name="olivia")  # loan_approval only
    outside = client.get(f"/v1/decisions/{hidden.id}", headers=reader)
    missing = client.get(f"/v1/decisions/{'0' * len(hidden.id)}", headers=reader)
    assert outside.status_code == missing.status_code == 404
    assert outside.json()["error"]["message"].replace(hidden.id, "X") == missing.json()["error"][
        "message"
    ].replace("0" * len(hidden.id), "X")
    review = client.get(f"/v1/reviews/{hidden.id}", headers=reader)
    assert review.status_code == 404 and "refund_agent" not in review.text


def test_a_scoped_auditors_proof_request_signs_nothing(client: TestClient, engine: Engine) -> None:
    decision = engine.decide("loan_approval", REVIEW_INPUT, actor="someone")
    auditor, _ = token(engine, ["auditor"], name="aud")
    response = client.get(f"/v1/audit/proofs/{decision.id}", headers=auditor)
    assert response.status_code == 409 and "checkpoint" in response.text
    with engine.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(checkpoints)).scalar() == 0


def test_metrics_can_require_a_token(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/metrics").status_code == 200
    monkeypatch.setenv("WARDEN_METRICS_TOKEN", "scrape-secret")
    refused = client.get("/metrics")
    assert refused.status_code == 401 and "WARDEN_METRICS_TOKEN" in refused.text
    assert "loan_approval" not in refused.text
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert ok.status_code == 200
