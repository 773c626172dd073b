"""The console through the real HTTP app: login, the queue, the task page and its forms."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.reviewing import REVIEW_INPUT, review_points, reviewer, token
from warden.api.app import create_app
from warden.auth.users import create_user
from warden.engine import Engine
from warden.policy.loader import load_points

PASSWORD = "correct horse battery"


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "points")), db, actor="test")
    yield eng
    eng.close()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, workers=[]), follow_redirects=False) as test_client:
        yield test_client


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def login(client: TestClient, **fields: str) -> None:
    page = client.get("/console/login")
    response = client.post("/console/login", data={"csrf": _csrf(page.text), **fields})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/queue"


def test_pages_need_a_login(client: TestClient) -> None:
    for path in ("/console/queue", "/console/decisions", "/console/tasks/x"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/login")


def test_login_with_a_password_and_approve_through_the_forms(
    client: TestClient, engine: Engine
) -> None:
    create_user(
        engine.recorder,
        username="olga",
        password=PASSWORD,
        roles=["reviewer"],
        points=["loan_approval"],
        groups=["credit-officers"],
        actor="test",
    )
    decision = engine.decide("loan_approval", REVIEW_INPUT, actor="token:c:caller")
    login(client, username="olga", password=PASSWORD)
    queue = client.get("/console/queue")
    assert queue.status_code == 200 and decision.id in queue.text
    assert "large_amount" in queue.text and "left" in queue.text  # reasons and SLA remaining
    page = client.get(f"/console/tasks/{decision.id}")
    assert "input.amount &gt; 50000" in page.text  # the fired rule's text, escaped
    assert "Claim" in page.text
    csrf = _csrf(page.text)
    claimed = client.post(f"/console/tasks/{decision.id}/claim", data={"csrf": csrf})
    assert claimed.status_code == 303
    page = client.get(f"/console/tasks/{decision.id}?done=claimed")
    assert "You hold this task" in page.text
    approved = client.post(
        f"/console/tasks/{decision.id}/approve", data={"csrf": csrf, "reason": "ok"}
    )
    assert approved.status_code == 303 and approved.headers["location"].endswith("approved")
    final = engine.get(decision.id)
    assert final.status.value == "final" and final.outcome == "approve"
    events = client.get(f"/console/decisions/{decision.id}").text
    assert "review.approved" in events and "user:olga" in events and "via password" in events


def test_token_login_override_and_clear_errors(client: TestClient, engine: Engine) -> None:
    secret_headers, _ = reviewer(engine, "tom")
    secret = secret_headers["Authorization"].removeprefix("Bearer ")
    decision = engine.decide("loan_approval", REVIEW_INPUT, actor="caller")
    login(client, token=secret)
    csrf = _csrf(client.get("/console/queue").text)
    client.post(f"/console/tasks/{decision.id}/claim", data={"csrf": csrf})
    missing = client.post(
        f"/console/tasks/{decision.id}/override", data={"csrf": csrf, "outcome": "decline"}
    )
    assert missing.status_code == 400 and "needs a reason" in missing.text
    assert 'role="alert"' in missing.text
    assert engine.get(decision.id).status.value == "pending"
    done = client.post(
        f"/console/tasks/{decision.id}/override",
        data={"csrf": csrf, "outcome": "decline", "reason": "debt ratio"},
    )
    assert done.status_code == 303
    assert engine.get(decision.id).outcome == "decline"


def test_posts_without_the_csrf_token_are_refused(client: TestClient, engine: Engine) -> None:
    headers, _ = reviewer(engine, "eve")
    decision = engine.decide("loan_approval", REVIEW_INPUT, actor="caller")
    login(client, token=headers["Authorization"].removeprefix("Bearer "))
    for data in ({}, {"csrf": "forged"}):
        response = client.post(f"/console/tasks/{decision.id}/claim", data=data)
        assert response.status_code == 403
    assert engine.get(decision.id).status.value == "pending"
    from warden.review.desk import ReviewDesk

    assert ReviewDesk(engine).task(decision.id).claimed_by is None
    forged_login = client.post("/console/login", data={"csrf": "x", "token": "y"})
    assert forged_login.status_code == 403


def test_bad_credentials_and_logout(client: TestClient, engine: Engine) -> None:
    page = client.get("/console/login")
    wrong = client.post(
        "/console/login", data={"csrf": _csrf(page.text), "username": "nobody", "password": "x"}
    )
    assert wrong.status_code == 401 and "not valid" in wrong.text
    headers, _ = token(engine, ["reviewer"], groups=["credit-officers"])
    login(client, token=headers["Authorization"].removeprefix("Bearer "))
    csrf = _csrf(client.get("/console/queue").text)
    assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/console/queue").status_code == 303


def test_search_and_detail_respect_points(client: TestClient, engine: Engine) -> None:
    decision = engine.decide("loan_approval", REVIEW_INPUT, actor="caller")
    headers, _ = token(engine, ["reviewer"], points=["refund_agent"])
    login(client, token=headers["Authorization"].removeprefix("Bearer "))
    assert client.get(f"/console/decisions/{decision.id}").status_code == 404
    assert client.get(f"/console/tasks/{decision.id}").status_code == 404
    assert decision.id not in client.get("/console/decisions").text
    found = client.get(f"/console/decisions?q={decision.id}")
    assert found.status_code == 303


def test_static_files_are_served_locally(client: TestClient) -> None:
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and ":focus-visible" in css.text
    assert client.get("/console/static/console.js").status_code == 200
    page = client.get("/console/login").text
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    assert '<label for="username">' in page and '<label for="token">' in page
