"""Many reviewers claiming at once, across replicas: no task is ever claimed twice."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.reviewing import REVIEW_INPUT, review_points, reviewer
from warden.engine import Engine
from warden.errors import Conflict, NotFound
from warden.policy.loader import load_points
from warden.review.desk import ReviewDesk
from warden.store.database import create_engine
from warden.store.schema import events

TASKS = 12
CLAIMERS = 24


@pytest.fixture
def replicas(tmp_path: Path, db_url: str, db: sa.Engine) -> Iterator[list[Engine]]:
    """Two engines with their own connections and writers, like two API replicas."""
    points = load_points(review_points(tmp_path / "points"))
    engines = [Engine(points, db, actor="test"), Engine(points, create_engine(db_url), actor="t2")]
    yield engines
    for engine in engines:
        engine.close()
    engines[1].db.dispose()


def _run(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_claim_next_never_hands_a_task_to_two_reviewers(replicas: list[Engine]) -> None:
    ids = {replicas[0].decide("loan_approval", REVIEW_INPUT, actor="c").id for _ in range(TASKS)}
    desks = [ReviewDesk(engine) for engine in replicas]
    principals = [reviewer(replicas[0], f"r{i}")[1] for i in range(CLAIMERS)]
    claimed: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(CLAIMERS)

    def work(i: int) -> None:
        start.wait()
        try:
            task = desks[i % 2].claim_next(principals[i])
            claimed.append(task.decision_id)
        except NotFound:
            pass
        except BaseException as exc:  # anything else is a bug
            errors.append(exc)

    _run([threading.Thread(target=work, args=(i,)) for i in range(CLAIMERS)])
    assert errors == []
    counts = Counter(claimed)
    assert set(counts) == ids and max(counts.values()) == 1
    with replicas[0].db.connect() as conn:
        claim_events = conn.execute(
            sa.select(events.c.decision_id).where(events.c.type == "review.claimed")
        ).scalars()
        assert Counter(claim_events) == Counter(dict.fromkeys(ids, 1))


def test_one_task_many_claimers_exactly_one_wins(replicas: list[Engine]) -> None:
    decision = replicas[0].decide("loan_approval", REVIEW_INPUT, actor="c")
    desks = [ReviewDesk(engine) for engine in replicas]
    principals = [reviewer(replicas[0], f"s{i}")[1] for i in range(16)]
    winners: list[str] = []
    losers: list[str] = []
    start = threading.Barrier(len(principals))

    def work(i: int) -> None:
        start.wait()
        try:
            winners.append(desks[i % 2].claim(principals[i], decision.id).claimed_by or "")
        except Conflict as exc:
            losers.append(exc.message)

    _run([threading.Thread(target=work, args=(i,)) for i in range(len(principals))])
    assert len(winners) == 1 and len(losers) == len(principals) - 1
    assert desks[0].task(decision.id).claimed_by == winners[0]
