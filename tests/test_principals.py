"""People, not credentials: every credential of one person counts once for review.

Each test is an insider's attack: one person holding several credentials (API tokens, a
console login, the CLI) tries to approve their own decision or to be both pairs of eyes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.reviewing import (
    FOUR_EYES_INPUT,
    LOAN_WITH_REVIEW,
    REVIEW_INPUT,
    Clock,
    review_points,
    token,
)
from warden.api.app import create_app
from warden.auth.principals import person_of, principal_id_for
from warden.auth.tokens import Principal, create_token
from warden.auth.users import create_user
from warden.cli.review import Operator
from warden.engine import Engine
from warden.errors import Forbidden
from warden.policy.loader import load_points
from warden.review.desk import ReviewDesk
from warden.store.schema import events, principals, tokens

Headers = dict[str, str]
PASSWORD = "correct horse battery"


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "pp")), db, actor="test")
    yield eng
    eng.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def desk(engine: Engine, clock: Clock) -> ReviewDesk:
    return ReviewDesk(engine, clock=clock)


@pytest.fixture
def client(engine: Engine, desk: ReviewDesk) -> Iterator[TestClient]:
    app = create_app(engine, desk=desk, workers=[])
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def _decide(client: TestClient, headers: Headers, data: dict[str, object]) -> str:
    response = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": data}, headers=headers
    )
    assert response.status_code in (200, 201, 202), response.text
    body = response.json()
    assert body["route"] == "review"
    return str(body["id"])


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def test_tokens_of_one_name_are_one_person(client: TestClient, engine: Engine) -> None:
    """The reproduction: `token create --name alice` twice, as caller and as reviewer."""
    caller, _ = token(engine, ["caller"], name="alice")
    reviewer, _ = token(engine, ["reviewer"], groups=["credit-officers"], name="alice")
    decision_id = _decide(client, caller, REVIEW_INPUT)
    claim = client.post(f"/v1/reviews/{decision_id}/claim", headers=reviewer)
    assert claim.status_code == 403, claim.text
    assert "you submitted this decision" in claim.json()["error"]["message"]
    approve = client.post(f"/v1/reviews/{decision_id}/approve", headers=reviewer)
    assert approve.status_code == 403
    assert engine.get(decision_id).status.value == "pending"


def test_a_named_principal_cannot_approve_with_another_token(
    client: TestClient, engine: Engine
) -> None:
    """Differently named tokens given to one principal with `--principal` are that person."""
    caller, _ = token(engine, ["caller"], name="alice-batch-job")
    secret, _ = create_token(
        engine.recorder,
        name="alice-laptop",
        roles=["reviewer"],
        points=["loan_approval"],
        groups=["credit-officers"],
        actor="test",
        principal="alice-batch-job",
    )
    decision_id = _decide(client, caller, REVIEW_INPUT)
    refused = client.post(
        f"/v1/reviews/{decision_id}/claim", headers={"Authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 403


def test_console_login_and_api_token_count_once_on_four_eyes(
    client: TestClient, engine: Engine
) -> None:
    caller, _ = token(engine, ["caller"], name="carl")
    create_user(
        engine.recorder,
        username="olga",
        password=PASSWORD,
        roles=["reviewer"],
        points=["loan_approval"],
        groups=["credit-officers"],
        actor="test",
    )
    olga_api, _ = token(engine, ["reviewer"], groups=["credit-officers"], name="olga")
    decision_id = _decide(client, caller, FOUR_EYES_INPUT)
    page = client.get("/console/login")
    client.post(
        "/console/login",
        data={"csrf": _csrf(page.text), "username": "olga", "password": PASSWORD},
    )
    csrf = _csrf(client.get(f"/console/tasks/{decision_id}").text)
    client.post(f"/console/tasks/{decision_id}/claim", data={"csrf": csrf})
    voted = client.post(f"/console/tasks/{decision_id}/approve", data={"csrf": csrf})
    assert voted.status_code == 303, voted.text
    task = client.get(f"/v1/reviews/{decision_id}", headers=olga_api).json()
    assert task["status"] == "open" and len(task["votes"]) == 1
    second = client.post(f"/v1/reviews/{decision_id}/claim", headers=olga_api)
    assert second.status_code == 403, second.text
    assert client.post(f"/v1/reviews/{decision_id}/approve", headers=olga_api).status_code in (
        403,
        409,
    )
    assert engine.get(decision_id).status.value == "pending"


def test_after_a_missed_sla_one_person_cannot_settle_four_eyes(
    tmp_path: Path, db: sa.Engine, clock: Clock
) -> None:
    text = LOAN_WITH_REVIEW.replace(
        "  lease: 15m\n", "  lease: 15m\n  escalate_to: [credit-heads]\n"
    )
    engine = Engine(load_points(review_points(tmp_path / "esc", text)), db, actor="test")
    try:
        desk = ReviewDesk(engine, clock=clock)
        decision = engine.decide("loan_approval", FOUR_EYES_INPUT, actor="caller")
        clock.advance(4 * 3600 + 300)
        assert desk.expire_due() == 1
        task = desk.task(decision.id)
        assert task.level == 1 and task.required == 2
        _, head = token(engine, ["reviewer"], groups=["credit-heads"], name="hana")
        _, head_again = token(engine, ["reviewer"], groups=["credit-heads"], name="hana")
        desk.claim(head, decision.id)
        after = desk.approve(head, decision.id)
        assert after.status.value == "open"
        with pytest.raises(Forbidden):
            desk.claim(head_again, decision.id)
        with pytest.raises(Forbidden):
            desk.claim(head, decision.id)
        assert engine.get(decision.id).status.value == "pending"
        _, other = token(engine, ["reviewer"], groups=["credit-heads"], name="henrik")
        desk.claim(other, decision.id)
        assert desk.approve(other, decision.id).status.value == "decided"
    finally:
        engine.close()


def test_escalation_approvals_can_lower_the_count_explicitly(
    tmp_path: Path, db: sa.Engine, clock: Clock
) -> None:
    text = LOAN_WITH_REVIEW.replace(
        "  lease: 15m\n",
        "  lease: 15m\n  escalate_to: [credit-heads]\n  escalation_approvals: 1\n",
    )
    engine = Engine(load_points(review_points(tmp_path / "esc1", text)), db, actor="test")
    try:
        desk = ReviewDesk(engine, clock=clock)
        decision = engine.decide("loan_approval", FOUR_EYES_INPUT, actor="caller")
        clock.advance(4 * 3600 + 300)
        desk.expire_due()
        assert desk.task(decision.id).required == 1
    finally:
        engine.close()


def test_the_cli_operator_is_the_principal_of_their_tokens(
    engine: Engine, desk: ReviewDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`warden decide` as alice, then `warden review approve` as alice: refused; and an API
    token of alice cannot review what alice decided from the CLI."""
    from warden.cli import context
    from warden.cli.review import operator

    monkeypatch.setenv("WARDEN_PRINCIPAL", "alice")
    decision = engine.decide("loan_approval", REVIEW_INPUT, actor=context.actor())
    me = operator()
    assert isinstance(me, Operator) and me.person == f"principal:{principal_id_for('alice')}"
    with pytest.raises(Forbidden, match="you submitted"):
        desk.claim(me, decision.id)
    _, alice_token = token(engine, ["reviewer"], groups=["credit-officers"], name="alice")
    with pytest.raises(Forbidden, match="you submitted"):
        desk.claim(alice_token, decision.id)


def test_events_record_principal_and_credential(client: TestClient, engine: Engine) -> None:
    caller, who = token(engine, ["caller"], name="carl")
    decision_id = _decide(client, caller, REVIEW_INPUT)
    with engine.db.connect() as conn:
        actor = conn.execute(
            sa.select(events.c.actor).where(events.c.decision_id == decision_id)
        ).scalar_one()
        principal_row = conn.execute(sa.select(principals).where(principals.c.name == "carl")).one()
        token_row = conn.execute(sa.select(tokens).where(tokens.c.id == who.token_id)).one()
    assert actor == f"principal:{principal_row.id}:carl via token:{who.token_id}:carl"
    assert token_row.principal_id == principal_row.id
    assert person_of(actor) == f"principal:{principal_row.id}"


def test_person_of_reads_older_actors_as_themselves() -> None:
    assert person_of("token:abc:caller") == "token:abc:caller"
    assert person_of("user:olga") == "user:olga"
    assert person_of(None) is None
    assert Principal("t", "n", frozenset(), frozenset()).person == "token:t:n"
