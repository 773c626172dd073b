"""The whole `warden audit verify` — hash chain, columns, Merkle tree, tiles, checkpoint
signatures and the state projection — over a million real decisions.

Run: .venv/bin/python benchmarks/bench_verify_state.py [--decisions 1000000] [--repeat 3]
With WARDEN_DB_URL pointing at PostgreSQL, it is also measured there (in a throwaway schema).
Decisions are made by the engine (`decide_many`, 1,000 at a time), so the rows and events are
exactly what Warden writes: one in twenty goes to review and has a review task beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from _setup import applications, write_point
from bench_ledger import postgres_schema

from warden.engine import Engine
from warden.ids import new_id
from warden.ledger.checkpoint import make_checkpoint
from warden.ledger.keys import SigningKey, load_or_create
from warden.ledger.verify import Report, verify_ledger
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate
from warden.store.schema import decisions

BATCH = 1000


def fill(folder: Path, db: sa.Engine, count: int) -> float:
    """`count` decisions as the engine records them; returns decisions per second.

    The first thousand are made by the engine (`decide_many`); the rest repeat them with new
    ids and times through the engine's own change builder and the recorder, so the rows,
    events and review tasks are exactly what Warden writes, without the model in the way.
    """
    engine = Engine(load_points(write_point(folder / "points", "callable")), db, actor="bench")
    inputs = applications(BATCH)
    for i in range(0, BATCH, 20):  # large amounts go to review
        inputs[i] = {**inputs[i], "amount": 60000.0 + i}
    began = time.perf_counter()
    try:
        engine.decide_many("loan_approval", inputs[: min(BATCH, count)])
        with db.connect() as conn:
            templates = [dict(r._mapping) for r in conn.execute(sa.select(decisions))]
        compiled = engine._point("loan_approval")
        pending: list[Future[Any]] = []
        for n in range(len(templates), count):
            now = datetime.now(UTC)
            row = {**templates[n % len(templates)], "id": new_id(), "created_at": now}
            if row["route"] != "review":
                row["decided_at"] = now
            pending.append(
                engine.recorder.submit(engine._change(compiled, row, row["actor"], None, None))
            )
            if len(pending) >= 4096:
                for future in pending:
                    future.result(3600)
                pending = []
        for future in pending:
            future.result(3600)
    finally:
        engine.close()
    return count / (time.perf_counter() - began)


def measure(db: sa.Engine, key: SigningKey, repeat: int, backend: str, decisions: int) -> None:
    """Each run's phases and total; the chain and Merkle run beside the state projection."""
    reports: list[Report] = []
    for _ in range(repeat):
        load = os.getloadavg()[0]
        cpu = _cpu()
        with _ChildMemory() as children:
            report = verify_ledger(db, [key.public])
        used = _cpu() - cpu
        assert report.ok, (
            report.projection.disagreements[:3] if report.projection else report.problems
        )
        reports.append(report)
        phases = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in report.phases.items())
        print(
            f"  run: {report.seconds:.2f} s ({phases}; CPU {used:.1f} s in all processes; "
            f"load average {load:.1f}; peak RSS of the state-check processes "
            f"{children.peak // 1024} MiB)",
            flush=True,
        )
    best = statistics.median(r.seconds for r in reports)
    sample = reports[0]
    assert sample.projection is not None
    rows = sum(sample.projection.rows.values())
    phases = ", ".join(
        f"{name} {statistics.median(r.phases[name] for r in reports):.2f} s"
        for name in sample.phases
    )
    print(
        f"warden audit verify, {decisions:,} decisions ({sample.events:,} events, {rows:,} state "
        f"rows, {backend}): {best:.2f} s — {phases} (median of {repeat}; load average "
        f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} cores); peak RSS {_peak_mib()}",
        flush=True,
    )


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_mib() -> str:
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB (this process)"


class _ChildMemory:
    """The largest peak RSS (VmHWM, KiB) of this process's children while it is open: their
    own rusage would count the parent's pages they were forked with."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _ChildMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for pid in _children():
                with contextlib.suppress(OSError, ValueError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak = max(self.peak, int(line.split()[1]))


def _children() -> list[str]:
    found: list[str] = []
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            found += (task / "children").read_text().split()
    return found


def sqlite_ledger(folder: Path, cache: Path | None, decisions: int) -> tuple[sa.Engine, SigningKey]:
    """A SQLite ledger of `decisions`, made once and kept in `cache` when given."""
    where = folder if cache is None else cache / f"sqlite-{decisions}"
    where.mkdir(parents=True, exist_ok=True)
    key = load_or_create(where / "home")
    done = where / "complete"
    db = create_engine(f"sqlite:///{where / 'warden.db'}", sqlite_synchronous="OFF")
    if done.exists():
        print(f"SQLite: {decisions:,} decisions from {where}", flush=True)
        return db, key
    (where / "warden.db").unlink(missing_ok=True)
    migrate(db)
    rate = fill(folder, db, decisions)
    print(f"filled SQLite: {decisions:,} decisions at {rate:,.0f}/s", flush=True)
    make_checkpoint(db, key)
    with db.connect() as conn:  # a quiet file: the WAL folded in, statistics for the planner
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.exec_driver_sql("ANALYZE")
    done.touch()
    return db, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-sqlite", action="store_true", help="measure PostgreSQL only")
    parser.add_argument("--postgres", default=os.environ.get("WARDEN_DB_URL", ""), help="URL")
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep the filled ledgers here (SQLite file; PostgreSQL schema bench_verify_N) "
        "and reuse them on the next run",
    )
    args = parser.parse_args()
    pg_url = args.postgres
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.skip_sqlite:
            db, key = sqlite_ledger(folder, args.cache, args.decisions)
            measure(db, key, args.repeat, "SQLite", args.decisions)
            db.dispose()
        if pg_url.startswith("postgresql"):
            if args.cache is None:
                with postgres_schema(pg_url) as pg:
                    key = load_or_create(folder / "home-postgres")  # a key signs one ledger
                    fill_postgres(folder, pg, key, args.decisions)
                    measure(pg, key, args.repeat, "PostgreSQL", args.decisions)
            else:
                pg, key = cached_postgres(folder, args.cache, pg_url, args.decisions)
                measure(pg, key, args.repeat, "PostgreSQL", args.decisions)
                pg.dispose()


def fill_postgres(folder: Path, pg: sa.Engine, key: SigningKey, decisions: int) -> None:
    rate = fill(folder, pg, decisions)
    print(f"filled PostgreSQL: {decisions:,} at {rate:,.0f}/s", flush=True)
    make_checkpoint(pg, key)
    with pg.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")  # visibility map and statistics, as in service


def cached_postgres(
    folder: Path, cache: Path, url: str, decisions: int
) -> tuple[sa.Engine, SigningKey]:
    """A PostgreSQL ledger of `decisions` in schema bench_verify_N, kept between runs."""
    where = cache / f"postgres-{decisions}"
    where.mkdir(parents=True, exist_ok=True)
    key = load_or_create(where / "home")
    schema = f"bench_verify_{decisions}"
    separator = "&" if "?" in url else "?"
    pg = create_engine(f"{url}{separator}options=-csearch_path%3D{schema}")
    done = where / "complete"
    if done.exists():
        print(f"PostgreSQL: {decisions:,} decisions from schema {schema}", flush=True)
        return pg, key
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    migrate(pg)
    fill_postgres(folder, pg, key, decisions)
    done.touch()
    return pg, key


if __name__ == "__main__":
    main()
