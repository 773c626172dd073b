"""Scaling out: 1, 2 and 4 `warden serve` processes against one PostgreSQL database.

Run: .venv/bin/python benchmarks/bench_scaling.py [--processes 1,2,4] [--rounds 3] [--seconds 10]
     [--concurrency 32] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Each round starts every configuration afresh, in turn (1, 2, 4, then again), so a machine
that gets busier or quieter during the run shifts all of them alike; the figures printed are
the medians over rounds. One wrk process spreads its connections over the servers' ports (one
wrk thread per server, each thread pinned to its server's address).

Per configuration it reports: decisions/s and p99; decisions per commit (the events of the
run against the distinct transactions that wrote them, PostgreSQL's `xmin`); the lock wait
share and the "idle in transaction" share (`pg_stat_activity` sampled at ~50 Hz: the share of
samples in which any Warden backend waits on a lock, or sits idle inside a transaction); the
head lock's busy share (samples in which a backend holds a transaction id and is not waiting
on a lock, i.e. holds the ledger head row) and from it the lock hold per commit; CPU per
decision of the server processes and of their PostgreSQL backends (/proc/<pid>/stat); WAL bytes
per decision (`pg_current_wal_lsn()` before and after, attributed to this database with
pg_waldump when it can read the WAL, else less the cluster's idle rate). It also times the
disk's fdatasync rate beside the data directory. The costs go to a JSON file that
`simulate_capacity.py` reads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).parent))

from _setup import write_point
from bench_http import _bodies, _free_port, _ms

HERE = Path(__file__).parent
TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 0.02  # seconds: ~50 Hz
TARGET_CPU_RATIO = 1.10  # CPU per decision with 2 processes within 10 % of 1 process
TARGET_LOCK_WAIT = 0.05  # lock wait share at most 5 %


@dataclass
class Round:
    processes: int
    seconds: float
    decisions: int
    commits: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    samples: int
    lock_wait_share: float
    idle_in_tx_share: float
    head_busy_share: float
    server_cpu_s: float
    pg_cpu_s: float
    wal_bytes: float
    wal_method: str
    load: str
    writer: dict[str, float] = field(default_factory=dict)  # /metrics deltas, summed

    @property
    def writer_prepare_ms(self) -> float:
        return self.writer_ms("prepare", "cpu")

    @property
    def writer_other_ms(self) -> float:
        return sum(self.writer_ms(p, "cpu") for p in ("gather", "database", "answer"))

    @property
    def database_ms(self) -> float:
        return self.writer_ms("database", "wall")

    @property
    def writer_idle_ms(self) -> float:
        return self.writer_ms("idle", "wall")

    @property
    def db_hold_ms(self) -> float:
        """Lock hold per commit from the writers' own metric, on the database's clock."""
        count = self.writer.get("hold_count", 0.0)
        return 1000 * self.writer.get("hold_sum", 0.0) / count if count else 0.0

    def writer_ms(self, phase: str, clock: str) -> float:
        """A writer phase's time per commit, in ms (warden_writer_seconds_total)."""
        commits = self.writer.get("commits", 0.0)
        return 1000 * self.writer.get(f"{phase}/{clock}", 0.0) / commits if commits else 0.0

    @property
    def per_commit(self) -> float:
        return self.decisions / max(self.commits, 1)

    @property
    def cpu_ms(self) -> float:
        return 1000 * (self.server_cpu_s + self.pg_cpu_s) / max(self.decisions, 1)

    @property
    def server_cpu_ms(self) -> float:
        return 1000 * self.server_cpu_s / max(self.decisions, 1)

    @property
    def pg_cpu_ms(self) -> float:
        return 1000 * self.pg_cpu_s / max(self.decisions, 1)

    @property
    def hold_ms(self) -> float:
        """Lock hold per commit: the head lock's busy time over the commits made."""
        commits_per_s = self.commits / self.seconds
        return 1000 * self.head_busy_share / commits_per_s if commits_per_s else 0.0

    @property
    def wal_per_decision(self) -> float:
        return self.wal_bytes / max(self.decisions, 1)


@dataclass
class Sampler:
    """Samples the database's client backends at ~50 Hz on a thread of its own."""

    url: str
    database: str
    samples: int = 0
    lock_wait: int = 0
    idle_in_tx: int = 0
    head_busy: int = 0
    wait_events: dict[str, int] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    QUERY = (
        "SELECT pid, state, wait_event_type, wait_event, backend_xid IS NOT NULL "
        "FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend' "
        "AND pid <> pg_backend_pid()"
    )

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            next_at = time.monotonic()
            while not self._stop.is_set():
                rows = conn.execute(self.QUERY, (self.database,)).fetchall()
                self.samples += 1
                locked = [r for r in rows if r[2] == "Lock"]
                self.lock_wait += bool(locked)
                self.idle_in_tx += any(r[1] == "idle in transaction" for r in rows)
                self.head_busy += any(r[4] and r[2] != "Lock" for r in rows)
                for r in locked:
                    self.wait_events[r[3]] = self.wait_events.get(r[3], 0) + 1
                self.pids.update(r[0] for r in rows)
                next_at += SAMPLE_EVERY
                time.sleep(max(0.0, next_at - time.monotonic()))


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of stat(5)


def _descendants(roots: list[int]) -> list[int]:
    """The given processes and all their children (a server's workers and shadow child)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    found, todo = set(roots), list(roots)
    while todo:
        pid = todo.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def _cpu(pids: list[int]) -> dict[int, float]:
    return {pid: _cpu_seconds(pid) for pid in pids}


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[p] - before.get(p, 0.0) for p in after)


WRITER_LINE = re.compile(
    r'^warden_(?:writer_seconds_total\{clock="(\w+)",phase="(\w+)"\}|writer_(commits|changes)_total'
    r"|ledger_lock_hold_seconds_(sum|count)) (\S+)$",
    re.M,
)


def _writer_counters(ports: list[int]) -> dict[str, float]:
    """The writers' phase clocks and commit counts, summed over the servers' /metrics."""
    total: dict[str, float] = {}
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for clock, phase, kind, hold, value in WRITER_LINE.findall(text):
            key = kind or (f"hold_{hold}" if hold else f"{phase}/{clock}")
            total[key] = total.get(key, 0.0) + float(value)
    return total


def _wrk_script(folder: Path, ports: list[int], token: str) -> Path:
    """One wrk thread per server: each thread's connections go to its own server's port."""
    bodies = ",\n".join("[[" + b.decode() + "]]" for b in _bodies()[:500])
    script = folder / f"scaling_{len(ports)}.lua"
    script.write_text(
        f"local ports = {{{', '.join(map(str, ports))}}}\nlocal made = 0\n"
        "function setup(thread)\n  made = made + 1\n"
        '  thread.addr = wrk.lookup("127.0.0.1", tostring(ports[(made - 1) % #ports + 1]))[1]\n'
        "end\n"
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        f"local bodies = {{\n{bodies}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
    )
    return script


def _wrk(port: int, script: Path, threads: int, seconds: float, conns: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{conns}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/decisions",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": float(bad.group(1)) if bad else 0.0}


@contextlib.contextmanager
def _servers(n: int, env: dict[str, str], log: Path) -> Iterator[list[tuple[int, int]]]:
    """n `warden serve` processes, one worker each, each on its own port."""
    ports = [_free_port() for _ in range(n)]
    with log.open("ab") as sink:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "warden", "serve", "--port", str(p), "--workers", "1"],
                env=env,
                stdout=sink,
                stderr=sink,
            )
            for p in ports
        ]
        try:
            for proc, port in zip(procs, ports, strict=True):
                _wait_ready(proc, port, log)
            yield [(proc.pid, port) for proc, port in zip(procs, ports, strict=True)]
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """A busy machine may take a minute to start four servers at once."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"server on port {port} not ready after 300 s:\n{log.read_text()[-3000:]}")


def _lsn(conn: psycopg.Connection) -> str:
    return str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])  # type: ignore[index]


def _lsn_diff(conn: psycopg.Connection, a: str, b: str) -> float:
    row = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (b, a)).fetchone()
    return float(row[0])  # type: ignore[index]


def _waldump_bytes(wal_dir: Path, db_oid: int, start: str, end: str) -> float | None:
    """WAL bytes of this database's records (and of its transactions' commit records)."""
    waldump = _pg_binary("pg_waldump")
    if waldump is None or not os.access(wal_dir, os.R_OK):
        return None
    proc = subprocess.run(
        [waldump, "-p", str(wal_dir), "-s", start, "-e", end],
        capture_output=True,
        text=True,
    )
    if not proc.stdout:
        return None
    mine = re.compile(rf"rel \d+/{db_oid}/")
    total, txs = 0, set()
    for line in proc.stdout.splitlines():
        size = re.search(r"len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+)", line)
        if size is None:
            continue
        tx = int(size.group(2))
        if mine.search(line):
            if tx:
                txs.add(tx)
            total += int(size.group(1))
        elif tx and tx in txs:
            total += int(size.group(1))
    return float(total)


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _fsync_rate(folder: Path, seconds: float = 2.0) -> float | None:
    """fdatasync calls per second on an 8 kB overwrite, PostgreSQL's commit pattern."""
    path = folder / "warden_scaling_fsync.tmp"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        block, n = b"\0" * 8192, 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            n += 1
        return n / seconds
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _measure(
    n: int, env: dict[str, str], args: argparse.Namespace, folder: Path, token: str, ctx: dict
) -> Round:
    admin, db_url, database = ctx["admin"], ctx["db_psycopg"], ctx["database"]
    with _servers(n, env, folder / "servers.log") as servers:
        ports = [port for _, port in servers]
        script = _wrk_script(folder, ports, token)
        threads = max(2, n)
        conns = max(args.concurrency, threads)
        _wrk(ports[0], script, threads, 2, conns)  # warm up: pools, caches, JIT of nothing
        with psycopg.connect(db_url, autocommit=True) as conn:
            seq0 = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]  # type: ignore[index]
            idle0 = _lsn(admin)
            time.sleep(1.0)
            idle_rate = _lsn_diff(admin, idle0, _lsn(admin))  # the cluster's own WAL per second
            server_pids = _descendants([pid for pid, _ in servers])
            backends = [
                r[0]
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchall()
            ]
            cpu0 = _cpu(server_pids + backends)
            lsn0 = _lsn(admin)
            writer0 = _writer_counters(ports)
            started = time.monotonic()
            with Sampler(db_url, database) as sampler:
                result = _wrk(ports[0], script, threads, args.seconds, conns)
            elapsed = time.monotonic() - started
            writer1 = _writer_counters(ports)
            lsn1 = _lsn(admin)
            pg_pids = sorted(sampler.pids | set(backends))
            cpu1 = _cpu(_descendants([pid for pid, _ in servers]) + pg_pids)
            decisions, commits = conn.execute(
                "SELECT count(*), count(DISTINCT xmin::text) FROM events "
                "WHERE seq > %s AND type = 'decision.created'",
                (seq0,),
            ).fetchone()  # type: ignore[misc]
            if not decisions:
                decisions, commits = conn.execute(
                    "SELECT count(*), count(DISTINCT xmin::text) FROM events WHERE seq > %s",
                    (seq0,),
                ).fetchone()  # type: ignore[misc]
    server_set = set(server_pids) | set(cpu1) - set(pg_pids)
    server_cpu = sum(cpu1[p] - cpu0.get(p, 0.0) for p in cpu1 if p in server_set)
    pg_cpu = sum(cpu1[p] - cpu0.get(p, 0.0) for p in pg_pids)
    wal = _waldump_bytes(ctx["wal_dir"], ctx["db_oid"], lsn0, lsn1)
    method = "pg_waldump"
    if wal is None:
        wal = max(0.0, _lsn_diff(admin, lsn0, lsn1) - idle_rate * elapsed)
        method = "lsn-idle"
    samples = max(sampler.samples, 1)
    return Round(
        processes=n,
        seconds=elapsed,
        decisions=int(decisions),
        commits=int(commits),
        rps=result["rps"],
        p50_ms=result["p50"],
        p99_ms=result["p99"],
        errors=int(result["errors"]),
        samples=sampler.samples,
        lock_wait_share=sampler.lock_wait / samples,
        idle_in_tx_share=sampler.idle_in_tx / samples,
        head_busy_share=sampler.head_busy / samples,
        server_cpu_s=server_cpu,
        pg_cpu_s=pg_cpu,
        wal_bytes=wal,
        wal_method=method,
        load=_loadavg(),
        writer={k: v - writer0.get(k, 0.0) for k, v in writer1.items()},
    )


def _median(rounds: list[Round], attr: str) -> float:
    return float(statistics.median(getattr(r, attr) for r in rounds))


def _report(results: dict[str, list[Round]], fsync: float | None, out: Path) -> None:
    print(
        f"\n{'procs':>5} {'dec/s':>8} {'p99 ms':>8} {'dec/commit':>10} {'lock wait':>9} "
        f"{'idle in tx':>10} {'head busy':>9} {'hold ms':>8} {'CPU ms/dec':>10} "
        f"{'(server+pg)':>13} {'WAL B/dec':>9}  load"
    )
    summary: dict[str, dict[str, float | str]] = {}
    for n, rounds in results.items():
        row = {
            attr: _median(rounds, attr)
            for attr in (
                "rps",
                "p99_ms",
                "per_commit",
                "lock_wait_share",
                "idle_in_tx_share",
                "head_busy_share",
                "hold_ms",
                "cpu_ms",
                "server_cpu_ms",
                "pg_cpu_ms",
                "wal_per_decision",
                "writer_prepare_ms",
                "writer_other_ms",
                "database_ms",
                "writer_idle_ms",
                "db_hold_ms",
            )
        }
        summary[n] = {**row, "load": " / ".join(r.load for r in rounds)}
        print(
            f"{n:>9} {row['rps']:>8.0f} {row['p99_ms']:>8.1f} {row['per_commit']:>10.2f} "
            f"{row['lock_wait_share']:>9.1%} {row['idle_in_tx_share']:>10.1%} "
            f"{row['head_busy_share']:>9.1%} {row['hold_ms']:>8.2f} {row['cpu_ms']:>10.2f} "
            f"{row['server_cpu_ms']:>6.2f}+{row['pg_cpu_ms']:<6.2f} "
            f"{row['wal_per_decision']:>9.0f}  {rounds[-1].load}"
        )
    _report_writer(results)
    print()
    for one in [label for label in summary if label.split("@")[0] == "1"]:
        two = "2" + one[1:]
        if two in summary:
            ratio = float(summary[two]["cpu_ms"]) / float(summary[one]["cpu_ms"])
            verdict = "met" if ratio <= TARGET_CPU_RATIO else "NOT met"
            print(
                f"CPU per decision, {two} processes / {one}: {ratio:.2f} (target ≤ 1.10: {verdict})"
            )
    worst = max(float(s["lock_wait_share"]) for s in summary.values())
    verdict = "met" if worst <= TARGET_LOCK_WAIT else "NOT met"
    print(f"lock wait share, worst configuration: {worst:.1%} (target ≤ 5 %: {verdict})")
    if fsync:
        print(f"disk: {fsync:.0f} fdatasync/s beside the PostgreSQL data directory")
    costs = _costs(summary, fsync)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "costs": costs,
                "measured": summary,
                "rounds": {n: [asdict(r) for r in rs] for n, rs in results.items()},
            },
            indent=2,
        )
    )
    print(f"costs for simulate_capacity.py written to {out}")


PHASES = ("idle", "gather", "prepare", "database", "answer")


def _report_writer(results: dict[str, list[Round]]) -> None:
    """Where a writer's cycle goes, per commit (medians over rounds): wall and thread CPU."""
    print("\nwriter cycle per commit, ms wall (cpu): wall less cpu outside `database` is time "
          "the writer waited for the interpreter (GIL) or a core")  # fmt: skip
    print(
        f"{'procs':>9} "
        + " ".join(f"{p:>15}" for p in PHASES)
        + f" {'GIL/core wait':>13} {'lock hold (db clock)':>20}"
    )
    for n, rounds in results.items():
        if not any(r.writer.get("commits") for r in rounds):
            continue
        cells = []
        for phase in PHASES:
            wall = statistics.median(r.writer_ms(phase, "wall") for r in rounds)
            cpu = statistics.median(r.writer_ms(phase, "cpu") for r in rounds)
            cells.append(f"{wall:>7.2f} ({cpu:>5.2f})")
        wait = statistics.median(
            sum(r.writer_ms(p, "wall") - r.writer_ms(p, "cpu") for p in ("prepare", "answer"))
            for r in rounds
        )
        hold = statistics.median(r.db_hold_ms for r in rounds)
        print(f"{n:>9} " + " ".join(f"{c:>15}" for c in cells) + f" {wait:>13.2f} {hold:>20.2f}")


def _costs(summary: dict[str, dict[str, float | str]], fsync: float | None) -> dict[str, float]:
    """The per-decision and per-commit costs the capacity model takes, from the 1-process run
    (the least contended) where there is one."""
    ones = [label for label in summary if label.split("@")[0] == "1"]
    base = summary[ones[0]] if ones else next(iter(summary.values()))
    return {
        "server_cpu_ms": float(base["server_cpu_ms"]),
        "pg_cpu_ms": float(base["pg_cpu_ms"]),
        "hold_ms": float(base["db_hold_ms"] or base["hold_ms"]),
        "decisions_per_commit": float(base["per_commit"]),
        "wal_bytes_per_decision": float(base["wal_per_decision"]),
        "fsync_per_s": float(fsync or 0.0),
        "cores": float(os.cpu_count() or 1),
        "writer_prepare_ms": float(base["writer_prepare_ms"]),
        "writer_other_ms": float(base["writer_other_ms"]),
        "database_ms": float(base["database_ms"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model", choices=["sklearn", "callable"], default="sklearn")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "WARDEN_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--database", default="warden_scaling_bench")
    parser.add_argument(
        "--linger-ms",
        default="",
        help="writer gather gaps to compare, e.g. 0.5,2 (WARDEN_WRITER_LINGER_MS; each process "
        "count runs with each, alternating)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "out" / "scaling_costs.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_scaling needs wrk: apt-get install wrk (or brew install wrk)")
    counts = [int(x) for x in args.processes.split(",")]
    base = args.admin_url.rsplit("/", 1)[0]
    db_psycopg = f"{base}/{args.database}"
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{args.database}"')
        oid = admin.execute(
            "SELECT oid FROM pg_database WHERE datname = %s", (args.database,)
        ).fetchone()[0]  # type: ignore[index]
        data_dir = Path(str(admin.execute("SHOW data_directory").fetchone()[0]))  # type: ignore[index]
        fsync = _fsync_rate(data_dir.parent)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                points = write_point(folder / "points", args.model)
                env = {
                    **os.environ,
                    "WARDEN_HOME": str(folder / "home"),
                    "WARDEN_CONFIG": str(points),
                    "WARDEN_DB_URL": db_psycopg.replace("postgresql://", "postgresql+psycopg://"),
                }
                token = subprocess.run(
                    [sys.executable, "-m", "warden", "token", "create", "--name", "bench",
                     "--role", "caller", "--point", "loan_approval"],
                    env=env, check=True, capture_output=True, text=True,
                ).stdout.strip()  # fmt: skip
                ctx = {
                    "admin": admin,
                    "db_psycopg": db_psycopg,
                    "database": args.database,
                    "db_oid": int(oid),
                    "wal_dir": data_dir / "pg_wal",
                }
                lingers = [x for x in args.linger_ms.split(",") if x] or [""]
                configs = [(n, linger) for n in counts for linger in lingers]
                results: dict[str, list[Round]] = {}
                for round_no in range(args.rounds):
                    for n, linger in configs:
                        label = f"{n}@{linger}ms" if linger else str(n)
                        run_env = {**env, "WARDEN_WRITER_LINGER_MS": linger} if linger else env
                        r = _measure(n, run_env, args, folder, token, ctx)
                        results.setdefault(label, []).append(r)
                        print(
                            f"round {round_no + 1}, {label} process(es): {r.rps:.0f} dec/s, "
                            f"p99 {r.p99_ms:.1f} ms, {r.per_commit:.2f} dec/commit, "
                            f"lock wait {r.lock_wait_share:.1%}, CPU {r.cpu_ms:.2f} ms/dec, "
                            f"WAL {r.wal_per_decision:.0f} B/dec ({r.wal_method}), "
                            f"errors {r.errors}, load {r.load}",
                            flush=True,
                        )
                _report(results, fsync, args.out)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
