"""The decision flow on an event loop: the same decisions as `decide`, model calls gathered
into batches, per-caller timeouts, and commits a departing caller cannot withdraw."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import pytest
from fastapi.testclient import TestClient

from warden.api.app import create_app
from warden.decision import Route
from warden.engine import Engine
from warden.errors import InvalidInput, InvalidRequest, Unavailable
from warden.flow import wait_for_future
from warden.ledger.chain import EventDraft
from warden.models import GuardedModel, ModelFailure, Prediction
from warden.models.callable import CallableModel
from warden.policy.schema import BreakerSpec, FailureSpec, ModelSpec
from warden.sdk.local import Warden
from warden.store.recorder import Change

OUTCOMES = ["approve", "decline"]


def application(score: int, **extra: Any) -> dict[str, Any]:
    return {"amount": 1000, "income": 50000, "credit_score": score, **extra}


def test_decide_async_routes_and_records_like_decide(engine: Engine) -> None:
    inputs = [application(score) for score in (320, 500, 700, 849)]
    expected = [engine.decide("loan_approval", item) for item in inputs]

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(engine.decide_async("loan_approval", i) for i in inputs))

    got = asyncio.run(all_at_once())
    for before, after in zip(expected, got, strict=True):
        assert (after.route, after.outcome, after.confidence) == (
            before.route,
            before.outcome,
            before.confidence,
        )
        assert engine.get(after.id) == after  # committed before it was returned


def test_a_failing_row_fails_alone_in_its_batch(engine: Engine) -> None:
    async def mixed() -> list[Any]:
        items = [application(800), application(800, mode="error"), application(810)]
        return await asyncio.gather(*(engine.decide_async("loan_approval", i) for i in items))

    good, bad, other = asyncio.run(mixed())
    assert good.route is Route.AUTO and other.route is Route.AUTO
    assert bad.route is Route.REVIEW
    assert [r.code for r in bad.reasons] == ["model_error"]


def test_invalid_input_is_refused_and_recorded_on_the_async_path(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as raised:
        asyncio.run(engine.decide_async("loan_approval", {"amount": "lots"}))
    refused = engine.get(raised.value.extra["decision_id"])
    assert refused.route is Route.REFUSED


def test_concurrent_async_retries_with_one_key_make_one_decision(engine: Engine) -> None:
    async def retries() -> list[Any]:
        return await asyncio.gather(
            *(
                engine.decide_async("loan_approval", application(700), idempotency_key="k-1")
                for _ in range(8)
            )
        )

    assert len({d.id for d in asyncio.run(retries())}) == 1


# -- the batcher on its own ---------------------------------------------------------------------


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # free any worker still parked on it


def guarded(function: Any, timeout_ms: int | None, workers: int = 4) -> GuardedModel:
    return GuardedModel(
        CallableModel(function, name="test:function", version="v1"),
        spec=ModelSpec(kind="callable", function="m:f", version="v1", timeout_ms=timeout_ms),
        failure=FailureSpec(breaker=BreakerSpec(min_calls=100, window=100)),
        outcomes=OUTCOMES,
        max_concurrency=workers,
    )


def test_each_caller_times_out_and_a_hung_batch_does_not_block_the_next(
    gate: threading.Event,
) -> None:
    def model(input: Mapping[str, Any]) -> tuple[str, float]:
        if input["hang"]:
            gate.wait(10)
        return "approve", 0.9

    model_ = guarded(model, timeout_ms=100)

    async def scenario() -> tuple[str, Prediction]:
        hung = asyncio.ensure_future(model_.call_async({"hang": True}))
        await asyncio.sleep(0.01)  # the hung call is in flight
        with pytest.raises(ModelFailure) as raised:
            await hung
        answered = await model_.call_async({"hang": False})  # goes out beside the hung one
        return raised.value.code, answered

    code, answered = asyncio.run(scenario())
    assert code == "model_timeout"
    assert answered == Prediction("approve", 0.9)


def test_calls_fail_fast_when_every_worker_is_held_by_a_hung_call(gate: threading.Event) -> None:
    def model(input: Mapping[str, Any]) -> tuple[str, float]:
        gate.wait(10)
        return "approve", 0.9

    model_ = guarded(model, timeout_ms=50, workers=1)

    async def scenario() -> list[str]:
        codes = []
        for _ in range(3):
            try:
                await model_.call_async({})
            except ModelFailure as exc:
                codes.append(exc.code)
            await asyncio.sleep(0.06)  # past the deadline: the batch is abandoned
        return codes

    assert asyncio.run(scenario()) == ["model_timeout", "model_saturated", "model_saturated"]


def test_invalid_output_fails_that_caller_and_counts_for_the_breaker() -> None:
    model_ = guarded(lambda input: ("maybe", 0.9), timeout_ms=None)
    with pytest.raises(ModelFailure) as raised:
        asyncio.run(model_.call_async({}))
    assert raised.value.code == "invalid_output"
    assert model_.breaker._failures == 1


def test_a_caller_that_goes_away_does_not_withdraw_a_commit_in_flight() -> None:
    future: Future[str] = Future()
    assert future.set_running_or_notify_cancel()  # the writer has taken the change

    async def scenario() -> None:
        waiter = asyncio.ensure_future(wait_for_future(future, 5))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(scenario())
    assert not future.cancelled()
    future.set_result("committed")  # the writer can still settle it: no InvalidStateError
    assert future.result() == "committed"


def test_a_caller_that_goes_away_withdraws_a_change_still_queued() -> None:
    """Not taken by the writer yet: withdrawn, so it can never be committed after its caller
    was gone (the writer skips a cancelled future when it takes the change)."""
    future: Future[str] = Future()

    async def scenario() -> None:
        waiter = asyncio.ensure_future(wait_for_future(future, 5))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(scenario())
    assert future.cancelled()
    assert not future.set_running_or_notify_cancel()


def test_a_change_not_taken_in_time_is_withdrawn_and_reported_unavailable() -> None:
    future: Future[str] = Future()

    async def scenario() -> None:
        with pytest.raises(Unavailable, match="withdrawn"):
            await wait_for_future(future, 0.05)

    asyncio.run(scenario())
    assert future.cancelled()


# -- garbage -------------------------------------------------------------------------------


def test_a_decision_leaves_no_reference_cycles(engine: Engine) -> None:
    """Cycles are freed only by the collector's passes, which pause every request; a cycle per
    decision made those passes frequent and long (see warden.heap)."""
    engine.decide("loan_approval", application(700))  # warm: lazily built state is not garbage
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for score in (400, 700, 820):
            engine.decide("loan_approval", application(score))
            asyncio.run(engine.decide_async("loan_approval", application(score)))
        gc.collect()
        ours = [o for o in gc.garbage if isinstance(o, Change | EventDraft | Future)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []


def test_the_server_freezes_its_start_up_heap(engine: Engine) -> None:
    try:
        with TestClient(create_app(engine, workers=[], freeze_heap=True)) as client:
            assert client.get("/healthz").status_code == 200
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_sdk_decides_on_an_event_loop(engine: Engine) -> None:
    warden = Warden(engine)
    sync = warden.decide("loan_approval", application(800), idempotency_key="sdk-1")

    async def again() -> list[Any]:
        return await asyncio.gather(
            warden.decide_async("loan_approval", application(800), idempotency_key="sdk-1"),
            warden.decide_async("loan_approval", application(330)),
        )

    retried, other = asyncio.run(again())
    assert retried.id == sync.id  # the same idempotency rules on either path
    assert other.route is Route.REVIEW and engine.get(other.id) == other


def test_the_collector_is_paused_only_while_a_batch_is_built(engine: Engine) -> None:
    seen: list[bool] = []
    guarded = engine.models["loan_approval"]
    assert guarded is not None
    original = guarded._predict_many

    def spying(inputs: Sequence[Mapping[str, Any]]) -> list[Prediction | ModelFailure]:
        seen.append(gc.isenabled())
        return original(inputs)

    guarded._predict_many = spying  # type: ignore[method-assign]
    engine.decide_many("loan_approval", [application(700), application(720)])
    assert seen == [False] and gc.isenabled()
    with pytest.raises(InvalidRequest):
        engine.decide_many("loan_approval", [application(700)], contexts=[{}, {}])
    assert gc.isenabled()
    gc.disable()
    try:  # an application that turned the collector off keeps it off
        engine.decide_many("loan_approval", [application(700)])
        assert not gc.isenabled()
    finally:
        gc.enable()


# -- gathering calls into vectorised ones ---------------------------------------------------


class Scorer:
    """A model with a vectorised call, which counts its batches."""

    version = "v"

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def predict(self, input: Mapping[str, Any]) -> Prediction:
        return Prediction("approve" if input["n"] % 2 else "decline", input["n"] / 1000)

    def predict_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        self.sizes.append(len(inputs))
        time.sleep(0.02)  # long enough for other callers to arrive behind this call
        return [self.predict(input) for input in inputs]


def vectorised(model: Scorer) -> GuardedModel:
    return GuardedModel(
        model,
        spec=ModelSpec(kind="callable", function="m:f", version="v", timeout_ms=5000),
        failure=FailureSpec(breaker=BreakerSpec(min_calls=100, window=100)),
        outcomes=OUTCOMES,
        max_concurrency=8,
    )


def test_concurrent_async_calls_share_vectorised_calls_and_keep_their_own_answers() -> None:
    scorer = Scorer()
    model = vectorised(scorer)

    async def burst() -> list[Prediction]:
        return await asyncio.gather(*(model.call_async({"n": n}) for n in range(40)))

    answers = asyncio.run(burst())
    assert answers == [scorer.predict({"n": n}) for n in range(40)]
    assert sum(scorer.sizes) == 40 and len(scorer.sizes) < 10, scorer.sizes


def test_concurrent_threads_share_vectorised_calls_and_keep_their_own_answers() -> None:
    scorer = Scorer()
    model = vectorised(scorer)
    answers: dict[int, Prediction] = {}

    def caller(n: int) -> None:
        answers[n] = model.call({"n": n})

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {n: scorer.predict({"n": n}) for n in range(24)}
    assert sum(scorer.sizes) == 24 and len(scorer.sizes) < 24, scorer.sizes


def test_models_without_a_vectorised_call_answer_side_by_side() -> None:
    """Gathering calls to a plain function would only queue them one behind another."""
    running = 0
    most = 0
    lock = threading.Lock()

    def slow(input: Mapping[str, Any]) -> tuple[str, float]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return "approve", 0.5

    model = guarded(slow, timeout_ms=5000, workers=8)

    async def burst() -> list[Prediction]:
        return await asyncio.gather(*(model.call_async({}) for _ in range(6)))

    assert asyncio.run(burst()) == [Prediction("approve", 0.5)] * 6
    assert most > 1


def test_a_hung_vectorised_batch_does_not_block_the_next(gate: threading.Event) -> None:
    class Hanging(Scorer):
        def predict_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Prediction]:
            if any(input.get("hang") for input in inputs):
                gate.wait(10)
            return super().predict_many(inputs)

    model = GuardedModel(
        Hanging(),
        spec=ModelSpec(kind="callable", function="m:f", version="v", timeout_ms=100),
        failure=FailureSpec(breaker=BreakerSpec(min_calls=100, window=100)),
        outcomes=OUTCOMES,
        max_concurrency=4,
    )
    with pytest.raises(ModelFailure) as raised:
        model.call({"n": 1, "hang": True})
    assert raised.value.code == "model_timeout"
    assert model.call({"n": 3}) == Prediction("approve", 0.003)  # went out beside it
