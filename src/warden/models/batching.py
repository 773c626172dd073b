"""Adaptive batching of concurrent model calls made from an event loop.

Under load many decisions wait for the same model at once. Each would pay the model's fixed
cost per call (for scikit-learn, most of a predict_proba is per call, not per row), so calls that
arrive while one is in flight are gathered and sent together, in one vectorised call, as soon as
it returns — the same idea as the recorder's group commit. A lone caller is never delayed: the
first call goes out on the next turn of the loop.

Each caller keeps its own deadline: one that is not answered in time fails with a timeout,
whatever happens to the batch. A batch still running after the timeout is abandoned (it keeps
its worker, as any timed-out call does), and the next batch goes out beside it, so one hung call
cannot hold up the calls behind it; the pool's size bounds how many can hang.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warden.models.base import (
    INVALID_OUTPUT,
    MODEL_ERROR,
    ModelFailure,
    Prediction,
    saturated_failure,
    timeout_failure,
)
from warden.models.workers import PoolSaturated, WorkerPool

PredictMany = Callable[[Sequence[Mapping[str, Any]]], list[Prediction | ModelFailure]]
Answer = Prediction | ModelFailure

MAX_BATCH = 256


@dataclass(eq=False)
class _Queue:
    """The calls waiting on one event loop, and whether a batch of theirs is in flight."""

    loop: asyncio.AbstractEventLoop
    waiting: list[tuple[Mapping[str, Any], asyncio.Future[Answer]]] = field(default_factory=list)
    in_flight: object | None = None  # the batch whose answer gates the next one
    deadline: asyncio.TimerHandle | None = None  # when that batch is abandoned


class Batcher:
    """Gathers concurrent `predict` calls into `predict_many` calls on a worker pool."""

    def __init__(
        self,
        predict_many: PredictMany,
        pool: WorkerPool | None,
        timeout: float | None,
        *,
        gather: bool = True,
        max_batch: int = MAX_BATCH,
    ) -> None:
        """`gather=False` sends every call on its own, at once and side by side: for models
        with no vectorised call, where gathering would only queue calls one behind another."""
        self._predict_many = predict_many
        self._pool = pool
        self._timeout = timeout
        self._gather = gather
        self._max_batch = max_batch
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )

    async def predict(self, input: Mapping[str, Any]) -> Prediction:
        """The model's raw answer for one input, or ModelFailure."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue(loop)
        answer: asyncio.Future[Answer] = loop.create_future()
        if not self._gather:
            self._send(queue, [(input, answer)], gate=False)
        else:
            queue.waiting.append((input, answer))
            if queue.in_flight is None and len(queue.waiting) == 1:
                loop.call_soon(self._dispatch, queue)  # calls made in this turn of the loop join
        timer = None
        if self._timeout is not None:
            timer = loop.call_later(self._timeout, _expire, answer, self._timeout)
        try:
            result = await answer
        finally:
            if timer is not None:
                timer.cancel()
        if isinstance(result, ModelFailure):
            raise result
        return result

    def _dispatch(self, queue: _Queue) -> None:
        if queue.in_flight is not None:
            return
        batch = [(i, a) for i, a in queue.waiting[: self._max_batch] if not a.done()]
        del queue.waiting[: self._max_batch]
        if not batch:
            if queue.waiting:
                self._dispatch(queue)
            return
        self._send(queue, batch, gate=True)

    def _send(self, queue: _Queue, batch: _Batch, *, gate: bool) -> None:
        """Start the batch's call; with `gate`, the next batch waits for it (or its deadline)."""
        inputs = [item for item, _ in batch]
        loop = queue.loop
        token = object()
        if self._pool is None:  # no timeout set: an ordinary thread, off the loop
            running = loop.run_in_executor(None, self._predict_many, inputs)
            if gate:
                queue.in_flight = token
            running.add_done_callback(lambda done: self._finish(queue, token, batch, done.result))
            return
        try:
            self._pool.submit(
                self._predict_many,
                inputs,
                lambda job: loop.call_soon_threadsafe(
                    self._finish, queue, token, batch, job.outcome
                ),
            )
        except PoolSaturated:
            _settle(batch, saturated_failure())
            if gate:
                self._next(queue)
            return
        if gate:
            queue.in_flight = token
            assert self._timeout is not None
            queue.deadline = loop.call_later(self._timeout, self._abandon, queue, token)

    def _finish(
        self, queue: _Queue, token: object, batch: _Batch, outcome: Callable[[], Any]
    ) -> None:
        """On the loop, once the batch's call returned: `outcome()` gives its answers."""
        try:
            answers = outcome()
        except Exception as exc:
            answers = ModelFailure(MODEL_ERROR, f"{type(exc).__name__}: {exc}")
        self._answer(batch, answers)
        if queue.in_flight is token:
            queue.in_flight = None
            if queue.deadline is not None:
                queue.deadline.cancel()
            self._next(queue)

    def _abandon(self, queue: _Queue, token: object) -> None:
        """The batch outlived every caller's deadline: let the next one go out beside it."""
        if queue.in_flight is token:
            queue.in_flight = None
            self._next(queue)

    def _next(self, queue: _Queue) -> None:
        if queue.waiting:
            self._dispatch(queue)

    @staticmethod
    def _answer(batch: _Batch, answers: list[Answer] | ModelFailure) -> None:
        for (_, future), answer in zip(batch, one_per_call(answers, len(batch)), strict=True):
            if not future.done():
                future.set_result(answer)


def one_per_call(answers: list[Answer] | ModelFailure, calls: int) -> list[Answer]:
    """Each call's answer from a batch's: a failure of the whole batch fails every call."""
    if isinstance(answers, ModelFailure):
        return [answers] * calls
    if len(answers) != calls:
        message = f"the model answered {len(answers)} rows for a batch of {calls}"
        return [ModelFailure(INVALID_OUTPUT, message)] * calls
    return answers


_Batch = list[tuple[Mapping[str, Any], "asyncio.Future[Answer]"]]


def _settle(batch: _Batch, failure: ModelFailure) -> None:
    Batcher._answer(batch, failure)


def _expire(answer: asyncio.Future[Answer], timeout: float) -> None:
    if not answer.done():
        answer.set_result(timeout_failure(timeout * 1000))
