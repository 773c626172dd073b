"""One decision flow, two ways to run it: on the caller's thread, or on an asyncio event loop.

The engine writes the decision flow once, as a generator that yields a `Step` wherever it must
wait — for the model, for the commit, for a database read — and receives the answer back (or
has the step's exception thrown in, where it is handled like any other). `run` drives it by
blocking, for in-process callers; `run_async` drives it by awaiting, so the HTTP server decides
on its event loop without parking a thread per request: waits for the model worker and the
group commit resolve through the loop, many per wake-up under load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from warden.errors import Unavailable

if TYPE_CHECKING:
    from warden.models.guard import GuardedModel
    from warden.store.recorder import Change, Recorder

T = TypeVar("T")


class Step:
    """Something the flow waits for. Subclasses answer it blocking and awaiting."""

    def run(self) -> Any:
        raise NotImplementedError

    async def run_async(self) -> Any:
        raise NotImplementedError


@dataclass(slots=True)
class CallModel(Step):
    """A guarded model call; raises ModelFailure."""

    model: GuardedModel
    input: Mapping[str, Any]

    def run(self) -> Any:
        return self.model.call(self.input)

    async def run_async(self) -> Any:
        return await self.model.call_async(self.input)


@dataclass(slots=True)
class Commit(Step):
    """A change handed to the group-commit writer; answered once its transaction committed,
    or with an error (`Unavailable` when the writer cannot take it)."""

    recorder: Recorder
    change: Change

    def run(self) -> Any:
        return self.recorder.record(self.change)

    async def run_async(self) -> Any:
        future = self.recorder.submit(self.change)
        return await wait_for_future(future, self.recorder.accept_timeout)


@dataclass(slots=True)
class Blocking(Step):
    """Blocking work off the hot path (a database read, a refresh); a worker thread runs it
    when the flow is on an event loop."""

    function: Callable[[], Any]

    def run(self) -> Any:
        return self.function()

    async def run_async(self) -> Any:
        return await asyncio.to_thread(self.function)


Flow = Generator[Step, Any, T]


def run(flow: Flow[T]) -> T:
    """Drive a flow on this thread, blocking at each step."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            reply = step.run()
        except Exception as exc:
            error = exc


async def run_async(flow: Flow[T]) -> T:
    """Drive a flow on the running event loop, awaiting each step."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            reply = await step.run_async()
        except Exception as exc:
            error = exc


async def wait_for_future(future: Future[T], timeout: float) -> T:
    """Await the writer's future for a change, as `Recorder.wait` does on a thread.

    A caller that has waited `timeout` seconds while the change still queued, or that goes away
    (its task is cancelled), withdraws the change if the writer has not taken it — so a caller
    told "not recorded" never finds it committed later. A change the writer has taken is
    awaited to its outcome: the writer answers everything it takes.

    Not `asyncio.wrap_future`: that links the two futures in a reference cycle, and a cycle per
    decision is work for the garbage collector's pauses.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def on_done(done: Future[T]) -> None:  # on the writer's thread, or here when withdrawn
        loop.call_soon_threadsafe(_copy_outcome, done, waiter)

    future.add_done_callback(on_done)
    timer = loop.call_later(timeout, _give_up, future, waiter, timeout)
    try:
        return await waiter
    except asyncio.CancelledError:
        future.cancel()  # withdrawn if still queued; a taken change still commits
        raise
    finally:
        timer.cancel()


def _copy_outcome(done: Future[T], waiter: asyncio.Future[T]) -> None:
    if waiter.done() or done.cancelled():  # the caller gave up waiting
        return
    error = done.exception()
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(done.result())


def _give_up(future: Future[Any], waiter: asyncio.Future[Any], timeout: float) -> None:
    if not waiter.done() and future.cancel():
        waiter.set_exception(
            Unavailable(
                f"the database did not take the change within {timeout:g}s; it was withdrawn "
                "and will not be recorded, retry after a moment"
            )
        )
