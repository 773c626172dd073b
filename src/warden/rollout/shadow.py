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
    """Runs shadow calls in the background and records their results."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        capacity: int = 1000,
        on_result: Callable[[ShadowCall, dict[str, Any]], None] | None = None,
    ) -> None:
        self.recorder = recorder
        self.dropped = 0
        self.completed = 0
        self.on_result = on_result
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
        """Wait until every queued call has been recorded (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            call = self._queue.get()
            try:
                if call is None:
                    return
                self._execute(call)
            except Exception:
                log.exception("shadow call failed to record")
            finally:
                self._queue.task_done()

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
        self.recorder.record(Change(events=[], rows=[(shadow_results, row)]))
        self.completed += 1
        if self.on_result is not None:
            self.on_result(call, row)
