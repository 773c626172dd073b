"""`warden review` and `warden user` on the command line; `wait()` in both SDKs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.reviewing import REVIEW_INPUT, review_points, reviewer, token
from warden.api.app import create_app
from warden.cli.app import app
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.review.desk import ReviewDesk
from warden.sdk.http import WardenClient
from warden.sdk.local import Warden
from warden.store.database import create_engine, migrate
from warden.store.schema import tokens, users


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    points = review_points(tmp_path / "points")
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WARDEN_CONFIG", str(points))
    monkeypatch.delenv("WARDEN_DB_URL", raising=False)
    monkeypatch.setenv("USER", "operator")
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def _pending(env: Path) -> str:
    with Warden.from_config(env / "points", home=env / "home") as warden:
        return warden.decide("loan_approval", REVIEW_INPUT, actor="token:x:caller").id


def test_cli_lists_shows_and_decides(env: Path) -> None:
    runner = CliRunner()
    first, second = _pending(env), _pending(env)
    listed = runner.invoke(app, ["review", "list"])
    assert listed.exit_code == 0, listed.output
    assert first in listed.output and "large_amount" in listed.output
    shown = runner.invoke(app, ["review", "show", first])
    body = orjson.loads(shown.stdout)
    assert body["decision"]["proposed_outcome"] == "approve"
    assert body["history"][0]["type"] == "decision.created"
    approved = runner.invoke(app, ["review", "approve", first, "--reason", "fine"])
    assert approved.exit_code == 0, approved.output
    assert orjson.loads(approved.stdout)["status"] == "decided"
    missing = runner.invoke(
        app, ["review", "override", second, "--outcome", "maybe", "--reason", "x"]
    )
    assert missing.exit_code == 1 and "not an outcome" in missing.stderr
    overridden = runner.invoke(
        app, ["review", "override", second, "--outcome", "decline", "--reason", "too risky"]
    )
    assert overridden.exit_code == 0, overridden.output
    with Warden.from_config(env / "points", home=env / "home") as warden:
        assert warden.get(first).outcome == "approve"
        assert warden.get(second).outcome == "decline"
        history = ReviewDesk(warden.engine).history(second)
    assert [e["type"] for e in history][-2:] == ["review.claimed", "review.overridden"]
    assert history[-1]["actor"].endswith(" via cli:operator")
    assert history[-1]["payload"]["auth"] == "cli"


def test_cli_cannot_approve_its_own_decision(env: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(
        app, ["decide", "loan_approval", "--input", orjson.dumps(REVIEW_INPUT).decode()]
    )
    decision_id = orjson.loads(made.stdout)["id"]
    refused = runner.invoke(app, ["review", "approve", decision_id])
    assert refused.exit_code == 1 and "you submitted this decision" in refused.stderr


def test_cli_claim_release_and_reject(env: Path) -> None:
    runner = CliRunner()
    decision_id = _pending(env)
    assert runner.invoke(app, ["review", "claim", decision_id]).exit_code == 0
    assert runner.invoke(app, ["review", "release", decision_id]).exit_code == 0
    no_code = runner.invoke(
        app, ["review", "reject", decision_id, "--reason", "x", "--code", "Bad"]
    )
    assert no_code.exit_code == 1 and "reason_code" in no_code.stderr
    done = runner.invoke(
        app, ["review", "reject", decision_id, "--reason", "no payslip", "--code", "missing_docs"]
    )
    assert done.exit_code == 0, done.output


def test_cli_creates_users_and_tokens_with_groups(env: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(
        app,
        ["user", "create", "olga", "--role", "reviewer", "--point", "loan_approval",
         "--group", "credit-officers", "--password-stdin"],
        input="a long enough password\n",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    short = runner.invoke(
        app,
        ["user", "create", "ivan", "--role", "reviewer", "--point", "*", "--password-stdin"],
        input="short\n",
    )
    assert short.exit_code == 1 and "at least 12" in short.output
    minted = runner.invoke(
        app,
        ["token", "create", "--name", "r", "--role", "reviewer", "--point", "loan_approval",
         "--group", "credit-officers"],
    )  # fmt: skip
    assert minted.exit_code == 0, minted.output
    db = create_engine(f"sqlite:///{env / 'home' / 'warden.db'}")
    migrate(db)
    with db.connect() as conn:
        assert conn.execute(sa.select(users.c.groups)).scalar_one() == ["credit-officers"]
        hashed = conn.execute(sa.select(users.c.password_hash)).scalar_one()
        assert hashed.startswith("$argon2id$")
        assert conn.execute(sa.select(tokens.c.groups)).scalar_one() == ["credit-officers"]
    db.dispose()


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "points")), db, actor="test")
    yield eng
    eng.close()


def test_local_sdk_wait(engine: Engine) -> None:
    warden = Warden(engine)
    decision = warden.decide("loan_approval", REVIEW_INPUT, actor="caller")
    with pytest.raises(TimeoutError, match="still pending"):
        warden.wait(decision.id, 0.1)
    _, alice = reviewer(engine)
    desk = ReviewDesk(engine)

    def review() -> None:
        desk.claim(alice, decision.id)
        desk.approve(alice, decision.id)

    timer = threading.Timer(0.2, review)
    timer.start()
    assert warden.wait(decision.id, 10).outcome == "approve"
    timer.join()


def test_http_sdk_wait(engine: Engine) -> None:
    headers, _ = token(engine, ["caller"], name="caller")
    _, alice = reviewer(engine)
    desk = ReviewDesk(engine)
    with TestClient(create_app(engine, desk=desk, workers=[])) as http:
        client = WardenClient("http://testserver", headers["Authorization"][7:], client=http)
        decision = client.decide(
            "loan_approval", REVIEW_INPUT, callback_url="https://hooks.example.com/x"
        )
        with pytest.raises(TimeoutError):
            client.wait(decision.id, 0.2)
        timer = threading.Timer(
            0.2,
            lambda: (
                desk.claim(alice, decision.id),
                desk.reject(alice, decision.id, reason="no", reason_code="policy_breach"),
            ),
        )
        timer.start()
        final = client.wait(decision.id, 10)
        timer.join()
    assert final.status.value == "final" and final.outcome is None
    assert final.reasons[-1].code == "policy_breach"
