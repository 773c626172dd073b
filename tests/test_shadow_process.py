"""Shadow models in a child process: answered elsewhere, recorded here, and a challenger that
kills its process costs only its own calls."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from warden.models import GuardedModel, load_model
from warden.models.callable import CallableModel
from warden.policy.schema import FailureSpec, ModelSpec
from warden.rollout import shadow
from warden.rollout.shadow import ShadowCall, ShadowRunner
from warden.store.recorder import Recorder
from warden.store.schema import shadow_results

MODEL = '''
import os


def score(input):
    """Answers with the pid of the process it runs in; dies when asked to."""
    if input.get("die"):
        os._exit(3)
    return ("approve" if input["n"] % 2 else "decline"), (os.getpid() % 1000) / 1000
'''


def guarded(folder: Path) -> GuardedModel:
    folder.mkdir(exist_ok=True)
    (folder / "shadow_model.py").write_text(textwrap.dedent(MODEL))
    spec = ModelSpec(kind="callable", function="shadow_model:score", version="c1", timeout_ms=2000)
    model = load_model(spec, folder)
    assert model is not None
    return GuardedModel(model, spec=spec, failure=FailureSpec(), outcomes=["approve", "decline"])


def results(db: sa.Engine) -> list[sa.Row[tuple[str, str | None, float | None, str | None]]]:
    with db.connect() as conn:
        query = sa.select(
            shadow_results.c.decision_id,
            shadow_results.c.outcome,
            shadow_results.c.confidence,
            shadow_results.c.failure,
        ).order_by(shadow_results.c.decision_id)
        return list(conn.execute(query))


@pytest.fixture
def recorder(db: sa.Engine) -> Recorder:
    recorder = Recorder(db)
    yield recorder
    recorder.close()


def test_isolated_calls_are_answered_in_another_process_and_recorded(
    db: sa.Engine, recorder: Recorder, tmp_path: Path
) -> None:
    model = guarded(tmp_path / "m")
    runner = ShadowRunner(recorder, isolated=True)
    try:
        for n in range(20):
            assert runner.submit(ShadowCall(f"d{n:02d}", "credit", "c1", model, {"n": n}))
        runner.drain(30)
        assert runner._child is not None and runner._child.alive
    finally:
        runner.close()
    rows = results(db)
    assert [r.decision_id for r in rows] == [f"d{n:02d}" for n in range(20)]
    assert [r.outcome for r in rows] == ["approve" if n % 2 else "decline" for n in range(20)]
    assert {r.confidence for r in rows} != {(os.getpid() % 1000) / 1000}  # not this process
    assert runner.completed == 20 and runner.dropped == 0


def test_a_challenger_that_kills_its_process_loses_only_its_calls(
    db: sa.Engine, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadow, "RESTART_AFTER", 0.2)
    model = guarded(tmp_path / "m")
    runner = ShadowRunner(recorder, isolated=True)
    try:
        runner.submit(ShadowCall("a", "credit", "c1", model, {"n": 1}))
        runner.drain(30)
        runner.submit(ShadowCall("b", "credit", "c1", model, {"n": 1, "die": True}))
        deadline = time.monotonic() + 30
        while runner.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.dropped == 1  # the call whose model killed the child
        assert not runner.submit(ShadowCall("c", "credit", "c1", model, {"n": 1}))  # backing off
        time.sleep(0.3)
        assert runner.submit(ShadowCall("d", "credit", "c1", model, {"n": 2}))  # a new child
        runner.drain(30)
    finally:
        runner.close()
    assert [r.decision_id for r in results(db)] == ["a", "d"]
    assert runner.dropped == 2


def test_a_model_without_a_recipe_answers_on_a_thread(db: sa.Engine, recorder: Recorder) -> None:
    model = GuardedModel(
        CallableModel(lambda input: ("approve", 0.5), name="t:f", version="t"),
        spec=ModelSpec(kind="callable", function="t:f", version="t"),
        failure=FailureSpec(),
        outcomes=["approve", "decline"],
    )
    assert model.recipe() is None
    runner = ShadowRunner(recorder, isolated=True)
    try:
        runner.submit(ShadowCall("x", "credit", "t", model, {}))
        runner.drain(10)
        assert runner._child is None
    finally:
        runner.close()
    assert [(r.decision_id, r.outcome) for r in results(db)] == [("x", "approve")]
