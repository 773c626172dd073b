"""Ledger lanes on PostgreSQL: two writer processes, each recording decisions of its own point,
with one lane (both serialise on the one ledger head) and with several (the points' lanes differ).

Run: WARDEN_DB_URL=postgresql+psycopg://postgres@127.0.0.1:5432/DB \\
     .venv/bin/python benchmarks/bench_lanes.py [--events 3000] [--lanes 4] [--rounds 3]

Rounds alternate one lane / several lanes on fresh schemas, so both see the same machine. Each
process measures the time its writer spends acquiring head-row locks (the wait for the other
process's transaction, plus one round trip per lane locked), its CPU time, and its wall time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from warden.ledger import lanes as lanes_mod
from warden.ledger.chain import EventDraft
from warden.ledger.lanes import lane_of
from warden.store.database import create_engine, migrate
from warden.store.recorder import Change, Recorder


def _points(lanes: int) -> list[str]:
    """Two points in different lanes of a ledger with `lanes` lanes; the same two points are
    used with one lane, where both share lane 0."""
    chosen: dict[int, str] = {}
    n = 0
    while len(chosen) < 2:
        point = f"point_{n}"
        chosen.setdefault(lane_of(point, "d", lanes), point)
        n += 1
    return list(chosen.values())


def _writer(url: str, point: str, count: int, window: int, out: Any) -> None:
    db = create_engine(url)
    recorder = Recorder(db)
    waited = 0.0
    original = recorder._lock_heads

    def timed(*args: Any) -> Any:
        nonlocal waited
        began = time.perf_counter()
        try:
            return original(*args)
        finally:
            waited += time.perf_counter() - began

    recorder._lock_heads = timed  # type: ignore[method-assign]
    cpu, wall = time.process_time(), time.perf_counter()
    pending: list[Future[Any]] = []
    for n in range(count):
        draft = EventDraft(
            "decision.created",
            "bench",
            {"n": n, "route": "auto", "input": {"amount": 1000 + n}},
            point=point,
            decision_id=str(uuid.uuid4()),
        )
        pending.append(recorder.submit(Change(events=[draft])))
        if len(pending) >= window:
            for future in pending:
                future.result(timeout=300)
            pending = []
    for future in pending:
        future.result(timeout=300)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    recorder.close()
    db.dispose()
    out.put((point, wall, cpu, waited))


@contextmanager
def _schema(base: str, lanes: int) -> Iterator[str]:
    schema = f"bench_lanes_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    url = f"{base}{separator}options=-csearch_path%3D{schema}"
    db = create_engine(url)
    migrate(db)
    lanes_mod.configure(db, lanes)
    db.dispose()
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def one_round(
    base: str, lanes: int, points: list[str], events: int, window: int
) -> dict[str, float]:
    with _schema(base, lanes) as url:
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        workers = [
            context.Process(target=_writer, args=(url, p, events, window, out)) for p in points
        ]
        began = time.perf_counter()
        for worker in workers:
            worker.start()
        results = [out.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - began
    total = events * len(workers)
    return {
        "events_per_s": total / max(r[1] for r in results),
        "cpu_us_per_event": 1e6 * sum(r[2] for r in results) / total,
        "lock_wait_s": sum(r[3] for r in results),
        "lock_wait_share": sum(r[3] for r in results) / sum(r[1] for r in results),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000, help="per process")
    parser.add_argument("--lanes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=32, help="changes in flight per process")
    args = parser.parse_args()
    base = os.environ.get("WARDEN_DB_URL", "")
    if not base.startswith("postgresql"):
        sys.exit("set WARDEN_DB_URL to a PostgreSQL database (lanes need PostgreSQL)")
    found: dict[int, list[dict[str, float]]] = {1: [], args.lanes: []}
    for _ in range(args.rounds):
        for lanes in (1, args.lanes):
            result = one_round(base, lanes, _points(args.lanes), args.events, args.window)
            load = os.getloadavg()[0]
            found[lanes].append(result)
            print(
                f"{lanes} lane(s): {result['events_per_s']:8,.0f} events/s, "
                f"lock waits {result['lock_wait_s']:6.2f} s "
                f"({100 * result['lock_wait_share']:4.1f} % of writer time), "
                f"CPU {result['cpu_us_per_event']:5.0f} µs/event (load average {load:.1f})",
                flush=True,
            )
    for lanes, rounds in found.items():
        print(
            f"median, {lanes} lane(s): "
            f"{statistics.median(r['events_per_s'] for r in rounds):,.0f} events/s, lock waits "
            f"{statistics.median(r['lock_wait_s'] for r in rounds):.2f} s"
        )


if __name__ == "__main__":
    main()
