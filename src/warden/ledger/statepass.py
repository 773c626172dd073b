"""The state projection checked in a second process, reading the chain pass's own snapshot.

The hash chain and the state projection are independent passes over the same rows; on a large
ledger each takes seconds of CPU, so `warden audit verify` runs them side by side on two cores.
Both must read one state of the database, or a row changed between the two reads could pass
both checks. On PostgreSQL the parent exports its snapshot and the child adopts it
(`SET TRANSACTION SNAPSHOT`, as `pg_dump --jobs` does). On SQLite the parent holds the write
lock (`BEGIN IMMEDIATE`) while both read transactions begin, for the milliseconds that takes:
no commit can fall between them, and writers wait rather than fail.

The child is a fresh interpreter (not a fork: the parent may run threads; not
`multiprocessing`: that re-imports the caller's main script) and connects before any lock is
taken; the two talk over a pair of pipes. If it cannot run, the caller checks the state itself, in its own snapshot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import warden
from warden.ledger.projection import WHOLE, Part, StateReport, verify_state
from warden.store.database import write_connection

PARALLEL_FROM = 50_000  # events: below this, starting a process costs more than it saves
_PATH = os.environ.get("PYTHONPATH", "")
_WAIT = 120.0  # seconds for the child to start, connect, or adopt the snapshot


class StateJobFailed(RuntimeError):
    """The second process could not check the state; the caller does it instead."""


def can_share(db: sa.Engine) -> bool:
    """Whether a second process can open the same database (not an in-memory SQLite)."""
    url = db.url
    if url.get_backend_name() == "postgresql":
        return True
    database = url.database or ""
    return (
        url.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and ("mode=memory" not in str(url.query))
    )


class StateJob:
    """`verify_state` (or the lanes above 0, see `verify.LanesPart`) in a child process, in the
    snapshot `begin` gives it."""

    def __init__(self, db: sa.Engine, part: Any = WHOLE) -> None:
        """`part`: a `Part` of the state check, or a `verify.LanesPart` of the lanes above 0."""
        self.dialect = db.dialect.name
        self.part = part
        self.failed: str | None = None
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        package = str(Path(warden.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package, _PATH]))}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(to_child), str(from_child)],
                pass_fds=(to_child, from_child),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        finally:
            os.close(to_child)
            os.close(from_child)
        self._pipe = _Duplex(
            Connection(to_parent, writable=False), Connection(from_parent, readable=False)
        )
        self._pipe.send(("url", (db.url.render_as_string(hide_password=False), part)))
        self._expect("connected")

    def begin(self, token: str | None) -> None:
        """Adopt the parent's snapshot: `token` from `pg_export_snapshot()` on PostgreSQL;
        on SQLite the parent holds the write lock while this returns. A child that cannot is
        marked failed: `result` then raises and the caller checks the state itself."""
        try:
            self._pipe.send(("begin", token))
            self._expect("ready")
        except (StateJobFailed, OSError) as exc:
            self.failed = str(exc)

    def result(self) -> StateReport:
        """What the child found: a `StateReport`, or a list of `LaneCheck` for a `LanesPart`."""
        if self.failed is not None:
            raise StateJobFailed(self.failed)
        return self._expect("done", wait=None)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(5)
        self._pipe.close()

    def _expect(self, what: str, wait: float | None = _WAIT) -> Any:
        try:
            while not self._pipe.poll(1.0 if wait is None else min(wait, 1.0)):
                if self._process.poll() is not None:
                    raise StateJobFailed(f"the state check process ended ({self._exitcode()})")
                if wait is not None:
                    wait -= 1.0
                    if wait <= 0:
                        raise StateJobFailed(f"the state check process did not get {what}")
            kind, value = self._pipe.recv()
        except (EOFError, OSError) as exc:
            raise StateJobFailed(f"the state check process is gone: {exc}") from exc
        if kind == "error":
            raise StateJobFailed(f"the state check process failed:\n{value}")
        if kind != what:
            raise StateJobFailed(f"the state check process said {kind}, not {what}")
        return value

    def _exitcode(self) -> str:
        return f"exit code {self._process.returncode}"


@contextmanager
def shared_snapshot(db: sa.Engine, jobs: Sequence[StateJob] = ()) -> Iterator[sa.Connection]:
    """A read snapshot for the caller, adopted by every job before any commit."""
    with db.connect() as conn:
        if db.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                if jobs:
                    token = conn.exec_driver_sql("SELECT pg_catalog.pg_export_snapshot()").scalar()
                    for job in jobs:
                        job.begin(str(token))
                yield conn
            return
        if not jobs:
            with conn.begin():
                yield conn
            return
        with write_connection(db) as lock:
            held = lock.begin()  # BEGIN IMMEDIATE: no commit until every read has begun
            try:
                transaction = conn.begin()
                conn.exec_driver_sql("SELECT seq FROM ledger_head").all()  # the read begins
                for job in jobs:
                    job.begin(None)
            finally:
                held.rollback()
        with transaction:
            yield conn


def split(conn: sa.Connection, parts: int) -> list[Part]:
    """`parts` ranges of decision ids with about as many decisions each: the ids of the
    decisions at even steps through the log (ids are made in time order; if some are not,
    the shares are uneven but still cover every id once)."""
    last = int(conn.exec_driver_sql("SELECT max(seq) FROM events").scalar() or 0)
    bounds: list[str] = []
    for step in range(1, parts):
        found = conn.execute(
            sa.text(
                "SELECT decision_id FROM events WHERE seq >= :at AND decision_id IS NOT NULL "
                "ORDER BY seq LIMIT 1"
            ),
            {"at": last * step // parts},
        ).scalar()
        if found is not None and (not bounds or str(found) > bounds[-1]):
            bounds.append(str(found))
    lows: list[str | None] = [None, *bounds]
    highs: list[str | None] = [*bounds, None]
    return [
        Part(low, high, small=i == 0) for i, (low, high) in enumerate(zip(lows, highs, strict=True))
    ]


class _Duplex:
    """Two one-way pipes as one connection."""

    def __init__(self, incoming: Connection, outgoing: Connection) -> None:
        self._in, self._out = incoming, outgoing

    def send(self, message: tuple[str, Any]) -> None:
        self._out.send(message)

    def recv(self) -> tuple[str, Any]:
        return self._in.recv()  # type: ignore[no-any-return]

    def poll(self, timeout: float) -> bool:
        return self._in.poll(timeout)

    def close(self) -> None:
        self._in.close()
        self._out.close()


def _child(pipe: _Duplex) -> None:
    try:
        from warden.store.database import create_engine

        _, (url, part) = pipe.recv()
        db = create_engine(url)
        try:
            with db.connect() as conn:
                if db.dialect.name == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                pipe.send(("connected", None))
                kind, token = pipe.recv()
                if kind != "begin":
                    return
                with conn.begin():
                    if token is not None:
                        conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{_quoted(token)}'")
                    conn.exec_driver_sql("SELECT seq FROM ledger_head").all()  # the read begins
                    pipe.send(("ready", None))
                    report = _work(conn, db.dialect.name, part)
            pipe.send(("done", report))
        finally:
            db.dispose()
    except BaseException:  # every failure goes back to the parent, which checks instead
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


def _work(conn: sa.Connection, dialect: str, part: Any) -> Any:
    """What the parent asked for: a share of the state check, or of the lanes above 0."""
    from warden.ledger.verify import LanesPart, verify_lanes_part

    if isinstance(part, LanesPart):
        return verify_lanes_part(conn, dialect, part)
    return verify_state(conn, dialect, part)


def _quoted(token: str) -> str:
    if not all(c.isalnum() or c == "-" for c in token):
        raise ValueError(f"unexpected snapshot id {token!r}")
    return token


if __name__ == "__main__":
    _child(
        _Duplex(
            Connection(int(sys.argv[1]), writable=False),
            Connection(int(sys.argv[2]), readable=False),
        )
    )
