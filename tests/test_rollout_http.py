"""Rollouts end to end: decisions over HTTP, the controller on a controllable clock."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.test_rollout import POINT, SMOKE, train
from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.rollout.controller import RolloutController
from warden.rollout.rollouts import State
from warden.store.schema import decisions, events

PLAN = {
    "steps": [10, 50, 100],
    "interval": "60s",
    "min_decisions": 30,
    "sticky_key": "input.customer",
    "checks": [{"metric": "error_rate", "max": 0.1}, {"metric": "agreement", "min": 0.8}],
}


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def setup(tmp_path: Path, db: sa.Engine) -> Iterator[tuple[Engine, TestClient, dict[str, str]]]:
    folder = tmp_path / "points"
    folder.mkdir()
    train(folder / "base.joblib", 1)
    (folder / "credit.yaml").write_text(textwrap.dedent(POINT))
    engine = Engine(load_points(folder), db, actor="test", model_cache=tmp_path / "cache")
    secret, _ = create_token(
        engine.recorder, name="ops", roles=["owner", "caller"], points=["credit"], actor="test"
    )
    with TestClient(create_app(engine, workers=[])) as client:
        yield engine, client, {"Authorization": f"Bearer {secret}"}
    engine.close()


def _register(engine: Engine, tmp_path: Path, version: str, flip: bool = False) -> None:
    artifact = train(tmp_path / f"{version}.joblib", 1, flip=flip)
    engine.registry.register(
        engine.points["credit"], version=version, artifact=artifact, actor="test", smoke_input=SMOKE
    )


def _traffic(client: TestClient, auth: dict[str, str], n: int, start: int = 0) -> Counter[str]:
    versions: Counter[str] = Counter()
    for i in range(start, start + n):
        response = client.post(
            "/v1/decisions",
            headers=auth,
            json={
                "point": "credit",
                "input": {
                    "amount": 1000.0,
                    "income": 5000.0,
                    "credit_score": 300 + i * 7 % 550,
                    "customer": f"c{i}",
                },
            },
        )
        assert response.status_code in (200, 202), response.text
        versions[response.json()["model_version"]] += 1
    return versions


def _controller(engine: Engine, clock: Clock) -> RolloutController:
    engine._shadow and engine._shadow.drain()  # champion answers for agreement are in
    return RolloutController(
        engine.db,
        engine.rollouts,
        breaker_open=engine.deployments.challenger_breaker_open,
        clock=clock,
    )


def test_good_challenger_is_promoted_through_every_step(
    setup: tuple[Engine, TestClient, dict[str, str]], tmp_path: Path
) -> None:
    engine, client, auth = setup
    _register(engine, tmp_path, "v2")
    started = client.post(
        "/v1/points/credit/rollout", headers=auth, json={"challenger": "v2", "plan": PLAN}
    )
    assert started.status_code == 201, started.text
    clock = Clock()
    shares = []
    for step in range(3):
        versions = _traffic(client, auth, 600, start=step * 600)  # ~60 for v2 at 10 %
        shares.append(round(versions["v2"] / 600, 2))
        clock.offset += timedelta(seconds=61)
        _controller(engine, clock).tick()
    assert 0.04 < shares[0] < 0.2 and 0.4 < shares[1] < 0.6 and shares[2] == 1.0
    status = client.get("/v1/points/credit/rollout", headers=auth).json()
    assert status["state"] == "promoted"
    models = client.get("/v1/points/credit/models", headers=auth).json()
    assert models["aliases"] == {"champion": "v2"}
    assert _traffic(client, auth, 20)["v2"] == 20  # the new champion decides everything


def test_bad_challenger_rolls_back_within_one_interval(
    setup: tuple[Engine, TestClient, dict[str, str]], tmp_path: Path
) -> None:
    engine, client, auth = setup
    _register(engine, tmp_path, "flipped", flip=True)  # disagrees with the champion everywhere
    plan = {**PLAN, "steps": [50, 100]}
    client.post(
        "/v1/points/credit/rollout", headers=auth, json={"challenger": "flipped", "plan": plan}
    )
    _traffic(client, auth, 200)
    judged = _controller(engine, Clock()).tick()  # no time has passed: mid-interval
    assert [j.action for j in judged] == ["rollback"]
    status = client.get("/v1/points/credit/rollout", headers=auth).json()
    assert status["state"] == "rolled_back" and "agreement" in status["reason"]
    assert _traffic(client, auth, 100, start=500)["flipped"] == 0


def test_no_data_pauses_and_a_person_resumes(
    setup: tuple[Engine, TestClient, dict[str, str]], tmp_path: Path
) -> None:
    engine, client, auth = setup
    _register(engine, tmp_path, "v2")
    client.post("/v1/points/credit/rollout", headers=auth, json={"challenger": "v2", "plan": PLAN})
    clock = Clock()
    clock.offset += timedelta(seconds=61)
    assert [j.action for j in _controller(engine, clock).tick()] == ["pause"]
    status = client.get("/v1/points/credit/rollout", headers=auth).json()
    assert status["state"] == "paused" and status["reason"].startswith("no data")
    resumed = client.post(
        "/v1/points/credit/rollout/resume", headers=auth, json={"reason": "traffic is back"}
    )
    assert resumed.json()["state"] == "running"


def test_abort_sends_nothing_to_the_challenger_at_once(
    setup: tuple[Engine, TestClient, dict[str, str]], tmp_path: Path
) -> None:
    engine, client, auth = setup
    _register(engine, tmp_path, "v2")
    client.post(
        "/v1/points/credit/rollout",
        headers=auth,
        json={"challenger": "v2", "plan": {**PLAN, "steps": [50, 100]}},
    )
    assert _traffic(client, auth, 100)["v2"] > 20
    aborted = client.post(
        "/v1/points/credit/rollout/abort", headers=auth, json={"reason": "bad smell"}
    )
    assert aborted.json()["state"] == State.ABORTED.value and aborted.json()["percent"] == 0
    assert _traffic(client, auth, 200, start=100)["v2"] == 0


def test_other_replica_abort_revokes_challenger_decisions_at_commit(
    setup: tuple[Engine, TestClient, dict[str, str]], tmp_path: Path, db: sa.Engine
) -> None:
    engine, client, auth = setup
    _register(engine, tmp_path, "v2")
    client.post(
        "/v1/points/credit/rollout",
        headers=auth,
        json={"challenger": "v2", "plan": {**PLAN, "steps": [100]}},
    )
    _traffic(client, auth, 5)  # this replica now routes everything to v2
    other = Engine(engine.points, db, actor="replica-2", model_cache=tmp_path / "cache2")
    try:
        other.rollouts.abort("credit", actor="ops", reason="from another replica")
    finally:
        other.close()
    # this replica has not refreshed yet; the recorder re-checks inside the ledger lock
    response = client.post(
        "/v1/decisions",
        headers=auth,
        json={
            "point": "credit",
            "input": {"amount": 1.0, "income": 1.0, "credit_score": 800, "customer": "late"},
        },
    )
    body = response.json()
    assert body["route"] != "auto" or body["model_version"] != "v2"
    with db.connect() as conn:
        abort_seq = conn.execute(
            sa.select(events.c.seq).where(events.c.type == "rollout.aborted")
        ).scalar_one()
        late = conn.execute(
            sa.select(decisions.c.model_version, decisions.c.route)
            .select_from(decisions.join(events, events.c.decision_id == decisions.c.id))
            .where(events.c.seq > abort_seq)
        ).all()
    assert all(not (v == "v2" and r == "auto") for v, r in late)


def test_rollout_commands_need_the_owner_role(
    setup: tuple[Engine, TestClient, dict[str, str]],
) -> None:
    engine, client, _ = setup
    secret, _ = create_token(
        engine.recorder, name="app", roles=["caller"], points=["credit"], actor="test"
    )
    response = client.post(
        "/v1/points/credit/rollout",
        json={"challenger": "v2"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "forbidden"


@pytest.mark.parametrize("in_child_process", [False, True], ids=["thread", "process"])
def test_shadow_never_decides_and_is_compared(
    setup: tuple[Engine, TestClient, dict[str, str]], tmp_path: Path, in_child_process: bool
) -> None:
    engine, client, auth = setup
    engine.shadow_process = in_child_process  # the server's setting: a child process
    _register(engine, tmp_path, "flipped", flip=True)
    client.post(
        "/v1/points/credit/rollout",
        headers=auth,
        json={"challenger": "flipped", "mode": "shadow", "plan": {**PLAN, "steps": [100]}},
    )
    before = Counter(_traffic(client, auth, 60))
    assert before == {"v1": 60}  # the champion decides everything
    assert engine._shadow is not None
    engine._shadow.drain(30)
    assert (engine._shadow._child is not None) is in_child_process
    status = client.get("/v1/points/credit/rollout", headers=auth).json()
    comparison = status["comparison"]
    assert comparison["compared"] == 60
    assert comparison["agreement"] < 0.2  # the flipped model disagrees almost everywhere
    assert comparison["shadow_latency_ms"]["p50"] > 0
    assert sum(c["count"] for c in comparison["route_changes"]) == 60
    assert status["analysis"]["verdict"] == "fail"
