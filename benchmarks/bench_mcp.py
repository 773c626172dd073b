"""Added latency of the MCP gateway: an auto-routed tool call through `warden mcp serve` versus
the same call straight to the upstream server, p50 and p99, over stdio and Streamable HTTP.

Run: .venv/bin/python benchmarks/bench_mcp.py [--calls 300] [--db-url URL]
The upstream is tests/mcp_fixtures/bank_server.py; the call is `read_balance` (read-only, so
the policy routes it auto). Through the gateway each call is a decision, its ledger events
(decision, approved + executed, result) committed before the agent gets the answer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "mcp_fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int) -> None:
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


async def timed(target: Any, calls: int) -> list[float]:
    """Milliseconds per call, after a warm-up, one call at a time (an agent waits for each)."""
    async with Client(target, read_timeout_seconds=120) as client:
        for _ in range(20):
            await client.call_tool("read_balance", {"account": "warm"})
        samples = []
        for i in range(calls):
            started = time.perf_counter()
            result = await client.call_tool("read_balance", {"account": f"acc-{i}"})
            samples.append((time.perf_counter() - started) * 1000)
            assert not result.is_error, result
        return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, direct: list[float], gateway: list[float]) -> None:
    d50, d99 = statistics.median(direct), pct(direct, 0.99)
    g50, g99 = statistics.median(gateway), pct(gateway, 0.99)
    print(
        f"{name:6s} direct p50 {d50:6.2f} ms  p99 {d99:6.2f} ms | gateway p50 {g50:6.2f} ms  "
        f"p99 {g99:6.2f} ms | added p50 {g50 - d50:+6.2f} ms  p99 {g99 - d99:+6.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--db-url", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    shutil.copytree(FIXTURES / "points", work / "points")
    shutil.copy(FIXTURES / "bank_server.py", work / "bank_server.py")
    config = yaml.safe_load((FIXTURES / "gateway.yaml").read_text())
    config["upstreams"]["bank"]["command"] = sys.executable
    config["upstreams"]["bank"]["env"] = {"PYTHONPATH": str(ROOT / "src")}
    config["loop"] = None
    (work / "gateway.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "WARDEN_HOME": str(work / "home"),
        "WARDEN_DB_URL": args.db_url or f"sqlite:///{work / 'warden.db'}",
    }
    upstream = StdioServerParameters(
        command=sys.executable, args=[str(work / "bank_server.py")], env=env
    )
    gateway = StdioServerParameters(
        command=sys.executable,
        args=["-m", "warden", "mcp", "serve", str(work / "gateway.yaml")],
        env=env,
    )
    bare = StdioServerParameters(
        command=sys.executable,
        args=[str(Path(__file__).parent / "bare_mcp_proxy.py"), str(work / "bank_server.py")],
        env=env,
    )
    run: Callable[[Callable[[], Awaitable[list[float]]]], list[float]] = anyio.run
    print(
        f"{args.calls} sequential read_balance calls, auto route; database {env['WARDEN_DB_URL']}"
    )
    direct = run(lambda: timed(upstream, args.calls))
    report("stdio", direct, run(lambda: timed(gateway, args.calls)))
    report("bare", direct, run(lambda: timed(bare, args.calls)))  # one more hop, no governance
    if args.skip_http:
        return
    up_port, gw_port = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(work / "bank_server.py"), "http", str(up_port)], env=env
        )
    ]
    try:
        wait_listening(up_port)
        config["upstreams"] = {"bank": {"url": f"http://127.0.0.1:{up_port}/mcp"}}
        (work / "gateway_http.yaml").write_text(yaml.safe_dump(config))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "warden",
                    "mcp",
                    "serve",
                    str(work / "gateway_http.yaml"),
                    "--http",
                    f"127.0.0.1:{gw_port}",
                    "--agent",
                    "bench",
                ],
                env=env,
            )
        )
        wait_listening(gw_port)
        direct = run(lambda: timed(f"http://127.0.0.1:{up_port}/mcp", args.calls))
        through = run(lambda: timed(f"http://127.0.0.1:{gw_port}/mcp", args.calls))
        report("http", direct, through)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
