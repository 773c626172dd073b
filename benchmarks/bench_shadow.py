"""What a shadow rollout costs the decisions callers wait for.

Run: .venv/bin/python benchmarks/bench_shadow.py [--n 3000]
Measures governed decision latency (one caller, sklearn model, SQLite) without a rollout and
with a challenger shadowing 100 % of traffic, and counts shadow calls dropped by the bounded
queue. The challenger runs on its own thread; the caller never waits for it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _setup import applications, percentile, train, write_point
from bench_inprocess import sequential_latency

from warden.engine import Engine
from warden.policy.loader import load_points
from warden.rollout.plan import RolloutPlan
from warden.rollout.rollouts import Mode
from warden.store.database import create_engine, migrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    inputs = applications(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        points = load_points(write_point(folder / "points", "sklearn"))
        db = create_engine(f"sqlite:///{folder / 'warden.db'}")
        migrate(db)
        engine = Engine(points, db, actor="bench", model_cache=folder / "cache")
        sequential_latency(engine, inputs[:300])  # warm up; gives the registry a smoke input
        baseline = sequential_latency(engine, inputs)
        challenger = train(folder / "challenger", seed=2)
        engine.registry.register(
            engine.points["loan_approval"], version="2", artifact=challenger, actor="bench"
        )
        engine.rollouts.start(
            engine.points["loan_approval"],
            challenger="2",
            mode=Mode.SHADOW,
            plan=RolloutPlan(steps=[100]),
            actor="bench",
        )
        shadowed = sequential_latency(engine, inputs)
        assert engine._shadow is not None
        engine._shadow.drain(60)
        print(f"{args.n} sequential decisions each\n")
        for name, samples in (("no rollout", baseline), ("shadow at 100 %", shadowed)):
            print(
                f"{name:18s} p50 {percentile(samples, 50):8.1f} µs  "
                f"p99 {percentile(samples, 99):8.1f} µs"
            )
        print(
            f"\nshadow calls answered {engine._shadow.completed}, dropped (queue full) "
            f"{engine._shadow.dropped}"
        )
        engine.close()


if __name__ == "__main__":
    main()
