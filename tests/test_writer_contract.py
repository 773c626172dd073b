"""The writer's contract: a caller is answered only with the outcome of a transaction that
committed, or with an error — under failures before, during and after COMMIT, full queues and
callers that give up. Both backends; the faults wrap the writer's DBAPI connection."""

from __future__ import annotations

import random
import threading
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.faults import AFTER, BEFORE, Faults, check_acknowledged_once
from warden.decision import Decision
from warden.engine import Engine
from warden.errors import Unavailable, WardenError
from warden.ledger.chain import EventDraft
from warden.ledger.verify import verify_ledger
from warden.monitor.metrics import REGISTRY
from warden.policy.loader import load_points
from warden.store.recorder import Change, DuplicateKey, GuardState, Recorder
from warden.store.schema import decisions, events, shadow_results, tokens

APPLICATION = {"amount": 1000, "income": 5000, "credit_score": 800}


def _token_row(token_id: str) -> dict[str, object]:
    return {
        "id": token_id,
        "name": "n",
        "secret_hash": token_id * 4,
        "roles": ["caller"],
        "points": ["*"],
        "created_by": "t",
        "created_at": datetime.now(UTC),
        "revoked_at": None,
    }


def _event(n: int) -> EventDraft:
    return EventDraft(type="test.event", actor="test", payload={"n": n})


def _count(db: sa.Engine, table: sa.Table) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _ledger_ok(db: sa.Engine) -> None:
    # The rows here ride with stand-in events ("test.event"), not the ones that imply them: the
    # chain is checked, not the state projection (tests/test_state_projection.py does that).
    report = verify_ledger(db, [], projection=False)
    assert report.ok, report.to_dict()


@pytest.fixture
def recorder(db: sa.Engine) -> Any:
    rec = Recorder(db)
    yield rec
    rec.close()


# -- unknown COMMIT outcomes: read back, never applied again -----------------------------


@pytest.mark.parametrize("moment", [BEFORE, AFTER])
@pytest.mark.parametrize("with_row", [False, True])
def test_a_commit_that_fails_is_resolved_by_reading_back(
    db: sa.Engine, recorder: Recorder, moment: str, with_row: bool
) -> None:
    """BEFORE: not committed, so written anew; AFTER: committed, so answered as committed.
    Either way the caller gets the committed outcome and the ledger holds the change once
    (re-applying an events-only change would write its events twice; one with a row would
    come back as a duplicate-key error for a change that committed)."""
    faults = Faults(db)
    faults.install(recorder)
    faults.commits = [moment]
    rows = [(tokens, _token_row("t1"))] if with_row else []
    assert recorder.record(Change(events=[_event(1)], rows=rows)) is None
    assert faults.injected == [moment]
    assert _count(db, events) == 1
    assert _count(db, tokens) == (1 if with_row else 0)
    _ledger_ok(db)


def test_a_failing_guard_state_hook_does_not_undo_a_commit(db: sa.Engine) -> None:
    def broken(_: GuardState) -> None:
        raise RuntimeError("hook exploded")

    recorder = Recorder(db, on_guard_state=broken)
    try:
        assert recorder.record(Change(events=[_event(1)], rows=[(tokens, _token_row("a"))])) is None
        assert recorder.record(Change(events=[_event(2)])) is None
    finally:
        recorder.close()
    assert _count(db, events) == 2 and _count(db, tokens) == 1
    _ledger_ok(db)


def test_a_retry_answers_with_what_apply_returned(db: sa.Engine, recorder: Recorder) -> None:
    """A transient failure, then success: the caller gets the retry's own result (a monitor
    alert's `apply` result decides whether its sinks and kill action run)."""
    failures = [1]

    def flaky(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if failures and statement.lstrip().upper().startswith("INSERT INTO EVENTS"):
            failures.pop()
            raise db.dialect.loaded_dbapi.OperationalError("database is locked")

    sa.event.listen(db, "before_cursor_execute", flaky)
    try:
        result = recorder.record(Change(events=[_event(1)], apply=lambda conn: "written"))
    finally:
        sa.event.remove(db, "before_cursor_execute", flaky)
    assert not failures  # the fault fired
    assert result == "written"
    assert _count(db, events) == 1


def test_a_retry_after_a_transient_failure_finds_a_key_a_replica_took(
    points_dir: Path, db: sa.Engine
) -> None:
    """The key was taken by another replica; this one's first write fails once. The answer
    must be the replica's decision — not a new id that was never committed."""
    replica = Engine(load_points(points_dir), db, actor="test")
    engine = Engine(load_points(points_dir), db, actor="test")
    try:
        first = replica.decide("loan_approval", APPLICATION, idempotency_key="k-1")
        faults = Faults(db)
        faults.install(engine.recorder)
        faults.statements = 1
        again = engine.decide("loan_approval", APPLICATION, idempotency_key="k-1")
        assert faults.injected == ["statement"]
        assert again.id == first.id
        assert engine.get(again.id).id == first.id
    finally:
        engine.close()
        replica.close()
    assert _count(db, decisions) == 1


# -- backpressure --------------------------------------------------------------------------


class _Gate:
    """A change whose `apply` holds the writer until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def change(self) -> Change:
        def apply(conn: sa.Connection) -> str:
            self.entered.set()
            assert self.release.wait(60)
            return "gate"

        return Change(events=[_event(0)], apply=apply)


def _refused(reason: str) -> float:
    value = REGISTRY.get_sample_value("warden_writes_refused_total", {"reason": reason})
    return value or 0.0


def test_a_full_queue_refuses_at_once_and_a_withdrawn_change_is_never_committed(
    db: sa.Engine,
) -> None:
    recorder = Recorder(db, max_queue=2)
    gate = _Gate()
    try:
        held = recorder.submit(gate.change())
        assert gate.entered.wait(30)
        queued = [recorder.submit(Change(events=[_event(n)])) for n in (1, 2)]
        before = _refused("queue_full")
        refused = recorder.submit(Change(events=[_event(3)]))
        assert isinstance(refused.exception(timeout=1), Unavailable)
        assert _refused("queue_full") == before + 1
        with pytest.raises(Unavailable, match="withdrawn"):
            recorder.wait(queued[0], timeout=0.05)  # the caller gives up while it queues
        assert queued[0].cancelled()
        gate.release.set()
        assert held.result(30) == "gate"
        assert queued[1].result(30) is None
    finally:
        gate.release.set()
        recorder.close()
    with db.connect() as conn:
        bodies = conn.execute(sa.select(events.c.body)).scalars().all()
    numbers = sorted(b.split('"n":')[1].split("}")[0].split(",")[0] for b in bodies)
    assert numbers == ["0", "2"]  # 1 was withdrawn, 3 refused: neither committed later


def test_a_batch_is_queued_all_or_none(db: sa.Engine) -> None:
    recorder = Recorder(db, max_queue=3)
    gate = _Gate()
    try:
        recorder.submit(gate.change())
        assert gate.entered.wait(30)
        four = recorder.submit_many([Change(events=[_event(n)]) for n in range(4)])
        assert all(isinstance(f.exception(timeout=1), Unavailable) for f in four)
        three = recorder.submit_many([Change(events=[_event(n)]) for n in range(3)])
        gate.release.set()
        assert [f.result(30) for f in three] == [None] * 3
    finally:
        gate.release.set()
        recorder.close()
    assert _count(db, events) == 4


def test_the_shadow_backlog_is_bounded_and_drops_are_counted(db: sa.Engine) -> None:
    recorder = Recorder(db, max_riders=5)
    before = REGISTRY.get_sample_value("warden_shadow_results_dropped_total") or 0.0
    row = {
        "decision_id": "d",
        "model_version": "v",
        "point": "p",
        "outcome": None,
        "confidence": None,
        "failure": None,
        "latency_ms": 1.0,
    }
    try:
        recorder.ride(
            shadow_results,
            [{**row, "decision_id": f"d{i}", "created_at": datetime.now(UTC)} for i in range(8)],
        )
        assert recorder.riding <= 5
        dropped = REGISTRY.get_sample_value("warden_shadow_results_dropped_total") or 0.0
        assert dropped - before == 3
        recorder.record(Change(events=[_event(1)]))  # the decision commits regardless
    finally:
        recorder.close()
    assert _count(db, shadow_results) == 5 and _count(db, events) == 1


# -- faults under concurrent load ----------------------------------------------------------


def test_under_random_commit_faults_every_acknowledged_decision_is_there_once(
    points_dir: Path, db: sa.Engine
) -> None:
    """Threads decide while COMMITs fail before or after going through, at random. Every
    caller gets a decision or an error; every acknowledged decision is stored and in the
    ledger once; retries with the same key return the same decision; the ledger verifies."""
    engine = Engine(load_points(points_dir), db, actor="test")
    faults = Faults(db)
    faults.install(engine.recorder)
    chance = random.Random(7)
    faults.chooser = lambda: chance.choice([None, None, None, BEFORE, AFTER])
    answers: dict[str, list[Decision | Exception]] = {}
    lock = threading.Lock()

    def caller(worker: int) -> None:
        for n in range(12):
            key = f"w{worker}-{n}"
            for _ in range(2):  # a caller that got an error retries with the same key
                try:
                    outcome: Decision | Exception = engine.decide(
                        "loan_approval",
                        {**APPLICATION, "amount": n + 1, "credit_score": 600 + worker},
                        idempotency_key=key,
                    )
                except (WardenError, DuplicateKey) as exc:
                    outcome = exc
                with lock:
                    answers.setdefault(key, []).append(outcome)
                if isinstance(outcome, Decision):
                    break

    threads = [threading.Thread(target=caller, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "a caller was never answered"
    faults.chooser = None
    engine.close()
    assert {BEFORE, AFTER} <= set(faults.injected)
    check_acknowledged_once(db, answers)


def test_a_change_queued_at_close_is_answered(db: sa.Engine) -> None:
    recorder = Recorder(db)
    gate = _Gate()
    held = recorder.submit(gate.change())
    assert gate.entered.wait(30)
    late: Future[Any] = recorder.submit(Change(events=[_event(1)]))
    closing = threading.Thread(target=recorder.close)
    closing.start()
    gate.release.set()
    closing.join(60)
    assert held.result(1) == "gate"
    assert late.done()  # committed before the writer stopped, or refused: never left hanging
