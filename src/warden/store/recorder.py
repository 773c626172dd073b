"""Group commit: state rows and their ledger events, many changes per transaction.

Callers hand over a `Change` and wait on its future. One writer thread per process batches
whatever queued while the previous commit was in flight. Across processes the chain stays one
total order: every transaction reads and advances `ledger_head` under a lock (the row lock on
PostgreSQL, BEGIN IMMEDIATE on SQLite). Everything that does not depend on the head is done
before that lock is taken; what remains is `_append_in_database` (PostgreSQL: one message,
the lock taken and released inside the database) or `_append_under_head_lock` (docs/ledger.md,
"Writing").

The writer's contract: a caller is answered only with the outcome of a transaction that
committed, or with an error — never with what a transaction would have done.

- Bounded: `submit` refuses at once with `Unavailable` while `max_queue` changes wait, and a
  caller that stops waiting (`wait`) withdraws its change if the writer has not taken it yet, so
  a change whose caller was told "not recorded" is never committed later.
- A batch that fails before COMMIT rolled back. It is tried once more on a fresh connection
  when the database was unreachable or busy, else split so only the failing change fails; the
  answers are always the results of the transaction that did commit (a retry's own results).
- A batch whose COMMIT outcome is unknown (the connection broke during COMMIT) is never applied
  again blindly: the writer reads the ledger back under its lock — is the batch's last event
  there, with its hash (or, chained by the database, its bytes)? — and answers with the batch's results if it committed, writes it anew
  if it did not, and fails every caller with `Unavailable` if that cannot be known.
- A failure after COMMIT (the guard-state hook) is logged and counted; the commit stands.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa

from warden.errors import Unavailable
from warden.ledger.chain import EventDraft, PreparedEvent, SealedEvent, prepare, seal_prepared
from warden.ledger.lanes import CONTROL, head_id, lane_count, lane_of
from warden.monitor.metrics import (
    LEDGER_LOCK_HOLD,
    SHADOW_DROPPED,
    WRITER_CHANGES,
    WRITER_COMMITS,
    WRITER_ERRORS,
    WRITER_SECONDS,
    WRITES_REFUSED,
)
from warden.store.database import write_connection
from warden.store.rawsql import RawStatements
from warden.store.schema import decisions, events, ledger_head
from warden.store.walcheckpoint import WalCheckpointer

log = logging.getLogger(__name__)

GLOBAL_SCOPE = "*"
MAX_QUEUE = 10_000  # changes waiting for the writer before more are refused (503)
MAX_RIDERS = 10_000  # shadow rows waiting to ride along before more are dropped
ACCEPT_TIMEOUT = 30.0  # seconds a change may queue before its caller withdraws it
RESOLVE_TIMEOUT = 10.0  # seconds to read back a commit whose outcome is unknown
RETRIES = 1  # new transactions for a batch that did not commit (busy or lost database)
RETRY_PAUSE = 0.05  # seconds before such a retry
LINGER = 0.0005  # seconds the writer waits for the next change of a burst (WARDEN_WRITER_LINGER_MS)


@dataclass(frozen=True)
class GuardState:
    """What may withdraw authority from a decision, as of the ledger head."""

    killed: frozenset[str] = frozenset()
    rollouts: frozenset[tuple[str, str, str, str, int]] = (
        frozenset()
    )  # id, point, mode, state, step
    aliases: frozenset[tuple[str, str, str]] = frozenset()  # (point, alias, version)
    policies: frozenset[tuple[str, str]] = frozenset()  # (point, live policy version)

    def with_kill(self, scope: str, engaged: bool) -> GuardState:
        killed = self.killed | {scope} if engaged else self.killed - {scope}
        return GuardState(killed, self.rollouts, self.aliases, self.policies)

    def without_rollout(self, rollout_id: str) -> GuardState:
        rollouts = frozenset(r for r in self.rollouts if r[0] != rollout_id)
        return GuardState(self.killed, rollouts, self.aliases, self.policies)

    def canary_active(self, rollout_id: str) -> bool:
        return any(r[0] == rollout_id and r[2] == "canary" for r in self.rollouts)

    def is_killed(self, point: str) -> bool:
        return is_killed(self.killed, point)


def is_killed(killed: frozenset[str], point: str) -> bool:
    """Whether the point's own or the global kill switch is among the engaged ones."""
    return bool(killed) and (GLOBAL_SCOPE in killed or point in killed)


@dataclass(eq=False)
class Change:
    """One atomic unit: optional decision row, optional other writes, and the events for them.

    `rows` are plain inserts into other tables (e.g. a review task beside its decision); they
    stay on the fast path. `apply` is for anything else and runs through SQLAlchemy.
    `revoke` lets the writer re-route an AUTO decision whose authority was withdrawn between
    routing and commit — the point's kill switch went on (`kill_switch`), or the canary whose
    challenger made it stopped (`rollout_stopped`). Both are checked again inside the ledger
    lock, so no such AUTO decision ever follows the kill or abort event in the ledger.
    `guard_update` tells the rest of the batch about a change this one makes to that state.
    `follow` is asked, after any revoke, with the guard state as of the commit, for a change
    to commit right after this one in its transaction (or None): what an AUTO decision
    authorises, e.g. the claim of the tool call it lets run, costs no commit of its own and
    sees switches engaged up to the commit. The state is the one read under the ledger lock,
    or on PostgreSQL the one last read, which `warden_append` refuses when a guard event
    came after it (the batch is then written under the lock and `follow` asked again). It is
    asked again on every attempt, so it must only read the change, not alter it.
    """

    events: list[EventDraft]
    decision: dict[str, Any] | None = None
    apply: Callable[[sa.Connection], Any] | None = None
    revoke: Callable[[Change, str], None] | None = None
    variant: str | None = None  # the canary rollout whose challenger made this decision
    guard_update: Callable[[GuardState], GuardState] | None = None
    follow: Callable[[Change, GuardState], Change | None] | None = None
    rows: list[tuple[sa.Table, dict[str, Any]]] = field(default_factory=list)
    future: Future[Any] = field(default_factory=Future)


class Recorder:
    """The single writer of a process."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_batch: int = 1024,
        linger: float = LINGER,
        on_guard_state: Callable[[GuardState], None] | None = None,
        max_queue: int = MAX_QUEUE,
        max_riders: int = MAX_RIDERS,
        accept_timeout: float = ACCEPT_TIMEOUT,
        resolve_timeout: float = RESOLVE_TIMEOUT,
    ) -> None:
        """`max_queue`: changes that may wait for the writer before `submit` refuses more;
        `max_riders`: shadow rows that may wait to ride along before more are dropped;
        `accept_timeout`: how long `wait` lets a change queue before withdrawing it;
        `resolve_timeout`: how long the writer tries to read back a commit of unknown outcome."""
        self.engine = engine
        self.max_batch = max_batch
        self.linger = linger
        self.on_guard_state = on_guard_state
        self.max_queue = max_queue
        self.max_riders = max_riders
        self.accept_timeout = accept_timeout
        self.resolve_timeout = resolve_timeout
        self._queue: queue.SimpleQueue[Change | None] = queue.SimpleQueue()
        self._queued = 0  # changes submitted and not yet taken by the writer
        self._queued_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="warden-recorder", daemon=True)
        self._closed = False
        self._sql = RawStatements.for_dialect(engine.dialect.name)
        dbapi = engine.dialect.loaded_dbapi
        self._dbapi_integrity_error: type[Exception] = dbapi.IntegrityError
        self._unreachable: tuple[type[Exception], ...] = (
            sa.exc.OperationalError,
            sa.exc.InterfaceError,
            sa.exc.DisconnectionError,
            sa.exc.TimeoutError,
            dbapi.OperationalError,
            dbapi.InterfaceError,
            OSError,
        )
        self._raw: Any = None
        self._core: sa.Connection | None = None
        self._wal = WalCheckpointer(engine) if self._sql.sqlite else None
        self._riders: list[tuple[sa.Table, dict[str, Any]]] = []
        self._riders_since = 0.0
        self._riders_committing = 0
        self._riders_lock = threading.Lock()
        self._lanes = 0  # the ledger's lanes, read at the first write
        # How long each commit held the ledger head lock; a benchmark may keep raw samples.
        self.observe_lock_hold: Callable[[float], None] = LEDGER_LOCK_HOLD.observe
        # A benchmark's question: of each hold in the database, how long the append took and
        # how long COMMIT (its WAL flush) took. Costs a statement under the lock, so off.
        self.observe_hold_parts: Callable[[float, float], None] | None = None
        self._clock = _WriterClock()
        # PostgreSQL chains in the database, in one round trip (migration 0011).
        self.append_in_database = not self._sql.sqlite
        self._guard_seen: tuple[int, GuardState] | None = None  # as of that event
        self._thread.start()

    @property
    def queued(self) -> int:
        """Changes waiting for the writer to take them."""
        return self._queued

    def submit(self, change: Change) -> Future[Any]:
        """Queue a change; its future fails at once with `Unavailable` when the queue is full."""
        if self._closed:
            change.future.set_exception(
                Unavailable("Warden is shutting down; the change was not recorded, retry")
            )
            return change.future
        with self._queued_lock:
            full = self._queued >= self.max_queue
            if not full:
                self._queued += 1
        if full:
            WRITES_REFUSED.labels("queue_full").inc()
            change.future.set_exception(
                Unavailable(
                    f"the write queue is full ({self.max_queue} changes wait for the "
                    "database); nothing was recorded, retry after a moment"
                )
            )
            return change.future
        self._queue.put(change)
        return change.future

    def submit_many(self, changes: Sequence[Change]) -> list[Future[Any]]:
        """Queue changes all or none: a batch is not half refused for a full queue."""
        if self._closed:
            return [self.submit(change) for change in changes]  # each refused: closed
        with self._queued_lock:
            room = self._queued + len(changes) <= self.max_queue
            if room:
                self._queued += len(changes)
        if not room:
            WRITES_REFUSED.labels("queue_full").inc(len(changes))
            error = Unavailable(
                f"the write queue has no room for {len(changes)} changes (it holds at most "
                f"{self.max_queue}); nothing was recorded, retry after a moment"
            )
            for change in changes:
                change.future.set_exception(error)
        else:
            for change in changes:
                self._queue.put(change)
        return [change.future for change in changes]

    def wait(self, future: Future[Any], timeout: float | None = None) -> Any:
        """The committed result of a submitted change, or its error.

        If the writer has not taken the change within `timeout` seconds (default
        `accept_timeout`), it is withdrawn — it will never be committed — and `Unavailable` is
        raised. A change already taken is waited for: the writer answers every change it
        takes, once the outcome of its transaction is known.
        """
        limit = self.accept_timeout if timeout is None else timeout
        futures.wait([future], timeout=limit)
        if not future.done() and future.cancel():
            WRITES_REFUSED.labels("gave_up").inc()
            raise Unavailable(
                f"the database did not take the change within {limit:g}s; it was withdrawn "
                "and will not be recorded, retry after a moment"
            )
        return future.result()

    def record(self, change: Change, timeout: float | None = None) -> Any:
        """Submit and wait until committed; returns what `apply` returned (or the decision row)."""
        return self.wait(self.submit(change), timeout)

    def ride(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Rows nobody waits for (shadow results): they ride along, a few at a time, in the
        commits that decisions make anyway, instead of committing — and syncing to disk — on
        their own while a decision waits behind them. With no decisions flowing they are
        committed alone after `RIDER_WAIT` seconds. At most `max_riders` wait: more are dropped
        and counted (`warden_shadow_results_dropped_total`). Lost in a crash before that, like
        anything not yet committed; nothing acknowledged rides."""
        with self._riders_lock:
            first = not self._riders
            room = max(0, self.max_riders - len(self._riders))
            if first and room:
                self._riders_since = time.monotonic()
            self._riders.extend((table, row) for row in rows[:room])
        if len(rows) > room:
            SHADOW_DROPPED.inc(len(rows) - room)
        if first and room:
            self._queue.put(_WAKE)  # an idle writer waits without a deadline; give it one

    @property
    def riding(self) -> int:
        """How many rows are waiting to ride along, or riding in a commit not yet done."""
        with self._riders_lock:
            return len(self._riders) + self._riders_committing

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._refuse_queued()
            if self._raw is not None:
                self._raw.close()
                self._raw = None
            self._drop_core_connection()
            if self._wal is not None:
                self._wal.close()

    def _refuse_queued(self) -> None:
        """Changes still queued at close are answered: not recorded."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item is not _WAKE and self._take(item):
                item.future.set_exception(Unavailable("Warden shut down; not recorded, retry"))

    def _take(self, change: Change) -> bool:
        """The writer takes a change off the queue; False if its caller withdrew it."""
        with self._queued_lock:
            self._queued -= 1
        return change.future.set_running_or_notify_cancel()

    def _run(self) -> None:
        previous = 0
        while True:
            try:
                first = self._queue.get(timeout=self._rider_wait())
                self._clock.lap("idle")
            except queue.Empty:  # riders are due and no decision came to carry them
                self._clock.lap("idle")
                self._commit_riders()
                self._clock.lap("answer")
                continue
            if first is _WAKE:
                continue
            if first is None:
                self._commit_riders()
                return
            if not self._take(first):
                continue
            batch = [first]
            stop = False
            # Under concurrent load callers return in a burst after each commit; waiting a
            # moment for the burst to arrive fills the next batch instead of committing (and
            # syncing to disk) its first change alone. With a lone caller there is no wait.
            linger = self.linger if previous > 1 else 0.0
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=linger) if linger else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if item is not _WAKE and self._take(item):
                    batch.append(item)
            previous = len(batch)
            if self._riders:
                batch.append(self._riders_change(RIDERS_PER_COMMIT))
            self._clock.lap("gather")
            self._commit(batch)
            self._clock.lap("answer")
            if stop:
                self._commit_riders()
                return

    def _commit_riders(self) -> None:
        """Every waiting rider, in a commit of its own."""
        if self._riders:
            self._commit([self._riders_change(len(self._riders))])

    def _rider_wait(self) -> float | None:
        with self._riders_lock:
            if not self._riders:
                return None
            return max(0.0, self._riders_since + RIDER_WAIT - time.monotonic())

    def _riders_change(self, limit: int) -> Change:
        with self._riders_lock:
            rows, self._riders = self._riders[:limit], self._riders[limit:]
            self._riders_since = time.monotonic()
            self._riders_committing = len(rows)  # until the writer's next _commit returns
        change = Change(events=[], rows=rows)
        change.future.set_running_or_notify_cancel()
        return change

    def _commit(self, batch: list[Change]) -> None:
        try:
            self._commit_batch(batch)
        finally:
            with self._riders_lock:
                self._riders_committing = 0

    def _commit_batch(self, batch: list[Change], attempt: int = 0) -> None:
        """Commit the batch and answer every change in it (see the contract above)."""
        try:
            results = self._write(batch)
        except _CommitUnknown as unknown:
            self._resolve(batch, unknown, attempt)
            return
        except Unavailable as exc:  # rolled back: the database was unreachable or busy
            if attempt < RETRIES and not self._closed:
                log.warning("a write failed (%s); trying again on a new connection", exc.message)
                time.sleep(RETRY_PAUSE)
                self._commit_batch(batch, attempt + 1)
            else:
                WRITES_REFUSED.labels("unavailable").inc(len(batch))
                self._fail(batch, exc)
            return
        except Exception as exc:  # rolled back: one of the changes is at fault
            if len(batch) > 1:
                for change in batch:  # isolate the change that failed; the others still commit
                    self._commit_batch([change], attempt)
            else:
                log.debug("change failed", exc_info=True)
                self._fail(batch, exc)
            return
        self._answer(batch, results)

    def _answer(self, batch: Sequence[Change], results: Sequence[Any]) -> None:
        """Answer each change with what its committed transaction returned."""
        if self._riders_committing:
            with self._riders_lock:
                self._riders_committing = 0  # committed: before anyone waiting is told
        for change, result in zip(batch, results, strict=True):
            if isinstance(result, DuplicateKey):
                _settle(change.future, error=result)
            else:
                _settle(change.future, result=result)

    def _fail(self, batch: Sequence[Change], error: BaseException) -> None:
        if any(not change.events and change.decision is None for change in batch):
            lost = sum(len(c.rows) for c in batch if not c.events and c.decision is None)
            SHADOW_DROPPED.inc(lost)
        for change in batch:
            _settle(change.future, error=error)

    def _resolve(self, batch: list[Change], unknown: _CommitUnknown, attempt: int) -> None:
        """A COMMIT whose outcome is unknown: read the ledger back instead of re-applying."""
        log.warning("the outcome of a commit is unknown (%s); reading it back", unknown.cause)
        committed = self._read_back(unknown)
        if committed:
            self._after_commit(unknown.guard)
            self._answer(batch, unknown.results)
        elif committed is None:
            WRITES_REFUSED.labels("outcome_unknown").inc(len(batch))
            self._fail(
                batch,
                Unavailable(
                    "the database failed while committing and could not be read back, so "
                    "whether this change was recorded is unknown; retry with the same "
                    "Idempotency-Key, which returns the decision if it was"
                ),
            )
        elif attempt < RETRIES and not self._closed:
            self._commit_batch(batch, attempt + 1)  # known not committed: a new transaction
        else:
            WRITES_REFUSED.labels("unavailable").inc(len(batch))
            self._fail(batch, Unavailable("the database failed while committing; not recorded"))

    def _read_back(self, unknown: _CommitUnknown) -> bool | None:
        """Whether the batch committed: its last event is in the ledger. None when that cannot
        be known (no event to look for, or no answer in time)."""
        if unknown.seq is None and unknown.locate is None:
            return None
        deadline = time.monotonic() + self.resolve_timeout
        pause = 0.05
        while True:
            try:
                return self._committed(unknown)
            except Exception:
                WRITER_ERRORS.labels("read_back").inc()
                log.debug("reading back a commit failed", exc_info=True)
                if time.monotonic() + pause > deadline or self._closed:
                    return None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _committed(self, unknown: _CommitUnknown) -> bool:
        # Under the ledger lock: a COMMIT still in flight on the broken connection finishes
        # (or is rolled back) before the lock is granted, so the answer cannot change later.
        with write_connection(self.engine) as conn, conn.begin():
            if not self._sql.sqlite:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            conn.execute(
                sa.select(ledger_head.c.seq)
                .where(ledger_head.c.id == head_id(unknown.lane))
                .with_for_update()
            )
            if unknown.locate is not None:
                # Chained by the database: the event's place is unknown, its bytes around
                # the sequence number are not — and the number is in the body.
                floor, last = unknown.locate
                found = conn.execute(
                    sa.select(events.c.seq, events.c.body).where(
                        events.c.lane == last.lane,
                        events.c.seq > floor,
                        events.c.type == last.draft.type,
                    )
                )
                return any(
                    body.encode() == last.head + b"%d" % seq + last.tail for seq, body in found
                )
            chain_hash = conn.execute(
                sa.select(events.c.chain_hash).where(
                    events.c.lane == unknown.lane, events.c.seq == unknown.seq
                )
            ).scalar_one_or_none()
        return chain_hash == unknown.chain_hash

    def _write(self, batch: Sequence[Change]) -> list[Any]:
        try:
            if any(change.apply is not None for change in batch):
                results, guard = self._write_with_core(batch)
            else:
                results, guard = self._write_raw(batch)
        except _CommitUnknown:
            raise
        except sa.exc.IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc
        except self._dbapi_integrity_error as exc:
            raise DuplicateKey(str(exc)) from exc
        except self._unreachable as exc:
            raise Unavailable(
                f"the database is unreachable or busy ({type(exc).__name__}); nothing was "
                "recorded, retry after a moment"
            ) from exc
        WRITER_COMMITS.inc()
        WRITER_CHANGES.inc(len(batch))
        self._after_commit(guard)
        return results

    def _after_commit(self, guard: GuardState) -> None:
        if self.on_guard_state is None:
            return
        try:
            self.on_guard_state(guard)
        except Exception:  # committed is committed: the next commit reports the state again
            WRITER_ERRORS.labels("guard_state").inc()
            log.exception("the guard-state hook failed after a commit; the commit stands")

    def _write_with_core(self, batch: Sequence[Change]) -> tuple[list[Any], GuardState]:
        """Changes that write other state (kill switches, tokens...) run through SQLAlchemy."""
        committing: _Plan | None = None
        lanes = self._lane_count()
        readies = [None if c.apply else _ready(c, self._sql, lanes) for c in batch]  # unlocked
        self._guard_seen = None  # these changes may change it: read it under the lock again
        try:
            self._clock.lap("prepare")
            conn = self._core_connection()
            transaction = conn.begin()
            lanes = self._lane_count()
            heads = self._lock_heads(
                lambda sql, params: conn.exec_driver_sql(sql, params).first(), batch, lanes
            )
            locked = time.perf_counter()
            guard_seq = None
            if lanes > 1:  # lane 0's head before the guards are read: see _append_in_database
                guard_seq = heads[CONTROL][0] if CONTROL in heads else self._control_seq(conn)
            guard = _guard_state([tuple(r) for r in conn.execute(sa.text(self._sql.guards))])
            plan = _plan(
                list(zip(batch, readies, strict=True)), heads, lanes, guard, conn, self._sql
            )
            if plan.decisions:
                conn.execute(decisions.insert(), plan.decisions)
            for table, rows in plan.rows.items():
                conn.execute(table.insert(), rows)
            if plan.events:
                conn.execute(events.insert(), [e.row() for e in plan.events])
                for lane, (seq, chain_hash) in plan.advanced.items():
                    conn.execute(
                        ledger_head.update()
                        .where(ledger_head.c.id == head_id(lane))
                        .values(seq=seq, chain_hash=chain_hash)
                    )
            if any(e.type.startswith(GUARD_EVENTS) for c in batch for e in c.events):
                # An alias moved, a rollout or policy changed: report the state these
                # changes leave, so the very next decision already follows it.
                current = conn.execute(sa.text(self._sql.guards))
                plan.guard = _guard_state([tuple(r) for r in current])
            committing = plan
            transaction.commit()
            self.observe_lock_hold(time.perf_counter() - locked)
            self._clock.lap("database")
            if guard_seq is not None and not any(_is_barrier(c) for c in batch):
                # lane 0 moved only by this batch's own control events, which change no guard
                self._guard_seen = (plan.advanced.get(CONTROL, (guard_seq, ""))[0], guard)
        except BaseException as exc:
            self._drop_core_connection()
            if committing is not None:
                raise _CommitUnknown(exc, committing.results, committing) from exc
            raise
        return plan.results, plan.guard

    def _lock_heads(
        self,
        fetch: Callable[[str, tuple[Any, ...]], Any],
        batch: Sequence[Change],
        lanes: int,
    ) -> dict[int, tuple[int, str]]:
        """Lock and read the head rows of the lanes the batch writes, in ascending lane order so
        that two writers never wait for each other in a cycle: every lane for a batch that
        changes what guards decisions (a barrier), else the lanes of its events."""
        if lanes == 1:
            wanted = [CONTROL]
        elif any(_is_barrier(change) for change in batch):
            wanted = list(range(lanes))
        else:
            wanted = sorted(
                {lane_of(e.point, e.decision_id, lanes) for c in batch for e in c.events}
            ) or [CONTROL]
        heads = {}
        for lane in wanted:
            head = fetch(self._sql.head, (head_id(lane),))
            if head is None:
                raise RuntimeError(_NO_HEAD)
            heads[lane] = (int(head[0]), str(head[1]))
        return heads

    def _control_seq(self, conn: sa.Connection) -> int:
        """Lane 0's head, unlocked: a lower bound for the guard events the state read after
        it includes."""
        return int(
            conn.execute(sa.select(ledger_head.c.seq).where(ledger_head.c.id == HEAD_ID)).scalar()
            or 0
        )

    def _lane_count(self) -> int:
        """The ledger's lanes, read once: they are fixed when the ledger is created."""
        if self._lanes == 0:
            with self.engine.connect() as conn:
                self._lanes = lane_count(conn)
        return self._lanes

    def _core_connection(self) -> sa.Connection:
        """The writer's own SQLAlchemy connection, kept between batches: checking one out of
        the pool (and pinging it) for every batch cost a round trip each time."""
        if self._core is None:
            self._core = write_connection(self.engine)
        return self._core

    def _drop_core_connection(self) -> None:
        if self._core is not None:
            try:
                self._core.close()
            except Exception:  # a broken connection: the pool discards it
                log.debug("closing the recorder's connection failed", exc_info=True)
            self._core = None

    def _write_raw(self, batch: Sequence[Change]) -> tuple[list[Any], GuardState]:
        """Decisions and their events: the hot path, on the writer's own DBAPI connection.
        Everything that does not depend on the chain head is made ready first, outside the
        head lock; then the critical section."""
        readies = [_ready(change, self._sql, self._lane_count()) for change in batch]
        seen = self._guard_seen
        if seen is not None and self.append_in_database and _chains_in_database(batch, seen[1]):
            try:
                return self._append_in_database(self._raw_connection(), batch, readies, seen)
            except _GuardsMoved:
                self._guard_seen = None  # read under the lock, in the transaction below
        if self._lane_count() > 1:  # the heads of its lanes, locked and chained by the writer
            return self._write_with_core(batch)
        return self._append_under_head_lock(self._raw_connection(), batch, readies)

    def _append_in_database(
        self,
        conn: Any,
        batch: Sequence[Change],
        readies: Sequence[_Ready],
        seen: tuple[int, GuardState],
    ) -> tuple[list[Any], GuardState]:
        """The critical section run by PostgreSQL alone: one query string — BEGIN, the inserts,
        `warden_append` (migration 0011: lock head, chain, insert events, advance head) and
        COMMIT — sent in one message, so the head lock is taken and released by the database
        without waiting on the writer's process even once (a pipeline would send COMMIT in a
        message of its own, after the writer thread got the interpreter back).

        The guard state is the one last read under the lock, as of event `seen[0]`; the
        function refuses when a guard event came after it, and the batch is written the
        other way. Idempotency keys are checked before, without the lock; a key taken
        meanwhile fails the batch on the unique index, which splits it."""
        sql = self._sql
        guard_seq, guard = seen
        keyed, key_queries = _key_checks(batch, sql.mark)
        driver = conn.driver_connection
        literal = psycopg.ClientCursor(driver)  # parameters bound into the text, no I/O
        cursor = conn.cursor()
        committing: _Plan | None = None
        prepared: list[PreparedEvent] = []
        try:
            driver.autocommit = True  # the script says BEGIN and COMMIT itself
            taken: set[tuple[str, str]] = set()
            for statement, params in key_queries:
                cursor.execute(statement, params)
                taken.update((point, key) for point, key in cursor.fetchall())
            refused = _refusals(keyed, taken)
            kept = [(c, r) for c, r in zip(batch, readies, strict=True) if c not in refused]
            plan, prepared = _unchained(kept, guard, sql, self._lane_count())
            if refused:
                answers = iter(plan.results)
                plan.results = [refused[c] if c in refused else next(answers) for c in batch]
            script = ["BEGIN"]
            if plan.decision_params:
                script.extend(_values(literal, sql.insert_decision, plan.decision_params))
            for table, table_rows in plan.row_params.items():
                script.extend(_values(literal, sql.inserter(table)[0], table_rows))
            by_lane: dict[int, list[PreparedEvent]] = {}
            for event in prepared:
                by_lane.setdefault(event.lane, []).append(event)
            for lane in sorted(by_lane):  # each call locks its lane's head: in lane order
                script.append(
                    literal.mogrify(APPEND, (head_id(lane), guard_seq, *_columns(by_lane[lane])))
                )
            if self.observe_hold_parts is not None:
                script.append(COMMIT_FROM)
            script.extend(("COMMIT", COMMITTED_AT))
            committing = plan
            self._clock.lap("prepare")
            cursor.execute(";\n".join(script))
            if prepared:
                lane_0_seq = guard_seq
                for lane in sorted(by_lane):
                    while cursor.description is None or cursor.description[0].name != "last_seq":
                        if not cursor.nextset():
                            raise RuntimeError("warden_append gave no answer")
                    plan.seq, plan.chain_hash, locked_at = cursor.fetchone()
                    plan.lane = lane
                    if lane == CONTROL:
                        lane_0_seq = plan.seq
                    cursor.nextset()
                split = self.observe_hold_parts
                commit_from = _scalar_named(cursor, "commit_from") if split else None
                committed_at = _scalar_named(cursor, "committed_at")
                # On the database's clock: the lock is taken there and released by COMMIT.
                self.observe_lock_hold(max(0.0, committed_at - locked_at))
                if split is not None and commit_from is not None:
                    split(commit_from - locked_at, committed_at - commit_from)
                self._guard_seen = (lane_0_seq, guard)
            self._clock.lap("database")
        except BaseException as exc:
            self._abandon(conn)
            state = getattr(exc, "sqlstate", None)
            if state == GUARDS_MOVED:
                raise _GuardsMoved() from exc
            if state == "42883":  # undefined function: a database not migrated to 0011 yet
                log.warning("warden_append is missing (run `warden init`); appending as before")
                self.append_in_database = False
                raise _GuardsMoved() from exc
            if committing is not None and not self._refused_by_database(exc):
                floor = None
                if prepared:  # where to look for it: lane 0 after the guards read, else all
                    last = prepared[-1]
                    committing.lane = last.lane
                    floor = (guard_seq if last.lane == CONTROL else 0, last)
                raise _CommitUnknown(exc, committing.results, committing, floor) from exc
            raise
        finally:
            try:
                cursor.close()
                literal.close()
            except Exception:  # a broken connection's cursor
                log.debug("closing a cursor failed", exc_info=True)
            self._end_autocommit(conn)
        return plan.results, plan.guard

    def _end_autocommit(self, conn: Any) -> None:
        """Back to transactions the driver opens; a connection that cannot be is dropped,
        never used for the other critical section in autocommit (its head lock would not
        outlast the SELECT)."""
        if self._raw is None:
            return  # already dropped
        try:
            conn.driver_connection.autocommit = False
        except Exception:
            log.warning("dropping the recorder's database connection", exc_info=True)
            try:
                conn.invalidate()
            except Exception:  # already gone
                log.debug("invalidating the connection failed", exc_info=True)
            self._raw = None

    def _append_under_head_lock(
        self, conn: Any, batch: Sequence[Change], readies: Sequence[_Ready]
    ) -> tuple[list[Any], GuardState]:
        """The critical section, all of it: lock the chain head; read what may withdraw a
        decision's authority and which idempotency keys are taken (both as of the lock); chain
        the prepared events onto the head; insert; advance the head; COMMIT.

        On PostgreSQL this is two round trips in pipeline mode — BEGIN, the head row FOR
        UPDATE, guards and key checks in the first; the inserts, the head update and COMMIT in
        the second — so the head row is locked for one round trip, a little Python (sealing
        costs one short SHA-256 update per event), and the COMMIT's WAL flush. On SQLite,
        BEGIN IMMEDIATE takes the database's write lock and the statements run in process.
        """
        sql = self._sql
        if not sql.sqlite and conn.driver_connection.autocommit:  # never hold it so briefly
            conn.driver_connection.autocommit = False
        keyed, key_queries = _key_checks(batch, sql.mark)
        cursor = conn.cursor()
        guards_cursor = conn.cursor()
        key_cursors = [conn.cursor() for _ in key_queries]
        committing: _Plan | None = None
        self._clock.lap("prepare")
        try:
            with self._pipeline(conn) as pipeline:
                if sql.begin:
                    cursor.execute(sql.begin)
                cursor.execute(sql.head, (HEAD_ID,))
                guards_cursor.execute(sql.guards)
                for key_cursor, (statement, params) in zip(key_cursors, key_queries, strict=True):
                    key_cursor.execute(statement, params)
                pipeline.sync()
                head = cursor.fetchone()
                locked = time.perf_counter()  # the head row is ours from here to COMMIT
                if head is None:
                    raise RuntimeError(_NO_HEAD)
                guard = _guard_state(guards_cursor.fetchall())
                self._guard_seen = (head[0], guard)  # as of the head: see _append_in_database
                taken = {(point, key) for c in key_cursors for point, key in c.fetchall()}
                refused = _refusals(keyed, taken)
                kept = [(c, r) for c, r in zip(batch, readies, strict=True) if c not in refused]
                plan = _plan(kept, {CONTROL: (head[0], head[1])}, 1, guard, None, sql)
                if refused:
                    answers = iter(plan.results)
                    plan.results = [refused[c] if c in refused else next(answers) for c in batch]
                if plan.decision_params:
                    cursor.executemany(sql.insert_decision, plan.decision_params)
                for table, table_rows in plan.row_params.items():
                    cursor.executemany(sql.inserter(table)[0], table_rows)
                if plan.events:
                    cursor.executemany(
                        sql.insert_event, [sql.event_row(e.row()) for e in plan.events]
                    )
                    cursor.execute(sql.update_head, (plan.seq, plan.chain_hash, HEAD_ID))
                committing = plan
                if sql.sqlite:
                    cursor.execute("COMMIT")
                else:
                    conn.commit()
            self.observe_lock_hold(time.perf_counter() - locked)
            self._clock.lap("database")
        except BaseException as exc:
            self._abandon(conn)
            if committing is not None and not self._refused_by_database(exc):
                raise _CommitUnknown(exc, committing.results, committing) from exc
            raise
        finally:
            for used in (cursor, guards_cursor, *key_cursors):
                try:
                    used.close()
                except Exception:  # a broken connection's cursor
                    log.debug("closing a cursor failed", exc_info=True)
        return plan.results, plan.guard

    def _pipeline(self, conn: Any) -> Any:
        """PostgreSQL's pipeline mode: statements queued, sent together, answered together."""
        if self._sql.sqlite:
            return _NoPipeline()
        return conn.driver_connection.pipeline()

    def _refused_by_database(self, exc: BaseException) -> bool:
        """Whether PostgreSQL itself refused a statement of the transaction — a unique key, bad
        data, a deadlock — so it certainly did not commit. In pipeline mode the inserts travel
        with COMMIT, and their errors arrive with it; a broken connection is no such answer."""
        state = getattr(exc, "sqlstate", None)
        return isinstance(state, str) and state[:2] in _REFUSED_CLASSES

    def _raw_connection(self) -> Any:
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        return self._raw

    def _abandon(self, conn: Any) -> None:
        """Roll back; if even that fails the connection is broken, so drop it."""
        try:
            if self._sql.sqlite:
                if conn.driver_connection.in_transaction:
                    conn.cursor().execute("ROLLBACK")
            else:
                conn.rollback()
        except Exception:
            log.warning("dropping the recorder's database connection", exc_info=True)
            try:
                conn.invalidate()
            except Exception:  # already gone
                log.debug("invalidating the connection failed", exc_info=True)
            finally:
                self._raw = None


# Event types of changes to what the guard state holds (kill switches, rollouts, aliases, live
# policies); every state change writes its event in its transaction, so these tell.
GUARD_EVENTS = ("kill_switch.", "model.alias", "policy.", "rollout.")
_WAKE = Change(events=[])  # wakes the writer to look at its riders; never committed
RIDERS_PER_COMMIT = 16  # a few rows more per commit cost little; many would delay it
RIDER_WAIT = 1.0  # seconds riders wait for a decision's commit before committing alone

_NO_HEAD = "ledger_head is missing; run `warden init` to migrate the database"


def _is_barrier(change: Change) -> bool:
    """A change to what guards decisions: with lanes, it is ordered against every lane."""
    return any(e.type.startswith(GUARD_EVENTS) for e in change.events)


HEAD_ID = 1  # the ledger_head row of the one chain
APPEND = (
    "SELECT last_seq, last_hash, locked_at FROM warden_append("
    "%s, %s, %s::bytea[], %s::bytea[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::timestamptz[])"
)
COMMIT_FROM = "SELECT extract(epoch FROM clock_timestamp()) AS commit_from"
COMMITTED_AT = "SELECT extract(epoch FROM clock_timestamp()) AS committed_at"  # lock released
GUARDS_MOVED = "WA002"  # warden_append: a guard event came after the state the writer read
# SQLSTATE classes of a statement PostgreSQL refused (data, integrity, transaction state,
# rollback, syntax or access): the transaction certainly did not commit.
_REFUSED_CLASSES = frozenset({"22", "23", "25", "40", "42", "WA"})


def _guard_state(rows: Sequence[Sequence[Any]]) -> GuardState:
    by_kind: dict[str, list[Sequence[Any]]] = {"kill": [], "rollout": [], "alias": [], "policy": []}
    for row in rows:
        by_kind[row[0]].append(row[1:])
    return GuardState(
        killed=frozenset(r[0] for r in by_kind["kill"]),
        rollouts=frozenset((r[0], r[1], r[2], r[3], int(r[4])) for r in by_kind["rollout"]),
        aliases=frozenset((r[0], r[1], r[2]) for r in by_kind["alias"]),
        policies=frozenset((r[0], r[1]) for r in by_kind["policy"]),
    )


def _scalar_named(cursor: Any, name: str) -> float:
    """The value of the next result set whose one column is `name`."""
    while cursor.description is None or cursor.description[0].name != name:
        if not cursor.nextset():
            raise RuntimeError(f"the script gave no {name}")
    return float(cursor.fetchone()[0])


class _WriterClock:
    """Wall and CPU time of the writer thread per phase of its loop, counted in
    `warden_writer_seconds_total`: where a commit's cycle goes, and how much of it the thread
    spent waiting for the interpreter rather than working or waiting for the database."""

    PHASES = ("idle", "gather", "prepare", "database", "answer")

    def __init__(self) -> None:
        self._counters = {
            phase: (WRITER_SECONDS.labels(phase, "wall"), WRITER_SECONDS.labels(phase, "cpu"))
            for phase in self.PHASES
        }
        self._wall = time.perf_counter()
        self._cpu = 0.0  # the writer thread's CPU clock; read on that thread only

    def lap(self, phase: str) -> None:
        """Charge the time since the last lap to `phase` (called on the writer thread)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        wall_counter, cpu_counter = self._counters[phase]
        wall_counter.inc(wall - self._wall)
        if self._cpu:
            cpu_counter.inc(cpu - self._cpu)
        self._wall, self._cpu = wall, cpu


class DuplicateKey(Exception):
    """A unique constraint refused the change (e.g. an idempotency key already used)."""


class _CommitUnknown(Exception):
    """COMMIT was sent and failed: the batch may or may not have committed."""

    def __init__(
        self,
        cause: BaseException,
        results: list[Any],
        plan: _Plan,
        locate: tuple[int, PreparedEvent] | None = None,
    ) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.results = results
        self.seq: int | None = plan.seq if plan.events else None
        self.chain_hash = plan.chain_hash
        self.lane = plan.lane
        self.guard = plan.guard
        # Chained by the database: events after `floor`, the last one prepared thus.
        self.locate = locate


class _GuardsMoved(Exception):
    """The guard state changed since the writer last read it: read it again under the lock."""


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Answer a future once; one its caller already withdrew stays withdrawn."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except futures.InvalidStateError:  # settled meanwhile (shutdown)
        pass


@dataclass
class _Plan:
    results: list[Any]
    decisions: list[dict[str, Any]]
    rows: dict[sa.Table, list[dict[str, Any]]]
    events: list[SealedEvent]
    seq: int  # the last event's place in its lane (or lane 0's head, with no events)
    chain_hash: str
    guard: GuardState
    decision_params: list[tuple[Any, ...]] = field(default_factory=list)
    lane: int = CONTROL  # the last event's lane
    advanced: dict[int, tuple[int, str]] = field(default_factory=dict)  # lane -> new head
    row_params: dict[sa.Table, list[tuple[Any, ...]]] = field(default_factory=dict)


@dataclass(eq=False)
class _Ready:
    """A change made ready outside the head lock: its DBAPI parameters and prepared events."""

    decision: tuple[Any, ...] | None
    rows: list[tuple[sa.Table, tuple[Any, ...]]]
    events: list[PreparedEvent]


def _ready(change: Change, sql: RawStatements, lanes: int = 1) -> _Ready:
    return _Ready(
        None if change.decision is None else sql.decision_row(change.decision),
        [(table, sql.inserter(table)[1](row)) for table, row in change.rows],
        [prepare(draft, lane_of(draft.point, draft.decision_id, lanes)) for draft in change.events],
    )


def _plan(
    batch: Sequence[tuple[Change, _Ready | None]],
    heads: dict[int, tuple[int, str]],
    lanes: int,
    guard: GuardState,
    conn: sa.Connection | None,
    sql: RawStatements,
) -> _Plan:
    """Order the batch into the chains: re-route revoked AUTO decisions, apply, seal events,
    each in its lane after the head locked for it.

    Under the head locks. A change arrives ready (`_Ready`) unless it runs `apply`; one that
    is re-routed or applied here is made ready again, since either may rewrite it. With
    several lanes each event is prepared for its lane here, and a barrier (a guard change)
    records where every lane stood."""
    heads = dict(heads)
    seq, prev = heads.get(CONTROL, next(iter(heads.values())))
    plan = _Plan([], [], {}, [], seq, prev, guard)
    for change, ready in batch:
        decision = change.decision
        if decision is not None:
            withdrawn = _withdrawn(change, guard)
            if withdrawn:
                assert change.revoke is not None
                change.revoke(change, withdrawn)
                ready = None
            plan.decisions.append(decision)
        for table, row in change.rows:
            plan.rows.setdefault(table, []).append(row)
        follower = change.follow(change, guard) if change.follow is not None else None
        if change.apply is not None:
            assert conn is not None
            plan.results.append(change.apply(conn))
            ready = None
        else:
            plan.results.append(decision)
        if ready is None:
            ready = _ready(change, sql, lanes)
        if ready.decision is not None:
            plan.decision_params.append(ready.decision)
        for table, params in ready.rows:
            plan.row_params.setdefault(table, []).append(params)
        if change.guard_update is not None:
            guard = change.guard_update(guard)
        prepared_events = ready.events  # each prepared for its lane
        if lanes > 1 and _is_barrier(change):
            prepared_events = []
            for draft in change.events:  # where every lane stood, hashed with the change
                draft.payload = {
                    **draft.payload,
                    "ledger_heads": [list(heads[k]) for k in range(lanes)],
                }
                prepared_events.append(
                    prepare(draft, lane_of(draft.point, draft.decision_id, lanes))
                )
        if follower is not None:  # commits right behind its change, in the same lanes
            assert follower.decision is None and follower.apply is None
            followed = _ready(follower, sql, lanes)
            for table, row in follower.rows:
                plan.rows.setdefault(table, []).append(row)
            for table, params in followed.rows:
                plan.row_params.setdefault(table, []).append(params)
            prepared_events = [*prepared_events, *followed.events]
        for prepared in prepared_events:
            seq, prev = heads[prepared.lane]
            event = seal_prepared(seq + 1, prev, prepared)
            heads[prepared.lane] = plan.advanced[prepared.lane] = (event.seq, event.chain_hash)
            plan.events.append(event)
            plan.seq, plan.chain_hash, plan.lane = event.seq, event.chain_hash, event.lane
    plan.guard = guard
    return plan


def _withdrawn(change: Change, guard: GuardState) -> str | None:
    """Why an AUTO decision's authority is withdrawn under `guard`, if it is."""
    decision = change.decision
    if change.revoke is None or decision is None or decision["route"] != "auto":
        return None
    if guard.is_killed(decision["point"]):
        return "kill_switch"
    if change.variant and not guard.canary_active(change.variant):
        return "rollout_stopped"
    return None


def _chains_in_database(batch: Sequence[Change], guard: GuardState) -> bool:
    """Whether `warden_append` may write the batch: it has events, and none of its changes
    runs `apply`, changes the guard state, or would be re-routed under `guard` (those are
    decided with the state read under the lock).

    A change's `follow` is asked with `guard` too: the state as of the lane-0 event the
    function is told, which refuses the whole batch (WA002) when a guard event — a kill switch,
    a policy change — committed after it; the batch is then written the other way and every
    `follow` asked again with the state read under the lock. So a follower commits only if
    `guard` was still the state at its commit, as on the other path."""
    has_events = False
    for change in batch:
        if change.apply is not None or change.guard_update is not None:
            return False
        if _withdrawn(change, guard):
            return False
        for draft in change.events:
            if draft.type.startswith(GUARD_EVENTS):
                return False
            has_events = True
    return has_events


def _unchained(
    batch: Sequence[tuple[Change, _Ready]], guard: GuardState, sql: RawStatements, lanes: int
) -> tuple[_Plan, list[PreparedEvent]]:
    """A batch `_chains_in_database` accepted: its rows, results and prepared events, with
    what each change's `follow` adds under `guard`."""
    plan = _Plan([], [], {}, [], 0, "", guard)
    prepared: list[PreparedEvent] = []
    for change, ready in batch:
        plan.results.append(change.decision)
        if ready.decision is not None:
            plan.decision_params.append(ready.decision)
        for table, params in ready.rows:
            plan.row_params.setdefault(table, []).append(params)
        prepared.extend(ready.events)  # each prepared for its lane by `_ready`
        follower = change.follow(change, guard) if change.follow is not None else None
        if follower is not None:  # right behind its change, in the same lanes
            assert follower.decision is None and follower.apply is None
            if any(draft.type.startswith(GUARD_EVENTS) for draft in follower.events):
                raise _GuardsMoved()  # it changes the guards: the writer chains it
            followed = _ready(follower, sql, lanes)
            for table, params in followed.rows:
                plan.row_params.setdefault(table, []).append(params)
            prepared.extend(followed.events)
    return plan, prepared


def _values(
    literal: Any, insert: str, rows: Sequence[tuple[Any, ...]], per_statement: int = 500
) -> list[str]:
    """`INSERT … VALUES (…), (…)` for many rows as multi-row statements, parameters bound in.

    Each row is bound into the one-row template and the rows joined: the driver parses that
    short template once and caches it, where a statement with every row's placeholders would
    be a new text, parsed anew, for every batch size (a third of the CPU per row)."""
    head, marks = insert.split(" VALUES ", 1)
    return [
        f"{head} VALUES "
        + ", ".join(literal.mogrify(marks, row) for row in rows[start : start + per_statement])
        for start in range(0, len(rows), per_statement)
    ]


def _columns(prepared: Sequence[PreparedEvent]) -> tuple[list[Any], ...]:
    """`warden_append`'s arrays: bytes around the number, then the plain columns."""
    drafts = [p.draft for p in prepared]
    return (
        [p.head for p in prepared],
        [p.tail for p in prepared],
        [d.type for d in drafts],
        [d.point for d in drafts],
        [d.decision_id for d in drafts],
        [d.actor for d in drafts],
        [d.ts for d in drafts],
    )


def _key_checks(
    batch: Sequence[Change], mark: str
) -> tuple[list[tuple[Change, str, str]], list[tuple[str, list[str]]]]:
    """The batch's idempotency keys, and the queries that find which are already taken —
    sent right behind the head lock, so they see every decision committed before it."""
    keyed = [
        (c, c.decision["point"], c.decision["idempotency_key"])
        for c in batch
        if c.decision is not None and c.decision.get("idempotency_key") is not None
    ]
    by_point: dict[str, list[str]] = {}
    for _, point, key in keyed:
        by_point.setdefault(point, []).append(key)
    queries = []
    for point, keys in by_point.items():  # (point, idempotency_key) is the unique index
        for start in range(0, len(keys), 500):  # under the driver's parameter limit
            chunk = keys[start : start + 500]
            queries.append(
                (
                    f"SELECT point, idempotency_key FROM decisions WHERE point = {mark} AND "
                    f"idempotency_key IN ({', '.join([mark] * len(chunk))})",
                    [point, *chunk],
                )
            )
    return keyed, queries


def _refusals(
    keyed: Sequence[tuple[Change, str, str]], taken: set[tuple[str, str]]
) -> dict[Change, DuplicateKey]:
    """Decisions whose idempotency key is already taken — by a committed decision or by an
    earlier change in this batch — so the rest of the batch commits together instead of one
    by one after a unique-index failure (a client retrying under load would otherwise cost
    every decision in its batch a commit of its own)."""
    refused: dict[Change, DuplicateKey] = {}
    for change, point, key in keyed:
        if (point, key) in taken:
            refused[change] = DuplicateKey(f"idempotency key {key!r} of {point!r} is taken")
        taken.add((point, key))
    return refused


class _NoPipeline:
    """SQLite runs in process: statements are answered as they are issued."""

    def __enter__(self) -> _NoPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def sync(self) -> None:
        return None
