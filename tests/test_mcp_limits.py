"""The gateway's limit and loop windows in the database: the window arithmetic against a
reference model, two processes racing on one window, pruning, and a restart keeping the count."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import uuid
from collections import defaultdict
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden.mcp.config import Limit, Loop
from warden.mcp.limits import PRUNE_EVERY, Hit, Limiter, Windows, window_key
from warden.store.database import create_engine

SPANS = (1.0, 2.5, 10.0)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),  # which window
            st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, 3.0, 7.5, 10.0, 11.0]),  # time passing
        ),
        min_size=1,
        max_size=40,
    )
)
def test_window_counts_match_a_reference_sliding_window(
    db: sa.Engine, steps: list[tuple[int, float]]
) -> None:
    """Whatever the calls and pauses, each count is the number of calls within the window
    (the call itself included), capped — as a plain list of every call time says."""
    windows = Windows(db)
    run = uuid.uuid4().hex  # each example its own keys
    model: dict[int, list[float]] = defaultdict(list)
    now = 1_700_000_000.0
    caps = (1, 2, 4)  # a window's cap is fixed: max + 1 of its limit, or the loop's repeats
    try:
        for which, gap in steps:
            now += gap
            # a second window in the same statement, as a limit and the loop detector share one
            other = (which + 1) % 3
            hits = [
                Hit(f"{run}{which}", SPANS[which], caps[which]),
                Hit(f"{run}{other}", SPANS[other], caps[other]),
            ]
            counts = windows.count(hits, now)
            for hit, index in zip(hits, (which, other), strict=True):
                model[index].append(now)
                within = sum(1 for t in model[index] if t > now - hit.span)
                assert counts[hit.key] == min(within, hit.cap), (index, model[index], now)
    finally:
        windows.close()


def test_stale_windows_are_pruned(db: sa.Engine) -> None:
    windows = Windows(db)
    try:
        windows.count([Hit("old", 1.0, 3), Hit("young", 3600.0, 3)], 1000.0)
        windows.count([Hit("now", 1.0, 3)], 1000.0 + PRUNE_EVERY + 1)
        with db.connect() as conn:
            keys = {r[0] for r in conn.execute(sa.text("SELECT key FROM mcp_windows"))}
        assert keys == {"young", "now"}
    finally:
        windows.close()


def test_loop_detector_counts_the_same_call_only(db: sa.Engine) -> None:
    clock = [1000.0]
    windows = Windows(db)
    limiter = Limiter([], Loop(repeats=3, within=60), windows, clock=lambda: clock[0])
    try:
        assert limiter.check("bot", "bank", "refund", "same") is None
        assert limiter.check("bot", "bank", "refund", "other") is None
        assert limiter.check("bot", "bank", "refund", "same") is None
        hit = limiter.check("bot", "bank", "refund", "same")
        assert hit is not None and hit.code == "loop_detected" and hit.action == "refused"
        assert limiter.check("eve", "bank", "refund", "same") is None  # another principal
        clock[0] += 61
        assert limiter.check("bot", "bank", "refund", "same") is None
    finally:
        windows.close()


def test_a_restarted_limiter_keeps_the_count(db: sa.Engine) -> None:
    limit = Limit(tool="send_email", max=2, per=3600, exceed="refused")
    for expected in (None, None, "rate_limit"):
        windows = Windows(db)  # a new process's view each time
        try:
            hit = Limiter([limit], None, windows).check("bot", "bank", "send_email", "d")
        finally:
            windows.close()
        assert (hit.code if hit else None) == expected
    assert hit is not None and "more than 2 calls of send_email in 3600 s by bot" in hit.message


RACE_MAX = 25
RACE_CALLS = 40


def _race(url: str, start: multiprocessing.synchronize.Barrier, out: Path) -> None:
    db = create_engine(url)
    windows = Windows(db)
    limiter = Limiter(
        [Limit(tool="send_email", max=RACE_MAX, per=3600, exceed="refused")], None, windows
    )
    start.wait(30)
    passed = sum(limiter.check("bot", "bank", "send_email", "d") is None for _ in range(RACE_CALLS))
    out.write_text(str(passed))
    windows.close()
    db.dispose()


def test_two_processes_racing_never_let_more_than_the_limit_through(
    db: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """Two gateway processes, each with its own engine, counting the same window at once:
    together exactly `max` calls pass, however their statements interleave."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)  # both processes ready, then all at once
    outs = [tmp_path / f"passed-{i}" for i in range(2)]
    procs = [context.Process(target=_race, args=(db_url, start, out)) for out in outs]
    for proc in procs:
        proc.start()
    start.wait(60)
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    passed = [int(out.read_text()) for out in outs]
    assert sum(passed) == RACE_MAX, passed
    key = window_key(window_key("limit", "bot", "*", "send_email", RACE_MAX, 3600.0), "send_email")
    with db.connect() as conn:
        stamps = conn.execute(
            sa.text("SELECT stamps FROM mcp_windows WHERE key = :k"), {"k": key}
        ).scalar_one()
    assert stamps.count(",") + 1 == RACE_MAX + 1  # the row keeps max + 1 times, no more
