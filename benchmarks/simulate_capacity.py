"""Capacity model: predicted decisions/s and p99 for many replicas and ledger lanes.

Run: .venv/bin/python benchmarks/simulate_capacity.py [--costs benchmarks/out/scaling_costs.json]
     [--pg-cores 16] [--clients 16]

A discrete-event simulation of a closed loop (each client sends its next decision as soon as
the last is answered) through the resources that saturate in turn (docs/scaling.md):

1. a replica's interpreter: one decision at a time per replica, `server_cpu_ms` each, on a
   core of its own (or, to check the model against this machine, on a pool of shared cores);
2. the replica's writer for the decision's lane: it takes everything queued as one commit
   (group commit) and waits for the lane's head lock, a single FIFO server per lane;
3. under the lock: a fixed part (round trips, the writer's own work) plus PostgreSQL CPU per
   decision (`pg_cpu_ms`, on the database's cores), then the WAL flush: one fdatasync at a
   time for the whole database, shared by every commit waiting for it (PostgreSQL's own group
   commit across lanes); the lock is released when the commit is durable.

The costs come from the JSON `bench_scaling.py` writes (defaults: this machine's figures).
It first replays the measured configurations (1, 2 and 4 processes on this host's cores, one
lane) and prints predicted beside measured, then the predictions for 8, 64 and 1,000
replicas with 1, 16 and 256 lanes.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).parent

# Measured with bench_scaling.py on this machine (2 cores shared with other work, PostgreSQL 15
# on the same host); see docs/scaling.md. A costs file from a new run replaces them.
DEFAULT_COSTS = {
    "server_cpu_ms": 1.49,
    "pg_cpu_ms": 0.21,
    "hold_ms": 46.6,
    "decisions_per_commit": 15.1,
    "wal_bytes_per_decision": 2157.0,
    "fsync_per_s": 229.0,
    "cores": 2.0,
}


@dataclass(frozen=True)
class Costs:
    server_cpu_ms: float
    pg_cpu_ms: float
    hold_ms: float
    decisions_per_commit: float
    wal_bytes_per_decision: float
    fsync_per_s: float
    cores: float = 2.0

    @property
    def sync_ms(self) -> float:
        return 1000.0 / self.fsync_per_s if self.fsync_per_s > 0 else 0.0

    @property
    def fixed_ms(self) -> float:
        """Lock hold per commit that does not grow with the batch, less the flush (modelled
        on its own): round trips and the writer's own work, as measured."""
        per_batch = self.pg_cpu_ms * self.decisions_per_commit
        return max(0.0, self.hold_ms - per_batch - self.sync_ms)

    @classmethod
    def load(cls, path: Path | None) -> Costs:
        values = dict(DEFAULT_COSTS)
        if path is not None and path.exists():
            values.update(json.loads(path.read_text())["costs"])
        return cls(**{k: float(v) for k, v in values.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Scenario:
    replicas: int
    lanes: int
    clients_per_replica: int
    host_cores: float | None = None  # None: every replica on a core of its own
    pg_cores: float | None = 16.0  # None: PostgreSQL shares host_cores
    max_batch: int = 512
    decisions: int = 20_000
    seed: int = 1


@dataclass
class Result:
    throughput: float
    p50_ms: float
    p99_ms: float
    per_commit: float
    lock_busy: float  # mean share of time a lane's head lock is held
    commits: int
    mean_hold_ms: float


class _Pool:
    """k identical servers with one FIFO queue (cores); fractional k rounds up, with the
    last server slowed by the fraction."""

    def __init__(self, k: float) -> None:
        self.free = max(1, int(-(-k // 1)))
        self.speed = [1.0] * self.free
        if k < self.free:
            self.speed[-1] = max(k - (self.free - 1), 0.05)
        self.idle = list(range(self.free))
        self.waiting: deque[Callable[[int], None]] = deque()

    def acquire(self, then: Callable[[int], None]) -> None:
        if self.idle:
            then(self.idle.pop())
        else:
            self.waiting.append(then)

    def release(self, server: int) -> None:
        if self.waiting:
            self.waiting.popleft()(server)
        else:
            self.idle.append(server)


@dataclass
class _Sim:
    scenario: Scenario
    costs: Costs
    now: float = 0.0
    events: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    seq: int = 0

    def at(self, delay: float, action: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.events, (self.now + delay, self.seq, action))


def simulate(scenario: Scenario, costs: Costs) -> Result:
    """Run one scenario to `scenario.decisions` answered decisions (after a warm-up)."""
    sim = _Sim(scenario, costs)
    rng = random.Random(scenario.seed)
    s = scenario
    cpu_s, pg_s = costs.server_cpu_ms / 1000, costs.pg_cpu_ms / 1000
    fixed_s, sync_s = costs.fixed_ms / 1000, costs.sync_ms / 1000
    host = _Pool(s.host_cores) if s.host_cores is not None else None
    pg = _Pool(s.pg_cores) if s.pg_cores is not None else host

    def work(mean: float) -> float:
        return rng.gammavariate(4.0, mean / 4.0) if mean > 0 else 0.0  # cv 0.5

    # per replica: interpreter queue and busy flag
    interp_queue: list[deque[float]] = [deque() for _ in range(s.replicas)]
    interp_busy = [False] * s.replicas
    writer_queue: dict[tuple[int, int], list[float]] = {}
    writer_busy: set[tuple[int, int]] = set()
    lock_queue: list[deque[tuple[int, int]]] = [deque() for _ in range(s.lanes)]
    lock_held = [False] * s.lanes
    lock_since = [0.0] * s.lanes
    lock_busy_time = [0.0] * s.lanes
    flush_waiting: list[Callable[[], None]] = []
    flushing = [False]
    latencies: list[float] = []
    batches: list[int] = []
    holds: list[float] = []
    warmup = max(s.decisions // 10, s.replicas * s.clients_per_replica)
    done = [0]
    measure_from = [0.0]

    def arrive(replica: int, started: float) -> None:
        interp_queue[replica].append(started)
        if not interp_busy[replica]:
            interp_next(replica)

    def interp_next(replica: int) -> None:
        if not interp_queue[replica]:
            interp_busy[replica] = False
            return
        interp_busy[replica] = True
        started = interp_queue[replica].popleft()
        duration = work(cpu_s)
        if host is None:
            sim.at(duration, lambda: interp_done(replica, started, None))
        else:
            host.acquire(
                lambda core: sim.at(
                    duration / host.speed[core], lambda: interp_done(replica, started, core)
                )
            )

    def interp_done(replica: int, started: float, core: int | None) -> None:
        if core is not None and host is not None:
            host.release(core)
        lane = rng.randrange(s.lanes)
        key = (replica, lane)
        writer_queue.setdefault(key, []).append(started)
        if key not in writer_busy:
            writer_start(key)
        interp_next(replica)

    def writer_start(key: tuple[int, int]) -> None:
        queued = writer_queue.get(key)
        if not queued:
            writer_busy.discard(key)
            return
        writer_busy.add(key)
        lane = key[1]
        if lock_held[lane]:
            lock_queue[lane].append(key)
        else:
            grant(lane, key)

    def grant(lane: int, key: tuple[int, int]) -> None:
        lock_held[lane] = True
        lock_since[lane] = sim.now
        queued = writer_queue[key]
        batch, writer_queue[key] = queued[: s.max_batch], queued[s.max_batch :]
        pg_time = sum(work(pg_s) for _ in batch)

        def after_pg(core: int | None) -> None:
            if core is not None and pg is not None:
                pg.release(core)
            sim.at(work(fixed_s), lambda: flush(lambda: committed(lane, key, batch)))

        if pg is None:
            sim.at(pg_time, lambda: after_pg(None))
        else:
            pg.acquire(lambda core: sim.at(pg_time / pg.speed[core], lambda: after_pg(core)))

    def flush(then: Callable[[], None]) -> None:
        flush_waiting.append(then)
        if not flushing[0]:
            start_flush()

    def start_flush() -> None:
        if not flush_waiting:
            flushing[0] = False
            return
        flushing[0] = True
        group = list(flush_waiting)
        flush_waiting.clear()

        def synced() -> None:
            for then in group:
                then()
            start_flush()

        sim.at(sync_s, synced)

    def committed(lane: int, key: tuple[int, int], batch: list[float]) -> None:
        hold = sim.now - lock_since[lane]
        if done[0] >= warmup:
            lock_busy_time[lane] += hold
            batches.append(len(batch))
            holds.append(hold)
        for started in batch:
            done[0] += 1
            if done[0] == warmup:
                measure_from[0] = sim.now
            elif done[0] > warmup:
                latencies.append(sim.now - started)
            arrive(key[0], sim.now)  # the client's next decision, at once
        if lock_queue[lane]:
            grant(lane, lock_queue[lane].popleft())
        else:
            lock_held[lane] = False
        writer_start(key)

    for replica in range(s.replicas):
        for _ in range(s.clients_per_replica):
            arrive(replica, 0.0)
    target = warmup + s.decisions
    while sim.events and done[0] < target:
        when, _, action = heapq.heappop(sim.events)
        sim.now = when
        action()
    elapsed = max(sim.now - measure_from[0], 1e-9)
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return Result(
        throughput=len(latencies) / elapsed,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        per_commit=sum(batches) / max(len(batches), 1),
        lock_busy=sum(lock_busy_time) / (elapsed * s.lanes),
        commits=len(batches),
        mean_hold_ms=1000 * sum(holds) / len(holds) if holds else 0.0,
    )


def ceilings(
    costs: Costs, replicas: int, lanes: int, pg_cores: float, batch: float
) -> dict[str, float]:
    """The ceiling of each resource in decisions/s at a given batch (docs/scaling.md)."""
    hold = costs.fixed_ms + costs.pg_cpu_ms * batch + costs.sync_ms
    return {
        "interpreters": replicas * 1000 / costs.server_cpu_ms,
        "head locks": lanes * batch * 1000 / hold,
        "postgres cpu": pg_cores * 1000 / costs.pg_cpu_ms,
    }


def _measured(path: Path | None) -> dict[str, dict[str, float | str]]:
    if path is None or not path.exists():
        return {}
    return dict(json.loads(path.read_text()).get("measured", {}))


def _effective_cores(costs: Costs, row: dict[str, float | str]) -> float:
    """This machine is shared: a fair share of its cores by the load average of the run."""
    loads = [float(x.split()[0]) for x in str(row.get("load", "")).split(" / ") if x.strip()]
    load = sum(loads) / len(loads) if loads else costs.cores
    return costs.cores * min(1.0, costs.cores / max(load, 1e-9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--costs", type=Path, default=HERE / "out" / "scaling_costs.json")
    parser.add_argument("--pg-cores", type=float, default=16.0)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients per replica")
    parser.add_argument("--concurrency", type=int, default=32, help="of the measured runs")
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument(
        "--hold-ms", type=float, help="what if: this lock hold per commit at the measured batch"
    )
    args = parser.parse_args()
    costs = Costs.load(args.costs)
    if args.hold_ms is not None:
        costs = replace(costs, hold_ms=args.hold_ms)
    print(
        f"costs: interpreter {costs.server_cpu_ms:.2f} ms/decision, PostgreSQL "
        f"{costs.pg_cpu_ms:.2f} ms/decision, lock hold {costs.hold_ms:.1f} ms/commit at "
        f"{costs.decisions_per_commit:.1f} decisions/commit (fixed part {costs.fixed_ms:.1f} ms), "
        f"flush {costs.sync_ms:.2f} ms, WAL {costs.wal_bytes_per_decision:.0f} B/decision"
    )
    measured = _measured(args.costs)
    if measured:
        print("\nthis machine, one lane, predicted vs measured:")
        print(f"{'procs':>5} {'cores':>6} {'dec/s pred':>10} {'meas':>6} {'p99 pred':>9} "
              f"{'meas':>7} {'dec/commit pred':>15} {'meas':>5}")  # fmt: skip
        for n, row in measured.items():
            cores = _effective_cores(costs, row)
            r = simulate(
                Scenario(
                    replicas=int(n),
                    lanes=1,
                    clients_per_replica=max(1, args.concurrency // int(n)),
                    host_cores=cores,
                    pg_cores=None,
                    decisions=args.decisions // 4,
                ),
                costs,
            )
            print(
                f"{n:>5} {cores:>6.2f} {r.throughput:>10.0f} {float(row['rps']):>6.0f} "
                f"{r.p99_ms:>9.0f} {float(row['p99_ms']):>7.0f} {r.per_commit:>15.1f} "
                f"{float(row['per_commit']):>5.1f}"
            )
    print(
        f"\npredictions: a core per replica, {args.clients} clients per replica, PostgreSQL on "
        f"{args.pg_cores:g} cores"
    )
    print(f"{'replicas':>8} {'lanes':>5} {'dec/s':>9} {'p99 ms':>8} {'dec/commit':>10} "
          f"{'lock busy':>9}  bound by")  # fmt: skip
    for replicas in (8, 64, 1000):
        for lanes in (1, 16, 256):
            scenario = Scenario(replicas, lanes, args.clients, None, args.pg_cores)
            r = simulate(replace(scenario, decisions=args.decisions), costs)
            limits = ceilings(costs, replicas, lanes, args.pg_cores, r.per_commit)
            bound = min(limits, key=lambda k: limits[k])
            print(
                f"{replicas:>8} {lanes:>5} {r.throughput:>9.0f} {r.p99_ms:>8.1f} "
                f"{r.per_commit:>10.1f} {r.lock_busy:>9.0%}  {bound}"
            )


if __name__ == "__main__":
    main()
