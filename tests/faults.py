"""Faults for the writer's DBAPI connection: fail a statement, or a COMMIT before or after it
went through — the moments a database, a lock or a network can fail a transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from warden.store.recorder import Recorder

BEFORE = "before"  # COMMIT never reaches the database: nothing committed
AFTER = "after"  # COMMIT went through, the answer is lost: committed, the writer cannot tell


class Faults:
    """What fails next. `commits` and `statements` are consumed one fault per COMMIT/statement;
    `chooser` (if set) picks a fault for every COMMIT instead, e.g. at random."""

    def __init__(self, db: sa.Engine) -> None:
        self.error: type[Exception] = db.dialect.loaded_dbapi.OperationalError
        self.commits: list[str | None] = []
        self.statements = 0  # how many of the next statements fail before they run
        self.chooser: Callable[[], str | None] | None = None
        self.injected: list[str] = []
        self._lock = threading.Lock()

    def install(self, recorder: Recorder) -> None:
        """Wrap every DBAPI connection the recorder's writer opens from now on."""
        real = recorder._raw_connection

        def faulty() -> Any:
            conn = real()
            return conn if isinstance(conn, _Connection) else _Connection(conn, self)

        recorder._raw_connection = faulty  # type: ignore[method-assign]

    def commit(self, run: Callable[[], Any]) -> Any:
        with self._lock:
            moment = (
                self.chooser() if self.chooser else (self.commits.pop(0) if self.commits else None)
            )
            if moment:
                self.injected.append(moment)
        if moment == BEFORE:
            raise self.error("injected: the connection broke before COMMIT")
        result = run()
        if moment == AFTER:
            raise self.error("injected: the connection broke after COMMIT")
        return result

    def statement(self, sql: str) -> None:
        with self._lock:
            if self.statements <= 0 or sql.upper().startswith(("BEGIN", "ROLLBACK")):
                return
            self.statements -= 1
            self.injected.append("statement")
        raise self.error("injected: database is locked")


class _Connection:
    def __init__(self, real: Any, faults: Faults) -> None:
        self._real = real
        self._faults = faults

    def cursor(self) -> _Cursor:
        return _Cursor(self._real.cursor(), self._faults)

    def commit(self) -> Any:
        return self._faults.commit(self._real.commit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Cursor:
    def __init__(self, real: Any, faults: Faults) -> None:
        self._real = real
        self._faults = faults

    def execute(self, sql: str, *args: Any) -> Any:
        text = sql.strip().upper()
        if text == "COMMIT" or ";\nCOMMIT;" in text or text.endswith(";\nCOMMIT"):  # or a script's
            return self._faults.commit(lambda: self._real.execute(sql, *args))
        self._faults.statement(sql)
        return self._real.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._faults.statement(sql)
        return self._real.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def check_acknowledged_once(db: sa.Engine, answers: dict[str, list[Any]]) -> None:
    """After faults: every decision a caller was given is stored under its key and in the
    ledger; no decision or event exists twice; one decision per key; the errors callers got
    are `Unavailable` (retry); the shipped `verify_ledger` passes."""
    from warden.decision import Decision
    from warden.errors import Unavailable
    from warden.ledger.verify import verify_ledger
    from warden.store.schema import decisions, events

    with db.connect() as conn:
        stored = dict(conn.execute(sa.select(decisions.c.id, decisions.c.idempotency_key)).all())
        logged = (
            conn.execute(sa.select(events.c.decision_id).where(events.c.type == "decision.created"))
            .scalars()
            .all()
        )
    assert len(logged) == len(set(logged)) == len(stored)  # no decision or event twice
    assert set(logged) == set(stored)
    assert len(set(stored.values())) == len(stored)  # one decision per key
    for key, outcomes in answers.items():
        errors = [o for o in outcomes if not isinstance(o, Decision)]
        assert all(isinstance(e, Unavailable) for e in errors), errors
        for decision in outcomes:
            if isinstance(decision, Decision):
                assert stored.get(decision.id) == key, (key, decision.id)
    report = verify_ledger(db, [])
    assert report.ok, report.to_dict()
