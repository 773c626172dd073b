"""A stateful test of the engine: random interleavings of decisions through every entry point,
model faults, commit faults, kill and resume, canary start and abort — here or on a replica
that shares the database — and idempotent retries.

After every step, from the ledger and the database: no AUTO decision while its point (or all)
was killed or by a challenger whose canary was not running; no AUTO decision after a model
fault; every acknowledged decision is stored with its event; one decision per idempotency key.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import LOAN_POINT, write_points
from tests.faults import AFTER, BEFORE, Faults
from tests.test_rollout import POINT, SMOKE, train
from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.decision import Decision
from warden.engine import Engine
from warden.errors import Conflict, Unavailable
from warden.policy.loader import load_points
from warden.rollout.plan import RolloutPlan
from warden.rollout.rollouts import Mode
from warden.store.database import create_engine, migrate
from warden.store.schema import decisions, events

POINTS = ("loan_approval", "credit")


class World:
    """One database, the engine under test (`here`), a replica (`there`), an HTTP client."""

    def __init__(self, folder: Path) -> None:
        points = write_points(folder / "points", LOAN_POINT)
        train(points / "base.joblib", 1)
        (points / "credit.yaml").write_text(textwrap.dedent(POINT))
        self.db = create_engine(f"sqlite:///{folder / 'warden.db'}")
        migrate(self.db)
        cache = folder / "cache"
        self.here = Engine(load_points(points), self.db, actor="test", model_cache=cache)
        self.here.registry.register(
            self.here.points["credit"],
            version="v2",
            artifact=train(folder / "v2.joblib", 2),
            actor="test",
            smoke_input=SMOKE,
        )
        self.there = Engine(load_points(points), self.db, actor="test", model_cache=cache)
        secret, _ = create_token(
            self.here.recorder, name="t", roles=["caller"], points=["*"], actor="test"
        )
        self.auth = {"Authorization": f"Bearer {secret}"}
        self.client = TestClient(create_app(self.here, workers=[]))
        self.client.__enter__()
        self.faults = Faults(self.db)
        self.faults.install(self.here.recorder)

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.here.close()
        self.there.close()
        self.db.dispose()


class EngineMachine(RuleBasedStateMachine):
    world: World

    def __init__(self) -> None:
        super().__init__()
        w = self.world
        for switch in w.here.kill_switches():  # each run starts from a clean state
            if switch.engaged:
                w.here.set_kill(switch.scope, False, actor="test", reason="reset")
        if w.here.rollouts.active("credit"):
            w.here.rollouts.abort("credit", actor="test", reason="reset")
        w.faults.commits = []
        self.canary = False  # the model's own view, so preconditions never read the database
        self.run = uuid.uuid4().hex[:8]  # keys of earlier runs are not this run's
        self.acknowledged: dict[str, str | None] = {}  # decision id -> idempotency key
        self.by_key: dict[str, tuple[str, str]] = {}  # key -> (request, decision id)

    # -- decisions -------------------------------------------------------------------------

    @rule(
        entry=st.sampled_from(["decide", "decide_async", "decide_many", "http"]),
        point=st.sampled_from(POINTS),
        faulty=st.booleans(),
        score=st.integers(300, 850),
        key=st.none() | st.integers(0, 3),
    )
    def decide(self, entry: str, point: str, faulty: bool, score: int, key: int | None) -> None:
        if point == "loan_approval":
            data: dict[str, Any] = {"amount": 900, "income": 5000, "credit_score": score}
            if faulty:
                data["mode"] = "error"
        else:
            data = {
                "amount": 900.0,
                "income": 5000.0,
                "credit_score": score,
                "customer": f"c{score}",
            }
        idem = None if key is None or entry == "decide_many" else f"{self.run}-{point}-{key}"
        request = json.dumps(data, sort_keys=True)
        try:
            decided = self._call(entry, point, data, idem)
        except Conflict:
            assert idem is not None and self.by_key[idem][0] != request
            return
        except Unavailable:
            return  # an error is an answer; what matters is nothing acknowledged is missing
        self.acknowledged[decided.id] = idem
        if idem is not None:
            first = self.by_key.setdefault(idem, (request, decided.id))
            assert first == (request, decided.id), "a retry got another decision"

    def _call(self, entry: str, point: str, data: dict[str, Any], key: str | None) -> Decision:
        here = self.world.here
        if entry == "decide":
            return here.decide(point, data, idempotency_key=key)
        if entry == "decide_async":
            return asyncio.run(here.decide_async(point, data, idempotency_key=key))
        if entry == "decide_many":
            return here.decide_many(point, [data])[0]
        headers = dict(self.world.auth)
        if key is not None:
            headers["Idempotency-Key"] = key
        response = self.world.client.post(
            "/v1/decisions", json={"point": point, "input": data}, headers=headers
        )
        if response.status_code == 409:
            raise Conflict(response.text)
        if response.status_code == 503:
            raise Unavailable(response.text)
        assert response.status_code in (200, 202), response.text
        return Decision.model_validate(response.json())

    # -- what withdraws authority, here or on the replica -----------------------------------

    @rule(
        scope=st.sampled_from([*POINTS, "*"]),
        engaged=st.booleans(),
        elsewhere=st.booleans(),
    )
    def kill(self, scope: str, engaged: bool, elsewhere: bool) -> None:
        engine = self.world.there if elsewhere else self.world.here
        engine.set_kill(scope, engaged, actor="test", reason="stateful")

    @precondition(lambda self: not self.canary)
    @rule(elsewhere=st.booleans(), share=st.sampled_from([50.0, 100.0]))
    def start_canary(self, elsewhere: bool, share: float) -> None:
        engine = self.world.there if elsewhere else self.world.here
        engine.rollouts.start(
            engine.points["credit"],
            challenger="v2",
            mode=Mode.CANARY,
            plan=RolloutPlan(
                steps=[share, 100.0] if share < 100 else [100.0], sticky_key="input.customer"
            ),
            actor="test",
        )
        self.world.here.deployments.refresh()  # as its next commit would tell it
        self.canary = True

    @precondition(lambda self: self.canary)
    @rule(
        elsewhere=st.booleans(),
        then=st.none() | st.sampled_from(["decide", "decide_async", "decide_many", "http"]),
        score=st.integers(300, 850),
    )
    def abort_canary(self, elsewhere: bool, then: str | None, score: int) -> None:
        """Abort, and maybe decide at once: with the abort made on the replica, this engine
        still believes the canary runs — only the writer's re-check can stop its challenger."""
        engine = self.world.there if elsewhere else self.world.here
        engine.rollouts.abort("credit", actor="test", reason="stateful")
        self.canary = False
        if then is not None:
            self.decide(then, "credit", False, score, None)

    @rule(moment=st.sampled_from([BEFORE, AFTER]))
    def fail_next_commit(self, moment: str) -> None:
        self.world.faults.commits.append(moment)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def no_auto_without_authority(self) -> None:
        killed: set[str] = set()
        canaries: dict[str, str] = {}  # rollout id -> challenger
        with self.world.db.connect() as conn:
            bodies = conn.execute(sa.select(events.c.body).order_by(events.c.seq)).scalars()
            for body in bodies:
                event = json.loads(body)
                kind, payload = event["type"], event["payload"]
                if kind == "kill_switch.engaged":
                    killed.add(payload["scope"])
                elif kind == "kill_switch.released":
                    killed.discard(payload["scope"])
                elif kind == "rollout.started" and payload["mode"] == "canary":
                    canaries[payload["rollout"]] = payload["challenger"]
                elif kind.startswith("rollout.") and payload.get("to") not in (None, "running"):
                    canaries.pop(payload["rollout"], None)
                elif kind == "decision.created" and payload["route"] == "auto":
                    point = event["point"]
                    assert "*" not in killed and point not in killed, ("AUTO while killed", event)
                    if payload["model_version"] == "v2":
                        assert "v2" in canaries.values(), ("AUTO by an aborted challenger", event)
                    assert payload["input"].get("mode") != "error", ("AUTO after a fault", event)

    @invariant()
    def acknowledged_decisions_are_stored_once_per_key(self) -> None:
        with self.world.db.connect() as conn:
            stored = dict(
                conn.execute(sa.select(decisions.c.id, decisions.c.idempotency_key)).all()
            )
            logged = (
                conn.execute(
                    sa.select(events.c.decision_id).where(events.c.type == "decision.created")
                )
                .scalars()
                .all()
            )
        for decision_id, key in self.acknowledged.items():
            assert decision_id in stored, "an acknowledged decision is missing"
            assert stored[decision_id] == key
        assert len(logged) == len(set(logged)) == len(stored)
        keys = [k for k in stored.values() if k is not None]
        assert len(keys) == len(set(keys))


def test_engine_state_machine(tmp_path: Path) -> None:
    world = World(tmp_path)
    EngineMachine.world = world
    try:
        run_state_machine_as_test(
            EngineMachine,
            settings=settings(max_examples=4, stateful_step_count=20, deadline=None),
        )
    finally:
        world.close()
