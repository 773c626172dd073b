from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from warden.models.breaker import BreakerState, CircuitBreaker
from warden.policy.schema import BreakerSpec

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**spec: float) -> tuple[CircuitBreaker, Clock, list[tuple[BreakerState, BreakerState]]]:
    defaults: dict[str, float] = dict(
        failure_rate=0.5, window=10, min_calls=4, open_for=30.0, half_open_calls=2
    )
    clock = Clock()
    transitions: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        BreakerSpec(**(defaults | spec)),
        clock,
        on_transition=lambda old, new: transitions.append((old, new)),
    )
    return breaker, clock, transitions


def record(breaker: CircuitBreaker, outcomes: str) -> None:
    """Runs one call per character: S succeeds, F fails."""
    for outcome in outcomes:
        assert breaker.try_acquire()
        if outcome == "S":
            breaker.on_success()
        else:
            breaker.on_failure()


def open_breaker() -> tuple[CircuitBreaker, Clock, list[tuple[BreakerState, BreakerState]]]:
    breaker, clock, transitions = make()
    record(breaker, "FFFF")
    assert breaker.state is OPEN
    return breaker, clock, transitions


def test_stays_closed_below_min_calls_even_if_all_fail() -> None:
    breaker, _, transitions = make()
    record(breaker, "FFF")
    assert breaker.state is CLOSED
    assert transitions == []


def test_opens_when_failure_rate_reaches_threshold() -> None:
    breaker, _, transitions = make()
    record(breaker, "SSF")
    assert breaker.state is CLOSED
    record(breaker, "F")  # 2 of 4 = 0.5, the threshold itself
    assert breaker.state is OPEN
    assert transitions == [(CLOSED, OPEN)]


def test_stays_closed_below_threshold() -> None:
    breaker, _, _ = make()
    record(breaker, "SSSFSSF")  # 2 of 7
    assert breaker.state is CLOSED


def test_threshold_is_exact_for_decimal_rates() -> None:
    breaker, _, _ = make(failure_rate=0.1, window=3, min_calls=3)
    record(breaker, "SSS")
    assert breaker.state is CLOSED
    breaker, _, _ = make(failure_rate=0.3, window=10, min_calls=10)
    record(breaker, "FFFSSSSSSS")  # 3 of 10 is 0.3
    assert breaker.state is OPEN
    breaker, _, _ = make(failure_rate=0.07, window=100, min_calls=100)
    record(breaker, "F" * 7 + "S" * 93)  # 7 of 100 is 0.07, although 0.07 * 100 > 7 in floats
    assert breaker.state is OPEN


def test_min_calls_above_window_is_capped_at_window() -> None:
    breaker, _, _ = make(window=3, min_calls=20)
    record(breaker, "FFF")
    assert breaker.state is OPEN


def test_open_rejects_until_open_for_has_elapsed() -> None:
    breaker, clock, _ = open_breaker()
    assert not breaker.try_acquire()
    clock.now += 29.9
    assert not breaker.try_acquire()
    assert breaker.state is OPEN
    clock.now += 0.1
    assert breaker.try_acquire()
    assert breaker.state is HALF_OPEN


def test_results_arriving_while_open_are_ignored() -> None:
    breaker, clock, transitions = open_breaker()
    breaker.on_success()
    breaker.on_failure()
    assert breaker.state is OPEN
    clock.now += 30
    assert breaker.try_acquire()
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_half_open_admits_exactly_half_open_calls_trials() -> None:
    breaker, clock, _ = open_breaker()
    clock.now += 30
    assert [breaker.try_acquire() for _ in range(4)] == [True, True, False, False]
    breaker.on_success()
    assert breaker.state is HALF_OPEN
    assert not breaker.try_acquire()  # one trial is still undecided


def test_trial_failures_reopen_for_another_open_for() -> None:
    breaker, clock, transitions = open_breaker()
    clock.now += 30
    assert breaker.try_acquire() and breaker.try_acquire()
    breaker.on_success()
    breaker.on_failure()  # 1 of 2 trials failed: the threshold
    assert breaker.state is OPEN
    assert transitions[-2:] == [(OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]
    clock.now += 29
    assert not breaker.try_acquire()
    clock.now += 1
    assert breaker.try_acquire()


def test_trial_successes_close_with_a_fresh_window() -> None:
    breaker, clock, transitions = open_breaker()
    clock.now += 30
    record(breaker, "SS")
    assert breaker.state is CLOSED
    assert transitions[-1] == (HALF_OPEN, CLOSED)
    record(breaker, "FFF")  # the failures that opened it are gone: below min_calls again
    assert breaker.state is CLOSED
    record(breaker, "F")
    assert breaker.state is OPEN


def test_window_slides_so_old_failures_age_out() -> None:
    breaker, _, _ = make(failure_rate=0.4, window=4, min_calls=4)
    record(breaker, "FSSSF")  # the first F has left the window: 1 of 4, not 2 of 5
    assert breaker.state is CLOSED
    record(breaker, "F")  # S S F F
    assert breaker.state is OPEN


def test_window_sees_only_recent_calls() -> None:
    breaker, _, _ = make(failure_rate=0.5, window=4, min_calls=4)
    record(breaker, "SSSSSSSF")
    assert breaker.state is CLOSED
    record(breaker, "SF")  # 3 of 10 overall, but S F S F in the window
    assert breaker.state is OPEN


def test_listener_may_read_the_breaker_and_its_errors_are_contained() -> None:
    seen: list[BreakerState] = []
    breaker = CircuitBreaker(BreakerSpec(window=1, min_calls=1))

    def listener(old: BreakerState, new: BreakerState) -> None:
        seen.append(breaker.state)  # would deadlock if called under the lock
        raise RuntimeError("listener bug")

    breaker.on_transition = listener
    record(breaker, "F")
    assert seen == [OPEN]


def test_concurrent_calls_keep_counts_consistent() -> None:
    breaker, _, transitions = make(failure_rate=1.0, window=1000, min_calls=1000)

    def run() -> None:
        for _ in range(250):
            assert breaker.try_acquire()
            breaker.on_failure()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert breaker.state is OPEN  # exactly the 1000th failure opened it
    assert transitions == [(CLOSED, OPEN)]


operations = st.lists(
    st.one_of(
        st.just(("acquire", 0.0)),
        st.just(("success", 0.0)),
        st.just(("failure", 0.0)),
        st.tuples(st.just("tick"), st.floats(min_value=0.0, max_value=20.0)),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(
    ops=operations,
    window=st.integers(1, 8),
    min_calls=st.integers(1, 8),
    half_open_calls=st.integers(1, 4),
    failure_rate=st.sampled_from([0.25, 0.5, 1.0]),
)
def test_never_admits_early_while_open_nor_too_many_trials(
    ops: list[tuple[str, float]],
    window: int,
    min_calls: int,
    half_open_calls: int,
    failure_rate: float,
) -> None:
    breaker, clock, _ = make(
        failure_rate=failure_rate,
        window=window,
        min_calls=min_calls,
        open_for=30.0,
        half_open_calls=half_open_calls,
    )
    opened_at = 0.0
    trials = 0

    def on_transition(old: BreakerState, new: BreakerState) -> None:
        nonlocal opened_at, trials
        if new is OPEN:
            opened_at = clock.now
        trials = 0

    breaker.on_transition = on_transition
    in_flight = 0
    for op, dt in ops:
        if op == "tick":
            clock.now += dt
        elif op == "acquire":
            before = breaker.state
            permitted = breaker.try_acquire()
            if before is OPEN and clock.now - opened_at < 30.0:
                assert not permitted
            if before is CLOSED:
                assert permitted
            if permitted:
                in_flight += 1
                if breaker.state is HALF_OPEN:
                    trials += 1
                    assert trials <= half_open_calls
        elif in_flight and op == "success":
            in_flight -= 1
            breaker.on_success()
        elif in_flight:
            in_flight -= 1
            breaker.on_failure()
