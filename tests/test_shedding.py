"""At capacity, decisions are turned away by the outermost layer: 503 with `Retry-After` and the
API's error body, before any route, token check or body read. Nothing accepted is lost.

A real uvicorn server; a model that holds its decisions in flight until the test releases them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.routing import Router

import warden.api.routes
from tests.conftest import LOAN_POINT, write_points
from tests.test_outage import _Server
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.ledger.verify import verify_ledger
from warden.policy.loader import load_points
from warden.store.schema import decisions, events

HELD_MODEL = '''
import time
from pathlib import Path

RELEASE = Path(__file__).with_name("release")


def predict(input):
    """Decides at once, or (`mode: hold`) once the test creates the file `release`."""
    if input.get("mode") == "hold":
        while not RELEASE.exists():
            time.sleep(0.005)
    return "approve", 0.99
'''

APPLICATION = {"amount": 1000, "income": 5000, "credit_score": 800}
REFUSAL = {
    "type": "unavailable",
    "message": "Warden is at capacity (3 decisions in flight); nothing was recorded, "
    "retry after a moment",
    "field": None,
}


def _points(folder: Path) -> Path:
    text = LOAN_POINT.replace("toy_model:predict", "held_model:predict").replace(
        "timeout_ms: 500", "timeout_ms: 60000"
    )
    write_points(folder, text)
    (folder / "held_model.py").write_text(HELD_MODEL)
    return folder


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": REFUSAL}


def _raw_post_without_body(port: int, token: str) -> bytes:
    """Headers that announce a body which never comes: the answer cannot have waited for it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


def _check_ledger(db: sa.Engine, accepted: list[dict[str, Any]]) -> None:
    """Every decision a caller was given is stored with its event, nothing else is; the
    ledger verifies."""
    with db.connect() as conn:
        stored = set(conn.execute(sa.select(decisions.c.id)).scalars())
        logged = list(
            conn.execute(
                sa.select(events.c.decision_id).where(events.c.type == "decision.created")
            ).scalars()
        )
    ids = [d["id"] for d in accepted]
    assert len(set(ids)) == len(ids)
    assert stored == set(ids) == set(logged)
    assert len(logged) == len(stored)
    report = verify_ledger(db, [])
    assert report.ok, report.to_dict()


def test_at_capacity_a_decision_is_refused_before_routing_auth_or_body(
    tmp_path: Path, db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _points(tmp_path / "points")
    engine = Engine(load_points(folder), db, actor="test", max_in_flight=3)
    secret, _ = create_token(engine.recorder, name="t", roles=["caller"], points=["*"], actor="t")
    auth = {"Authorization": f"Bearer {secret}"}
    server = _Server(engine)
    calls: Counter[str] = Counter()
    route_request = Router.__call__
    authenticate = warden.api.routes.authenticate_request

    async def counted_router(self: Router, scope: Any, receive: Any, send: Any) -> None:
        calls["router"] += 1
        await route_request(self, scope, receive, send)

    def counted_auth(request: Any) -> Any:
        calls["auth"] += 1
        return authenticate(request)

    monkeypatch.setattr(Router, "__call__", counted_router)
    monkeypatch.setattr(warden.api.routes, "authenticate_request", counted_auth)

    async def scenario() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            held = [
                asyncio.create_task(
                    client.post(
                        "/v1/decisions",
                        json={"point": "loan_approval", "input": {**APPLICATION, "mode": "hold"}},
                        headers=auth,
                    )
                )
                for _ in range(3)
            ]
            deadline = time.monotonic() + 30
            while not engine.at_capacity:
                assert time.monotonic() < deadline, "the held decisions never took their places"
                await asyncio.sleep(0.005)
            calls.clear()
            _refused(
                await client.post(
                    "/v1/decisions",
                    json={"point": "loan_approval", "input": APPLICATION},
                    headers=auth,
                )
            )
            _refused(
                await client.post(
                    "/v1/decisions/batch",
                    json={"point": "loan_approval", "inputs": [APPLICATION]},
                    headers=auth,
                )
            )
            _refused(await client.post("/v1/decisions", content=b"not even JSON"))  # no token
            answer = await asyncio.to_thread(
                _raw_post_without_body, int(server.url.rsplit(":", 1)[1]), secret
            )
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b"at capacity" in answer
            assert calls == Counter(), calls  # no route matched, no token looked up
            health = await client.get("/healthz")  # what does not decide still passes
            assert health.status_code == 200
            assert calls["router"] == 1
            (folder / "release").touch()
            accepted = [(await task) for task in held]
            assert [r.status_code for r in accepted] == [200, 200, 200]
            after = await client.post(
                "/v1/decisions", json={"point": "loan_approval", "input": APPLICATION}, headers=auth
            )
            assert after.status_code == 200, after.text  # room again
            return [r.json() for r in [*accepted, after]]

    try:
        accepted = asyncio.run(scenario())
    finally:
        (folder / "release").touch()
        server.stop()
        engine.close()
    _check_ledger(db, accepted)


def test_a_burst_beyond_capacity_loses_nothing_accepted(tmp_path: Path, db: sa.Engine) -> None:
    """Many more callers than places at once: each is decided (and recorded) or refused with
    the 503 shape, never anything else, and the ledger verifies."""
    folder = _points(tmp_path / "points")
    (folder / "release").touch()
    engine = Engine(load_points(folder), db, actor="test", max_in_flight=3)
    secret, _ = create_token(engine.recorder, name="t", roles=["caller"], points=["*"], actor="t")
    server = _Server(engine)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/decisions",
                        json={"point": "loan_approval", "input": {**APPLICATION, "amount": n}},
                        headers={"Authorization": f"Bearer {secret}"},
                    )
                    for n in range(150)
                )
            )

    try:
        responses = asyncio.run(burst())
    finally:
        server.stop()
        engine.close()
    accepted = [r.json() for r in responses if r.status_code == 200]
    for response in responses:
        if response.status_code != 200:
            _refused(response)
    assert accepted
    _check_ledger(db, accepted)
