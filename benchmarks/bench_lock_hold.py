"""What the ledger head lock's hold is made of on PostgreSQL, and what the WAL settings change.

Run: .venv/bin/python benchmarks/bench_lock_hold.py [--seconds 4] [--rounds 3] [--threads 32]
     [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--database warden_lock_hold]

The decision flow (the callable credit point, `--threads` callers in one process) writes through
`warden_append`. For every commit the writer reports, on the database's clock, the lock hold
split in two: the append (head locked, events chained and inserted, head advanced) and COMMIT
(its WAL flush); the benchmark asks for that split (`Recorder.observe_hold_parts`), which costs
one `SELECT clock_timestamp()` under the lock. Each round runs every variant in turn, each
variant set on the benchmark's own database with `ALTER DATABASE … SET` (new connections pick
it up; nothing of the server's configuration changes):

- `default`: the server's settings;
- `commit_delay`: `commit_delay = 200` µs, `commit_siblings = 2` — a committing backend waits
  for others to join its flush when at least two other transactions are open;
- `no_flush_wait` (a diagnostic, never a deployment setting: an acknowledged decision could
  be lost in a crash): `synchronous_commit = off`, so COMMIT does not wait for the flush —
  the hold that is left is what the append alone costs.

It also times the disk's fdatasync beside the data directory. Prints medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))

from _setup import applications, decide_for, write_point
from bench_scaling import _fsync_rate, _loadavg

from warden.engine import Engine
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate

VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "commit_delay": {"commit_delay": "200", "commit_siblings": "2"},
    "no_flush_wait": {"synchronous_commit": "off"},
}


def _settings(admin: psycopg.Connection, database: str, values: dict[str, str]) -> None:
    for name in ("commit_delay", "commit_siblings", "synchronous_commit"):
        admin.execute(f'ALTER DATABASE "{database}" RESET {name}')
    for name, value in values.items():
        admin.execute(f'ALTER DATABASE "{database}" SET {name} = {value}')


def _run(url: str, points: Path, threads: int, seconds: float) -> dict[str, float]:
    """The decision flow for `seconds`; the holds its commits reported, split."""
    db = create_engine(url)
    engine = Engine(load_points(points), db, actor="bench")
    holds: list[float] = []
    parts: list[tuple[float, float]] = []
    engine.recorder.observe_lock_hold = holds.append
    engine.recorder.observe_hold_parts = lambda append, commit: parts.append((append, commit))
    inputs = applications(2000)
    engine.decide("loan_approval", inputs[0])  # the writer learns the guard state
    holds.clear()
    parts.clear()
    decisions, elapsed = decide_for(engine, inputs, threads, seconds)
    engine.close()
    db.dispose()
    commits = max(len(holds), 1)
    return {
        "rps": decisions / elapsed,
        "per_commit": decisions / commits,
        "hold_p50": 1000 * statistics.median(holds) if holds else 0.0,
        "hold_p99": 1000 * sorted(holds)[int(0.99 * (len(holds) - 1))] if holds else 0.0,
        "append_p50": 1000 * statistics.median(a for a, _ in parts) if parts else 0.0,
        "commit_p50": 1000 * statistics.median(c for _, c in parts) if parts else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "WARDEN_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--database", default="warden_lock_hold")
    args = parser.parse_args()
    base = args.admin_url.rsplit("/", 1)[0]
    url = f"{base}/{args.database}".replace("postgresql://", "postgresql+psycopg://")
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{args.database}"')
        data_dir = Path(str(admin.execute("SHOW data_directory").fetchone()[0]))  # type: ignore[index]
        method = admin.execute("SHOW wal_sync_method").fetchone()[0]  # type: ignore[index]
        try:
            migrate(create_engine(url))
            fsync = _fsync_rate(data_dir.parent)
            print(
                f"wal_sync_method {method}; disk {fsync or 0:.0f} fdatasync/s beside the data "
                f"directory ({1000 / fsync if fsync else 0:.2f} ms each)"
            )
            results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
            with tempfile.TemporaryDirectory() as tmp:
                points = write_point(Path(tmp) / "points", "callable")
                for round_no in range(args.rounds):
                    for name, values in VARIANTS.items():
                        _settings(admin, args.database, values)
                        r = _run(url, points, args.threads, args.seconds)
                        results[name].append(r)
                        print(
                            f"round {round_no + 1} {name:>13}: {r['rps']:.0f} dec/s, "
                            f"{r['per_commit']:.1f} dec/commit, hold p50 {r['hold_p50']:.3f} ms "
                            f"= append {r['append_p50']:.3f} + COMMIT {r['commit_p50']:.3f}, "
                            f"load {_loadavg()}",
                            flush=True,
                        )
            print(
                f"\n{'variant':>13} {'dec/s':>7} {'dec/commit':>10} {'hold p50 ms':>11} "
                f"{'p99':>7} {'append p50':>10} {'COMMIT p50':>10}"
            )
            for name, rounds in results.items():
                m = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
                print(
                    f"{name:>13} {m['rps']:>7.0f} {m['per_commit']:>10.1f} "
                    f"{m['hold_p50']:>11.3f} {m['hold_p99']:>7.3f} {m['append_p50']:>10.3f} "
                    f"{m['commit_p50']:>10.3f}"
                )
            print(f"load {_loadavg()}")
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
