"""Bad input never makes the API fail: deep JSON, NUL characters, overflowing cursors and
malformed ids are each a 4xx in the one error shape, on both databases, and lose nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden import jsonlimits
from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.errors import WardenError
from warden.store.schema import decisions

GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}
SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, workers=[]), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def admin(engine: Engine) -> dict[str, str]:
    secret, _ = create_token(engine.recorder, name="a", roles=["admin"], points=["*"], actor="t")
    return {"Authorization": f"Bearer {secret}"}


def nested(levels: int) -> Any:
    """An object `levels` deep: {"a": {"a": ... 1}}."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def _count(engine: Engine) -> int:
    with engine.db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(decisions)).scalar_one())


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] and error["message"]
    return error


# -- depth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["input", "context"])
def test_deep_json_is_400_naming_the_limit(
    client: TestClient, admin: dict[str, str], engine: Engine, where: str
) -> None:
    """252+ levels made the ledger's encoder fail: a 500 on both databases."""
    body: dict[str, Any] = {"point": "loan_approval", "input": GOOD}
    if where == "input":
        body = {"point": "refund_agent", "input": {"order_id": "o", "amount": 1, "x": nested(300)}}
        body["output"], body["confidence"] = "deny", 0.99
    else:
        body["context"] = nested(300)
    error = _error(client.post("/v1/decisions", headers=admin, json=body), 400)
    assert jsonlimits.DEPTH_ENV in error["message"] and "64" in error["message"]
    assert error["field"].startswith(where)
    assert _count(engine) == 0


@SETTINGS
@given(depth=st.integers(min_value=1, max_value=40), limit=st.integers(min_value=1, max_value=30))
def test_depth_limit_is_exact(
    client: TestClient, admin: dict[str, str], engine: Engine, depth: int, limit: int
) -> None:
    """An input up to the limit is decided; one level more is refused, never a 5xx."""
    engine.max_json_depth = limit
    data = {"order_id": "o", "amount": 1, "x": nested(depth - 1)}  # `depth` levels in all
    body = {"point": "refund_agent", "input": data, "output": "deny", "confidence": 0.99}
    response = client.post("/v1/decisions", headers=admin, json=body)
    if depth > limit:
        error = _error(response, 400)
        assert f"more than {limit} levels" in error["message"]
    else:
        assert response.status_code == 200, response.text


def test_a_deep_item_in_a_batch_is_refused_in_its_place(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    """One deep input used to fail the whole batch."""
    inputs = [GOOD, {**GOOD, "x": nested(300)}, GOOD, GOOD]
    contexts: list[Any] = [{}, {}, {"deep": nested(100)}, {}]
    response = client.post(
        "/v1/decisions/batch",
        headers=admin,
        json={"point": "loan_approval", "inputs": inputs, "contexts": contexts},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["route"] for d in data] == ["auto", "refused", "refused", "auto"]
    for refused in (data[1], data[2]):
        (reason,) = refused["reasons"]
        assert reason["code"] == "invalid_input"
        assert jsonlimits.DEPTH_ENV in reason["message"]
    assert data[1]["input"] == {"_unrepresentable": data[1]["input"]["_unrepresentable"]}
    assert _count(engine) == 4


def test_engine_refuses_deep_input_from_the_sdk_too(engine: Engine) -> None:
    from warden.errors import InvalidInput

    with pytest.raises(InvalidInput, match=jsonlimits.DEPTH_ENV) as refused:
        engine.decide("loan_approval", {**GOOD, "x": nested(300)})
    stored = engine.get(refused.value.extra["decision_id"])
    assert stored.route.value == "refused" and "_unrepresentable" in stored.input


def test_depth_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jsonlimits.DEPTH_ENV, "12")
    assert jsonlimits.max_depth_from_env() == 12
    for bad in ("0", "-1", "deep", str(jsonlimits.MAX_CONFIGURABLE_DEPTH + 1)):
        monkeypatch.setenv(jsonlimits.DEPTH_ENV, bad)
        with pytest.raises(WardenError, match=jsonlimits.DEPTH_ENV):
            jsonlimits.max_depth_from_env()


# -- NUL -----------------------------------------------------------------------------------

NUL_GETS = [
    "/v1/decisions/a%00b",
    "/v1/decisions?cursor=a%00b",
    "/v1/decisions?point=loan%00",
    "/v1/reviews/a%00b",
    "/v1/reviews?cursor=a%00b",
    "/v1/reviews?point=a%00b",
    "/v1/alerts/a%00b",
    "/v1/alerts?cursor=a%00b",
    "/v1/alerts?point=a%00b",
    "/v1/audit/proofs/a%00b",
    "/v1/points/a%00b/models",
]
NUL_POSTS = [
    ("/v1/decisions/a%00b/outcome", {"outcome": "approve"}),
    ("/v1/reviews/a%00b/claim", None),
    ("/v1/reviews/claim", {"point": "loan\x00"}),
    ("/v1/kill", {"reason": "stop\x00now"}),
    ("/v1/points/loan_approval/kill", {"reason": "\x00"}),
    ("/v1/alerts/x/resolve", {"reason": "a\x00"}),
]


@pytest.mark.parametrize("path", NUL_GETS)
def test_nul_in_path_or_query_is_400(client: TestClient, admin: dict[str, str], path: str) -> None:
    """These were 500 on PostgreSQL, which cannot compare text with a NUL in it."""
    error = _error(client.get(path, headers=admin), 400)
    assert "NUL" in error["message"]


@pytest.mark.parametrize(("path", "body"), NUL_POSTS)
def test_nul_in_a_name_or_reason_is_400_and_changes_nothing(
    client: TestClient, admin: dict[str, str], engine: Engine, path: str, body: Any
) -> None:
    before = engine.kill_switches()
    error = _error(client.post(path, headers=admin, json=body), 400)
    assert "NUL" in error["message"]
    assert engine.kill_switches() == before


def test_nul_in_the_idempotency_key_is_400(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    response = client.post(
        "/v1/decisions",
        headers={**admin, "Idempotency-Key": "k\x00"},
        json={"point": "loan_approval", "input": GOOD},
    )
    assert _error(response, 400)["field"] == "idempotency-key"
    assert _count(engine) == 0


def test_nul_inside_input_is_the_callers_data_and_is_kept(
    client: TestClient, admin: dict[str, str]
) -> None:
    body = {"point": "loan_approval", "input": {**GOOD, "country": "a\x00b"}}
    response = client.post("/v1/decisions", headers=admin, json=body)
    assert response.status_code == 200, response.text
    fetched = client.get(f"/v1/decisions/{response.json()['id']}", headers=admin).json()
    assert fetched["input"]["country"] == "a\x00b"


# -- cursors and ids -----------------------------------------------------------------------


@SETTINGS
@given(cursor=st.integers(min_value=-(2**70), max_value=2**70))
def test_any_checkpoint_cursor_is_answered(
    client: TestClient, admin: dict[str, str], cursor: int
) -> None:
    """`?cursor=9223372036854775808` overflowed the database's integer: a 500."""
    response = client.get(f"/v1/audit/checkpoints?cursor={cursor}", headers=admin)
    if 0 <= cursor < 2**63:
        assert response.status_code == 200, response.text
    else:
        assert _error(response, 400)["field"] == "cursor"


def test_overflowing_checkpoint_sizes_are_400(client: TestClient, admin: dict[str, str]) -> None:
    for query in ("cursor=9223372036854775808", "cursor=-1"):
        _error(client.get(f"/v1/audit/checkpoints?{query}", headers=admin), 400)
    response = client.get("/v1/audit/consistency?old=1&new=9223372036854775808", headers=admin)
    assert _error(response, 400)["field"] == "new"


ID_PATHS = [
    ("GET", "/v1/decisions/{}"),
    ("GET", "/v1/reviews/{}"),
    ("POST", "/v1/reviews/{}/claim"),
    ("GET", "/v1/alerts/{}"),
    ("GET", "/v1/audit/proofs/{}"),
    ("GET", "/v1/decisions?cursor={}"),
    ("GET", "/v1/reviews?cursor={}"),
    ("GET", "/v1/alerts?cursor={}"),
]


@SETTINGS
@given(
    raw=st.text(st.characters(codec="utf-8"), min_size=1, max_size=300),
    where=st.sampled_from(ID_PATHS),
)
def test_malformed_ids_and_cursors_are_4xx(
    client: TestClient, admin: dict[str, str], raw: str, where: tuple[str, str]
) -> None:
    method, template = where
    response = client.request(method, template.format(quote(raw, safe="")), headers=admin)
    assert response.status_code < 500, response.text
    if "?" not in template:
        assert response.status_code in (400, 404), response.text
        _error(response, response.status_code)
