"""Shadow calls: a second model answers the same input off the hot path, never applied.

Calls are queued without waiting and answered in the background; when more are outstanding
than the capacity allows, a call is dropped and counted, so a slow challenger can never add
latency to the decisions that callers wait for. With `isolated=True` (the server's setting)
models loaded from a decision point or the registry answer in a child process
(`shadow_process`), so they do not compete with the champion for the interpreter either —
under `warden serve --workers N` one process per host, shared by the workers
(`shadow_host`); anything else answers on a thread of this process.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import AuthenticationError
from typing import Any

from warden.models.base import ModelFailure
from warden.models.guard import GuardedModel, ModelRecipe
from warden.monitor.metrics import SHADOW_DROPPED
from warden.rollout.shadow_host import HostAddress
from warden.rollout.shadow_process import Answer, ShadowProcess
from warden.store.recorder import Recorder
from warden.store.schema import shadow_results

log = logging.getLogger(__name__)

RESTART_AFTER = 5.0  # seconds without a child process after one died; its calls are dropped


@dataclass(frozen=True, slots=True)
class ShadowCall:
    decision_id: str
    point: str
    version: str
    model: GuardedModel
    input: Any


class _Results:
    """Shadow results waiting to be recorded, from both the thread and the child process."""

    def __init__(self, recorder: Recorder, batch: int, flush_every: float) -> None:
        self.recorder = recorder
        self.batch = batch
        self.flush_every = flush_every
        self.rows: list[dict[str, Any]] = []
        self.first_at = 0.0
        self.lock = threading.Lock()

    def add(self, rows: list[dict[str, Any]]) -> None:
        with self.lock:
            if not self.rows:
                self.first_at = time.monotonic()
            self.rows.extend(rows)
            full = len(self.rows) >= self.batch
        if full:
            self.flush()

    def wait(self) -> float | None:
        """Seconds until the oldest waiting row is due to be recorded; None when none waits."""
        with self.lock:
            if not self.rows:
                return None
            return max(0.0, self.first_at + self.flush_every - time.monotonic())

    def flush(self) -> None:
        """Hand the rows to the recorder to ride along with decisions' commits."""
        with self.lock:  # handed over before cleared, so drain() never sees them nowhere
            if self.rows:
                self.recorder.ride(shadow_results, self.rows)
                self.rows = []


class ShadowRunner:
    """Runs shadow calls in the background and records their results in batches.

    Results are gathered for at most `flush_every` seconds (or `batch` results), then ride along
    in the commits decisions make anyway (`Recorder.ride`), so shadowing adds no commit a
    decision could wait behind. A crash can lose the results not yet written; they are
    comparisons, never decisions.
    """

    def __init__(
        self,
        recorder: Recorder,
        *,
        capacity: int = 1000,
        batch: int = 256,
        flush_every: float = 0.5,
        isolated: bool = False,
        host: HostAddress | None = None,
    ) -> None:
        """`host`: the host's shared shadow process (`warden serve --workers N` starts one);
        without it an isolated runner starts a child process of its own."""
        self.recorder = recorder
        self.dropped = 0
        self.completed = 0
        self.capacity = capacity
        self.isolated = isolated
        self.host = host
        self._results = _Results(recorder, batch, flush_every)
        self._queue: queue.Queue[ShadowCall | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="warden-shadow", daemon=True)
        self._thread.start()
        self._child_lock = threading.Lock()
        self._child: ShadowProcess | None = None
        self._in_child = 0
        self._child_down_until = 0.0
        self._closing = False

    def submit(self, call: ShadowCall) -> bool:
        """Queue a call; False (and counted) when too many are outstanding."""
        recipe = call.model.recipe() if self.isolated else None
        if recipe is not None:
            return self._submit_to_child(call, recipe)
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            self.dropped += 1
            SHADOW_DROPPED.inc()
            return False
        return True

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued call has been answered and recorded (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while (
            self._queue.unfinished_tasks
            or self._results.rows
            or self._in_child
            or self.recorder.riding
        ) and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        with self._child_lock:
            self._closing = True
            child, self._child = self._child, None
        if child is not None:
            child.close()  # sends what is queued and collects the answers first
        self._queue.put(None)
        self._thread.join(timeout=10)

    # -- in a child process ------------------------------------------------------------

    def _submit_to_child(self, call: ShadowCall, recipe: ModelRecipe) -> bool:
        with self._child_lock:
            if (
                self._closing
                or self._in_child >= self.capacity
                or time.monotonic() < self._child_down_until
            ):
                self.dropped += 1
                SHADOW_DROPPED.inc()
                return False
            if self._child is None or not self._child.alive:
                try:
                    self._child = ShadowProcess(self._answered, self._lost, self._tick, self.host)
                except (OSError, EOFError, AuthenticationError) as exc:
                    self._child_down_until = time.monotonic() + RESTART_AFTER
                    self.dropped += 1
                    SHADOW_DROPPED.inc()
                    log.error(
                        "cannot reach the shadow process (%s); shadow calls are dropped for %gs",
                        exc,
                        RESTART_AFTER,
                    )
                    return False
            self._in_child += 1
            child = self._child
        child.send(recipe, call.decision_id, call.point, call.version, call.input)
        return True

    def _answered(self, answers: list[Answer]) -> None:
        self._results.add([_row_of(a) for a in answers])
        with self._child_lock:
            self._in_child -= len(answers)
            self.completed += len(answers)

    def _tick(self) -> None:
        if self._results.wait() == 0.0:
            self._results.flush()

    def _lost(self, lost: int, why: str) -> None:
        with self._child_lock:
            self.dropped += lost
            SHADOW_DROPPED.inc(lost)
            self._in_child -= lost
            if self._closing:
                return
            self._child_down_until = time.monotonic() + RESTART_AFTER
        log.error(
            "the shadow process stopped (%s); %d shadow calls lost, a new one starts in %gs",
            why,
            lost,
            RESTART_AFTER,
        )

    # -- on this process's thread ------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                call = self._queue.get(timeout=self._results.wait())
            except queue.Empty:
                self._results.flush()
                continue
            try:
                if call is None:
                    self._results.flush()
                    return
                self._results.add([self._execute(call)])
                self.completed += 1
            except Exception:
                log.exception("shadow call failed")
            finally:
                self._queue.task_done()

    @staticmethod
    def _execute(call: ShadowCall) -> dict[str, Any]:
        start = time.perf_counter()
        outcome = confidence = failure = None
        try:
            prediction = call.model.call(call.input)
            outcome, confidence = prediction.outcome, prediction.confidence
        except ModelFailure as exc:
            failure = exc.code
        latency_ms = (time.perf_counter() - start) * 1000
        return _row_of(
            Answer(
                call.decision_id, call.point, call.version, outcome, confidence, failure, latency_ms
            )
        )


def _row_of(answer: Answer) -> dict[str, Any]:
    return {
        "decision_id": answer.decision_id,
        "model_version": answer.version,
        "point": answer.point,
        "outcome": answer.outcome,
        "confidence": answer.confidence,
        "failure": answer.failure,
        "latency_ms": answer.latency_ms,
        "created_at": datetime.now(UTC),
    }
