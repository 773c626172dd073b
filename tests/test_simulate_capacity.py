"""The capacity model's invariants, so a change to it cannot silently break its predictions."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from simulate_capacity import Costs, Scenario, simulate

costs = st.builds(
    Costs,
    server_cpu_ms=st.floats(0.2, 3.0),
    pg_cpu_ms=st.floats(0.05, 1.0),
    hold_ms=st.floats(1.0, 50.0),
    decisions_per_commit=st.floats(1.0, 20.0),
    wal_bytes_per_decision=st.just(2000.0),
    fsync_per_s=st.floats(200.0, 5000.0),
)
shapes = st.tuples(
    st.integers(1, 4), st.integers(1, 8), st.integers(1, 4)
)  # replicas, clients, lanes


lock_bound = st.builds(
    Costs,
    server_cpu_ms=st.floats(0.2, 3.0),
    pg_cpu_ms=st.floats(0.05, 1.0),
    hold_ms=st.floats(5.0, 50.0),
    decisions_per_commit=st.floats(1.0, 20.0),
    wal_bytes_per_decision=st.just(2000.0),
    fsync_per_s=st.floats(2000.0, 5000.0),
)


@settings(max_examples=15, deadline=None)
@given(lock_bound, shapes)
def test_more_lanes_never_lower_throughput(c: Costs, shape: tuple[int, int, int]) -> None:
    """Where the head lock, not the disk, is what commits wait for. With a slow disk (a flush
    of several ms) more lanes split group commits into smaller ones that queue for the WAL
    flush, and can lower throughput: docs/scaling.md's flush ceiling, which lanes do not lift."""
    replicas, clients, lanes = shape
    fewer = simulate(Scenario(replicas, lanes, clients, decisions=600), c)
    more = simulate(Scenario(replicas, lanes * 4, clients, decisions=600), c)
    assert more.throughput >= 0.85 * fewer.throughput  # 15 %: the sampling noise of 600 answers


@settings(max_examples=15, deadline=None)
@given(costs, st.integers(1, 4), st.integers(1, 8))
def test_one_lane_never_beats_its_head_lock(c: Costs, replicas: int, clients: int) -> None:
    r = simulate(Scenario(replicas, 1, clients, decisions=600), c)
    assert r.lock_busy <= 1.02  # one commit at a time holds the lane's lock
    # 2 %: the measured window starts and ends inside a commit
    assert r.throughput <= r.per_commit * 1000 / r.mean_hold_ms * 1.02
    assert r.mean_hold_ms >= c.sync_ms  # a commit is durable before its lock is released


@settings(max_examples=10, deadline=None)
@given(costs, st.integers(1, 3), st.integers(1, 8), st.integers(1, 8))
def test_never_faster_than_the_interpreters(
    c: Costs, replicas: int, clients: int, lanes: int
) -> None:
    r = simulate(Scenario(replicas, lanes, clients, decisions=600), c)
    assert r.throughput <= replicas * 1000 / c.server_cpu_ms * 1.2  # gamma-distributed work
    assert r.per_commit <= clients  # a replica's writer batches only what its clients sent


def test_many_replicas_saturate_one_lane_and_lanes_lift_it() -> None:
    c = Costs(0.5, 0.1, 5.0, 10.0, 2000.0, 1000.0)
    one = simulate(Scenario(16, 1, 8, decisions=3000), c)
    many = simulate(Scenario(16, 16, 8, decisions=3000), c)
    assert one.lock_busy > 0.95
    assert many.throughput > 2 * one.throughput
