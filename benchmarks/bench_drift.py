"""Monitoring costs: drift on wide data, streaming memory, and observation in the decision path.

Run: .venv/bin/python benchmarks/bench_drift.py [--quick]
Beside Evidently: install it in a separate environment that also has Warden installed
(`python -m venv /tmp/ev && /tmp/ev/bin/pip install -e . evidently`) and run this file with
that interpreter; the Evidently column is printed when `evidently` imports.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _setup import applications, write_point

from warden.engine import Engine
from warden.monitor.observer import MetricsObserver, Observation
from warden.monitor.reference import build_profile
from warden.monitor.windows import Window
from warden.policy.loader import load_points
from warden.policy.monitoring import MonitoringSpec
from warden.store.database import create_engine, migrate


def table(n: int, columns: int, rng: np.random.Generator, shift: float = 0.0) -> dict[str, Any]:
    """`columns` features: three quarters numeric, one quarter categorical."""
    data: dict[str, Any] = {}
    for i in range(columns):
        if i % 4 == 3:
            p = np.array([0.4, 0.3, 0.2, 0.1])
            if shift:
                p = p[::-1]
            data[f"c{i}"] = rng.choice(["a", "b", "c", "d"], n, p=p)
        else:
            data[f"c{i}"] = rng.normal(i + shift, 1.0 + i / 10, n)
    return data


def kinds(columns: int) -> dict[str, str]:
    return {f"c{i}": "categorical" if i % 4 == 3 else "numeric" for i in range(columns)}


def spec(window: int, threshold: str = "fixed") -> MonitoringSpec:
    return MonitoringSpec.model_validate(
        {
            "window": {"count": window},
            "drift": {"threshold": threshold},
            "reference": {"first_n": 100},
        }
    )


def warden_drift(
    columns: int, ref_rows: int, cur_rows: int, repeat: int = 5
) -> tuple[dict[str, float], dict[str, tuple[str, float]]]:
    rng = np.random.default_rng(0)
    reference = table(ref_rows, columns, rng)
    current = table(cur_rows, columns, rng, shift=0.2)
    start = time.perf_counter()
    profile = build_profile(reference, kinds(columns), spec(cur_rows))
    built = time.perf_counter() - start
    start = time.perf_counter()
    learned = build_profile(reference, kinds(columns), spec(cur_rows, "learned"))
    learned_s = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        report = profile.compare(current)
        times.append(time.perf_counter() - start)
    assert learned.plans
    figures = {
        "profile_s": built,
        "learned_s": learned_s,
        "window_s": float(np.median(times)),
        "drifted": sum(c.drifted for c in report.columns),
    }
    return figures, {c.column: (c.test, c.score) for c in report.columns}


EVIDENTLY_TESTS = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
}


def evidently_drift(
    columns: int, ref_rows: int, cur_rows: int
) -> tuple[float, dict[str, tuple[str, float]]] | None:
    """Evidently's DataDriftPreset on the same data, or None when Evidently is not installed."""
    try:
        import pandas as pd
        from evidently import Report  # type: ignore[import-not-found]
        from evidently.presets import DataDriftPreset  # type: ignore[import-not-found]
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(table(ref_rows, columns, rng))
    current = pd.DataFrame(table(cur_rows, columns, rng, shift=0.2))
    start = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(current, reference)
    seconds = time.perf_counter() - start
    scores = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        test = EVIDENTLY_TESTS.get(config.get("method", ""))
        if test is not None:
            scores[config["column"]] = (test, float(metric["value"]))
    return seconds, scores


def agreement(ours: dict[str, tuple[str, float]], theirs: dict[str, tuple[str, float]]) -> str:
    same = [c for c in ours if c in theirs and ours[c][0] == theirs[c][0]]
    if not same:
        return "no test in common"
    worst = max(abs(ours[c][1] - theirs[c][1]) for c in same)
    return f"{len(same)} columns with the same test; largest difference {worst:.1e}"


def rss_mb() -> float:
    """Resident memory now (not the peak, which the wide tables above already set)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def streaming(total: int, window: int = 500) -> list[tuple[int, float]]:
    """Decisions streamed through windows that close every `window` with a drift test."""
    rng = np.random.default_rng(1)
    columns = ["amount", "income", "credit_score", "country", "output", "confidence"]
    wkinds = {
        "amount": "numeric",
        "income": "numeric",
        "credit_score": "numeric",
        "country": "categorical",
        "output": "categorical",
        "confidence": "numeric",
    }
    ref = {
        "amount": rng.lognormal(9, 0.5, 20_000),
        "income": rng.normal(5000, 1000, 20_000),
        "credit_score": rng.integers(300, 850, 20_000).astype(float),
        "country": rng.choice(["DE", "FR", "IT"], 20_000),
        "output": rng.choice(["approve", "decline"], 20_000),
        "confidence": rng.uniform(0.5, 1, 20_000),
    }
    profile = build_profile(ref, wkinds, spec(window))
    marks = {10_000, 100_000, 1_000_000, total}
    out = []
    from datetime import UTC, datetime

    current = Window(datetime.now(UTC))
    batch = 10_000
    for start in range(0, total, batch):
        amounts = rng.lognormal(9, 0.5, batch)
        scores = rng.integers(300, 850, batch)
        for i in range(batch):
            payload = {
                "route": "auto",
                "reasons": [],
                "policy_version": "p",
                "model_version": "1",
                "confidence": 0.9,
                "proposed_outcome": "approve",
                "input": {
                    "amount": float(amounts[i]),
                    "income": 5000.0,
                    "credit_score": int(scores[i]),
                    "country": "DE",
                },
            }
            current.add_decision(start + i, payload, columns)
            if current.count >= window:
                profile.compare(current.values)
                current.metrics()
                current = Window(datetime.now(UTC))
        done = start + batch
        if done in marks:
            out.append((done, rss_mb()))
    return out


def observation_cost(calls: int = 200_000) -> float:
    observer = MetricsObserver()
    row = {
        "id": "x",
        "point": "loan_approval",
        "route": "auto",
        "model_version": "1",
        "reasons": [{"code": "confident", "kind": "auto"}],
        "policy_version": "p",
    }
    observation = Observation(row, (0, 1, 2, 3), 4)
    for _ in range(1000):
        observer(observation)
    start = time.perf_counter_ns()
    for _ in range(calls):
        observer(observation)
    return (time.perf_counter_ns() - start) / calls / 1000


def engine_overhead(folder: Path, n: int) -> tuple[float, float]:
    """Median µs per sequential decide() without and with the observers attached (median of
    eight interleaved rounds; on a loaded machine the difference is within the noise)."""
    points = load_points(write_point(folder / "points", "callable"))
    db = create_engine(f"sqlite:///{folder / 'warden.db'}", sqlite_synchronous="OFF")
    migrate(db)
    engine = Engine(points, db, actor="bench")
    inputs = applications(n)
    try:

        def run() -> float:
            samples = []
            for item in inputs:
                start = time.perf_counter_ns()
                engine.decide("loan_approval", item)
                samples.append((time.perf_counter_ns() - start) / 1000)
            return float(np.median(samples))

        run()  # warm up
        observer = MetricsObserver()
        bare, observed = [], []
        for _ in range(8):  # interleaved rounds, so changes in machine load hit both alike
            engine.observers[:] = []
            bare.append(run())
            engine.observers[:] = [observer]
            observed.append(run())
        return float(np.median(bare)), float(np.median(observed))
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    ref_rows, cur_rows, total = (
        (20_000, 2_000, 100_000) if args.quick else (100_000, 10_000, 1_000_000)
    )
    with open("/proc/loadavg") as loadavg:
        print(f"load average at start: {loadavg.read().split()[0]} on 2 cores")
    print(
        f"Drift: {ref_rows:,} reference rows, {cur_rows:,} current rows (3/4 numeric, 1/4 categorical)"
    )
    print(
        f"{'columns':>8} {'profile':>9} {'learned':>9} {'window':>9} {'Evidently':>10} {'speed-up':>9}"
    )
    for columns in (20, 50):
        w, ours = warden_drift(columns, ref_rows, cur_rows)
        ev = evidently_drift(columns, ref_rows, cur_rows) if columns == 20 else None
        ev_text = f"{ev[0]:9.2f}s" if ev is not None else f"{'-':>10}"
        speed = f"{ev[0] / w['window_s']:8.0f}x" if ev is not None else f"{'-':>9}"
        print(
            f"{columns:>8} {w['profile_s']:8.3f}s {w['learned_s']:8.3f}s {w['window_s'] * 1000:7.1f}ms "
            f"{ev_text} {speed}   ({w['drifted']} of {columns} drifted)"
        )
        if ev is not None:
            print(f"{'':>8} same statistics as Evidently: {agreement(ours, ev[1])}")
    print("profile: sort and bin the reference once; learned: plus thresholds from 50 chunks;")
    print("window: one window tested against the stored profile (the recurring cost)")

    print("\nStreaming through windows of 500 with a drift test each (resident memory)")
    for done, mb in streaming(total):
        print(f"{done:>10,} decisions  {mb:7.1f} MB")

    print("\nObservation in the decision path")
    print(f"  metrics observer per decision: {observation_cost():.2f} µs")
    with tempfile.TemporaryDirectory() as folder:
        bare, observed = engine_overhead(Path(folder), 500 if args.quick else 1000)
    print(f"  decide() median, no observers:   {bare:8.1f} µs")
    print(
        f"  decide() median, with observers: {observed:8.1f} µs  (difference {observed - bare:+.1f} µs)"
    )


if __name__ == "__main__":
    main()
