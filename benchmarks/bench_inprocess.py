"""In-process: governed decisions per second, and the latency Warden adds over a direct model call.

Run: .venv/bin/python benchmarks/bench_inprocess.py [--seconds 5] [--threads 32]
Every governed decision is durably committed (SQLite WAL, synchronous=FULL) before decide()
returns; the recorder batches commits (group commit) across concurrent callers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _setup import FEATURES, applications, percentile, write_point

from warden.engine import Engine
from warden.models.loader import load_model
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate


def _engine(folder: Path, kind: str, timeout_ms: int) -> Engine:
    points = load_points(write_point(folder / kind / "points", kind, timeout_ms))
    db = create_engine(f"sqlite:///{folder / kind / 'warden.db'}")
    migrate(db)
    return Engine(points, db, actor="bench")


def direct_latency(folder: Path, inputs: list[dict[str, float | int]]) -> list[float]:
    """The same model called directly: features in, predict_proba out."""
    point = load_points(folder / "sklearn" / "points")["loan_approval"]
    model = load_model(point.spec.model, point.base_dir)
    assert model is not None
    samples = []
    for item in inputs:
        start = time.perf_counter_ns()
        model.predict(item)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def sequential_latency(engine: Engine, inputs: list[dict[str, float | int]]) -> list[float]:
    samples = []
    for item in inputs:
        start = time.perf_counter_ns()
        engine.decide("loan_approval", item)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def throughput(
    engine: Engine, inputs: list[dict[str, float | int]], threads: int, seconds: float
) -> tuple[float, list[float]]:
    stop = time.monotonic() + seconds
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def work(index: int) -> None:
        i = index
        while time.monotonic() < stop:
            start = time.perf_counter_ns()
            engine.decide("loan_approval", inputs[i % len(inputs)])
            latencies[index].append((time.perf_counter_ns() - start) / 1000)
            counts[index] += 1
            i += threads

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    return sum(counts) / elapsed, [x for chunk in latencies for x in chunk]


def batch_throughput(
    engine: Engine, inputs: list[dict[str, float | int]], size: int, seconds: float
) -> float:
    """decide_many on batches of `size`: one model call and one group commit per batch."""
    done = 0
    stop = time.monotonic() + seconds
    began = time.monotonic()
    while time.monotonic() < stop:
        start = (done // size * size) % (len(inputs) - size)
        done += len(engine.decide_many("loan_approval", inputs[start : start + size]))
    return done / (time.monotonic() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--n", type=int, default=3000, help="sequential samples")
    args = parser.parse_args()
    inputs = applications(5000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(
            f"features {FEATURES}; {args.n} sequential samples; "
            f"{args.threads} threads for {args.seconds:g}s\n"
        )
        rows = []
        for kind, timeout in (("sklearn", 200), ("callable", 200)):
            engine = _engine(folder, kind, timeout)
            sequential_latency(engine, inputs[:200])  # warm up
            seq = sequential_latency(engine, inputs[: args.n])
            rate, lat = throughput(engine, inputs, args.threads, args.seconds)
            batch = batch_throughput(engine, inputs, 1000, args.seconds)
            engine.close()
            rows.append((kind, seq, rate, lat, batch))
        direct = direct_latency(folder, inputs[: args.n])
        d50, d99 = percentile(direct, 50), percentile(direct, 99)
        print(f"direct sklearn predict_proba          p50 {d50:8.1f} µs  p99 {d99:8.1f} µs")
        for kind, seq, rate, lat, batch in rows:
            p50, p99 = percentile(seq, 50), percentile(seq, 99)
            print(f"governed ({kind:8s}) one caller        p50 {p50:8.1f} µs  p99 {p99:8.1f} µs")
            print(
                f"governed ({kind:8s}) {args.threads} callers        "
                f"{rate:10.0f} decisions/s  p50 {percentile(lat, 50):8.1f} µs  "
                f"p99 {percentile(lat, 99):8.1f} µs"
            )
            print(f"governed ({kind:8s}) decide_many, batches of 1000  {batch:10.0f} decisions/s")
        sk_seq = rows[0][1]
        added50 = percentile(sk_seq, 50) - d50
        added99 = percentile(sk_seq, 99) - d99
        print(
            f"\nadded by governance over the direct sklearn call (one caller, "
            f"durable commit included): p50 {added50:.1f} µs, p99 {added99:.1f} µs"
        )
        print(f"mean sequential governed sklearn: {statistics.fmean(sk_seq):.1f} µs")


if __name__ == "__main__":
    main()
