"""Replay speed: re-routing recorded decisions under a changed policy.

Run: .venv/bin/python benchmarks/bench_replay.py [--decisions 100000]
Records N decisions (decide_many, SQLite), then replays them under a policy with another
threshold: reading them back from the database, and routing them, timed apart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _setup import applications, write_point

from warden.engine import Engine
from warden.policy.loader import load_point, load_points
from warden.policy.replay import replay, same_input_schema
from warden.store import queries
from warden.store.database import create_engine, migrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        points_dir = write_point(folder / "points", "sklearn")
        db = create_engine(f"sqlite:///{folder / 'warden.db'}")
        migrate(db)
        engine = Engine(load_points(points_dir), db, actor="bench", model_cache=folder / "c")
        inputs = applications(args.decisions)
        began = time.perf_counter()
        for start in range(0, args.decisions, 1000):
            engine.decide_many("loan_approval", inputs[start : start + 1000])
        recorded_in = time.perf_counter() - began
        engine.close()
        changed = points_dir / "loan_approval.yaml"
        new_file = folder / "next.yaml"
        new_file.write_text(changed.read_text().replace("0.6", "0.7"))
        point = load_point(new_file)
        began = time.perf_counter()
        with db.connect() as conn:
            decisions = queries.replay_rows(conn, "loan_approval", args.decisions)
            schemas = queries.input_schemas(conn, "loan_approval")
        read_in = time.perf_counter() - began
        began = time.perf_counter()
        result = replay(point, decisions, validated_under=same_input_schema(point, schemas))
        routed_in = time.perf_counter() - began
        n = result.total
        print(f"recorded {n:,} decisions in {recorded_in:.1f} s (decide_many)")
        print(f"read back     {n / read_in:10,.0f} decisions/s  ({read_in:.2f} s)")
        print(f"re-routed     {n / routed_in:10,.0f} decisions/s  ({routed_in:.2f} s)")
        print(
            f"replay total  {n / (read_in + routed_in):10,.0f} decisions/s; "
            f"{result.changed:,} would take another route"
        )


if __name__ == "__main__":
    main()
