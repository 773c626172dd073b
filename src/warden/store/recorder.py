"""Group commit: state rows and their ledger events, many changes per transaction.

Callers hand over a `Change` and wait on its future; the future resolves only after the
transaction that holds the change has committed, so nothing is acknowledged that is not durable.
One writer thread per process batches whatever queued while the previous commit was in flight.
Across processes the chain stays one total order: every transaction reads and advances
`ledger_head` under a lock (the row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from warden.ledger.chain import EventDraft, SealedEvent, seal
from warden.store.database import write_connection
from warden.store.rawsql import RawStatements
from warden.store.schema import decisions, events, ledger_head
from warden.store.walcheckpoint import WalCheckpointer

log = logging.getLogger(__name__)

GLOBAL_SCOPE = "*"


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
    """

    events: list[EventDraft]
    decision: dict[str, Any] | None = None
    apply: Callable[[sa.Connection], Any] | None = None
    revoke: Callable[[Change, str], None] | None = None
    variant: str | None = None  # the canary rollout whose challenger made this decision
    guard_update: Callable[[GuardState], GuardState] | None = None
    rows: list[tuple[sa.Table, dict[str, Any]]] = field(default_factory=list)
    future: Future[Any] = field(default_factory=Future)


class Recorder:
    """The single writer of a process."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_batch: int = 1024,
        linger: float = 0.0005,
        on_guard_state: Callable[[GuardState], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.linger = linger
        self.on_guard_state = on_guard_state
        self._queue: queue.SimpleQueue[Change | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="warden-recorder", daemon=True)
        self._closed = False
        self._sql = RawStatements.for_dialect(engine.dialect.name)
        self._dbapi_integrity_error: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError
        self._raw: Any = None
        self._core: sa.Connection | None = None
        self._wal = WalCheckpointer(engine) if self._sql.sqlite else None
        self._riders: list[tuple[sa.Table, dict[str, Any]]] = []
        self._riders_since = 0.0
        self._riders_committing = 0
        self._riders_lock = threading.Lock()
        self._thread.start()

    def submit(self, change: Change) -> Future[Any]:
        if self._closed:
            change.future.set_exception(RuntimeError("the recorder is closed"))
            return change.future
        self._queue.put(change)
        return change.future

    def record(self, change: Change, timeout: float | None = 60.0) -> Any:
        """Submit and wait until committed; returns what `apply` returned (or the decision row)."""
        return self.submit(change).result(timeout)

    def ride(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Rows nobody waits for (shadow results): they ride along, a few at a time, in the
        commits that decisions make anyway, instead of committing — and syncing to disk — on
        their own while a decision waits behind them. With no decisions flowing they are
        committed alone after `RIDER_WAIT` seconds. Lost in a crash before that, like anything
        not yet committed; nothing acknowledged rides."""
        with self._riders_lock:
            first = not self._riders
            if first:
                self._riders_since = time.monotonic()
            self._riders.extend((table, row) for row in rows)
        if first:
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
            if self._raw is not None:
                self._raw.close()
                self._raw = None
            self._drop_core_connection()
            if self._wal is not None:
                self._wal.close()

    def _run(self) -> None:
        previous = 0
        while True:
            try:
                first = self._queue.get(timeout=self._rider_wait())
            except queue.Empty:  # riders are due and no decision came to carry them
                self._commit_riders()
                continue
            if first is _WAKE:
                continue
            if first is None:
                self._commit_riders()
                return
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
                if item is not _WAKE:
                    batch.append(item)
            previous = len(batch)
            if self._riders:
                batch.append(self._riders_change(RIDERS_PER_COMMIT))
            self._commit(batch)
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
        return Change(events=[], rows=rows)

    def _commit(self, batch: list[Change]) -> None:
        try:
            self._commit_batch(batch)
        finally:
            with self._riders_lock:
                self._riders_committing = 0

    def _commit_batch(self, batch: list[Change]) -> None:
        try:
            results = self._write(batch)
        except Exception:
            if len(batch) == 1:
                log.debug("change failed", exc_info=True)
                self._fail_alone(batch[0])
                return
            for change in batch:  # isolate the change that failed; the others still commit
                self._commit_batch([change])
            return
        if self._riders_committing:
            with self._riders_lock:
                self._riders_committing = 0  # committed: before anyone waiting is told
        for change, result in zip(batch, results, strict=True):
            if isinstance(result, DuplicateKey):
                change.future.set_exception(result)
            else:
                change.future.set_result(result)

    def _fail_alone(self, change: Change) -> None:
        try:
            self._write([change])
        except Exception as exc:
            change.future.set_exception(exc)
        else:  # pragma: no cover - a transient failure that cleared on retry
            change.future.set_result(change.decision)

    def _write(self, batch: Sequence[Change]) -> list[Any]:
        try:
            if any(change.apply is not None for change in batch):
                results, guard = self._write_with_core(batch)
            else:
                results, guard = self._write_raw(batch)
        except sa.exc.IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc
        except self._dbapi_integrity_error as exc:
            raise DuplicateKey(str(exc)) from exc
        if self.on_guard_state is not None:
            self.on_guard_state(guard)
        return results

    def _write_with_core(self, batch: Sequence[Change]) -> tuple[list[Any], GuardState]:
        """Changes that write other state (kill switches, tokens...) run through SQLAlchemy."""
        conn = self._core_connection()
        try:
            with conn.begin():
                head = conn.execute(
                    sa.select(ledger_head.c.seq, ledger_head.c.chain_hash)
                    .where(ledger_head.c.id == 1)
                    .with_for_update()
                ).first()
                if head is None:
                    raise RuntimeError(_NO_HEAD)
                guard = _guard_state([tuple(r) for r in conn.execute(sa.text(self._sql.guards))])
                plan = _plan(batch, head.seq, head.chain_hash, guard, conn)
                if plan.decisions:
                    conn.execute(decisions.insert(), plan.decisions)
                for table, rows in plan.rows.items():
                    conn.execute(table.insert(), rows)
                if plan.events:
                    conn.execute(events.insert(), [e.row() for e in plan.events])
                    conn.execute(
                        ledger_head.update()
                        .where(ledger_head.c.id == 1)
                        .values(seq=plan.seq, chain_hash=plan.chain_hash)
                    )
                after = plan.guard
                if any(e.type.startswith(GUARD_EVENTS) for c in batch for e in c.events):
                    # An alias moved, a rollout or policy changed: report the state these
                    # changes leave, so the very next decision already follows it.
                    current = conn.execute(sa.text(self._sql.guards))
                    after = _guard_state([tuple(r) for r in current])
        except BaseException:
            self._drop_core_connection()
            raise
        return plan.results, after

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
        """Decisions and their events: the hot path, on the writer's own DBAPI connection."""
        sql = self._sql
        conn = self._raw_connection()
        cursor = conn.cursor()
        try:
            if sql.begin:
                cursor.execute(sql.begin)
            cursor.execute(sql.head)
            head = cursor.fetchone()
            if head is None:
                raise RuntimeError(_NO_HEAD)
            cursor.execute(sql.guards)
            guard = _guard_state(cursor.fetchall())
            refused = self._retried_keys(cursor, batch)
            kept = [c for c in batch if c not in refused] if refused else batch
            plan = _plan(kept, head[0], head[1], guard, None)
            if plan.decisions:
                cursor.executemany(
                    sql.insert_decision, [sql.decision_row(d) for d in plan.decisions]
                )
            for table, rows in plan.rows.items():
                insert, convert = sql.inserter(table)
                cursor.executemany(insert, [convert(row) for row in rows])
            if plan.events:
                cursor.executemany(sql.insert_event, [sql.event_row(e.row()) for e in plan.events])
                cursor.execute(sql.update_head, (plan.seq, plan.chain_hash))
            if sql.sqlite:
                cursor.execute("COMMIT")
            else:
                conn.commit()
        except BaseException:
            self._abandon(conn)
            raise
        finally:
            cursor.close()
        if not refused:
            return plan.results, plan.guard
        answers = iter(plan.results)
        return [refused[c] if c in refused else next(answers) for c in batch], plan.guard

    def _retried_keys(self, cursor: Any, batch: Sequence[Change]) -> dict[Change, DuplicateKey]:
        """Decisions whose idempotency key is already taken — by a committed decision or by an
        earlier change in this batch — found inside the write lock, so the rest of the batch
        commits together instead of one by one after a unique-index failure (a client retrying
        under load would otherwise cost every decision in its batch a commit of its own)."""
        keyed = [
            (c, c.decision["point"], c.decision["idempotency_key"])
            for c in batch
            if c.decision is not None and c.decision.get("idempotency_key") is not None
        ]
        if not keyed:
            return {}
        mark = self._sql.mark
        by_point: dict[str, list[str]] = {}
        for _, point, key in keyed:
            by_point.setdefault(point, []).append(key)
        taken: set[tuple[str, str]] = set()
        for point, keys in by_point.items():  # (point, idempotency_key) is the unique index
            for start in range(0, len(keys), 500):  # under the driver's parameter limit
                chunk = keys[start : start + 500]
                cursor.execute(
                    f"SELECT idempotency_key FROM decisions WHERE point = {mark} AND "
                    f"idempotency_key IN ({', '.join([mark] * len(chunk))})",
                    [point, *chunk],
                )
                taken.update((point, key) for (key,) in cursor.fetchall())
        refused: dict[Change, DuplicateKey] = {}
        for change, point, key in keyed:
            if (point, key) in taken:
                refused[change] = DuplicateKey(f"idempotency key {key!r} of {point!r} is taken")
            taken.add((point, key))
        return refused

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
            finally:
                self._raw = None


# Event types of changes to what the guard state holds (kill switches, rollouts, aliases, live
# policies); every state change writes its event in its transaction, so these tell.
GUARD_EVENTS = ("kill_switch.", "model.alias", "policy.", "rollout.")
_WAKE = Change(events=[])  # wakes the writer to look at its riders; never committed
RIDERS_PER_COMMIT = 16  # a few rows more per commit cost little; many would delay it
RIDER_WAIT = 1.0  # seconds riders wait for a decision's commit before committing alone

_NO_HEAD = "ledger_head is missing; run `warden init` to migrate the database"


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


class DuplicateKey(Exception):
    """A unique constraint refused the change (e.g. an idempotency key already used)."""


@dataclass
class _Plan:
    results: list[Any]
    decisions: list[dict[str, Any]]
    rows: dict[sa.Table, list[dict[str, Any]]]
    events: list[SealedEvent]
    seq: int
    chain_hash: str
    guard: GuardState


def _plan(
    batch: Sequence[Change], seq: int, prev: str, guard: GuardState, conn: sa.Connection | None
) -> _Plan:
    """Order the batch into the chain: re-route revoked AUTO decisions, apply, seal events."""
    results: list[Any] = []
    rows: list[dict[str, Any]] = []
    others: dict[sa.Table, list[dict[str, Any]]] = {}
    sealed: list[SealedEvent] = []
    for change in batch:
        decision = change.decision
        if decision is not None:
            if change.revoke is not None and decision["route"] == "auto":
                if guard.is_killed(decision["point"]):
                    change.revoke(change, "kill_switch")
                elif change.variant and not guard.canary_active(change.variant):
                    change.revoke(change, "rollout_stopped")
            rows.append(decision)
        for table, row in change.rows:
            others.setdefault(table, []).append(row)
        if change.apply is not None:
            assert conn is not None
            results.append(change.apply(conn))
        else:
            results.append(decision)
        if change.guard_update is not None:
            guard = change.guard_update(guard)
        for draft in change.events:
            seq += 1
            event = seal(seq, prev, draft)
            prev = event.chain_hash
            sealed.append(event)
    return _Plan(results, rows, others, sealed, seq, prev, guard)
