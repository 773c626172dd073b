"""Change control: a new policy version waits for a second person before it decides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import LOAN_POINT, write_points
from tests.ledger_helpers import assert_state_agrees
from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.cli.app import app
from warden.decision import Route
from warden.engine import Engine
from warden.errors import Conflict, Forbidden
from warden.policy.loader import load_points

GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}  # confidence 0.909
CONTROLLED = LOAN_POINT + "change_control: {require_approval: true}\n"
STRICTER = CONTROLLED.replace("0.85", "0.95")


def _engine(folder: Path, db: sa.Engine, text: str, actor: str) -> Engine:
    write_points(folder, text)
    return Engine(load_points(folder), db, actor=actor)


def test_a_change_waits_for_a_second_person(tmp_path: Path, db: sa.Engine) -> None:
    first = _engine(tmp_path / "v1", db, CONTROLLED, "alice")
    live_version = first.points["loan_approval"].version
    first.close()
    engine = _engine(tmp_path / "v2", db, STRICTER, "alice")
    try:
        versions = engine.policies.list("loan_approval")
        assert [v.status for v in versions] == ["live", "pending"]
        pending = versions[1].version
        decision = engine.decide("loan_approval", GOOD)
        assert decision.policy_version == live_version and decision.route is Route.AUTO
        with pytest.raises(Forbidden, match="second person"):
            engine.approve_policy("loan_approval", pending, actor="alice")
        approved = engine.approve_policy("loan_approval", pending[:10], actor="bob")
        assert (approved.status, approved.approved_by) == ("live", "bob")
        after = engine.decide("loan_approval", GOOD)
        assert after.policy_version == pending and after.route is Route.REVIEW
        with pytest.raises(Conflict):
            engine.approve_policy("loan_approval", pending, actor="carol")
        assert_state_agrees(db)  # policy versions and approvals follow from their events
    finally:
        engine.close()


def test_approval_reaches_another_replica(tmp_path: Path, db: sa.Engine) -> None:
    _engine(tmp_path / "v1", db, CONTROLLED, "alice").close()
    replica = _engine(tmp_path / "r", db, STRICTER, "alice")
    other = _engine(tmp_path / "o", db, STRICTER, "alice")
    try:
        pending = replica.policies.list("loan_approval")[1].version
        other.decide("loan_approval", GOOD)  # a commit, so `other` has seen the ledger head
        replica.approve_policy("loan_approval", pending, actor="bob")
        other.decide("loan_approval", GOOD)  # its commit observes the approval
        assert other.decide("loan_approval", GOOD).policy_version == pending
    finally:
        replica.close()
        other.close()


def test_without_change_control_a_new_version_is_live_at_once(
    tmp_path: Path, db: sa.Engine
) -> None:
    _engine(tmp_path / "v1", db, LOAN_POINT, "alice").close()
    engine = _engine(tmp_path / "v2", db, LOAN_POINT.replace("0.85", "0.95"), "alice")
    try:
        assert [v.status for v in engine.policies.list("loan_approval")] == ["superseded", "live"]
    finally:
        engine.close()


def test_cli_and_http(
    tmp_path: Path, db: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _engine(tmp_path / "v1", db, CONTROLLED, "cli:alice").close()
    folder = write_points(tmp_path / "v2", STRICTER)
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    runner = CliRunner()
    submitted = runner.invoke(app, ["policy", "submit", str(folder / "loan_approval.yaml")])
    assert submitted.exit_code == 0, submitted.output
    assert "pending" in submitted.stdout
    listed = runner.invoke(app, ["policy", "versions", "loan_approval"], env={"COLUMNS": "200"})
    assert "pending" in listed.stdout and "live" in listed.stdout
    engine = Engine(load_points(folder), db, actor="warden serve")
    try:
        owner, _ = create_token(
            engine.recorder, name="bob", roles=["owner"], points=["loan_approval"], actor="test"
        )
        with TestClient(create_app(engine, workers=[])) as client:
            auth = {"Authorization": f"Bearer {owner}"}
            versions = client.get("/v1/points/loan_approval/policies", headers=auth).json()
            pending = next(v["version"] for v in versions if v["status"] == "pending")
            response = client.post(
                f"/v1/points/loan_approval/policies/{pending}/approve", headers=auth
            )
            assert response.status_code == 200, response.text
            assert json.loads(response.text)["status"] == "live"
        assert engine.decide("loan_approval", GOOD).policy_version == pending
    finally:
        engine.close()
