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
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from warden.ledger.chain import EventDraft, seal
from warden.store.database import write_connection
from warden.store.schema import decisions, events, kill_switches, ledger_head

log = logging.getLogger(__name__)

GLOBAL_SCOPE = "*"


@dataclass(eq=False)
class Change:
    """One atomic unit: optional decision row, optional other writes, and the events for them.

    `on_killed` lets the writer re-route an AUTO decision whose point was switched off between
    routing and commit: the kill switch is checked again inside the ledger lock, so no AUTO
    decision ever follows a kill event in the ledger.
    """

    events: list[EventDraft]
    decision: dict[str, Any] | None = None
    apply: Callable[[sa.Connection], Any] | None = None
    on_killed: Callable[[dict[str, Any], EventDraft], None] | None = None
    kill_toggle: tuple[str, bool] | None = None
    future: Future[Any] = field(default_factory=Future)


class Recorder:
    """The single writer of a process."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_batch: int = 1024,
        on_kill_state: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.on_kill_state = on_kill_state
        self._queue: queue.SimpleQueue[Change | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="warden-recorder", daemon=True)
        self._closed = False
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

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Change]) -> None:
        try:
            results = self._write(batch)
        except Exception:
            if len(batch) == 1:
                log.debug("change failed", exc_info=True)
                self._fail_alone(batch[0])
                return
            for change in batch:  # isolate the change that failed; the others still commit
                self._commit([change])
            return
        for change, result in zip(batch, results, strict=True):
            change.future.set_result(result)

    def _fail_alone(self, change: Change) -> None:
        try:
            self._write([change])
        except Exception as exc:
            change.future.set_exception(exc)
        else:  # pragma: no cover - a transient failure that cleared on retry
            change.future.set_result(change.decision)

    def _write(self, batch: Sequence[Change]) -> list[Any]:
        with write_connection(self.engine) as conn, conn.begin():
            head = conn.execute(
                sa.select(ledger_head.c.seq, ledger_head.c.chain_hash)
                .where(ledger_head.c.id == 1)
                .with_for_update()
            ).first()
            if head is None:
                raise RuntimeError("ledger_head is missing; run `warden init` to migrate")
            seq, prev = head.seq, head.chain_hash
            killed = frozenset(
                conn.execute(
                    sa.select(kill_switches.c.scope).where(kill_switches.c.engaged)
                ).scalars()
            )
            results: list[Any] = []
            decision_rows = []
            sealed = []
            for change in batch:
                if change.decision is not None:
                    if (
                        change.on_killed
                        and change.decision["route"] == "auto"
                        and (GLOBAL_SCOPE in killed or change.decision["point"] in killed)
                    ):
                        change.on_killed(change.decision, change.events[0])
                    decision_rows.append(change.decision)
                if change.apply is not None:
                    results.append(change.apply(conn))
                else:
                    results.append(change.decision)
                if change.kill_toggle is not None:
                    scope, engaged = change.kill_toggle
                    killed = killed | {scope} if engaged else killed - {scope}
                for draft in change.events:
                    seq += 1
                    event = seal(seq, prev, draft)
                    prev = event.chain_hash
                    sealed.append(event.row())
            if decision_rows:
                conn.execute(decisions.insert(), decision_rows)
            if sealed:
                conn.execute(events.insert(), sealed)
                conn.execute(
                    ledger_head.update()
                    .where(ledger_head.c.id == 1)
                    .values(seq=seq, chain_hash=prev)
                )
        if self.on_kill_state is not None:
            self.on_kill_state(killed)
        return results
