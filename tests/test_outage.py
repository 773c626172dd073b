"""Overload and database outages: 503 with Retry-After, never 500 or a dropped connection;
nothing refused is committed later; service resumes by itself once the database is back.

PostgreSQL is reached through a TCP proxy the test cuts — as a whole, or at a COMMIT."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient

from tests.faults import check_acknowledged_once
from tests.tcp_proxy import AFTER, BEFORE, Proxy, _free_port
from tests.test_writer_contract import _count, _Gate
from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.decision import Decision
from warden.engine import Engine
from warden.errors import Unavailable, WardenError
from warden.policy.loader import load_points
from warden.store.database import create_engine
from warden.store.schema import decisions

APPLICATION = {"amount": 1000, "income": 5000, "credit_score": 800}


def _body(n: int) -> dict[str, Any]:
    return {"point": "loan_approval", "input": {**APPLICATION, "amount": n + 1}}


def test_a_full_write_queue_is_503_with_retry_after_and_never_committed_later(
    points_dir: Path, db: sa.Engine
) -> None:
    engine = Engine(load_points(points_dir), db, actor="test", write_queue=1)
    secret, _ = create_token(engine.recorder, name="t", roles=["caller"], points=["*"], actor="t")
    gate = _Gate()
    try:
        with TestClient(create_app(engine, workers=[])) as client:
            held = engine.recorder.submit(gate.change())
            assert gate.entered.wait(30)
            engine.recorder.submit(_Gate().change())  # fills the queue (one place)
            response = client.post(
                "/v1/decisions",
                json=_body(0),
                headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "k"},
            )
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "1"
            assert response.json()["error"]["type"] == "unavailable"
            batch = client.post(
                "/v1/decisions/batch",
                json={"point": "loan_approval", "inputs": [APPLICATION] * 3},
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert batch.status_code == 503, batch.text
            gate.release.set()
            held.result(30)
    finally:
        gate.release.set()
        engine.close()
    assert _count(db, decisions) == 0  # the refused decisions were never committed


def test_decisions_beyond_capacity_are_refused_at_once(points_dir: Path, db: sa.Engine) -> None:
    engine = Engine(load_points(points_dir), db, actor="test", max_in_flight=1)
    slow = threading.Thread(
        target=engine.decide, args=("loan_approval", {**APPLICATION, "mode": "slow"})
    )
    try:
        slow.start()
        deadline = time.monotonic() + 30
        while engine._in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        with pytest.raises(Unavailable, match="at capacity"):
            engine.decide("loan_approval", APPLICATION)
        slow.join(30)
        assert engine.decide("loan_approval", APPLICATION).route.value == "auto"  # room again
    finally:
        slow.join(30)
        engine.close()
    assert _count(db, decisions) == 2


# -- PostgreSQL behind a proxy -------------------------------------------------------------


@pytest.fixture
def proxied(db_url: str, db: sa.Engine) -> Iterator[tuple[Proxy, sa.Engine]]:
    if not db_url.startswith("postgresql"):
        pytest.skip("the network between Warden and PostgreSQL is cut")
    url = sa.engine.make_url(db_url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    through = create_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
    yield proxy, through
    proxy.close()
    through.dispose()


def test_a_commit_cut_by_the_network_is_read_back_under_load(
    points_dir: Path, db: sa.Engine, proxied: tuple[Proxy, sa.Engine]
) -> None:
    """The connection drops at COMMIT — before it reaches PostgreSQL, or after it went
    through with the answer lost — while callers decide concurrently and retry errors with
    the same key. Every acknowledged decision is stored once; the ledger verifies."""
    proxy, through = proxied
    engine = Engine(load_points(points_dir), through, actor="test")
    answers: dict[str, list[Any]] = {}
    lock = threading.Lock()

    def caller(worker: int) -> None:
        for n in range(10):
            key = f"w{worker}-{n}"
            for _ in range(3):
                try:
                    outcome: Any = engine.decide(
                        "loan_approval",
                        {**APPLICATION, "amount": n + 1, "credit_score": 600 + worker},
                        idempotency_key=key,
                    )
                except WardenError as exc:
                    outcome = exc
                with lock:
                    answers.setdefault(key, []).append(outcome)
                if isinstance(outcome, Decision):
                    break

    threads = [threading.Thread(target=caller, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    cuts = [BEFORE, AFTER] * 4
    while any(t.is_alive() for t in threads) and cuts:
        if proxy.commit_cut is None:
            proxy.commit_cut = cuts.pop()
        time.sleep(0.05)
    for thread in threads:
        thread.join(120)
    proxy.commit_cut = None
    assert not any(t.is_alive() for t in threads), "a caller was never answered"
    engine.close()
    assert {BEFORE, AFTER} <= set(proxy.commit_cuts)
    check_acknowledged_once(db, answers)


class _Server:
    """The app on a real HTTP server (keep-alive connections and all), on a thread."""

    def __init__(self, engine: Engine) -> None:
        config = uvicorn.Config(
            create_app(engine, workers=[]), host="127.0.0.1", port=_free_port(), log_level="error"
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{config.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def test_an_outage_is_503_on_every_request_and_service_resumes_by_itself(
    points_dir: Path, proxied: tuple[Proxy, sa.Engine]
) -> None:
    proxy, through = proxied
    engine = Engine(load_points(points_dir), through, actor="test")
    secret, _ = create_token(
        engine.recorder, name="t", roles=["caller", "owner"], points=["*"], actor="t"
    )
    server = _Server(engine)
    auth = {"Authorization": f"Bearer {secret}"}
    try:
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            first = client.post("/v1/decisions", json=_body(0))
            assert first.status_code in (200, 202), first.text
            known = first.json()["id"]
            proxy.cut()
            requests = [
                ("POST", "/v1/decisions", _body(1)),
                ("GET", f"/v1/decisions/{known}", None),
                ("GET", "/v1/decisions", None),
                ("GET", "/v1/kill-switches", None),
                (
                    "POST",
                    "/v1/decisions/batch",
                    {"point": "loan_approval", "inputs": [APPLICATION]},
                ),
            ]
            statuses = []
            for method, path, body in requests * 3:
                response = client.request(method, path, json=body)  # a dropped connection raises
                statuses.append((path, response.status_code))
                if response.status_code == 503:
                    assert response.json()["error"]["type"] == "unavailable"
                    assert int(response.headers["Retry-After"]) >= 1
                assert response.headers.get("connection") != "close", path
            assert {code for _, code in statuses} <= {503, 404}, statuses
            assert sum(code == 503 for _, code in statuses) >= len(statuses) - 3
            proxy.restore()
            back = time.monotonic()
            while True:
                response = client.post("/v1/decisions", json=_body(2))
                if response.status_code in (200, 202):
                    break
                assert response.status_code == 503, response.text
                assert time.monotonic() - back < 30, "service did not resume"
                time.sleep(0.1)
            resumed = time.monotonic() - back
            print(f"service resumed {resumed:.2f}s after PostgreSQL accepted connections")
            assert resumed < 10  # the target is 5 s; generous on a loaded machine
    finally:
        server.stop()
        engine.close()
