"""Review: claim + approve latency with concurrent reviewers, on PostgreSQL (or SQLite).

Run: .venv/bin/python benchmarks/bench_review.py --db-url postgresql+psycopg://postgres@127.0.0.1:5432/warden_dev
Each reviewer thread claims the next free task and approves it, in a loop, in-process (the
desk the API calls). Both steps commit a ledger event and a state change before returning.
Target (issue 4): p99 <= 20 ms per step with 10 reviewers on PostgreSQL.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from _setup import percentile, write_point

from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.errors import NotFound
from warden.policy.loader import load_points
from warden.review.desk import ReviewDesk
from warden.store.database import create_engine, migrate

REVIEW_INPUT = {"amount": 90_000, "income": 60_000, "credit_score": 720}


def _database(url: str | None, folder: Path) -> tuple[sa.Engine, str | None]:
    if not url:
        return create_engine(f"sqlite:///{folder / 'warden.db'}"), None
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    separator = "&" if "?" in url else "?"
    return create_engine(f"{url}{separator}options=-csearch_path%3D{schema}"), schema


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", default=None, help="PostgreSQL URL (default: SQLite)")
    parser.add_argument("--reviewers", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db, schema = _database(args.db_url, folder)
        try:
            migrate(db)
            engine = Engine(load_points(write_point(folder / "points", "callable", 500)), db)
            for _ in range(args.tasks):
                engine.decide("loan_approval", REVIEW_INPUT, actor="bench-caller")
            desk = ReviewDesk(engine)
            people = [
                create_token(
                    engine.recorder, name=f"r{i}", roles=["reviewer"], points=["*"], actor="b"
                )[1]
                for i in range(args.reviewers)
            ]
            claims: list[float] = []
            approvals: list[float] = []
            lock = threading.Lock()

            def work(i: int) -> None:
                mine_c: list[float] = []
                mine_a: list[float] = []
                while True:
                    t0 = time.perf_counter()
                    try:
                        task = desk.claim_next(people[i])
                    except NotFound:
                        break
                    t1 = time.perf_counter()
                    desk.approve(people[i], task.decision_id)
                    t2 = time.perf_counter()
                    mine_c.append(t1 - t0)
                    mine_a.append(t2 - t1)
                with lock:
                    claims.extend(mine_c)
                    approvals.extend(mine_a)

            start = time.perf_counter()
            threads = [threading.Thread(target=work, args=(i,)) for i in range(args.reviewers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - start
            engine.close()
        finally:
            if schema:
                with db.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            db.dispose()
    backend = "postgresql" if args.db_url else "sqlite"
    print(f"{backend}: {len(approvals)} tasks by {args.reviewers} reviewers in {elapsed:.1f} s")
    for name, samples in (("claim_next", claims), ("approve", approvals)):
        p50 = percentile(samples, 50) * 1000
        p99 = percentile(samples, 99) * 1000
        print(f"  {name:<10} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")


if __name__ == "__main__":
    main()
