"""Every entry point decides through one path: the same scenario gives the same decision.

A second engine on the same database plays a replica: it engages the kill switch or aborts a
canary while this engine still holds the old state in memory, so only the writer's re-check
inside the ledger lock can stop an AUTO decision by a killed point or an aborted challenger.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.test_rollout import POINT, SMOKE, train
from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.rollout.plan import RolloutPlan
from warden.rollout.rollouts import Mode

APPLICATION = {"amount": 1000.0, "income": 5000.0, "credit_score": 800, "customer": "c1"}

Outcome = tuple[str, str | None, tuple[str, ...]]  # route, model version, reason codes


class Replicas:
    """`here` decides through the entry point under test; `there` changes state behind it."""

    def __init__(self, folder: Path, db: sa.Engine, cache: Path) -> None:
        self.here = Engine(load_points(folder), db, actor="test", model_cache=cache)
        self.there = Engine(load_points(folder), db, actor="test", model_cache=cache)
        self.db = db
        secret, _ = create_token(
            self.here.recorder,
            name="ops",
            roles=["owner", "caller"],
            points=["credit"],
            actor="test",
        )
        self.auth = {"Authorization": f"Bearer {secret}"}
        self.client = TestClient(create_app(self.here, workers=[]))
        self.client.__enter__()

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.here.close()
        self.there.close()


@pytest.fixture
def replicas(tmp_path: Path, db: sa.Engine) -> Iterator[Replicas]:
    folder = tmp_path / "points"
    folder.mkdir()
    train(folder / "base.joblib", 1)
    (folder / "credit.yaml").write_text(textwrap.dedent(POINT))
    setup = Engine(load_points(folder), db, actor="test", model_cache=tmp_path / "cache")
    setup.registry.register(
        setup.points["credit"],
        version="v2",
        artifact=train(tmp_path / "v2.joblib", 2),
        actor="test",
        smoke_input=SMOKE,
    )
    setup.close()
    pair = Replicas(folder, db, tmp_path / "cache")
    yield pair
    pair.close()


def _outcome(decision: Any) -> Outcome:
    if isinstance(decision, dict):
        codes = tuple(r["code"] for r in decision["reasons"])
        return decision["route"], decision["model_version"], codes
    return decision.route.value, decision.model_version, tuple(r.code for r in decision.reasons)


def _http(pair: Replicas, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = pair.client.post(path, headers=pair.auth, json=body)
    assert response.status_code in (200, 202), response.text
    data: dict[str, Any] = response.json()
    return data


ENTRY_POINTS: dict[str, Callable[[Replicas], Outcome]] = {
    "decide": lambda p: _outcome(p.here.decide("credit", APPLICATION)),
    "decide_async": lambda p: _outcome(asyncio.run(p.here.decide_async("credit", APPLICATION))),
    "decide_many": lambda p: _outcome(p.here.decide_many("credit", [APPLICATION])[0]),
    "http": lambda p: _outcome(
        _http(p, "/v1/decisions", {"point": "credit", "input": APPLICATION})
    ),
    "http_batch": lambda p: _outcome(
        _http(p, "/v1/decisions/batch", {"point": "credit", "inputs": [APPLICATION]})["data"][0]
    ),
}


def _canary_running_here(pair: Replicas) -> None:
    """`there` starts a 100 % canary; `here` learns of it and decides with the challenger."""
    pair.there.rollouts.start(
        pair.there.points["credit"],
        challenger="v2",
        mode=Mode.CANARY,
        plan=RolloutPlan(steps=[100], sticky_key="input.customer"),
        actor="test",
    )
    for _ in range(5):
        decided = pair.here.decide("credit", APPLICATION)
        if decided.model_version == "v2" and not pair.here.deployments.stale:
            return
    raise AssertionError("the canary never reached this replica")


def _scenario_abort(pair: Replicas, entry: Callable[[Replicas], Outcome]) -> Outcome:
    _canary_running_here(pair)
    pair.there.rollouts.abort("credit", actor="test", reason="bad challenger")
    return entry(pair)  # `here` still believes the canary runs: only the writer knows


def _scenario_kill(pair: Replicas, entry: Callable[[Replicas], Outcome]) -> Outcome:
    pair.here.decide("credit", APPLICATION)  # here: not killed, as far as it knows
    pair.there.set_kill("credit", True, actor="test", reason="incident")
    try:
        return entry(pair)
    finally:
        pair.there.set_kill("credit", False, actor="test", reason="over")
        pair.here.decide("credit", APPLICATION)  # here learns of the release


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_after_an_abort_no_entry_point_lets_the_aborted_challenger_decide(
    replicas: Replicas, name: str
) -> None:
    outcome = _scenario_abort(replicas, ENTRY_POINTS[name])
    assert outcome == ("review", "v2", ("rollout_stopped",)), name


def test_every_entry_point_gives_the_same_decision_in_the_same_scenario(
    replicas: Replicas,
) -> None:
    """Kill switch engaged elsewhere: every entry point routes to review for `kill_switch`;
    the same through each one, and never AUTO."""
    outcomes = {name: _scenario_kill(replicas, entry) for name, entry in ENTRY_POINTS.items()}
    assert set(outcomes.values()) == {("review", "v1", ("kill_switch",))}, outcomes
