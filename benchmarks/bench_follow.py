"""A decision with a follower (a tool call's claim riding in its transaction) on PostgreSQL:
appended by `warden_append` in one round trip, versus chained by the writer under the head
lock (two pipelined round trips, the writer's Python in between).

Run: .venv/bin/python benchmarks/bench_follow.py [--url postgresql+psycopg://…] [--calls 400]
     [--processes 2]

Each process is one engine (a gateway) deciding one call at a time, 1 ms apart (a looping
agent); `--processes 2` is two gateways on one ledger. The two paths alternate in rounds, every
process on the same path at once, so load falls on both alike. Prints p50/p90 wall time per
decision and the processes' CPU per decision (PostgreSQL's own CPU not included), with the
load average.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from warden.engine import Engine, Proposal
from warden.ledger.chain import EventDraft
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate
from warden.store.recorder import Change, GuardState

POINTS = Path(__file__).resolve().parent.parent / "tests" / "mcp_fixtures" / "points"
PROPOSAL = {
    "server": "bank",
    "tool": "read_balance",
    "agent": "bench",
    "arguments": {"account": "acc-1"},
    "annotations": {
        "readOnlyHint": True,
        "destructiveHint": False,
        "idempotentHint": True,
        "openWorldHint": False,
    },
    "arguments_digest": "hmac-sha256:bench",
    "description_digest": "sha256:bench",
}


def claim(change: Change, guard: GuardState) -> Change | None:
    """Like the gateway's claim: two events for an AUTO decision, none otherwise."""
    decision = change.decision
    assert decision is not None
    if decision["route"] != "auto":
        return None
    return Change(
        events=[
            EventDraft(kind, "bench", {"server": "bank"}, point=decision["point"], decision_id=id_)
            for kind, id_ in (
                ("tool_call.approved", decision["id"]),
                ("tool_call.executed", decision["id"]),
            )
        ]
    )


async def run(engine: Engine, calls: int, rounds: int, barrier: Any) -> dict[str, Any]:
    async def one() -> Any:
        return await engine.decide_async(
            "agent_tools", PROPOSAL, actor="bench", proposal=Proposal("execute", 1.0), follow=claim
        )

    for _ in range(20):  # warm-up; the writer learns the guard state
        await one()
    wall: dict[bool, list[float]] = {True: [], False: []}
    cpu = dict.fromkeys(wall, 0.0)
    per_round = max(1, calls // rounds)
    for r in range(rounds):
        for in_database in (True, False) if r % 2 == 0 else (False, True):
            barrier.wait()  # every process on the same path at once
            engine.recorder.append_in_database = in_database
            started_cpu = time.process_time()
            for _ in range(per_round):
                started = time.perf_counter()
                await one()
                wall[in_database].append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.001)
            cpu[in_database] += time.process_time() - started_cpu
    return {"wall": wall, "cpu": cpu}


def worker(url: str, calls: int, rounds: int, barrier: Any, out: Any) -> None:
    db = create_engine(url)
    folder = Path(tempfile.mkdtemp(prefix="bench-follow-"))
    shutil.copytree(POINTS, folder / "points")
    engine = Engine(load_points(folder / "points"), db, actor="bench")
    try:
        out.put(asyncio.run(run(engine, calls, rounds, barrier)))
    finally:
        engine.close()
        db.dispose()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "WARDEN_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL database to write to (default: $WARDEN_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--calls", type=int, default=400, help="per path and process")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--processes", type=int, default=1, help="gateways writing to the one ledger at once"
    )
    args = parser.parse_args()
    db = create_engine(args.url)
    if db.dialect.name != "postgresql":
        raise SystemExit("bench_follow.py compares two PostgreSQL paths; give --url postgresql…")
    migrate(db)
    db.dispose()
    print(
        f"{args.calls} decisions with a follower per path and process, {args.processes} "
        f"process(es), {args.rounds} alternating rounds"
    )
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(args.processes), context.Queue()
    procs = [
        context.Process(target=worker, args=(args.url, args.calls, args.rounds, barrier, out))
        for _ in range(args.processes)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(60)
    for in_database, name in ((True, "warden_append"), (False, "under the head lock")):
        samples = sorted(x for r in results for x in r["wall"][in_database])
        cpu = sum(r["cpu"][in_database] for r in results) / len(samples) * 1000
        print(
            f"  {name:20s} p50 {statistics.median(samples):5.2f} ms  "
            f"p90 {samples[int(0.9 * len(samples))]:5.2f} ms  CPU {cpu:4.2f} ms/decision"
        )
    print("  (load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()) + ")")


if __name__ == "__main__":
    main()
