"""Shadow calls in a child process, so a challenger never competes with the champion for the
interpreter.

In one process every thread shares one interpreter lock: a challenger answering beside the
champion holds it for the length of each of its calls, and the decisions callers wait for queue
behind it (`bench_shadow.py`: p99 doubled with the challenger on a thread). In a child process
the challenger uses another core. The parent's side costs a list append per call: a courier
thread wakes a few dozen times a second to send what queued as one message and to collect the
answers to the previous one, so neither a thread hand-off nor pickling lands on a decision.
One batch is in flight at a time, which also keeps the two pipe directions from filling at once.
A challenger that crashes its process (a native library, say) takes only the child with it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from warden.models.base import ModelFailure, ModelLoadError
from warden.models.guard import GuardedModel, ModelRecipe
from warden.rollout.shadow_host import HostAddress, name_process

log = logging.getLogger(__name__)

NICENESS = 19  # the lowest priority: the child only uses CPU the server does not want
TICK = 0.1  # seconds between the courier's rounds: few, larger hand-offs
STUCK_AFTER = 60.0  # seconds without an answer before the child is taken for hung


class Request(NamedTuple):
    """Tuples on the wire: they pickle several times faster than dataclasses."""

    key: str
    recipe: ModelRecipe | None  # sent with the first request for each model only
    decision_id: str
    point: str
    version: str
    input: dict[str, Any]


class Answer(NamedTuple):
    decision_id: str
    point: str
    version: str
    outcome: str | None
    confidence: float | None
    failure: str | None
    latency_ms: float


class ShadowProcess:
    """A child process answering shadow calls, and the courier thread that talks to it.

    `on_answers` receives each batch of answers on the courier thread; `on_lost` the number of
    calls lost when the child dies or hangs (the child is then gone; make a new one to go on).
    """

    def __init__(
        self,
        on_answers: Callable[[list[Answer]], None],
        on_lost: Callable[[int, str], None],
        on_tick: Callable[[], None] = lambda: None,
        host: HostAddress | None = None,
    ) -> None:
        """With `host`, talk to the host's shared shadow process (`shadow_host`) instead of
        starting a child; connecting raises OSError or AuthenticationError when it cannot."""
        self._peer: _Child | _Shared = _Child() if host is None else _Shared(host)
        self._conn = self._peer.conn
        self._on_answers = on_answers
        self._on_lost = on_lost
        self._on_tick = on_tick
        self._outbox: list[Request] = []
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._stop = threading.Event()
        self.alive = True
        self._courier = threading.Thread(target=self._run, name="warden-shadow-io", daemon=True)
        self._courier.start()

    @property
    def pid(self) -> int | None:
        """The process answering: this one's child, or the host's shadow process."""
        return self._peer.pid

    def send(
        self, recipe: ModelRecipe, decision_id: str, point: str, version: str, input: Any
    ) -> None:
        key = recipe.key
        with self._lock:
            first = key not in self._known
            self._known.add(key)
            self._outbox.append(
                Request(key, recipe if first else None, decision_id, point, version, dict(input))
            )

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, collect its answers, then stop the child."""
        self._stop.set()
        self._courier.join(timeout)
        self._peer.close(timeout)

    def _run(self) -> None:
        in_flight: list[Request] = []
        sent_at = 0.0
        while True:
            stopping = self._stop.is_set()
            try:
                if in_flight:
                    if self._conn.poll(TICK):
                        answers: list[Answer] = self._conn.recv()
                        in_flight = []
                        self._on_answers(answers)
                    elif time.monotonic() - sent_at > STUCK_AFTER:
                        raise ChildGone("no answer", hung=True)
                    elif not self._peer.alive():
                        raise ChildGone("exited")
                else:
                    with self._lock:
                        in_flight, self._outbox = self._outbox, []
                    if in_flight:
                        self._conn.send(in_flight)
                        sent_at = time.monotonic()
                    elif stopping:
                        self._conn.send(None)
                        return
                    else:
                        self._stop.wait(TICK)
            except (ChildGone, OSError, EOFError) as exc:
                with self._lock:
                    lost = len(in_flight) + len(self._outbox)
                    self._outbox = []
                self.alive = False
                self._peer.give_up(hung=isinstance(exc, ChildGone) and exc.hung)
                self._on_lost(lost, str(exc) or type(exc).__name__)
                return
            self._on_tick()


class ChildGone(Exception):
    """The child process exited or stopped answering."""

    def __init__(self, why: str, hung: bool = False) -> None:
        super().__init__(why)
        self.hung = hung


class _Child:
    """A shadow process of this process's own, on a pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # fork would copy the parent's locks
        self.conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=serve, args=(child_conn,), name="warden-shadow", daemon=True
        )
        self._process.start()
        child_conn.close()
        self.pid = self._process.pid

    def alive(self) -> bool:
        return bool(self._process.is_alive())

    def give_up(self, hung: bool) -> None:
        self._process.kill()

    def close(self, timeout: float) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout)
        self.conn.close()


class _Shared:
    """The host's shadow process, which other workers use too: this worker only ever ends its
    own connection, and kills the process only when it hangs (the server starts another)."""

    def __init__(self, host: HostAddress) -> None:
        self.conn, self.pid = host.connect()

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def give_up(self, hung: bool) -> None:
        if hung:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        self.conn.close()

    def close(self, timeout: float) -> None:
        self.conn.close()


def serve(conn: Any) -> None:
    """The child's loop: build each model once, answer each batch, until told to stop."""
    yield_the_cpu()
    name_process()
    models: dict[str, GuardedModel | ModelLoadError] = {}
    while True:
        batch: list[Request] | None = conn.recv()
        if batch is None:
            return
        conn.send([answer(models, request) for request in batch])


def yield_the_cpu() -> None:
    """Shadow work is best effort: at the lowest scheduling priority the child runs on cores
    the server leaves idle, and never takes one from a decision someone is waiting for."""
    with contextlib.suppress(AttributeError, OSError):  # no os.nice on this platform
        os.nice(NICENESS)


def answer(models: dict[str, GuardedModel | ModelLoadError], request: Request) -> Answer:
    model = models.get(request.key)
    if model is None:
        model = models[request.key] = _build(request.recipe)
    start = time.perf_counter()
    outcome = confidence = failure = None
    if isinstance(model, ModelLoadError):
        failure = "model_error"
    else:
        try:
            prediction = model.call(request.input)
            outcome, confidence = prediction.outcome, prediction.confidence
        except ModelFailure as exc:
            failure = exc.code
    latency_ms = (time.perf_counter() - start) * 1000
    return Answer(
        request.decision_id,
        request.point,
        request.version,
        outcome,
        confidence,
        failure,
        latency_ms,
    )


def _build(recipe: ModelRecipe | None) -> GuardedModel | ModelLoadError:
    if recipe is None:  # cannot happen: the parent sends the recipe with the first request
        return ModelLoadError("no recipe for this model")
    try:
        return recipe.build()
    except Exception as exc:
        log.exception("the shadow process cannot load %s", recipe.source.spec.kind)
        return ModelLoadError(str(exc))
