"""The HTTP API through a real client: status codes, one error shape, auth and bad input."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.store.schema import decisions

GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, max_body_bytes=20_000)) as test_client:
        yield test_client


def _token(engine: Engine, roles: list[str], points: list[str]) -> dict[str, str]:
    secret, _ = create_token(engine.recorder, name="t", roles=roles, points=points, actor="test")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def caller(engine: Engine) -> dict[str, str]:
    return _token(engine, ["caller"], ["loan_approval", "refund_agent"])


def _count(engine: Engine) -> int:
    with engine.db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(decisions)).scalar_one())


def _assert_error(response: object, status: int, type_: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["type"] == type_ and error["message"]
    if field is not None:
        assert error["field"] == field


def test_final_decision_is_200_pending_is_202(client: TestClient, caller: dict[str, str]) -> None:
    auto = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": GOOD}, headers=caller
    )
    assert auto.status_code == 200
    body = auto.json()
    for key in (
        "id",
        "point",
        "route",
        "outcome",
        "confidence",
        "status",
        "reasons",
        "policy_version",
        "model_version",
    ):
        assert key in body
    assert body["route"] == "auto" and body["status"] == "final"
    review = client.post(
        "/v1/decisions",
        headers=caller,
        json={"point": "loan_approval", "input": {**GOOD, "amount": 90000}},
    )
    assert review.status_code == 202 and review.json()["route"] == "review"
    fetched = client.get(f"/v1/decisions/{review.json()['id']}", headers=caller)
    assert fetched.status_code == 200 and fetched.json()["status"] == "pending"


def test_idempotency_key_header(client: TestClient, caller: dict[str, str], engine: Engine) -> None:
    headers = {**caller, "Idempotency-Key": "abc"}
    payload = {"point": "loan_approval", "input": GOOD}
    first = client.post("/v1/decisions", json=payload, headers=headers).json()
    second = client.post("/v1/decisions", json=payload, headers=headers).json()
    assert first["id"] == second["id"] and _count(engine) == 1
    conflict = client.post(
        "/v1/decisions",
        headers=headers,
        json={"point": "loan_approval", "input": {**GOOD, "amount": 2}},
    )
    _assert_error(conflict, 409, "conflict", "Idempotency-Key")


@pytest.mark.parametrize(
    ("body", "status", "type_", "field"),
    [
        (b"{not json", 400, "invalid_request", "body"),
        (b"", 400, "invalid_request", "body"),
        (
            b'{"point": "loan_approval", "input": {"amount": NaN, "income": 1, "credit_score": 700}}',
            400,
            "invalid_request",
            "body",
        ),
        (b'{"point": "loan_approval", "input": [1, 2]}', 400, "invalid_request", "input"),
        (b'{"point": "loan_approval"}', 400, "invalid_request", "input"),
        (b'{"point": "loan_approval", "input": {}, "extra": 1}', 400, "invalid_request", "extra"),
        (
            b'{"point": "loan_approval", "input": {"amount": "lots", "income": 1, "credit_score": 700}}',
            422,
            "invalid_input",
            "amount",
        ),
        (
            b'{"point": "loan_approval", "input": {"amount": 1, "income": 1, "credit_score": 1e400}}',
            400,
            "invalid_request",
            "body",
        ),
    ],
)
def test_bad_bodies_get_clear_4xx(
    client: TestClient, caller: dict[str, str], body: bytes, status: int, type_: str, field: str
) -> None:
    response = client.post(
        "/v1/decisions", content=body, headers={**caller, "Content-Type": "application/json"}
    )
    _assert_error(response, status, type_, field)


def test_invalid_input_response_names_the_recorded_decision(
    client: TestClient, caller: dict[str, str]
) -> None:
    response = client.post(
        "/v1/decisions",
        headers=caller,
        json={"point": "loan_approval", "input": {**GOOD, "credit_score": 10}},
    )
    _assert_error(response, 422, "invalid_input", "credit_score")
    decision_id = response.json()["error"]["decision_id"]
    recorded = client.get(f"/v1/decisions/{decision_id}", headers=caller).json()
    assert recorded["route"] == "refused"


def test_oversized_body_is_413_and_loses_nothing(
    client: TestClient, caller: dict[str, str], engine: Engine
) -> None:
    client.post("/v1/decisions", json={"point": "loan_approval", "input": GOOD}, headers=caller)
    huge = {"point": "loan_approval", "input": {**GOOD, "note": "x" * 50_000}}
    _assert_error(client.post("/v1/decisions", json=huge, headers=caller), 413, "payload_too_large")
    assert _count(engine) == 1


def test_unknown_point_is_404(client: TestClient, engine: Engine) -> None:
    admin = _token(engine, ["admin"], ["*"])
    response = client.post("/v1/decisions", json={"point": "nope", "input": GOOD}, headers=admin)
    _assert_error(response, 404, "not_found", "point")


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer wdn_nope_secret"])
def test_missing_or_bad_token_is_401(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": GOOD}, headers=headers
    )
    _assert_error(response, 401, "unauthenticated", "Authorization")


def test_token_for_another_point_is_404_like_an_unknown_point(
    client: TestClient, engine: Engine
) -> None:
    other = _token(engine, ["caller"], ["refund_agent"])
    response = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": GOOD}, headers=other
    )
    _assert_error(response, 404, "not_found", "point")
    assert _count(engine) == 0


def test_list_paginates_and_filters_by_scope(
    client: TestClient, caller: dict[str, str], engine: Engine
) -> None:
    for amount in range(7):
        client.post(
            "/v1/decisions",
            headers=caller,
            json={"point": "loan_approval", "input": {**GOOD, "amount": amount}},
        )
    client.post(
        "/v1/decisions",
        headers=caller,
        json={
            "point": "refund_agent",
            "input": {"order_id": "a", "amount": 1},
            "output": "deny",
            "confidence": 0.9,
        },
    )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"point": "loan_approval", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/decisions", params=params, headers=caller).json()
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)
    scoped = _token(engine, ["auditor"], ["refund_agent"])
    everything = client.get("/v1/decisions", headers=scoped).json()["data"]
    assert {d["point"] for d in everything} == {"refund_agent"}
    _assert_error(
        client.get("/v1/decisions", params={"point": "loan_approval"}, headers=scoped),
        404,
        "not_found",
    )
    _assert_error(
        client.get("/v1/decisions", params={"limit": 0}, headers=caller),
        400,
        "invalid_request",
        "limit",
    )
    _assert_error(
        client.get("/v1/decisions", params={"route": "maybe"}, headers=caller),
        400,
        "invalid_request",
        "route",
    )


def test_ground_truth(client: TestClient, caller: dict[str, str]) -> None:
    decision = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": GOOD}, headers=caller
    ).json()
    url = f"/v1/decisions/{decision['id']}/outcome"
    ok = client.post(url, json={"outcome": "decline"}, headers=caller)
    assert ok.status_code == 200 and ok.json()["ground_truth"] == "decline"
    _assert_error(client.post(url, json={"outcome": "approve"}, headers=caller), 409, "conflict")
    _assert_error(
        client.post("/v1/decisions/nope/outcome", json={"outcome": "approve"}, headers=caller),
        404,
        "not_found",
    )


def test_points_and_kill_switch(client: TestClient, caller: dict[str, str], engine: Engine) -> None:
    points = client.get("/v1/points", headers=caller).json()
    assert [p["point"] for p in points] == ["loan_approval", "refund_agent"]
    assert points[0]["owner"] == "credit-risk@example.com"
    _assert_error(
        client.post("/v1/points/loan_approval/kill", json={"reason": "x"}, headers=caller),
        403,
        "forbidden",
    )
    owner = _token(engine, ["owner"], ["loan_approval"])
    _assert_error(
        client.post("/v1/points/loan_approval/kill", json={}, headers=owner),
        400,
        "invalid_request",
        "reason",
    )
    killed = client.post("/v1/points/loan_approval/kill", json={"reason": "drift"}, headers=owner)
    assert killed.status_code == 200 and killed.json()["engaged"] is True
    decision = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": GOOD}, headers=caller
    )
    assert decision.status_code == 202 and decision.json()["reasons"][0]["code"] == "kill_switch"
    assert client.get("/v1/points/loan_approval", headers=caller).json()["killed"] is True
    _assert_error(client.post("/v1/kill", json={"reason": "x"}, headers=owner), 403, "forbidden")
    admin = _token(engine, ["admin"], ["*"])
    assert client.post("/v1/kill", json={"reason": "all"}, headers=admin).status_code == 200
    switches = client.get("/v1/kill-switches", headers=admin).json()
    assert {s["scope"] for s in switches} == {"*", "loan_approval"}
    client.post("/v1/resume", json={"reason": "ok"}, headers=admin)
    client.post("/v1/points/loan_approval/resume", json={"reason": "ok"}, headers=owner)
    again = client.post(
        "/v1/decisions", json={"point": "loan_approval", "input": GOOD}, headers=caller
    )
    assert again.status_code == 200 and again.json()["route"] == "auto"


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert "/v1/decisions" in spec["paths"]
    assert client.get("/docs").status_code == 200
    _assert_error(client.get("/v1/nothing"), 404, "not_found")


def test_batch_endpoint(client: TestClient, caller: dict[str, str], engine: Engine) -> None:
    response = client.post(
        "/v1/decisions/batch",
        headers=caller,
        json={
            "point": "loan_approval",
            "inputs": [GOOD, {"amount": -1}, {**GOOD, "amount": 90000}],
        },
    )
    assert response.status_code == 200, response.text
    routes = [d["route"] for d in response.json()["data"]]
    assert routes == ["auto", "refused", "review"]
    assert _count(engine) == 3
    too_many = client.post(
        "/v1/decisions/batch",
        headers=caller,
        json={"point": "loan_approval", "inputs": [{}] * 1001},
    )
    _assert_error(too_many, 400, "invalid_request", "inputs")
    other = _token(engine, ["caller"], ["refund_agent"])
    _assert_error(
        client.post(
            "/v1/decisions/batch", headers=other, json={"point": "loan_approval", "inputs": [GOOD]}
        ),
        404,
        "not_found",
    )
