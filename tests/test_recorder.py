"""Group commit: atomic changes, isolation of a failing change, one hash chain."""

from __future__ import annotations

import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from warden.errors import Unavailable
from warden.ledger.chain import EventDraft, verify_rows
from warden.store.database import create_engine, migrate
from warden.store.recorder import Change, DuplicateKey, Recorder
from warden.store.schema import events, policies, tokens


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
    return EventDraft(type="test.event", actor="test", payload={"n": n, "x": [1.5, "é"]})


def test_batch_with_a_failing_change_commits_the_others(db: sa.Engine) -> None:
    recorder = Recorder(db)
    try:
        recorder.record(Change(events=[_event(0)], rows=[(tokens, _token_row("a"))]))
        # Queue several changes at once so they share a batch; one reuses the unique id.
        futures: list[Future[object]] = [
            recorder.submit(Change(events=[_event(i)], rows=[(tokens, _token_row(tid))]))
            for i, tid in enumerate(["b", "a", "c"], start=1)
        ]
        outcomes = []
        for future in futures:
            try:
                future.result(timeout=30)
                outcomes.append("ok")
            except DuplicateKey:
                outcomes.append("duplicate")
        assert outcomes == ["ok", "duplicate", "ok"]
        with db.connect() as conn:
            ids = set(conn.execute(sa.select(tokens.c.id)).scalars())
            rows = [
                dict(r) for r in conn.execute(sa.select(events).order_by(events.c.seq)).mappings()
            ]
        assert ids == {"a", "b", "c"}
        assert [r["body"].count('"n":') for r in rows] == [1, 1, 1]
        assert len(rows) == 3 and verify_rows(rows) is None
    finally:
        recorder.close()


def test_rows_and_apply_in_one_batch(db: sa.Engine) -> None:
    recorder = Recorder(db)
    policy = {
        "point": "p",
        "version": "v1",
        "owner": "o",
        "content": {"a": 1},
        "source": "s",
        "loaded_by": "t",
        "first_loaded_at": datetime.now(UTC),
    }
    try:
        recorder.record(
            Change(
                events=[_event(1)],
                rows=[(policies, policy)],
                apply=lambda conn: conn.execute(tokens.insert().values(**_token_row("z"))),
            )
        )
        with db.connect() as conn:
            stored = conn.execute(sa.select(policies)).mappings().one()
            assert stored["content"] == {"a": 1}
            assert conn.execute(sa.select(tokens.c.id)).scalar_one() == "z"
    finally:
        recorder.close()


def test_closed_recorder_refuses(db: sa.Engine) -> None:
    recorder = Recorder(db)
    recorder.close()
    with pytest.raises(Unavailable, match="shutting down"):
        recorder.record(Change(events=[_event(1)]))


def test_sqlite_log_is_checkpointed_by_the_recorder_not_inside_commits(tmp_path: Path) -> None:
    """Commits never fold the write-ahead log into the database file themselves (that would
    stall every decision queued behind one commit); the recorder's checkpointer does it."""
    db = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(db)
    with db.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    main_file = tmp_path / "w.db"
    before = main_file.stat().st_size
    recorder = Recorder(db)
    try:
        payload = {"blob": "x" * 2000}
        futures = [
            recorder.submit(Change(events=[EventDraft("test.event", "t", payload)]))
            for _ in range(500)
        ]
        for future in futures:
            future.result(30)
        deadline = time.monotonic() + 10
        while main_file.stat().st_size <= before + 500_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main_file.stat().st_size > before + 500_000  # the events reached the file
    finally:
        recorder.close()
    with db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 500


def test_riders_are_committed_with_the_next_change_or_alone_when_idle(db: sa.Engine) -> None:
    recorder = Recorder(db)
    try:
        recorder.ride(tokens, [_token_row("r1"), _token_row("r2")])
        assert recorder.riding == 2
        recorder.record(Change(events=[_event(1)]))  # carries them along
        assert recorder.riding == 0
        recorder.ride(tokens, [_token_row("r3")])  # nothing else comes: committed alone
        deadline = time.monotonic() + 10
        while recorder.riding and time.monotonic() < deadline:
            time.sleep(0.02)
        assert recorder.riding == 0
    finally:
        recorder.close()
    with db.connect() as conn:
        ids = conn.execute(sa.select(tokens.c.id).order_by(tokens.c.id)).scalars().all()
    assert ids == ["r1", "r2", "r3"]
