"""Overload: offered load at twice the server's capacity, open loop, for 30 s.

Run: .venv/bin/python benchmarks/bench_overload.py [--seconds 30] [--factor 2] [--rate R]

First the capacity of one `warden serve` process is measured (closed loop, 32 connections).
Then requests are offered at `factor` times that rate on a fixed schedule, whatever the answers —
an open loop, as real clients behave — and latency is measured from each request's scheduled
time, so waiting for a free connection counts too. Printed: p50/p99 of accepted requests
(200/202), the share answered 503 (`Retry-After`), other errors, and the server's resident
memory at start and end; the load average beside them, since this machine may be shared.
The server runs with WARDEN_MAX_IN_FLIGHT=64 unless the environment sets it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import httpx
from _setup import applications, write_point
from bench_http import _free_port


def _wait(url: str, seconds: float = 300) -> None:
    """Until the server answers (a loaded machine can take minutes to import and start)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"server at {url} did not start")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of the server process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    """Resident memory of the server process and its children, in MB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost little CPU."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = (
            "POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        length = 0
        close = False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return int(status_line.split()[1])


async def closed_loop(port: int, token: str, bodies: list[bytes], seconds: float) -> float:
    """Requests per second with 32 connections each sending as soon as answered."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        connection = Connection(port, token)
        i = offset
        while time.monotonic() < stop:
            await connection.post(bodies[i % len(bodies)])
            done += 1
            i += 32

    began = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(32)))
    return done / (time.monotonic() - began)


async def open_loop(
    port: int, token: str, bodies: list[bytes], rate: float, seconds: float
) -> dict[str, object]:
    """Offer `rate` requests/s on a fixed schedule, over a pool of 256 connections."""
    schedule: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    accepted: list[float] = []
    statuses: dict[int | str, int] = {}

    async def worker() -> None:
        connection = Connection(port, token)
        while (item := await schedule.get()) is not None:
            due, body = item
            try:
                status: int | str = await connection.post(body)
            except (OSError, asyncio.IncompleteReadError):
                status = "dropped"
                connection = Connection(port, token)
            statuses[status] = statuses.get(status, 0) + 1
            if status in (200, 202):
                accepted.append(time.monotonic() - due)

    workers = [asyncio.create_task(worker()) for _ in range(256)]
    began = time.monotonic()
    total = int(rate * seconds)
    for n in range(total):
        due = began + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        schedule.put_nowait((due, bodies[n % len(bodies)]))
    for _ in workers:
        schedule.put_nowait(None)
    await asyncio.gather(*workers)
    accepted.sort()
    answered = sum(statuses.values())

    def pct(q: float) -> float:
        return accepted[min(len(accepted) - 1, int(q * len(accepted)))] * 1000 if accepted else 0

    return {
        "offered": total,
        "elapsed": time.monotonic() - began,
        "accepted": len(accepted),
        "p50": pct(0.50),
        "p99": pct(0.99),
        "share_503": statuses.get(503, 0) / answered if answered else 0.0,
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument(
        "--rate",
        type=float,
        help="offer this many requests/s instead of factor x the measured capacity (to offer "
        "two builds the same load)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        points = write_point(folder / "points", "sklearn")
        env = {
            **os.environ,
            "WARDEN_HOME": str(folder / "home"),
            "WARDEN_CONFIG": str(points),
            "WARDEN_DB_URL": os.environ.get("WARDEN_DB_URL", f"sqlite:///{folder / 'warden.db'}"),
            "WARDEN_MAX_IN_FLIGHT": os.environ.get("WARDEN_MAX_IN_FLIGHT", "64"),
        }
        token = subprocess.run(
            [
                *(sys.executable, "-m", "warden", "token", "create", "--name", "bench"),
                *("--role", "caller", "--point", "loan_approval"),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "warden", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        bodies = [
            json.dumps({"point": "loan_approval", "input": a}).encode() for a in applications(2000)
        ]
        try:
            _wait(f"http://127.0.0.1:{port}/readyz")
            asyncio.run(closed_loop(port, token, bodies, 3))  # warm up
            capacity = asyncio.run(closed_loop(port, token, bodies, 10))
            rate = args.rate or capacity * args.factor
            rss_start = _rss_mb(server.pid)
            load_start = os.getloadavg()
            cpu_start = _cpu_seconds(server.pid)
            result = asyncio.run(open_loop(port, token, bodies, rate, args.seconds))
            cpu = _cpu_seconds(server.pid) - cpu_start
            rss_end = _rss_mb(server.pid)
            load_end = os.getloadavg()
        finally:
            server.terminate()
            server.wait(timeout=30)
    db = env["WARDEN_DB_URL"].split(":")[0]
    print(f"db {db}, WARDEN_MAX_IN_FLIGHT={env['WARDEN_MAX_IN_FLIGHT']}")
    print(f"capacity (closed loop, 32 connections): {capacity:.0f} req/s")
    elapsed = float(result["elapsed"])  # type: ignore[arg-type]
    accepted = int(result["accepted"])  # type: ignore[call-overload]
    answered = sum(result["statuses"].values())  # type: ignore[attr-defined]
    print(
        f"offered {rate / capacity:.2g}x = {rate:.0f} req/s for {args.seconds:g}s: "
        f"{result['offered']} requests in {elapsed:.1f}s"
    )
    print(
        f"accepted rate {accepted / elapsed:.0f} decisions/s = {accepted / elapsed / capacity:.0%} "
        f"of capacity; server CPU {cpu / max(1, answered) * 1e6:.0f} µs per answer "
        f"({cpu / elapsed:.2f} cores)"
    )
    print(
        f"accepted {result['accepted']}: p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms "
        "(from the scheduled send time)"
    )
    print(f"503 share {result['share_503']:.1%}; all answers {result['statuses']}")
    print(f"server RSS {rss_start:.0f} MB at start, {rss_end:.0f} MB at end")
    print(
        "load average (1/5/15 min) "
        f"start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
        f"end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
