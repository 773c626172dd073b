"""What a shadow rollout costs the decisions callers wait for.

Run: .venv/bin/python benchmarks/bench_shadow.py [--n 6000] [--rounds 10]
Measures governed decision latency (one caller, sklearn model, SQLite) without a rollout and
with a challenger shadowing 100 % of traffic, and counts shadow calls dropped by the bounded
queue; once with the challenger on a thread of the caller's process, once in a child process
(what `warden serve` does). The caller never waits for the challenger either way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _setup import applications, percentile, train, write_point
from bench_inprocess import sequential_latency

from warden.engine import Engine
from warden.policy.loader import load_points
from warden.rollout.plan import RolloutPlan
from warden.rollout.rollouts import Mode
from warden.store.database import create_engine, migrate


def measure(
    folder: Path, inputs: list[dict[str, float | int]], *, process: bool, rounds: int
) -> dict[str, Any]:
    """Latency without a rollout and with a challenger shadowing 100 % of traffic, in
    alternating rounds, so that the machine's drift over the run falls on both alike."""
    points = load_points(write_point(folder / "points", "sklearn"))
    db = create_engine(f"sqlite:///{folder / 'warden.db'}")
    migrate(db)
    engine = Engine(points, db, actor="bench", model_cache=folder / "cache", shadow_process=process)
    point = engine.points["loan_approval"]
    sequential_latency(engine, inputs[:300])  # warm up; gives the registry a smoke input
    challenger = train(folder / "challenger", seed=2)
    engine.registry.register(point, version="2", artifact=challenger, actor="bench")
    chunk = len(inputs) // rounds
    baseline: list[float] = []
    shadowed: list[float] = []
    for round in range(rounds):
        part = inputs[round * chunk : (round + 1) * chunk]
        baseline += sequential_latency(engine, part)
        engine.rollouts.start(
            point, challenger="2", mode=Mode.SHADOW, plan=RolloutPlan(steps=[100]), actor="bench"
        )
        if round == 0:
            engine.decide("loan_approval", inputs[0])  # starts the shadow runner (and process)
            time.sleep(3 if process else 0)  # the child imports the model's libraries once
        shadowed += sequential_latency(engine, part)
        engine.rollouts.abort("loan_approval", actor="bench", reason="next round")
    assert engine._shadow is not None
    engine._shadow.drain(60)
    result = {
        "baseline": baseline,
        "shadowed": shadowed,
        "completed": engine._shadow.completed,
        "dropped": engine._shadow.dropped,
    }
    engine.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=6000, help="decisions each way")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    inputs = applications(args.n)
    print(f"{args.n} sequential decisions each way, one caller, {args.rounds} alternating rounds\n")
    with tempfile.TemporaryDirectory() as tmp:
        for process, name in ((False, "thread"), (True, "process")):
            r = measure(Path(tmp) / name, inputs, process=process, rounds=args.rounds)
            b50, b99 = percentile(r["baseline"], 50), percentile(r["baseline"], 99)
            s50, s99 = percentile(r["shadowed"], 50), percentile(r["shadowed"], 99)
            print(f"challenger on a {name}:")
            print(f"  no rollout         p50 {b50:8.1f} µs  p99 {b99:8.1f} µs")
            print(
                f"  shadow at 100 %    p50 {s50:8.1f} µs  p99 {s99:8.1f} µs   "
                f"(p50 {s50 / b50 - 1:+.0%}, p99 {s99 / b99 - 1:+.0%})"
            )
            print(f"  shadow calls answered {r['completed']}, dropped {r['dropped']}\n")


if __name__ == "__main__":
    main()
