"""Adaptive batching of concurrent model calls made from threads.

The same idea as `batching` for callers that block (the in-process SDK under a threaded web
server, the console, the CLI): a call that arrives while another batch is in flight waits for
it to return and goes out with the others in one vectorised call. A lone caller goes out at
once, on the same worker hop as an unbatched call.

Each caller keeps its own deadline. A caller whose deadline passes while the batch in flight is
past its own lets the next batch go out beside it, so a hung call cannot hold up those behind
it; the pool's size bounds how many batches can hang.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping
from typing import Any

from warden.models.base import MODEL_ERROR, ModelFailure, saturated_failure, timeout_failure
from warden.models.batching import MAX_BATCH, Answer, PredictMany, one_per_call
from warden.models.workers import Job, PoolSaturated, WorkerPool


class _Slot:
    """One caller's place in a batch."""

    __slots__ = ("answer", "done", "input")

    def __init__(self, input: Mapping[str, Any]) -> None:
        self.input = input
        self.answer: Answer | None = None
        self.done = threading.Lock()
        self.done.acquire()


class ThreadBatcher:
    """Gathers concurrent blocking `predict` calls into `predict_many` calls on a pool."""

    def __init__(
        self,
        predict_many: PredictMany,
        pool: WorkerPool,
        timeout: float,
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._predict_many = predict_many
        self._pool = pool
        self._timeout = timeout
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._in_flight: object | None = None  # the batch whose answer gates the next one
        self._in_flight_until = 0.0

    def predict(self, input: Mapping[str, Any]) -> Any:
        """The model's raw answer for one input; raises ModelFailure."""
        slot = _Slot(input)
        with self._lock:
            self._waiting.append(slot)
            batch = self._take() if self._in_flight is None else None
        if batch is not None:
            self._send(*batch)
        if not slot.done.acquire(timeout=self._timeout):
            self._gave_up(slot)
            raise timeout_failure(self._timeout * 1000)
        answer = slot.answer
        if isinstance(answer, ModelFailure):
            raise answer
        return answer

    def _take(self) -> tuple[object, list[_Slot]] | None:
        """The next batch, marked in flight; under the lock."""
        if not self._waiting:
            return None
        batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
        token = object()
        self._in_flight = token
        self._in_flight_until = time.monotonic() + self._timeout
        return token, batch

    def _send(self, token: object, batch: list[_Slot]) -> None:
        finish = functools.partial(self._finish, token, batch)
        try:
            self._pool.submit(self._predict_many, [slot.input for slot in batch], finish)
        except PoolSaturated:
            _answer(batch, saturated_failure())
            self._release(token)

    def _finish(self, token: object, batch: list[_Slot], job: Job[Any, Any]) -> None:
        """On the worker, once the batch's call returned."""
        try:
            answers = job.outcome()
        except Exception as exc:
            answers = ModelFailure(MODEL_ERROR, f"{type(exc).__name__}: {exc}")
        _answer(batch, answers)
        self._release(token)

    def _release(self, token: object) -> None:
        with self._lock:
            batch = None
            if self._in_flight is token:
                self._in_flight = None
                batch = self._take()
        if batch is not None:
            self._send(*batch)

    def _gave_up(self, slot: _Slot) -> None:
        """A caller's deadline passed: leave the queue, and if the batch in flight has outlived
        its own deadline, let the next batch go out beside it."""
        with self._lock:
            if slot in self._waiting:
                self._waiting.remove(slot)
            batch = None
            if self._in_flight is not None and time.monotonic() >= self._in_flight_until:
                self._in_flight = None
                batch = self._take()
        if batch is not None:
            self._send(*batch)


def _answer(batch: list[_Slot], answers: list[Answer] | ModelFailure) -> None:
    for slot, answer in zip(batch, one_per_call(answers, len(batch)), strict=True):
        slot.answer = answer
        slot.done.release()
