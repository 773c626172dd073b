"""Shadow calls: a second model answers the same input off the hot path, never applied.

A bounded queue feeds one worker thread; when it is full the call is dropped and counted, so a
slow challenger can never add latency to the decisions that callers wait for.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from warden.models.base import ModelFailure
from warden.models.guard import GuardedModel
from warden.store.recorder import Change, Recorder
from warden.store.schema import shadow_results

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShadowCall:
    decision_id: str
    point: str
    version: str
    model: GuardedModel
    input: Mapping[str, Any]


class ShadowRunner:
    """Runs shadow calls in the background and records their results in batches.

    Results are written at most `flush_every` seconds (or `batch` results) after they arrive, in
    one commit, so shadowing never doubles the commits the decisions themselves need. A crash
    can lose at most that window of shadow results; they are comparisons, never decisions.
    """

    def __init__(
        self,
        recorder: Recorder,
        *,
        capacity: int = 1000,
        batch: int = 256,
        flush_every: float = 0.5,
        on_result: Callable[[ShadowCall, dict[str, Any]], None] | None = None,
    ) -> None:
        self.recorder = recorder
        self.dropped = 0
        self.completed = 0
        self.on_result = on_result
        self.batch = batch
        self.flush_every = flush_every
        self._pending: list[dict[str, Any]] = []
        self._queue: queue.Queue[ShadowCall | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="warden-shadow", daemon=True)
        self._thread.start()

    def submit(self, call: ShadowCall) -> bool:
        """Queue a call; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued call has been answered and recorded (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while (self._queue.unfinished_tasks or self._pending) and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        first_pending = 0.0
        while True:
            wait = (
                None
                if not self._pending
                else max(0.0, first_pending + self.flush_every - time.monotonic())
            )
            try:
                call = self._queue.get(timeout=wait)
            except queue.Empty:
                self._flush()
                continue
            try:
                if call is None:
                    self._flush()
                    return
                if not self._pending:
                    first_pending = time.monotonic()
                self._execute(call)
                if len(self._pending) >= self.batch:
                    self._flush()
            except Exception:
                log.exception("shadow call failed")
            finally:
                self._queue.task_done()

    def _flush(self) -> None:
        if not self._pending:
            return
        rows = list(self._pending)
        try:
            self.recorder.record(Change(events=[], rows=[(shadow_results, r) for r in rows]))
        except Exception:
            log.exception("could not record %d shadow results", len(rows))
        del self._pending[: len(rows)]  # after the commit, so drain() waits for it

    def _execute(self, call: ShadowCall) -> None:
        start = time.perf_counter()
        outcome = confidence = failure = None
        try:
            prediction = call.model.call(call.input)
            outcome, confidence = prediction.outcome, prediction.confidence
        except ModelFailure as exc:
            failure = exc.code
        row = {
            "decision_id": call.decision_id,
            "model_version": call.version,
            "point": call.point,
            "outcome": outcome,
            "confidence": confidence,
            "failure": failure,
            "latency_ms": (time.perf_counter() - start) * 1000,
            "created_at": datetime.now(UTC),
        }
        self._pending.append(row)
        self.completed += 1
        if self.on_result is not None:
            self.on_result(call, row)
