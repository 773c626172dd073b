"""Capacity model: predicted decisions/s, p99, batch size and lock wait for replicas and lanes.

Run: .venv/bin/python benchmarks/simulate_capacity.py [--costs benchmarks/out/scaling_costs.json]
     [--pg-cores 16] [--clients 16] [--hold-ms 2.0]

A discrete-event simulation of a closed loop (each client sends its next decision a think time
after the last is answered) through the parts of a `warden serve` process as the code runs them
(docs/scaling.md "The model"):

1. the process's interpreter (its GIL): request work (`request_ms` per decision: HTTP, input
   validation, model, rules, response) and the writer thread's work take turns on it, the
   writer first when both wait; every piece of work also needs a core of the host;
2. the writer (src/warden/store/recorder.py `_run`): it sleeps until a change is queued, takes
   everything queued, and — when its last batch had more than one change — keeps taking while
   changes arrive less than `linger` apart (the burst of callers it just answered); then it
   prepares the batch on the interpreter (`writer_commit_ms` + `writer_decision_ms` per change),
   sends it in one round trip (`net_ms`, PostgreSQL's CPU outside the lock), waits for its
   lane's head lock (one FIFO per lane), holds it for the append (`hold_fixed_ms` +
   `hold_decision_ms` per change) and COMMIT's WAL flush — one fdatasync at a time for the
   whole database, shared by every commit waiting for it — and answers its callers;
3. PostgreSQL's CPU on the database's cores (the host's, for this machine).

Batches are not an input: they form from the loop, which is what the previous model got wrong
(it batched whatever queued during the hold alone and predicted 1 to 4 decisions per commit
where 4 to 25 are measured). The costs come from `bench_scaling.py`'s JSON (its 1-process run, its writer
phase counters and lock hold metric); the clients' think time (wrk and the loopback, on the same
cores) is the one parameter fitted, to the 1-process throughput. The 2- and 4-process rows are
then predictions, printed beside what was measured.
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
LINGER_MS = 0.5  # Recorder(linger=0.0005)
MODEL_BATCH = 8.0  # decisions per model call assumed when the costs are split (a typical one)
MAX_MODEL_BATCH = 256  # warden.models.batching.MAX_BATCH
SWITCH_MS = 5.0  # sys.getswitchinterval(): how long a thread waits before it may take the GIL

# Measured with bench_scaling.py on this machine (2 cores, PostgreSQL 15 on the same host,
# load average 5-6 from other work); see docs/scaling.md. A costs file from a new run replaces
# them.
DEFAULT_COSTS = {
    "server_cpu_ms": 0.46,
    "pg_cpu_ms": 0.099,
    "hold_ms": 2.95,
    "decisions_per_commit": 25.2,
    "wal_bytes_per_decision": 2173.0,
    "fsync_per_s": 874.0,
    "cores": 2.0,
    "writer_prepare_ms": 2.99,
    "writer_other_ms": 0.63,
    "database_ms": 5.27,
}


@dataclass(frozen=True)
class Costs:
    """Measured costs: per decision, per commit (at `decisions_per_commit`), and the disk."""

    server_cpu_ms: float  # server process CPU per decision, writer included
    pg_cpu_ms: float  # PostgreSQL backend CPU per decision
    hold_ms: float  # head lock hold per commit (database clock), WAL flush included
    decisions_per_commit: float  # the batch these were measured at
    wal_bytes_per_decision: float
    fsync_per_s: float
    cores: float = 2.0
    writer_prepare_ms: float = 0.0  # writer CPU per commit making the batch ready
    writer_other_ms: float = 0.0  # writer CPU per commit gathering, sending, answering
    database_ms: float = 0.0  # the round trip's wall time per commit, uncontended
    client_ms: float = 0.3  # a client's think time between answer and next request (wrk)
    model_call_ms: float = 0.2  # interpreter time per model call, whatever its rows

    @property
    def sync_ms(self) -> float:
        return 1000.0 / self.fsync_per_s if self.fsync_per_s > 0 else 0.0

    @property
    def writer_decision_ms(self) -> float:
        return self.writer_prepare_ms / max(self.decisions_per_commit, 1.0)

    @property
    def writer_commit_ms(self) -> float:
        return self.writer_other_ms

    @property
    def request_ms(self) -> float:
        """Interpreter time per decision outside the writer."""
        writer = self.writer_decision_ms + self.writer_commit_ms / max(self.decisions_per_commit, 1)
        return max(0.02, self.server_cpu_ms - writer - self.model_call_ms / MODEL_BATCH)

    @property
    def hold_decision_ms(self) -> float:
        """Lock hold per decision: its event chained and inserted (half PostgreSQL's work per
        decision; the decision row itself is inserted before the append takes the lock)."""
        return self.pg_cpu_ms / 2

    @property
    def hold_fixed_ms(self) -> float:
        """Lock hold per commit that does not grow with the batch, less the flush."""
        per_batch = self.hold_decision_ms * self.decisions_per_commit
        return max(0.0, self.hold_ms - per_batch - self.sync_ms)

    @property
    def net_ms(self) -> float:
        """The round trip outside the lock that is neither lock nor PostgreSQL CPU: loopback,
        wake-ups, the writer getting its interpreter back."""
        outside_cpu = (self.pg_cpu_ms - self.hold_decision_ms) * self.decisions_per_commit
        return max(0.0, self.database_ms - self.hold_ms - outside_cpu)

    def cpu_ms(self, batch: float) -> float:
        """CPU per decision (server + PostgreSQL) at a batch size: what the model charges."""
        b = max(batch, 1.0)
        writer = self.writer_decision_ms + self.writer_commit_ms / b
        return self.request_ms + self.model_call_ms / MODEL_BATCH + writer + self.pg_cpu_ms

    @classmethod
    def load(cls, path: Path | None) -> Costs:
        values: dict[str, float] = dict(DEFAULT_COSTS)
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
    max_batch: int = 1024
    decisions: int = 20_000
    seed: int = 1


@dataclass
class Result:
    throughput: float
    p50_ms: float
    p99_ms: float
    mean_ms: float  # mean time from a request's arrival to its answer
    in_flight: float  # time-average number of requests between arrival and answer
    per_commit: float
    lock_busy: float  # mean share of time a lane's head lock is held
    lock_wait: float  # share of time some writer waits for a head lock
    commits: int
    mean_hold_ms: float
    writer_idle_ms: float  # a writer's idle time per commit
    cpu_ms: float  # CPU per decision charged (server + PostgreSQL)


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
class _Writer:
    queue: list[float] = field(default_factory=list)  # arrival times of queued decisions
    state: str = "idle"  # idle | gather | busy
    previous: int = 0
    idle_since: float = 0.0
    seen: int = 0  # queue length at the last linger check


class _Sim:
    def __init__(self, scenario: Scenario, costs: Costs) -> None:
        self.s, self.c = scenario, costs
        self.now = 0.0
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = 0
        self.rng = random.Random(scenario.seed)
        s = scenario
        self.host = _Pool(s.host_cores) if s.host_cores is not None else None
        self.pg = _Pool(s.pg_cores) if s.pg_cores is not None else self.host
        self.interp_hi: list[deque[tuple[float, Callable[[], None], float]]] = [
            deque() for _ in range(s.replicas)
        ]
        self.interp_lo: list[deque[tuple[float, Callable[[], None], float]]] = [
            deque() for _ in range(s.replicas)
        ]
        self.interp_busy = [False] * s.replicas
        self.writers: dict[tuple[int, int], _Writer] = {}
        self.model_waiting: list[list[tuple[float, int]]] = [[] for _ in range(s.replicas)]
        self.model_busy = [False] * s.replicas
        self.lock_queue: list[deque[Callable[[], None]]] = [deque() for _ in range(s.lanes)]
        self.lock_held = [False] * s.lanes
        self.flush_waiting: list[Callable[[], None]] = []
        self.flushing = False
        # measurement
        self.warmup = max(s.decisions // 10, s.replicas * s.clients_per_replica)
        self.done = 0
        self.measuring = False
        self.measure_from = 0.0
        self.latencies: list[float] = []
        self.batches: list[int] = []
        self.holds: list[float] = []
        self.lock_busy_time = 0.0
        self.lock_wait_time = 0.0
        self.lanes_waiting = 0
        self.wait_since = 0.0
        self.writer_idle = 0.0
        self.in_system = 0
        self.in_system_area = 0.0
        self.area_since = 0.0
        self.cpu = 0.0

    # -- plumbing
    def at(self, delay: float, action: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.events, (self.now + delay, self.seq, action))

    def work(self, mean_ms: float) -> float:
        """Seconds of work with this mean, gamma-distributed (coefficient of variation 0.5)."""
        scale = mean_ms / 4000.0
        return self.rng.gammavariate(4.0, scale) if scale > 0 else 0.0  # a tiny mean: none

    def _count(self, delta: int) -> None:
        if self.measuring:
            self.in_system_area += self.in_system * (self.now - self.area_since)
        self.area_since = self.now
        self.in_system += delta

    # -- the interpreter (the GIL): the event loop keeps it while it has callbacks to run; a
    # thread (the writer, a model call) gets it when the loop runs dry, or after the switch
    # interval, when the loop must hand it over. Each piece of work also needs a host core.
    def interpret(self, replica: int, seconds: float, then: Callable[[], None], hi: bool) -> None:
        (self.interp_hi if hi else self.interp_lo)[replica].append((seconds, then, self.now))
        if not self.interp_busy[replica]:
            self._interp_next(replica)

    def _interp_next(self, replica: int) -> None:
        hi, lo = self.interp_hi[replica], self.interp_lo[replica]
        handover = hi and (not lo or self.now - hi[0][2] >= SWITCH_MS / 1000)
        queue = hi if handover else lo or hi
        if not queue:
            self.interp_busy[replica] = False
            return
        self.interp_busy[replica] = True
        seconds, then, _ = queue.popleft()
        if self.measuring:
            self.cpu += seconds

        def finished(core: int | None) -> None:
            if core is not None and self.host is not None:
                self.host.release(core)
            then()
            self._interp_next(replica)

        if self.host is None:
            self.at(seconds, lambda: finished(None))
        else:
            host = self.host
            host.acquire(lambda core: self.at(seconds / host.speed[core], lambda: finished(core)))

    def on_pg(self, seconds: float, then: Callable[[], None]) -> None:
        if self.measuring:
            self.cpu += seconds
        if self.pg is None:
            self.at(seconds, then)
            return
        pg = self.pg

        def finished(core: int) -> None:
            pg.release(core)
            then()

        pg.acquire(lambda core: self.at(seconds / pg.speed[core], lambda: finished(core)))

    # -- clients
    def request(self, replica: int) -> None:
        """Half the request's work before the model call (parse, authenticate, validate),
        half after (rules, the change for the writer, the response)."""
        arrived = self.now
        self._count(+1)
        lane = self.rng.randrange(self.s.lanes)
        self.interpret(
            replica,
            self.work(self.c.request_ms / 2),
            lambda: self._model(replica, arrived, lane),
            hi=False,
        )

    def _model(self, replica: int, arrived: float, lane: int) -> None:
        """Calls that arrive while one is in flight go out together when it returns
        (src/warden/models/batching.py); a lone call goes at once."""
        self.model_waiting[replica].append((arrived, lane))
        if not self.model_busy[replica]:
            self._model_call(replica)

    def _model_call(self, replica: int) -> None:
        waiting = self.model_waiting[replica]
        if not waiting:
            self.model_busy[replica] = False
            return
        self.model_busy[replica] = True
        batch, self.model_waiting[replica] = waiting[:MAX_MODEL_BATCH], waiting[MAX_MODEL_BATCH:]

        def returned() -> None:
            for arrived, lane in batch:
                self.interpret(
                    replica,
                    self.work(self.c.request_ms / 2),
                    lambda a=arrived, k=lane: self.enqueue((replica, k), a),  # type: ignore[misc]
                    hi=False,
                )
            self._model_call(replica)

        self.interpret(replica, self.work(self.c.model_call_ms), returned, hi=True)

    def answered(self, replica: int, arrived: float) -> None:
        self._count(-1)
        self.done += 1
        if self.done == self.warmup:
            self.measuring, self.measure_from, self.area_since = True, self.now, self.now
            self.wait_since = self.now
        elif self.measuring:
            self.latencies.append(self.now - arrived)
        self.at(self.work(self.c.client_ms), lambda: self.request(replica))

    # -- the writer
    def enqueue(self, key: tuple[int, int], arrived: float) -> None:
        writer = self.writers.setdefault(key, _Writer(idle_since=self.now))
        writer.queue.append(arrived)
        if writer.state == "idle":
            if self.measuring:
                self.writer_idle += self.now - max(writer.idle_since, self.measure_from)
            writer.state = "gather"
            if writer.previous > 1:
                writer.seen = len(writer.queue)
                self._linger_later(key)
            else:
                self._prepare(key)

    def _linger(self, key: tuple[int, int]) -> None:
        writer = self.writers[key]
        if len(writer.queue) > writer.seen and len(writer.queue) < self.s.max_batch:
            writer.seen = len(writer.queue)
            self._linger_later(key)
        else:
            self._prepare(key)

    def _linger_later(self, key: tuple[int, int]) -> None:
        """`queue.get(timeout=linger)`: the writer looks again after the linger — or, when a
        change arrives meanwhile, as soon as it has the interpreter back."""
        self.at(
            LINGER_MS / 1000,
            lambda: self.interpret(key[0], 1e-5, lambda: self._linger(key), hi=True),
        )

    def _prepare(self, key: tuple[int, int]) -> None:
        writer = self.writers[key]
        writer.state = "busy"
        batch, writer.queue = writer.queue[: self.s.max_batch], writer.queue[self.s.max_batch :]
        writer.previous = len(batch)
        c = self.c
        prepare = self.work(c.writer_commit_ms / 2 + c.writer_decision_ms * len(batch))
        self.interpret(key[0], prepare, lambda: self._send(key, batch), hi=True)

    def _send(self, key: tuple[int, int], batch: list[float]) -> None:
        c = self.c
        outside = (c.pg_cpu_ms - c.hold_decision_ms) * len(batch)
        net = self.work(c.net_ms) / 2
        self.on_pg(self.work(outside), lambda: self.at(net, lambda: self._lock(key, batch)))

    def _lock(self, key: tuple[int, int], batch: list[float]) -> None:
        lane = key[1]
        if self.lock_held[lane]:
            if not self.lock_queue[lane]:
                self._waiting(+1)
            self.lock_queue[lane].append(lambda: self._hold(key, batch))
        else:
            self._hold(key, batch)

    def _waiting(self, delta: int) -> None:
        if self.lanes_waiting and self.measuring:
            self.lock_wait_time += self.now - self.wait_since
        self.wait_since = self.now
        self.lanes_waiting += delta

    def _hold(self, key: tuple[int, int], batch: list[float]) -> None:
        lane = key[1]
        self.lock_held[lane] = True
        since = self.now
        c = self.c
        append = self.work(c.hold_fixed_ms) + self.work(c.hold_decision_ms * len(batch))
        self.on_pg(append, lambda: self._flush(lambda: self._release(key, batch, since)))

    def _flush(self, then: Callable[[], None]) -> None:
        self.flush_waiting.append(then)
        if not self.flushing:
            self._start_flush()

    def _start_flush(self) -> None:
        if not self.flush_waiting:
            self.flushing = False
            return
        self.flushing = True
        group, self.flush_waiting = self.flush_waiting, []

        def synced() -> None:
            for then in group:
                then()
            self._start_flush()

        self.at(self.c.sync_ms / 1000, synced)

    def _release(self, key: tuple[int, int], batch: list[float], since: float) -> None:
        lane = key[1]
        if self.measuring:
            self.lock_busy_time += self.now - since
            self.holds.append(self.now - since)
            self.batches.append(len(batch))
        if self.lock_queue[lane]:
            grant = self.lock_queue[lane].popleft()
            if not self.lock_queue[lane]:
                self._waiting(-1)
            grant()
        else:
            self.lock_held[lane] = False
        c = self.c
        back = self.work(c.net_ms) / 2
        answer = self.work(c.writer_commit_ms / 2)
        self.at(
            back, lambda: self.interpret(key[0], answer, lambda: self._answer(key, batch), True)
        )

    def _answer(self, key: tuple[int, int], batch: list[float]) -> None:
        for arrived in batch:
            self.answered(key[0], arrived)
        writer = self.writers[key]
        if writer.queue:
            writer.state = "gather"
            writer.seen = len(writer.queue)
            if writer.previous > 1:
                self._linger_later(key)
            else:
                self._prepare(key)
        else:
            writer.state, writer.idle_since = "idle", self.now

    def run(self) -> Result:
        s = self.s
        for replica in range(s.replicas):
            for _ in range(s.clients_per_replica):
                self.at(self.work(self.c.client_ms), lambda r=replica: self.request(r))  # type: ignore[misc]
        target = self.warmup + s.decisions
        while self.events and self.done < target:
            when, _, action = heapq.heappop(self.events)
            self.now = when
            action()
        self._count(0)
        if self.lanes_waiting:
            self._waiting(0)
        elapsed = max(self.now - self.measure_from, 1e-9)
        latencies = sorted(self.latencies)
        n = max(len(latencies), 1)

        def pct(q: float) -> float:
            return 1000 * latencies[min(n - 1, int(q * n))] if latencies else 0.0

        commits = len(self.batches)
        return Result(
            throughput=len(latencies) / elapsed,
            p50_ms=pct(0.50),
            p99_ms=pct(0.99),
            mean_ms=1000 * sum(latencies) / n,
            in_flight=self.in_system_area / elapsed,
            per_commit=sum(self.batches) / max(commits, 1),
            lock_busy=self.lock_busy_time / (elapsed * s.lanes),
            lock_wait=self.lock_wait_time / elapsed,
            commits=commits,
            mean_hold_ms=1000 * sum(self.holds) / commits if commits else 0.0,
            writer_idle_ms=1000 * self.writer_idle / commits if commits else 0.0,
            cpu_ms=1000 * self.cpu / max(len(latencies), 1),
        )


def simulate(scenario: Scenario, costs: Costs) -> Result:
    """Run one scenario to `scenario.decisions` answered decisions (after a warm-up)."""
    return _Sim(scenario, costs).run()


def ceilings(
    costs: Costs, replicas: int, lanes: int, pg_cores: float, batch: float
) -> dict[str, float]:
    """The ceiling of each resource in decisions/s at a given batch (docs/scaling.md)."""
    b = max(batch, 1.0)
    hold = costs.hold_fixed_ms + costs.hold_decision_ms * b + costs.sync_ms
    interpreter = costs.cpu_ms(b) - costs.pg_cpu_ms
    return {
        "interpreters": replicas * 1000 / interpreter,
        "head locks": lanes * b * 1000 / hold,
        "postgres cpu": pg_cores * 1000 / costs.pg_cpu_ms,
    }


def calibrate(costs: Costs, rps: float, clients: int, cores: float, decisions: int) -> float:
    """The share of the host's cores the measured runs had, fitted so that one process serves
    `rps` (bisection: fewer cores, fewer decisions per second). On a shared machine the other
    work's share is what the load average says only roughly."""
    low, high = 0.05, cores
    for _ in range(12):
        middle = (low + high) / 2
        r = simulate(Scenario(1, 1, clients, middle, None, decisions=decisions), costs)
        if r.throughput > rps:
            high = middle
        else:
            low = middle
    return (low + high) / 2


def _measured(path: Path | None) -> dict[str, dict[str, float | str]]:
    if path is None or not path.exists():
        return {}
    return dict(json.loads(path.read_text()).get("measured", {}))


def _load(row: dict[str, float | str]) -> str:
    return str(row.get("load", "")).split(" / ")[-1].split(" ")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--costs", type=Path, default=HERE / "out" / "scaling_costs.json")
    parser.add_argument("--pg-cores", type=float, default=16.0)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients per replica")
    parser.add_argument("--concurrency", type=int, default=32, help="of the measured runs")
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument(
        "--host-cores", type=float, help="cores the measured runs had (default: the machine's)"
    )
    parser.add_argument(
        "--hold-ms", type=float, help="what if: the fixed lock hold per commit (flush excluded)"
    )
    args = parser.parse_args()
    costs = Costs.load(args.costs)
    cores = args.host_cores or costs.cores
    measured = _measured(args.costs)
    one = measured.get("1")
    if one is not None and args.host_cores is None:
        cores = calibrate(costs, float(one["rps"]), args.concurrency, cores, args.decisions // 8)
    print(
        f"costs: request {costs.request_ms:.3f} ms + writer {costs.writer_decision_ms:.3f} ms "
        f"per decision + writer {costs.writer_commit_ms:.2f} ms per commit on the interpreter; "
        f"PostgreSQL {costs.pg_cpu_ms:.3f} ms/decision; lock hold {costs.hold_fixed_ms:.2f} ms "
        f"+ {costs.hold_decision_ms:.3f} ms/decision + flush {costs.sync_ms:.2f} ms; round trip "
        f"{costs.net_ms:.2f} ms; client think time {costs.client_ms:.2f} ms"
    )
    if measured:
        print(f"\nthis machine, one lane, {cores:.2f} cores for servers and PostgreSQL (fitted to "
              "the 1-process throughput), predicted vs measured:")  # fmt: skip
        print(f"{'procs':>5} {'dec/s pred':>10} {'meas':>6} {'dec/commit pred':>15} {'meas':>6} "
              f"{'lock wait pred':>14} {'meas':>6} {'CPU ms/dec pred':>15} {'meas':>5} "
              f"{'load':>5}")  # fmt: skip
        for n, row in measured.items():
            if not n.isdigit():  # a variant (another linger): not what the costs describe
                continue
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
                f"{n:>5} {r.throughput:>10.0f} {float(row['rps']):>6.0f} {r.per_commit:>15.1f} "
                f"{float(row['per_commit']):>6.1f} {r.lock_wait:>14.1%} "
                f"{float(row['lock_wait_share']):>6.1%} {r.cpu_ms:>15.2f} "
                f"{float(row['cpu_ms']):>5.2f} {_load(row):>5}"
            )
    if args.hold_ms is not None:
        costs = replace(
            costs,
            hold_ms=args.hold_ms
            + costs.sync_ms
            + costs.hold_decision_ms * costs.decisions_per_commit,
        )
    print(
        f"\npredictions: a core per replica, {args.clients} clients per replica, PostgreSQL on "
        f"{args.pg_cores:g} cores, lock hold {costs.hold_fixed_ms:.2f} ms fixed + flush"
    )
    print(f"{'replicas':>8} {'lanes':>5} {'dec/s':>9} {'p99 ms':>8} {'dec/commit':>10} "
          f"{'lock busy':>9} {'lock wait':>9}  bound by")  # fmt: skip
    for replicas in (8, 64, 1000):
        for lanes in (1, 16, 256):
            scenario = Scenario(replicas, lanes, args.clients, None, args.pg_cores)
            r = simulate(replace(scenario, decisions=args.decisions), costs)
            limits = ceilings(costs, replicas, lanes, args.pg_cores, r.per_commit)
            bound = min(limits, key=lambda k: limits[k])
            print(
                f"{replicas:>8} {lanes:>5} {r.throughput:>9.0f} {r.p99_ms:>8.1f} "
                f"{r.per_commit:>10.1f} {r.lock_busy:>9.0%} {r.lock_wait:>9.0%}  {bound}"
            )


if __name__ == "__main__":
    main()
