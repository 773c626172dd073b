"""Model registry, aliases and rollouts: versions, history, transitions and the controller."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from tests.ledger_helpers import assert_state_agrees
from warden.errors import Conflict, InvalidRequest, NotFound
from warden.policy.loader import load_point
from warden.policy.point import CompiledPoint
from warden.rollout.analysis import Arm, StepEvidence
from warden.rollout.controller import RolloutController
from warden.rollout.plan import Check, Metric, RolloutPlan
from warden.rollout.registry import Registry
from warden.rollout.rollouts import Mode, Rollout, Rollouts, State
from warden.store.recorder import Recorder
from warden.store.schema import events

SMOKE = {"amount": 1000.0, "income": 5000.0, "credit_score": 700}

POINT = """
point: credit
owner: risk@example.com
input:
  type: object
  required: [amount, income, credit_score]
  properties:
    amount: {type: number}
    income: {type: number}
    credit_score: {type: integer}
    customer: {type: string}
model:
  kind: sklearn
  path: base.joblib
  features: [amount, income, credit_score]
  version: v1
outcomes: [approve, decline]
rules:
  auto:
    - {id: confident, when: "confidence >= 0.5"}
"""


def train(path: Path, seed: int, flip: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [rng.uniform(500, 40000, 500), rng.uniform(1000, 15000, 500), rng.integers(300, 851, 500)]
    )
    y = np.where((x[:, 2] > 600) ^ flip, "approve", "decline")
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    return path


@pytest.fixture
def point(tmp_path: Path) -> CompiledPoint:
    train(tmp_path / "base.joblib", 1)
    (tmp_path / "credit.yaml").write_text(textwrap.dedent(POINT))
    return load_point(tmp_path / "credit.yaml")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def parts(db: sa.Engine, tmp_path: Path) -> Iterator[tuple[Registry, Rollouts, Clock]]:
    recorder = Recorder(db)
    registry = Registry(db, recorder, tmp_path / "cache")
    clock = Clock()
    yield registry, Rollouts(db, recorder, registry, clock), clock
    recorder.close()


def _event_types(db: sa.Engine) -> list[str]:
    with db.connect() as conn:
        return list(conn.execute(sa.select(events.c.type).order_by(events.c.seq)).scalars())


def test_register_load_and_immutability(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path
) -> None:
    registry, _, _ = parts
    artifact = train(tmp_path / "v2.joblib", 2)
    registered = registry.register(
        point,
        version="v2",
        artifact=artifact,
        actor="alice",
        metadata={"auc": 0.91},
        smoke_input=SMOKE,
    )
    assert registered.sha256 and registered.metadata == {"auc": 0.91}
    model = registry.load(point, "v2")
    assert model.predict(SMOKE).outcome in ("approve", "decline")
    with pytest.raises(Conflict, match="immutable"):
        registry.register(point, version="v2", artifact=artifact, actor="bob", smoke_input=SMOKE)
    garbage = tmp_path / "garbage.joblib"
    garbage.write_bytes(b"not a model")
    with pytest.raises(InvalidRequest, match="smoke test"):
        registry.register(point, version="v3", artifact=garbage, actor="a", smoke_input=SMOKE)
    with pytest.raises(InvalidRequest, match="smoke input"):
        registry.register(point, version="v4", artifact=artifact, actor="a")
    assert [v.version for v in registry.versions("credit")] == ["v2"]


def test_alias_moves_are_events_and_answer_live_at(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path, db: sa.Engine
) -> None:
    registry, _, _ = parts
    for version, seed in (("v2", 2), ("v3", 3)):
        registry.register(
            point,
            version=version,
            artifact=train(tmp_path / f"{version}.j", seed),
            actor="a",
            smoke_input=SMOKE,
        )
    registry.set_alias("credit", "champion", "v2", actor="alice", reason="first")
    between = datetime.now(UTC)
    registry.set_alias("credit", "champion", "v3", actor="bob", reason="better auc")
    moves = registry.history("credit")
    assert [(m.previous, m.version, m.actor) for m in moves] == [
        (None, "v2", "alice"),
        ("v2", "v3", "bob"),
    ]
    assert registry.live_at("credit", "champion", between) == "v2"
    assert registry.live_at("credit", "champion", between - timedelta(days=1)) is None
    assert registry.aliases("credit") == {"champion": "v3"}
    with pytest.raises(NotFound):
        registry.set_alias("credit", "champion", "v9", actor="a", reason="x")
    with pytest.raises(InvalidRequest):
        registry.set_alias("credit", "champion", "v2", actor="a", reason=" ")
    assert _event_types(db).count("model.alias_moved") == 2


def _start(
    parts: tuple[Registry, Rollouts, Clock],
    point: CompiledPoint,
    tmp_path: Path,
    plan: RolloutPlan | None = None,
) -> Rollout:
    registry, rollouts, _ = parts
    registry.register(
        point, version="v2", artifact=train(tmp_path / "v2.j", 2), actor="a", smoke_input=SMOKE
    )
    return rollouts.start(
        point,
        challenger="v2",
        mode=Mode.CANARY,
        plan=plan or RolloutPlan(steps=[10, 50, 100], interval=60, min_decisions=100),
        actor="alice",
    )


def test_rollout_commands(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path, db: sa.Engine
) -> None:
    registry, rollouts, _ = parts
    rollout = _start(parts, point, tmp_path)
    assert (rollout.champion, rollout.challenger, rollout.percent) == ("v1", "v2", 10)
    assert registry.aliases("credit")["challenger"] == "v2"
    with pytest.raises(Conflict, match="active rollout"):
        rollouts.start(point, challenger="v2", mode=Mode.CANARY, plan=RolloutPlan(), actor="bob")
    paused = rollouts.pause("credit", actor="bob", reason="looking")
    assert paused.state is State.PAUSED and paused.percent == 10
    with pytest.raises(Conflict):
        rollouts.pause("credit", actor="bob", reason="again")
    assert rollouts.resume("credit", actor="bob", reason="ok").state is State.RUNNING
    assert rollouts.promote("credit", actor="bob", reason="manual").percent == 50
    aborted = rollouts.abort("credit", actor="bob", reason="stop")
    assert aborted.state is State.ABORTED and aborted.percent == 0
    assert "challenger" not in registry.aliases("credit")
    types = _event_types(db)
    for kind in (
        "rollout.started",
        "rollout.paused",
        "rollout.resumed",
        "rollout.step",
        "rollout.aborted",
    ):
        assert kind in types
    assert_state_agrees(db)  # rollouts and aliases follow from their events


def test_stale_transition_loses(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path
) -> None:
    _, rollouts, _ = parts
    rollout = _start(parts, point, tmp_path)
    assert rollouts.advance(rollout, actor="replica-1", reason="pass") is not None
    assert rollouts.advance(rollout, actor="replica-2", reason="pass") is None


def _controller(
    parts: tuple[Registry, Rollouts, Clock], evidence: StepEvidence, breaker: bool = False
) -> RolloutController:
    _, rollouts, clock = parts
    return RolloutController(
        rollouts.db,
        rollouts,
        breaker_open=lambda p, v: breaker,
        evidence=lambda db, r: evidence,
        clock=clock,
    )


GOOD = StepEvidence(
    challenger=Arm(decisions=500, errors=0), champion=Arm(decisions=500), compared=500, agreed=490
)
BAD = StepEvidence(
    challenger=Arm(decisions=500, errors=100), champion=Arm(decisions=500), compared=500, agreed=490
)


def test_controller_promotes_step_by_step(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path
) -> None:
    registry, rollouts, clock = parts
    _start(parts, point, tmp_path)
    controller = _controller(parts, GOOD)
    assert [j.action for j in controller.tick()] == ["wait"]
    percents = []
    for _ in range(3):
        clock.now += timedelta(seconds=61)
        controller.tick()
        latest = rollouts.latest("credit")
        percents.append(latest.percent)
    assert percents == [50, 100, 0]
    assert latest.state is State.PROMOTED
    assert registry.aliases("credit") == {"champion": "v2"}
    assert_state_agrees(rollouts.db)


def test_controller_rolls_back_within_the_interval(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path
) -> None:
    _, rollouts, _ = parts
    _start(parts, point, tmp_path)
    assert [j.action for j in _controller(parts, BAD).tick()] == ["rollback"]
    rolled = rollouts.latest("credit")
    assert rolled.state is State.ROLLED_BACK and rolled.percent == 0
    assert "error_rate" in rolled.reason


def test_controller_rolls_back_on_a_breaker_trip(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path
) -> None:
    _, rollouts, _ = parts
    _start(parts, point, tmp_path)
    _controller(parts, GOOD, breaker=True).tick()
    assert rollouts.latest("credit").reason == "challenger circuit breaker open"


def test_no_data_pauses_instead_of_passing(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path
) -> None:
    _, rollouts, clock = parts
    _start(parts, point, tmp_path)
    clock.now += timedelta(seconds=61)
    empty = StepEvidence(challenger=Arm(), champion=Arm())
    assert [j.action for j in _controller(parts, empty).tick()] == ["pause"]
    paused = rollouts.latest("credit")
    assert paused.state is State.PAUSED and paused.reason.startswith("no data")


def test_plan_checks_reach_the_controller(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path
) -> None:
    plan = RolloutPlan(
        steps=[100],
        interval=0,
        min_decisions=10,
        checks=[Check(metric=Metric.REVIEW_RATE, max=0.1)],
    )
    _start(parts, point, tmp_path, plan)
    noisy = StepEvidence(challenger=Arm(decisions=100, reviews=50), champion=Arm(decisions=100))
    judged = _controller(parts, noisy).tick()
    assert judged[0].action == "rollback" and "review_rate" in judged[0].summary()


def test_a_passing_shadow_waits_for_a_person(
    parts: tuple[Registry, Rollouts, Clock], point: CompiledPoint, tmp_path: Path
) -> None:
    registry, rollouts, clock = parts
    registry.register(
        point, version="v2", artifact=train(tmp_path / "v2.j", 2), actor="a", smoke_input=SMOKE
    )
    rollouts.start(
        point,
        challenger="v2",
        mode=Mode.SHADOW,
        plan=RolloutPlan(steps=[100], interval=60, min_decisions=100),
        actor="a",
    )
    clock.now += timedelta(seconds=61)
    assert [j.action for j in _controller(parts, GOOD).tick()] == ["pause"]
    paused = rollouts.latest("credit")
    assert paused.state is State.PAUSED and paused.reason.startswith("shadow analysis passed")
    assert "champion" not in registry.aliases("credit")  # nothing went live by itself
    promoted = rollouts.promote("credit", actor="bob", reason="shadow looked good")
    assert promoted.state is State.PROMOTED and registry.aliases("credit")["champion"] == "v2"
