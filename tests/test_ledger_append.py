"""The writer's critical section, both ways of running it: chained by the writer under the head
lock (SQLite, and PostgreSQL when the guard state must be read under the lock), or by
PostgreSQL's `warden_append` in one round trip. The contract holds on either path: answered
only with what committed, an unknown COMMIT read back, guards as of the lock."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.faults import AFTER, BEFORE, Faults, check_acknowledged_once
from warden.decision import Decision, Route
from warden.engine import Engine
from warden.errors import WardenError
from warden.ledger.chain import EventDraft
from warden.ledger.verify import verify_ledger
from warden.policy.loader import load_points
from warden.store.recorder import Change, DuplicateKey, GuardState, Recorder
from warden.store.schema import events

APPLICATION = {"amount": 1000, "income": 5000, "credit_score": 800}  # AUTO approve
IN_DATABASE = "in_database"
UNDER_LOCK = "under_lock"


def _event(n: int) -> EventDraft:
    return EventDraft(type="test.event", actor="test", payload={"n": n})


class _Paths:
    """Counts which critical section wrote each batch."""

    def __init__(self, recorder: Recorder) -> None:
        self.used: list[str] = []
        recorder._append_in_database = self._count(  # type: ignore[method-assign]
            IN_DATABASE, recorder._append_in_database
        )
        recorder._append_under_head_lock = self._count(  # type: ignore[method-assign]
            UNDER_LOCK, recorder._append_under_head_lock
        )

    def _count(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            self.used.append(name)
            return real(*args)

        return counted


def _ledger(db: sa.Engine) -> list[tuple[int, str]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(events.c.seq, events.c.body))]  # type: ignore[misc]


@pytest.mark.parametrize("moment", [BEFORE, AFTER])
@pytest.mark.parametrize("path", [IN_DATABASE, UNDER_LOCK])
def test_an_unknown_commit_is_read_back_on_either_path(
    db: sa.Engine, moment: str, path: str
) -> None:
    """After a first commit the writer knows the guard state, so on PostgreSQL the next batch
    goes through `warden_append`, whose sequence numbers and hashes the writer learns only
    from the answer that was lost: it finds the batch by its bytes instead."""
    if path == IN_DATABASE and db.dialect.name == "sqlite":
        pytest.skip("SQLite chains in the writer")
    recorder = Recorder(db)
    try:
        recorder.append_in_database = path == IN_DATABASE
        recorder.record(Change(events=[_event(0)]))
        paths = _Paths(recorder)
        faults = Faults(db)
        faults.install(recorder)
        faults.commits = [moment]
        assert recorder.record(Change(events=[_event(1), _event(2)])) is None
        assert faults.injected == [moment]
        assert paths.used[0] == path
        if recorder._raw is not None and db.dialect.name != "sqlite":
            # back in transactions the driver opens: a head lock must outlast its SELECT
            assert recorder._raw.driver_connection.autocommit is False
    finally:
        recorder.close()
    ledger = _ledger(db)
    assert [seq for seq, _ in ledger] == [1, 2, 3]  # written once, whatever the moment
    report = verify_ledger(db, [], projection=False)
    assert report.ok, report.to_dict()


@pytest.mark.parametrize("split", [False, True])
def test_the_fast_path_commits_once_and_measures_the_hold_on_the_database_clock(
    db: sa.Engine, split: bool
) -> None:
    """Every batch through `warden_append` commits in its one round trip (no read-back of an
    outcome it should know), and the lock hold it reports is the database's: from the head
    locked to COMMIT done, within the round trip the writer saw — split, on request, into the
    append and the COMMIT."""
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite chains in the writer")
    recorder = Recorder(db)
    holds: list[float] = []
    parts: list[tuple[float, float]] = []
    trips: list[float] = []
    read_backs: list[Any] = []
    try:
        recorder.record(Change(events=[_event(0)]))  # learns the guard state under the lock
        paths = _Paths(recorder)
        recorder.observe_lock_hold = holds.append
        if split:
            recorder.observe_hold_parts = lambda a, c: parts.append((a, c))
        recorder._read_back = read_backs.append  # type: ignore[method-assign,assignment]
        for n in range(1, 6):
            started = time.perf_counter()
            recorder.record(Change(events=[_event(n)]))
            trips.append(time.perf_counter() - started)
    finally:
        recorder.close()
    assert paths.used == [IN_DATABASE] * 5
    assert read_backs == []
    assert len(holds) == 5
    assert all(0 < hold < trip for hold, trip in zip(holds, trips, strict=True))
    if split:
        assert len(parts) == 5
        for (append, commit), hold in zip(parts, holds, strict=True):
            assert append >= 0 and commit >= 0
            assert append + commit == pytest.approx(hold, abs=1e-5)
    assert [seq for seq, _ in _ledger(db)] == [1, 2, 3, 4, 5, 6]


def test_a_kill_switch_engaged_by_another_writer_withdraws_the_next_auto_decision(
    points_dir: Path, db: sa.Engine
) -> None:
    """Writer A knows the guard state as of its last commit; writer B engages the kill switch.
    A's next AUTO decision must not follow the kill event in the ledger as AUTO: on
    PostgreSQL `warden_append` refuses and A re-reads the state under the lock."""
    a = Engine(load_points(points_dir), db, actor="a")
    b = Engine(load_points(points_dir), db, actor="b")
    try:
        assert a.decide("loan_approval", APPLICATION).route == Route.AUTO  # state read
        paths = _Paths(a.recorder)
        assert a.decide("loan_approval", APPLICATION).route == Route.AUTO
        b.set_kill("loan_approval", True, actor="b", reason="test")
        after = a.decide("loan_approval", APPLICATION)
        assert after.route != Route.AUTO
        if db.dialect.name != "sqlite":
            assert paths.used == [IN_DATABASE, IN_DATABASE, UNDER_LOCK]  # refused, then read
        a.decide("loan_approval", APPLICATION)  # the state as of the lock is known again
        if db.dialect.name != "sqlite":
            assert paths.used[-1] == IN_DATABASE
    finally:
        a.close()
        b.close()
    report = verify_ledger(db, [])
    assert report.ok, report.to_dict()


AGENT_SWITCH = "agent:bot"


def _claim_if_allowed(asked: list[frozenset[str]]) -> Callable[[Change, GuardState], Any]:
    """A follower like a tool call's claim: written only for an AUTO decision while the
    agent's switch is released, as the guard state it is asked with says."""

    def follow(change: Change, guard: GuardState) -> Change | None:
        asked.append(guard.killed)
        decision = change.decision
        assert decision is not None
        if decision["route"] != "auto" or AGENT_SWITCH in guard.killed:
            return None
        return Change(
            events=[
                EventDraft(
                    "test.claim",
                    "a",
                    {"for": decision["id"]},
                    point=decision["point"],
                    decision_id=decision["id"],
                )
            ]
        )

    return follow


def test_a_follower_never_commits_after_a_switch_another_writer_engaged(
    points_dir: Path, db: sa.Engine
) -> None:
    """On PostgreSQL a decision with a follower goes through `warden_append` too, its follower
    asked with the state the writer last read. Writer B engages and releases an agent switch
    at random between A's decisions: in the one ledger, a claim follows its AUTO decision
    exactly when the switch was released at that point of the chain — never after the kill
    event — and every batch refused for a moved guard is written the other way, asked again."""
    a = Engine(load_points(points_dir), db, actor="a")
    b = Engine(load_points(points_dir), db, actor="b")
    chance = random.Random(7)
    asked: list[frozenset[str]] = []
    follow = _claim_if_allowed(asked)
    engaged = False
    try:
        a.decide("loan_approval", APPLICATION)  # the guard state is read
        paths = _Paths(a.recorder)
        for _ in range(24):
            if chance.random() < 0.35:
                engaged = not engaged
                b.write_kill_switch(AGENT_SWITCH, engaged, actor="b", reason="test")
            decision = asyncio.run(
                a.decide_async("loan_approval", APPLICATION, actor="a", follow=follow)
            )
            assert decision.route == Route.AUTO
    finally:
        a.close()
        b.close()
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.type, events.c.decision_id, events.c.actor, events.c.body).order_by(
                events.c.seq
            )
        ).all()
    switch_on = False
    decided: list[tuple[str, bool]] = []  # A's decisions, and the switch where each stands
    claimed: list[tuple[str, bool]] = []
    for type_, decision_id, actor, body in rows:
        if type_.startswith("kill_switch.") and AGENT_SWITCH in body:
            switch_on = type_ == "kill_switch.engaged"
        elif type_ == "decision.created" and actor == "a":
            decided.append((decision_id, switch_on))
        elif type_ == "test.claim":
            assert decided and decided[-1][0] == decision_id  # right behind its decision
            claimed.append((decision_id, switch_on))
    assert all(not on for _, on in claimed), "a claim committed after the switch's kill event"
    assert {d for d, _ in claimed} == {d for d, on in decided[1:] if not on}
    assert len(claimed) < len(decided) - 1  # the switch did stop some
    assert any(AGENT_SWITCH in killed for killed in asked)
    if db.dialect.name != "sqlite":
        assert paths.used.count(IN_DATABASE) >= 12  # followers ride in the one round trip
        assert UNDER_LOCK in paths.used  # a moved guard was refused and read again
    report = verify_ledger(db, [], projection=False)
    assert report.ok, report.to_dict()


def test_a_database_without_warden_append_is_written_the_other_way(db: sa.Engine) -> None:
    if db.dialect.name == "sqlite":
        pytest.skip("PostgreSQL only")
    with db.begin() as conn:
        conn.exec_driver_sql("DROP FUNCTION warden_append")
    recorder = Recorder(db)
    try:
        for n in range(3):
            recorder.record(Change(events=[_event(n)]))
        assert not recorder.append_in_database
    finally:
        recorder.close()
    assert [seq for seq, _ in _ledger(db)] == [1, 2, 3]


def test_two_writers_under_random_commit_faults_keep_one_chain(
    points_dir: Path, db: sa.Engine
) -> None:
    """Two writers (as two processes would) decide on one database while COMMITs fail before
    or after going through, at random: every acknowledged decision is stored and in the
    ledger once, retries with the same key return it, and the one chain verifies."""
    engines = [Engine(load_points(points_dir), db, actor=f"w{i}") for i in range(2)]
    chance = random.Random(11)
    installed = []
    for engine in engines:
        faults = Faults(db)
        faults.install(engine.recorder)
        faults.chooser = lambda: chance.choice([None, None, None, None, BEFORE, AFTER])
        installed.append(faults)
    answers: dict[str, list[Decision | Exception]] = {}
    lock = threading.Lock()

    def caller(worker: int) -> None:
        engine = engines[worker % 2]
        for n in range(10):
            key = f"w{worker}-{n}"
            for _ in range(3):
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
        thread.join(180)
    assert not any(t.is_alive() for t in threads), "a caller was never answered"
    for faults in installed:
        faults.chooser = None
    for engine in engines:
        engine.close()
    assert {BEFORE, AFTER} <= {m for f in installed for m in f.injected}
    check_acknowledged_once(db, answers)


def test_quotes_percent_signs_and_unicode_are_stored_exactly_on_either_path(
    points_dir: Path, db: sa.Engine
) -> None:
    """`warden_append` travels as one query string with its parameters bound into the text:
    what is read back must be what was decided, byte for byte."""
    engine = Engine(load_points(points_dir), db, actor="t")
    odd = "O'Brien %s %% \\ ü 🎉 $$ ; COMMIT"
    try:
        paths = _Paths(engine.recorder)
        made = [
            engine.decide("loan_approval", {**APPLICATION, "country": odd}, context={"n": odd})
            for _ in range(3)
        ]
        if db.dialect.name != "sqlite":
            assert IN_DATABASE in paths.used
        for decision in made:
            stored = engine.get(decision.id)
            assert stored.input["country"] == odd and stored.context == {"n": odd}
    finally:
        engine.close()
    report = verify_ledger(db, [])
    assert report.ok, report.to_dict()
