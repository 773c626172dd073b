"""The state projection checked in shares, and in processes beside the chain pass, finds exactly
what the whole check in one process finds, in the same snapshot.

A small ledger of decisions of every route is made on each backend; each test changes rows the
way someone with database access would and compares the shared check with the whole one.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import warden
from tests.reviewing import AUTO_INPUT, REVIEW_INPUT
from warden.engine import Engine
from warden.ledger import statepass
from warden.ledger.folds import DECISION_COLUMNS
from warden.ledger.projection import WHOLE, Part, StateReport, merged, verify_state
from warden.ledger.statepass import StateJob, shared_snapshot, split
from warden.ledger.verify import snapshot, verify_ledger
from warden.store.schema import decisions, review_tasks

examples = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


@pytest.fixture
def ledger(engine: Engine) -> Iterator[list[str]]:
    """Decision ids in id order: auto, refused and review decisions, one with ground truth."""
    made = []
    for i in range(12):
        if i % 4 == 1:
            made.append(engine.decide("loan_approval", {**REVIEW_INPUT, "amount": 90000 + i}).id)
        elif i % 4 == 2:
            made.append(engine.decide("loan_approval", {**AUTO_INPUT, "country": "XX"}).id)
        else:
            made.append(engine.decide("loan_approval", {**AUTO_INPUT, "amount": 1000 + i}).id)
    engine.record_ground_truth(made[0], "approve", actor="test")
    yield sorted(made)


def _found(report: StateReport) -> list[tuple[Any, ...]]:
    return [
        (d.kind, d.table, d.key, d.column, d.stored, d.implied, d.seq) for d in report.disagreements
    ]


def _tamper(conn: sa.Connection, ids: list[str], how: str, at: int) -> None:
    target = ids[at % len(ids)]
    if how == "outcome":
        conn.execute(decisions.update().where(decisions.c.id == target).values(outcome="x"))
    elif how == "input":
        conn.execute(decisions.update().where(decisions.c.id == target).values(input={"a": 1}))
    elif how == "delete":
        conn.execute(decisions.delete().where(decisions.c.id == target))
    elif how == "task":
        row = conn.execute(sa.select(review_tasks)).mappings().first()
        assert row is not None
        forged = f"{target[:-6]}f0f0f0"  # an id of the same shape that no decision has
        conn.execute(review_tasks.insert().values({**row, "decision_id": forged}))
    else:
        conn.execute(
            decisions.update().where(decisions.c.id == target).values(created_at=sa.func.now())
        )


@examples
@given(
    parts=st.integers(1, 4),
    changes=st.lists(
        st.tuples(
            st.sampled_from(["outcome", "input", "delete", "task", "time"]), st.integers(0, 11)
        ),
        max_size=3,
        unique=True,
    ),
)
def test_shares_find_what_the_whole_check_finds(
    db: sa.Engine, ledger: list[str], parts: int, changes: list[tuple[str, int]]
) -> None:
    with db.connect() as conn, conn.begin() as tx:
        for how, at in changes:
            _tamper(conn, ledger, how, at)
        whole = verify_state(conn, db.dialect.name)
        shares = split(conn, parts)
        shared = merged([verify_state(conn, db.dialect.name, part) for part in shares])
        tx.rollback()
    assert [p.small for p in shares].count(True) == 1
    assert shares[0].low is None and shares[-1].high is None
    assert all(a.high == b.low for a, b in itertools.pairwise(shares))
    assert _found(shared) == _found(whole)
    assert (shared.count, shared.rows, shared.unchecked) == (
        whole.count,
        whole.rows,
        whole.unchecked,
    )
    assert shared.ok == (not changes)


def test_a_range_of_ids_holds_only_its_decisions(db: sa.Engine, ledger: list[str]) -> None:
    part = Part(ledger[3], ledger[7], small=False)
    with snapshot(db) as conn:
        report = verify_state(conn, db.dialect.name, part)
    assert report.ok and report.rows["decisions"] == 4 and "tokens" not in report.rows


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    projection = {k: v for k, v in report["projection"].items() if k != "seconds"}
    return {**{k: v for k, v in report.items() if k != "seconds"}, "projection": projection}


@pytest.mark.parametrize("how", ["none", "outcome", "delete", "task"])
def test_verify_in_processes_reports_what_verify_in_one_does(
    db: sa.Engine, ledger: list[str], how: str
) -> None:
    if how != "none":
        with db.begin() as conn:
            _tamper(conn, ledger, how, 9)
    alone = verify_ledger(db, [], parallel=False)
    beside = verify_ledger(db, [], parallel=True)
    assert _comparable(beside.to_dict()) == _comparable(alone.to_dict())
    assert beside.ok == (how == "none")
    assert set(beside.phases) == {"chain", "merkle", "checkpoints", "state"}


def test_children_read_the_snapshot_they_were_given(db: sa.Engine, ledger: list[str]) -> None:
    """A change committed after the snapshot began is seen by neither the parent nor a child."""
    with db.connect() as conn:
        jobs = [StateJob(db, part) for part in split(conn, 2)]
    try:
        with shared_snapshot(db, jobs) as conn:
            with db.begin() as other:
                _tamper(other, ledger, "outcome", 2)
                _tamper(other, ledger, "outcome", 10)
            report = merged([job.result() for job in jobs])
            mine = verify_state(conn, db.dialect.name)
    finally:
        for job in jobs:
            job.close()
    assert report.ok and mine.ok, report.disagreements
    assert not verify_ledger(db, [], parallel=True).ok  # and a new check sees them


def test_a_postgresql_child_adopts_the_exported_snapshot(db: sa.Engine, ledger: list[str]) -> None:
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite children begin under the parent's write lock instead")
    job = StateJob(db, WHOLE)
    try:
        with db.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                token = conn.exec_driver_sql("SELECT pg_catalog.pg_export_snapshot()").scalar()
                with db.begin() as other:  # committed before the child begins
                    _tamper(other, ledger, "delete", 4)
                job.begin(str(token))
                report = job.result()
    finally:
        job.close()
    assert report.ok and report.rows["decisions"] == len(ledger)


def test_a_child_that_dies_leaves_its_share_to_the_parent(
    db: sa.Engine, ledger: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.begin() as conn:
        _tamper(conn, ledger, "outcome", 0)
        _tamper(conn, ledger, "outcome", 11)
    begin = StateJob.begin

    def killed(job: StateJob, token: str | None) -> None:
        job._process.kill()
        job._process.wait()
        begin(job, token)

    monkeypatch.setattr(StateJob, "begin", killed)
    report = verify_ledger(db, [], parallel=True)
    assert report.projection is not None and report.projection.count == 2
    keys = [d.key["id"] for d in report.projection.disagreements]
    assert keys == [ledger[0], ledger[11]]


def test_only_a_database_another_process_can_open_is_shared(db: sa.Engine) -> None:
    assert statepass.can_share(db)
    assert not statepass.can_share(sa.create_engine("sqlite://"))
    assert not statepass.can_share(sa.create_engine("sqlite:///:memory:"))


@pytest.mark.parametrize("column", [c for c in DECISION_COLUMNS if c != "id"])
def test_any_column_of_a_decision_made_by_one_event_is_checked(
    db: sa.Engine, ledger: list[str], column: str
) -> None:
    """Decisions made by one event take the short lane (the row written as its event would be
    is compared with the body): a change to any of their columns is still named."""
    with db.connect() as conn, conn.begin() as tx:
        single = conn.execute(
            sa.select(decisions.c.id, decisions.c[column])
            .where(decisions.c.route == "auto", decisions.c.ground_truth.is_(None))
            .limit(1)
        ).one()
        kind = decisions.c[column].type
        value: Any = "x"
        if isinstance(kind, sa.DateTime):
            value = datetime(2030, 1, 1, tzinfo=UTC)
        elif isinstance(kind, sa.Float):
            value = (single[1] or 0.0) + 0.5
        elif isinstance(kind, sa.JSON):
            value = {"tampered": True}
        conn.execute(decisions.update().where(decisions.c.id == single[0]).values({column: value}))
        report = verify_state(conn, db.dialect.name)
        tx.rollback()
    found = [(d.kind, d.key, d.column) for d in report.disagreements]
    assert found == [("changed", {"id": single[0]}, column)]


def test_a_state_check_process_does_not_load_the_engine() -> None:
    """The SDK is imported when first asked for: a state-check process starts without it."""
    code = (
        "import sys, warden.ledger.statepass; print('warden.engine' in sys.modules); "
        "from warden import Warden; print(Warden.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "Warden"]
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = warden.Nothing  # type: ignore[attr-defined]
