"""Every review route x every role: who is allowed, who is refused (and with which status)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.reviewing import REVIEW_INPUT, review_points, token
from warden.api.app import create_app
from warden.engine import Engine
from warden.policy.loader import load_points

ROLES = ["caller", "reviewer", "owner", "auditor", "admin", "other_point_reviewer", "none"]
ALLOW = 200
# The expected status per route and role. Reviewers act; owners and auditors only read; a
# task of a point outside the scope is 404, as if it did not exist.
MATRIX: dict[tuple[str, str], dict[str, int]] = {
    ("GET", "/v1/reviews"): {
        "caller": 403, "reviewer": 200, "owner": 200, "auditor": 200, "admin": 200,
        "other_point_reviewer": 200, "none": 401,
    },
    ("GET", "/v1/reviews/counts"): {
        "caller": 403, "reviewer": 200, "owner": 200, "auditor": 200, "admin": 200,
        "other_point_reviewer": 200, "none": 401,
    },
    ("GET", "/v1/reviews/{id}"): {
        "caller": 403, "reviewer": 200, "owner": 200, "auditor": 200, "admin": 200,
        "other_point_reviewer": 404, "none": 401,
    },
    ("POST", "/v1/reviews/claim"): {
        "caller": 403, "reviewer": 200, "owner": 403, "auditor": 403, "admin": 200,
        "other_point_reviewer": 404, "none": 401,
    },
    ("POST", "/v1/reviews/{id}/claim"): {
        "caller": 403, "reviewer": 200, "owner": 403, "auditor": 403, "admin": 200,
        "other_point_reviewer": 404, "none": 401,
    },
    ("POST", "/v1/reviews/{id}/release"): {
        "caller": 403, "reviewer": 200, "owner": 403, "auditor": 403, "admin": 200,
        "other_point_reviewer": 404, "none": 401,
    },
    ("POST", "/v1/reviews/{id}/approve"): {
        "caller": 403, "reviewer": 200, "owner": 403, "auditor": 403, "admin": 200,
        "other_point_reviewer": 404, "none": 401,
    },
    ("POST", "/v1/reviews/{id}/reject"): {
        "caller": 403, "reviewer": 200, "owner": 403, "auditor": 403, "admin": 200,
        "other_point_reviewer": 404, "none": 401,
    },
    ("POST", "/v1/reviews/{id}/override"): {
        "caller": 403, "reviewer": 200, "owner": 403, "auditor": 403, "admin": 200,
        "other_point_reviewer": 404, "none": 401,
    },
}  # fmt: skip
BODIES = {
    "reject": {"reason": "no", "reason_code": "policy_breach"},
    "override": {"outcome": "decline", "reason": "too risky"},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Engine]]:
    folder = tmp_path_factory.mktemp("authz")
    from warden.store.database import create_engine, migrate

    db = create_engine(f"sqlite:///{folder / 'w.db'}")
    migrate(db)
    engine = Engine(load_points(review_points(folder / "points")), db, actor="test")
    with TestClient(create_app(engine, workers=[])) as client:
        yield client, engine
    engine.close()
    db.dispose()


def _headers(engine: Engine, role: str) -> dict[str, str]:
    if role == "none":
        return {}
    if role == "other_point_reviewer":
        return token(engine, ["reviewer"], points=["refund_agent"], groups=["credit-officers"])[0]
    return token(engine, [role], groups=["credit-officers"], name=role)[0]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path"), list(MATRIX))
def test_authorisation_matrix(
    setup: tuple[TestClient, Engine], method: str, path: str, role: str
) -> None:
    client, engine = setup
    caller = token(engine, ["caller"], name="submitter")[0]
    decision_id = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": REVIEW_INPUT}, headers=caller
    ).json()["id"]
    headers = _headers(engine, role)
    action = path.rsplit("/", 1)[-1]
    if action in ("release", "approve", "reject", "override") and role in ("reviewer", "admin"):
        assert client.post(f"/v1/reviews/{decision_id}/claim", headers=headers).status_code == 200
    url = path.replace("{id}", decision_id)
    if method == "GET":
        response = client.get(url, headers=headers)
    else:
        response = client.post(url, json=BODIES.get(action, {}), headers=headers)
    expected = MATRIX[(method, path)][role]
    assert response.status_code == expected, (role, url, response.text)
    if expected >= 400:
        assert response.json()["error"]["message"]


def test_matrix_covers_every_review_route() -> None:
    from warden.api.reviews import router

    routes = {
        (method, route.path) for route in router.routes for method in getattr(route, "methods", ())
    }
    declared = {(m, p.replace("{id}", "{decision_id}")) for m, p in MATRIX}
    assert routes == declared
