"""Console sign-in: a cap on guessing per user and per address, and clear refusals."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.reviewing import review_points, token
from warden.api.app import create_app
from warden.auth.users import create_user
from warden.console.throttle import LoginThrottle
from warden.engine import Engine
from warden.policy.loader import load_points

PASSWORD = "correct horse battery"


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "si")), db, actor="test")
    create_user(
        eng.recorder,
        username="olga",
        password=PASSWORD,
        roles=["reviewer"],
        points=["*"],
        actor="test",
    )
    yield eng
    eng.close()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, workers=[]), follow_redirects=False) as test_client:
        yield test_client


def _post(client: TestClient, **fields: str) -> tuple[int, str]:
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    response = client.post("/console/login", data={"csrf": csrf.group(1), **fields})
    return response.status_code, response.text


def test_guessing_one_users_password_is_capped(client: TestClient) -> None:
    for _ in range(5):
        assert _post(client, username="olga", password="wrong password!")[0] == 401
    status, text = _post(client, username="olga", password=PASSWORD)  # right, but too late
    assert status == 429 and "Too many failed sign-ins for this user" in text
    assert "minute" in text
    assert _post(client, username="other", password="wrong password!")[0] == 401


def test_spraying_many_users_from_one_address_is_capped(client: TestClient) -> None:
    for n in range(20):
        assert _post(client, username=f"user{n}", password="wrong password!")[0] == 401
    status, text = _post(client, username="olga", password=PASSWORD)
    assert status == 429 and "from your address" in text


def test_the_window_slides_and_success_clears_the_user() -> None:
    now = [0.0]
    throttle = LoginThrottle(per_user=2, per_address=100, window=60, clock=lambda: now[0])
    throttle.failed("olga", "1.2.3.4")
    throttle.failed("olga", "1.2.3.4")
    assert throttle.retry_after("olga", "1.2.3.4") == pytest.approx(60)
    now[0] = 30
    assert throttle.retry_after("olga", "5.6.7.8") == pytest.approx(30)
    now[0] = 61
    assert throttle.retry_after("olga", "1.2.3.4") is None
    throttle.failed("olga", None)
    throttle.succeeded("olga")
    throttle.failed("olga", None)
    assert throttle.retry_after("olga", None) is None


def test_a_caller_token_gets_a_clear_answer_not_an_error_loop(
    client: TestClient, engine: Engine
) -> None:
    headers, _ = token(engine, ["caller"], name="svc")
    status, text = _post(client, token=headers["Authorization"].removeprefix("Bearer "))
    assert status == 403
    assert "only the caller role" in text and "warden user create" in text
    assert "warden_session" not in client.cookies
    assert client.get("/console/queue").status_code == 303  # no session: back to login


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match
    return match.group(1)


def test_a_person_sees_and_ends_their_own_sessions_only(client: TestClient, engine: Engine) -> None:
    app = client.app
    laptop, _ = token(engine, ["reviewer"], name="olga")  # olga's token: the same person
    create_user(
        engine.recorder,
        username="mallory",
        password=PASSWORD,
        roles=["reviewer"],
        points=["*"],
        actor="test",
    )
    with (
        TestClient(app, follow_redirects=False) as phone,
        TestClient(app, follow_redirects=False) as other,
    ):
        assert _post(client, username="olga", password=PASSWORD)[0] == 303
        assert _post(phone, token=laptop["Authorization"].removeprefix("Bearer "))[0] == 303
        assert _post(other, username="mallory", password=PASSWORD)[0] == 303
        page = client.get("/console/sessions")
        assert page.status_code == 200
        assert "user:olga" in page.text and "(this one)" in page.text and "token:" in page.text
        assert "mallory" not in page.text
        handles = re.findall(r'name="handle" value="([0-9a-f]{16})"', page.text)
        assert len(handles) == 2
        theirs = re.findall(
            r'name="handle" value="([0-9a-f]{16})"', other.get("/console/sessions").text
        )
        csrf = _csrf(page.text)
        refused = client.post("/console/sessions/end", data={"csrf": csrf, "handle": theirs[0]})
        assert refused.headers["location"].endswith("done=0")
        assert other.get("/console/queue").status_code == 200  # mallory still signed in
        phone_row = next(h for h in handles if f'value="{h}"' in page.text)
        client.post("/console/sessions/end", data={"csrf": csrf, "handle": phone_row})
        signed_in = [c.get("/console/queue").status_code for c in (client, phone)]
        assert sorted(signed_in) == [200, 303]  # one of olga's two sessions ended
        client.post("/console/sessions/end", data={"csrf": csrf, "all": "1"})
        assert client.get("/console/queue").status_code == 303
