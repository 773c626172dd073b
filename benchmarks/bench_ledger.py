"""The ledger: append throughput (alone and in the full decision flow), verification, checkpoints
and proofs at scale.

Run: .venv/bin/python benchmarks/bench_ledger.py [--events 1000000] [--seconds 5]
     [--verify-only] [--repeat 3]
With WARDEN_DB_URL pointing at PostgreSQL, appends and verification are also measured there.
`--verify-only` fills the ledger and measures only the chain check and `warden audit verify`;
`--repeat` runs those several times and prints the median.
`--lock-hold` (PostgreSQL only) measures the ledger head lock: how long each commit holds it
(p50/p99, from the head row read under the lock to COMMIT returning), decisions per commit, and
— with one and with two writer processes on one database — how often the writers' backends
wait for the lock or sit idle in a transaction (pg_stat_activity sampled every 2 ms).
Every append is durably committed (SQLite WAL, synchronous=FULL) before its future resolves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from _setup import applications, decide_for, percentile, write_point

from warden.engine import Engine
from warden.ledger.chain import EventDraft
from warden.ledger.checkpoint import make_checkpoint
from warden.ledger.keys import SigningKey, load_or_create
from warden.ledger.merkle import inclusion_proof, verify_inclusion
from warden.ledger.tree import LedgerTree
from warden.ledger.verify import chain_hashes, verify_ledger
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate
from warden.store.recorder import Change, Recorder
from warden.store.schema import events


def _draft(n: int) -> EventDraft:
    return EventDraft(
        type="decision.created",
        actor="token:bench:caller",
        point="loan_approval",
        decision_id=f"{n:036d}",
        payload={
            "route": "auto",
            "outcome": "approve",
            "confidence": 0.93,
            "input": {"amount": 1200.5 + n, "income": 5400, "credit_score": 712},
            "policy_version": "3f1c" * 16,
            "model_version": "7",
        },
    )


def append_alone(
    db: sa.Engine,
    count: int,
    submitters: int = 8,
    window: int = 512,
    per_change: int = 1,
    holds: list[float] | None = None,
    two_round_trips: bool = False,
) -> float:
    """Events per second through the recorder: `submitters` threads, each keeping up to
    `window` changes in flight (as many concurrent callers would), `per_change` events each.
    `holds` collects how long each commit held the ledger head lock."""
    recorder = Recorder(db)
    if holds is not None:
        recorder.observe_lock_hold = holds.append
    if two_round_trips:
        recorder.append_in_database = False

    def submit(index: int) -> None:
        pending: list[Future[Any]] = []
        for start in range(index * per_change, count, submitters * per_change):
            drafts = [_draft(n) for n in range(start, min(start + per_change, count))]
            pending.append(recorder.submit(Change(events=drafts)))
            if len(pending) >= window:
                for future in pending:
                    future.result(timeout=300)
                pending = []
        for future in pending:
            future.result(timeout=300)

    began = time.perf_counter()
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    recorder.close()
    return count / elapsed


@contextmanager
def postgres_schema(url: str) -> Iterator[sa.Engine]:
    """A migrated throwaway schema, so the database's own ledger is untouched."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    pg = create_engine(f"{url}{separator}options=-csearch_path%3D{schema}")
    try:
        migrate(pg)
        yield pg
    finally:
        pg.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def decision_flow(folder: Path, db: sa.Engine, threads: int, seconds: float) -> float:
    points = load_points(write_point(folder / "points", "callable"))
    engine = Engine(points, db, actor="bench")
    decisions, elapsed = decide_for(engine, applications(2000), threads, seconds)
    rate = decisions / elapsed
    engine.close()
    return rate


def chain_check_rate(db: sa.Engine) -> float:
    """The chain check as verify does it — hash each stored body, link it, compare both hashes
    with the stored ones — over rows already in memory."""
    with db.connect() as conn:
        rows = [
            tuple(row)  # as the driver hands them to verify
            for row in conn.execute(
                sa.select(events.c.body, events.c.leaf_hash, events.c.chain_hash).order_by(
                    events.c.seq
                )
            )
        ]
    batches = [rows[i : i + 1000] for i in range(0, len(rows), 1000)]
    began = time.perf_counter()
    prev = bytes(32)
    for batch in batches:
        bodies, leaf_hexes, chain_hexes = zip(*batch, strict=True)
        leaves, links = chain_hashes(prev, bodies)
        if (
            tuple(map(bytes.hex, leaves)) != leaf_hexes
            or tuple(map(bytes.hex, links)) != chain_hexes
        ):
            raise AssertionError("chain broken")
        prev = links[-1]
    return len(rows) / (time.perf_counter() - began)


def verification(db: sa.Engine, key: SigningKey, repeat: int, backend: str) -> None:
    """The chain check and `warden audit verify`, the median of `repeat` runs each."""
    rate = statistics.median(chain_check_rate(db) for _ in range(repeat))
    print(f"chain check (hash over stored bytes) {rate:10,.0f} events/s  ({backend})")
    # Events alone, with no state rows: the state projection is measured over real decisions
    # by bench_verify_state.py.
    reports = [verify_ledger(db, [key.public], projection=False) for _ in range(repeat)]
    for report in reports:
        assert report.ok, report.problems
    seconds = statistics.median(report.seconds for report in reports)
    count = reports[0].events
    print(
        f"warden audit verify, {count:,} events ({backend}): {seconds:.2f} s "
        f"({count / seconds:,.0f} events/s, chain + columns + Merkle + tiles + signatures)"
    )


def proofs(db: sa.Engine, size: int, root: bytes, samples: int = 2000) -> tuple[float, float]:
    """Median microseconds to make and to check an inclusion proof (warm tree)."""
    tree = LedgerTree()
    with db.connect() as conn:
        leaves = dict(
            conn.execute(
                sa.select(events.c.seq, events.c.leaf_hash).where(
                    events.c.seq.in_([1 + (i * 7919) % size for i in range(samples)])
                )
            ).all()
        )
        hasher = tree.hasher(conn)
        make, check = [], []
        for i in range(samples):
            index = (i * 7919) % size
            began = time.perf_counter()
            proof = inclusion_proof(index, size, hasher)
            made = time.perf_counter()
            ok = verify_inclusion(bytes.fromhex(leaves[index + 1]), index, size, proof, root)
            checked = time.perf_counter()
            assert ok
            make.append((made - began) * 1e6)
            check.append((checked - made) * 1e6)
    return statistics.median(make), statistics.median(check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--verify-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--lock-hold", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="--lock-hold rounds")
    parser.add_argument(
        "--two-round-trips",
        action="store_true",
        help="--lock-hold: chain in the writer (two pipelined round trips under the lock) "
        "instead of in PostgreSQL's warden_append",
    )
    parser.add_argument("--writer", help=argparse.SUPPRESS)  # a child: URL of its database
    args = parser.parse_args()
    pg_url = os.environ.get("WARDEN_DB_URL", "")
    if args.writer:
        writer_child(args.writer, args.threads, args.seconds, args.two_round_trips)
        return
    if args.lock_hold:
        if not pg_url.startswith("postgresql"):
            raise SystemExit("--lock-hold needs WARDEN_DB_URL=postgresql+psycopg://...")
        for _ in range(args.rounds):
            lone_writer(pg_url, args.two_round_trips)
            for writers in (1, 2):
                lock_hold(pg_url, writers, args.threads, args.seconds, args.two_round_trips)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key = load_or_create(folder / "home")
        db = create_engine(f"sqlite:///{folder / 'ledger.db'}")
        migrate(db)
        if args.verify_only:
            append_alone(db, args.events)
            make_checkpoint(db, key)
            verification(db, key, args.repeat, "SQLite")
        else:
            full_run(folder, db, key, args)
        db.dispose()
    if pg_url.startswith("postgresql"):
        with postgres_schema(pg_url) as pg:
            append_alone(pg, args.events)
            make_checkpoint(pg, key)
            verification(pg, key, args.repeat, "PostgreSQL")


def full_run(folder: Path, db: sa.Engine, key: SigningKey, args: argparse.Namespace) -> None:
    """Appends (alone and in the decision flow), checkpoints, verification and proofs."""
    rate = append_alone(db, 200_000)
    print(f"append, ledger alone (SQLite)        {rate:10,.0f} events/s  (one event per change)")
    rate = append_alone(db, 200_000, window=64, per_change=16)
    print(f"append, ledger alone (SQLite)        {rate:10,.0f} events/s  (16 events per change)")
    pg_url = os.environ.get("WARDEN_DB_URL", "")
    if pg_url.startswith("postgresql"):
        with postgres_schema(pg_url) as pg:
            pg_rate = append_alone(pg, 50_000)
        print(f"append, ledger alone (PostgreSQL)    {pg_rate:10,.0f} events/s  (50,000 events)")
    flow_db = create_engine(f"sqlite:///{folder / 'flow.db'}")
    migrate(flow_db)
    flow = decision_flow(folder, flow_db, args.threads, args.seconds)
    print(
        f"append, full decision flow (SQLite)  {flow:10,.0f} decisions/s "
        f"({args.threads} callers, one event each)"
    )
    flow_db.dispose()

    remaining = args.events - 400_000
    if remaining > 0:
        append_alone(db, remaining)
    size = args.events
    tree = LedgerTree()  # what the background checkpointer keeps between checkpoints
    began = time.perf_counter()
    first = make_checkpoint(db, key, tree)
    full = time.perf_counter() - began
    assert first.size == size
    append_alone(db, 1000)
    began = time.perf_counter()
    second = make_checkpoint(db, key, tree)
    incremental = time.perf_counter() - began
    append_alone(db, 1000)
    began = time.perf_counter()
    make_checkpoint(db, key)
    cold = time.perf_counter() - began
    print(
        f"checkpoint at {size:,} events: first {full:.2f} s (hashes every tile once); "
        f"after 1,000 more: {incremental * 1000:.1f} ms (warm tree), "
        f"{cold * 1000:.1f} ms (new process)"
    )
    verification(db, key, args.repeat, "SQLite")
    make, check = proofs(db, second.size, second.root_bytes)
    print(
        f"inclusion proof at {second.size:,} events: make {make:.0f} µs, "
        f"check {check:.0f} µs (median)"
    )


WRITER_APP = "warden_bench_writer"


def writer_child(url: str, threads: int, seconds: float, two_round_trips: bool) -> None:
    """One writer process: set up, say "ready", wait for "go", run the decision flow for
    `seconds`; prints decisions, lock hold samples and CPU seconds as one JSON line."""
    with tempfile.TemporaryDirectory() as tmp:
        points = load_points(write_point(Path(tmp) / "points", "callable"))
        db = create_engine(url)
        engine = Engine(points, db, actor="bench")
        holds: list[float] = []
        engine.recorder.observe_lock_hold = holds.append
        if two_round_trips:
            engine.recorder.append_in_database = False
        # Name the writer's own connection, so the sampler tells it from pooled readers.
        conn = engine.recorder._raw_connection()
        cursor = conn.cursor()
        cursor.execute(f"SET application_name = '{WRITER_APP}'")
        cursor.close()
        conn.commit()
        inputs = applications(2000)
        print("ready", flush=True)
        sys.stdin.readline()
        holds.clear()
        cpu = time.process_time()
        decisions, _ = decide_for(engine, inputs, threads, seconds)
        cpu = time.process_time() - cpu
        engine.close()
        db.dispose()
    print(json.dumps({"decisions": decisions, "holds": holds, "cpu": cpu}))


def sample_activity(url: str, until: float) -> dict[str, int]:
    """What the writers' backends were doing, sampled every 2 ms until `until` (wall clock)."""
    counts = {"samples": 0, "lock_wait": 0, "idle_in_transaction": 0, "active": 0}
    admin = sa.create_engine(url)
    with admin.connect() as conn:
        query = sa.text(
            "SELECT state, wait_event_type FROM pg_stat_activity WHERE application_name = :app"
        )
        while time.time() < until:
            for state, wait in conn.execute(query, {"app": WRITER_APP}):
                counts["samples"] += 1
                if wait == "Lock":
                    counts["lock_wait"] += 1
                elif state == "idle in transaction":
                    counts["idle_in_transaction"] += 1
                elif state == "active":
                    counts["active"] += 1
            conn.rollback()
            time.sleep(0.002)
    admin.dispose()
    return counts


def lone_writer(url: str, two_round_trips: bool) -> None:
    """The lock hold with nothing else in the writer's process: one caller, one event per
    commit — what the database and the wire cost, without waiting for the interpreter."""
    with postgres_schema(url) as pg:
        append_alone(pg, 50, submitters=1, window=1)  # warm: the guard state is known
        holds: list[float] = []
        began = time.process_time()
        append_alone(pg, 2000, 1, 1, holds=holds, two_round_trips=two_round_trips)
        cpu = time.process_time() - began
        floor = durable_commit(pg)
    holds.sort()
    print(
        f"lock hold, lone writer, one caller, one event per commit (PostgreSQL): "
        f"p50 {percentile(holds, 50) * 1e6:5.0f} µs, p99 {percentile(holds, 99) * 1e6:6.0f} µs; "
        f"{cpu / 2000 * 1e6:4.0f} µs CPU per commit; a bare durable one-row commit: "
        f"p50 {floor * 1e6:5.0f} µs (load {os.getloadavg()[0]:.2f})"
    )


def durable_commit(pg: sa.Engine, count: int = 300) -> float:
    """Median round trip of `BEGIN; INSERT one row; COMMIT` in one message: the WAL flush
    that bounds any lock held until COMMIT returns."""
    raw = pg.raw_connection()
    try:
        driver = raw.driver_connection
        driver.autocommit = True
        driver.execute("CREATE TABLE commit_probe (x integer)")
        times = []
        for _ in range(count):
            began = time.perf_counter()
            driver.execute("BEGIN; INSERT INTO commit_probe VALUES (1); COMMIT")
            times.append(time.perf_counter() - began)
        driver.autocommit = False
    finally:
        raw.close()
    return statistics.median(times)


def lock_hold(url: str, writers: int, threads: int, seconds: float, two_trips: bool) -> None:
    """`writers` processes of the decision flow on one PostgreSQL database, side by side."""
    with postgres_schema(url) as pg:
        child_url = pg.url.render_as_string(hide_password=False)
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--writer",
                    child_url,
                    "--threads",
                    str(threads),
                    "--seconds",
                    str(seconds),
                    *(["--two-round-trips"] if two_trips else []),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(writers)
        ]
        for child in children:  # every child set up and waiting: start them together
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        activity = sample_activity(url, time.time() + seconds)
        results = [json.loads(child.communicate(timeout=seconds + 120)[0]) for child in children]
    holds = sorted(h for r in results for h in r["holds"])
    decided = sum(r["decisions"] for r in results)
    cpu = sum(r["cpu"] for r in results)
    samples = max(1, activity["samples"])
    load = os.getloadavg()[0]
    print(
        f"lock hold, {writers} writer process(es) x {threads} callers (PostgreSQL): "
        f"p50 {percentile(holds, 50) * 1e6:5.0f} µs, p99 {percentile(holds, 99) * 1e6:6.0f} µs; "
        f"{decided / seconds:7,.0f} decisions/s, {decided / max(1, len(holds)):5.1f} per commit, "
        f"{cpu / max(1, decided) * 1e6:4.0f} µs CPU each; writer backends: lock wait "
        f"{activity['lock_wait'] / samples:4.0%}, idle in transaction "
        f"{activity['idle_in_transaction'] / samples:4.0%} of {samples} samples "
        f"(load {load:.2f})"
    )


if __name__ == "__main__":
    main()
