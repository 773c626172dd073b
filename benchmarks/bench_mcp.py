"""Added latency of the MCP gateway: an auto-routed tool call through `warden mcp serve` versus
the same call straight to the upstream server and through a bare MCP proxy (the SDK's own cost
of one more hop, no governance), p50 and p99, over stdio and Streamable HTTP.

Run: .venv/bin/python benchmarks/bench_mcp.py [--calls 300] [--rounds 5] [--db-url URL]

The upstream is tests/mcp_fixtures/bank_server.py; the call is `read_balance` (read-only, so
the policy routes it auto). Through the gateway each call is a decision whose ledger events
(decision, approved + executed) commit in one transaction before the tool runs; the result
event commits with the next batch. All paths stay connected for the whole run and are timed
in alternating rounds, so a shared machine's load falls on each alike; beside the latency,
the CPU time each hop's process spent per call (from /proc), which load does not stretch.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "mcp_fixtures"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int) -> None:
    for _ in range(3000):  # a loaded machine takes a while to import and migrate
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of one process so far (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def child_pid(marker: str) -> int | None:
    """The pid of this process's child whose command line contains `marker`."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if ppid == me and marker in cmdline:
            return int(entry.name)
    return None


@dataclass
class Path_:
    """One way to reach the tool, and what it measured."""

    name: str
    target: Any
    marker: str | None = None  # of the hop's process, for its CPU time
    pid: int | None = None
    client: Client | None = None
    samples: list[float] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # monotonic send, receive
    cpu: float = 0.0
    calls: int = 0

    async def open(self, stack: AsyncExitStack) -> None:
        self.client = await stack.enter_async_context(Client(self.target, read_timeout_seconds=120))
        if self.marker is not None and self.pid is None:
            self.pid = child_pid(self.marker)
        for _ in range(30):  # warm-up
            await self.client.call_tool("read_balance", {"account": "warm"})

    async def round(self, calls: int, offset: int) -> None:
        """Calls one at a time (an agent waits for each)."""
        assert self.client is not None
        before = cpu_seconds(self.pid)
        for i in range(calls):
            started = time.monotonic()
            result = await self.client.call_tool("read_balance", {"account": f"a{offset + i}"})
            ended = time.monotonic()
            self.samples.append((ended - started) * 1000)
            self.spans.append((started, ended))
            assert not result.is_error, result
        self.cpu += cpu_seconds(self.pid) - before
        self.calls += calls


# The hand-offs of one call, as `warden.mcp.trace` marks them in the gateway; the agent's own
# send and receive times come first and last.
STAGES = [
    ("agent -> gateway read", "send", "read"),  # HTTP: to the handler, SDK included
    ("SDK parse + dispatch", "read", "handler"),
    ("identify, limits, route", "handler", "submit"),
    ("writer queue + lock wait", "submit", "lock"),
    ("commit (write + sync)", "lock", "committed"),
    ("writer -> loop wake-up", "committed", "decided"),
    ("governor -> upstream send", "decided", "sent"),
    ("upstream round trip", "sent", "replied"),
    ("reply to agent (SDK)", "replied", "written"),
    ("gateway -> agent read", "written", "receive"),  # HTTP: from the handler, SDK included
]


def breakdown(path: Path_, trace_file: Path) -> None:
    """Median time between hand-offs of the calls `path` timed (not the warm-up)."""
    records = [json.loads(line) for line in trace_file.read_text().splitlines() if line]
    spans = sorted(path.spans)
    starts = [s for s, _ in spans]
    gaps: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    matched = 0
    for record in records:
        at = bisect.bisect_right(starts, record.get("read", 0.0)) - 1
        if at < 0 or not starts[at] <= record["read"] <= spans[at][1]:
            continue  # a warm-up call
        marks = {**record, "send": spans[at][0], "receive": spans[at][1]}
        if any(key not in marks for _, begin, end in STAGES for key in (begin, end)):
            continue  # a call that did not pass every hand-off
        matched += 1
        for name, begin, end in STAGES:
            gaps[name].append((marks[end] - marks[begin]) * 1000)
    print(f"  where the time of '{path.name}' goes ({matched} calls, median ms per hand-off;")
    print("  traced, it appends a line per call: compare builds without --breakdown):")
    for name, values in gaps.items():
        if values:
            print(f"    {name:28s} {statistics.median(values):6.2f}   p90 {pct(values, 0.9):6.2f}")
    print(f"  ({load()})")


def fsync_ms(folder: Path, count: int = 200) -> tuple[float, float]:
    """p50 and p99 of an 8 KiB write + fsync in `folder`: the floor of one durable commit."""
    samples = []
    fd = os.open(folder / "fsync.probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(count):
            started = time.perf_counter()
            os.pwrite(fd, os.urandom(8192), (i % 16) * 8192)
            os.fsync(fd)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
    return statistics.median(samples), pct(samples, 0.99)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


async def compare(
    paths: list[Path_], calls: int, rounds: int, trace_file: Path | None = None
) -> None:
    async with AsyncExitStack() as stack:
        for path in paths:
            await path.open(stack)
        per_round = max(1, calls // rounds)
        for r in range(rounds):
            order = paths if r % 2 == 0 else list(reversed(paths))
            for path in order:
                await path.round(per_round, r * per_round)
    base = statistics.median(paths[0].samples)
    for path in paths:
        p50 = statistics.median(path.samples)
        cpu = f"  hop CPU {path.cpu / path.calls * 1000:5.2f} ms/call" if path.pid else ""
        added = f"  added p50 {p50 - base:+6.2f} ms" if path is not paths[0] else ""
        print(
            f"  {path.name:24s} p50 {p50:6.2f} ms  p99 {pct(path.samples, 0.99):6.2f} ms"
            f"{added}{cpu}"
        )
    print(f"  ({load()})")
    if trace_file is not None and trace_file.exists():
        breakdown(next(p for p in paths if p.name == "warden mcp serve"), trace_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="per path, over all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--db-url", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument(
        "--windows",
        action="store_true",
        help="give the gateway a rate limit and a loop detector on the timed tool (2 s windows "
        "that never fill), so each call pays for counting its windows",
    )
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-stdio", action="store_true")
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="also time (stdio) a gateway run from this other source tree, e.g. another build",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="time each hand-off inside the gateway (WARDEN_MCP_TRACE) and print "
        "where an auto call's added time goes, with an fsync probe of the database's disk",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    shutil.copytree(FIXTURES / "points", work / "points")
    shutil.copy(FIXTURES / "bank_server.py", work / "bank_server.py")
    config = yaml.safe_load((FIXTURES / "gateway.yaml").read_text())
    config["upstreams"]["bank"]["command"] = sys.executable
    config["upstreams"]["bank"]["env"] = {"PYTHONPATH": str(ROOT / "src")}
    config["loop"] = None
    if args.windows:
        # Windows of 2 s hold about a hundred calls each at this pace (a row's cost grows with
        # the calls it keeps), and never fill to the limit.
        config["limits"] = [{"tool": "read_balance", "max": 100_000, "per": "2s"}]
        config["loop"] = {"repeats": 100_000, "within": "2s", "exceed": "refused"}
    (work / "gateway.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "WARDEN_HOME": str(work / "home"),
        "WARDEN_DB_URL": args.db_url or f"sqlite:///{work / 'warden.db'}",
    }
    bare_script = str(Path(__file__).parent / "bare_mcp_proxy.py")
    trace_file = work / "trace.jsonl" if args.breakdown else None
    traced = {**env, "WARDEN_MCP_TRACE": str(trace_file)} if trace_file else env
    print(
        f"{args.calls} sequential read_balance calls per path in {args.rounds} alternating "
        f"rounds, auto route; database {env['WARDEN_DB_URL']}; {load()}"
    )
    try:
        baseline = []
        if args.baseline_src:
            (work / "gateway_b.yaml").write_text(yaml.safe_dump(config))
            other = {
                **env,
                "PYTHONPATH": args.baseline_src,
                "WARDEN_HOME": str(work / "home_b"),
                # a database of its own: the two builds' migrations may differ
                "WARDEN_DB_URL": args.db_url or f"sqlite:///{work / 'warden_b.db'}",
            }
            serve = ["-m", "warden", "mcp", "serve", str(work / "gateway_b.yaml")]
            baseline.append(Path_("baseline build", _stdio(other, *serve), "gateway_b.yaml"))
        if not args.skip_stdio:
            print("stdio")
            anyio.run(
                compare,
                [
                    Path_("direct", _stdio(env, str(work / "bank_server.py"))),
                    Path_(
                        "bare proxy (SDK only)",
                        _stdio(env, bare_script, str(work / "bank_server.py")),
                        "bare_mcp_proxy.py /",
                    ),
                    Path_(
                        "bare proxy, loop stdio",
                        _stdio(env, bare_script, "--loop-stdio", str(work / "bank_server.py")),
                        "--loop-stdio",
                    ),
                    Path_(
                        "warden mcp serve",
                        _stdio(traced, "-m", "warden", "mcp", "serve", str(work / "gateway.yaml")),
                        "warden mcp serve",
                    ),
                    *baseline,
                ],
                args.calls,
                args.rounds,
                trace_file,
            )
            if args.breakdown:
                p50, p99 = fsync_ms(work)
                print(f"  fsync of 8 KiB in {work}: p50 {p50:.2f} ms  p99 {p99:.2f} ms ({load()})")
        if not args.skip_http:
            print("Streamable HTTP")
            http_trace = work / "trace_http.jsonl" if args.breakdown else None
            http(work, config, env, args.calls, args.rounds, bare_script, http_trace)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stdio(env: dict[str, str], *args: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=list(args), env=env)


def http(
    work: Path,
    config: dict[str, Any],
    env: dict[str, str],
    calls: int,
    rounds: int,
    bare: str,
    trace_file: Path | None = None,
) -> None:
    up, bare_port, gw = free_port(), free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{up}/mcp"
    config = {**config, "upstreams": {"bank": {"url": upstream_url}}}
    (work / "gateway_http.yaml").write_text(yaml.safe_dump(config))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    commands = [
        [sys.executable, str(work / "bank_server.py"), "http", str(up)],
        [sys.executable, bare, "--http", str(bare_port), upstream_url],
        [
            sys.executable, "-m", "warden", "mcp", "serve", str(work / "gateway_http.yaml"),
            "--http", f"127.0.0.1:{gw}", "--agent", "bench",
        ],
    ]  # fmt: skip
    procs = [subprocess.Popen(commands[0], env=env, **quiet)]  # type: ignore[call-overload]
    try:
        wait_listening(up)
        traced = {**env, "WARDEN_MCP_TRACE": str(trace_file)} if trace_file else env
        procs.append(subprocess.Popen(commands[1], env=env, **quiet))  # type: ignore[call-overload]
        procs.append(subprocess.Popen(commands[2], env=traced, **quiet))  # type: ignore[call-overload]
        wait_listening(bare_port)
        wait_listening(gw)
        anyio.run(
            compare,
            [
                Path_("direct", upstream_url),
                Path_(
                    "bare proxy (SDK only)", f"http://127.0.0.1:{bare_port}/mcp", pid=procs[1].pid
                ),
                Path_("warden mcp serve", f"http://127.0.0.1:{gw}/mcp", pid=procs[2].pid),
            ],
            calls,
            rounds,
            trace_file,
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # an HTTP server waiting on an open stream
                proc.kill()
                proc.wait(10)


if __name__ == "__main__":
    main()
