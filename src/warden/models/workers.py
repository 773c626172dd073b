"""A bounded set of persistent worker threads for calls that must be able to time out.

Python cannot interrupt a running call, so a timed-out call is abandoned: it keeps its worker
until it returns. The pool therefore has a hard size and refuses work when every worker is busy,
instead of queueing behind hung calls. Handoff is one lock release each way, cheaper than a
`concurrent.futures` submit and result; idle workers exit after a while, so a pool that is
dropped (say, on a policy reload) does not leak threads.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")

_names = itertools.count(1)


class PoolSaturated(Exception):
    """Every worker is busy."""


class CallTimeout(Exception):
    """The call did not return in time; it keeps running on its worker."""


class Job(Generic[A, R]):
    """One call handed to a worker."""

    __slots__ = ("arg", "done", "error", "function", "notify", "result")

    def __init__(
        self,
        function: Callable[[A], R],
        arg: A,
        notify: Callable[[Job[A, R]], object] | None = None,
    ) -> None:
        self.function = function
        self.arg = arg
        self.result: R | None = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()
        self.notify = notify  # called on the worker once the job is done (async callers)

    def outcome(self) -> R:
        """What the call returned; raises what it raised."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # set, since no error was stored


class WorkerPool:
    def __init__(self, size: int, *, name: str = "warden-model", idle_seconds: float = 60.0):
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._size = size
        self._name = name
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._started = 0

    def run(self, function: Callable[[A], R], arg: A, timeout: float) -> R:
        """`function(arg)` on a worker, waiting at most `timeout` seconds.

        Raises PoolSaturated when no worker is free, CallTimeout when the call is too slow, and
        whatever the function raised.
        """
        job: Job[A, R] = Job(function, arg)
        self._worker().start(job)
        if not job.done.acquire(timeout=timeout):
            raise CallTimeout
        return job.outcome()

    def submit(
        self, function: Callable[[A], R], arg: A, notify: Callable[[Job[A, R]], object]
    ) -> Job[A, R]:
        """Start `function(arg)` on a worker and return at once; `notify` is called on the
        worker when it is done (event-loop callers wake themselves with it). Raises
        PoolSaturated when no worker is free."""
        job: Job[A, R] = Job(function, arg, notify)
        self._worker().start(job)
        return job

    def _worker(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()  # the most recently used: hot, and lets others retire
            if self._started == self._size:
                raise PoolSaturated
            self._started += 1
        try:
            return _Worker(self, f"{self._name}-{next(_names)}")
        except BaseException:
            with self._lock:
                self._started -= 1
            raise

    def _rest(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def _retire(self, worker: _Worker) -> bool:
        """Whether an idle worker may exit; False when a caller has just taken it."""
        with self._lock:
            if worker not in self._idle:
                return False
            self._idle.remove(worker)
            self._started -= 1
            return True


class _Worker:
    def __init__(self, pool: WorkerPool, name: str) -> None:
        self._pool = pool
        self._job: Job[Any, Any] | None = None
        self._wake = threading.Lock()
        self._wake.acquire()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def start(self, job: Job[Any, Any]) -> None:
        self._job = job
        self._wake.release()

    def _loop(self) -> None:
        pool = self._pool
        while True:
            if not self._wake.acquire(timeout=pool._idle_seconds):
                if pool._retire(self):
                    return
                self._wake.acquire()  # a caller took this worker just as it timed out
            job, self._job = self._job, None
            assert job is not None
            try:
                job.result = job.function(job.arg)
            except BaseException as exc:
                job.error = exc
            pool._rest(self)  # before waking the caller, so its next call finds this worker idle
            job.done.release()
            if job.notify is not None:
                # RuntimeError: the caller's event loop has closed, so nobody is waiting
                with contextlib.suppress(RuntimeError):
                    job.notify(job)
            del job  # do not keep the last input alive while idle
