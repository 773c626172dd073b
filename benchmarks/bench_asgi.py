"""The application's CPU per governed decision without an HTTP server: the ASGI app that
`warden serve` runs, called directly by 32 concurrent callers, CPU of each thread counted.

Run: .venv/bin/python benchmarks/bench_asgi.py [--decisions 3200] [--profile] [--refused]
It imports `warden` from PYTHONPATH, so `PYTHONPATH=other/src` measures another build; run
builds in alternating rounds. `--profile` adds the Python calls per decision on the event loop
(cProfile), a count that does not move with the machine's load; with BENCH_ASGI_PSTATS=FILE
the profile is also written to FILE for pstats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _setup import applications, write_point

TICKS = os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[str, float]:
    """CPU seconds by thread name (digits dropped, so a pool's threads add up)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    found: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        name = "".join(c for c in names.get(int(tid), "other") if not c.isdigit())
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return found


async def _run(app: Any, token: str, total: int, profile: bool) -> None:
    bodies = [
        json.dumps({"point": "loan_approval", "input": a}).encode() for a in applications(500)
    ]
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {token}".encode()),
    ]

    async def one(i: int) -> int:
        body = bodies[i % len(bodies)]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/decisions",
            "raw_path": b"/v1/decisions",
            "root_path": "",
            "query_string": b"",
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent = False
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        return statuses[0]

    async def caller(k: int, count: int, out: list[int]) -> None:
        for j in range(count):
            out.append(await one(k * 1_000_000 + j))

    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        started.set()

    lifespan = asyncio.create_task(
        app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            startup.get,
            lifespan_send,
        )
    )
    await started.wait()
    await asyncio.gather(*(caller(k, 50, []) for k in range(32)))  # warm up
    import cProfile

    profiler = cProfile.Profile() if profile else None
    out: list[int] = []
    before, cpu0, wall0 = _thread_cpu(), time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    await asyncio.gather(*(caller(k, total // 32, out) for k in range(32)))
    if profiler:
        profiler.disable()
    cpu, wall, after = time.process_time() - cpu0, time.perf_counter() - wall0, _thread_cpu()
    n = len(out)
    load = os.getloadavg()
    print(f"{n} decisions {dict(Counter(out))}, load average {load[0]:.2f} {load[1]:.2f}")
    print(f"whole process    {cpu / n * 1e6:6.0f} µs CPU per decision ({n / wall:.0f}/s)")
    for name in sorted(after, key=lambda k: before.get(k, 0.0) - after[k]):
        used = (after[name] - before.get(name, 0.0)) / n * 1e6
        if used >= 1:
            print(f"  {name:18s} {used:6.0f} µs")
    if profiler:
        import pstats

        stats = pstats.Stats(profiler)
        print(f"Python calls per decision on the event loop: {stats.total_calls / n:.0f}")  # type: ignore[attr-defined]
        if os.environ.get("BENCH_ASGI_PSTATS"):
            stats.dump_stats(os.environ["BENCH_ASGI_PSTATS"])
    await startup.put({"type": "lifespan.shutdown"})
    await lifespan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=3200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--refused",
        action="store_true",
        help="no place in flight (max_in_flight 0): the CPU of turning a decision away with 503",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["WARDEN_CONFIG"] = str(write_point(folder / "points", "sklearn"))
        os.environ["WARDEN_HOME"] = str(folder / "home")
        os.environ["WARDEN_DB_URL"] = f"sqlite:///{folder / 'warden.db'}"
        token = subprocess.run(
            [
                *(sys.executable, "-m", "warden", "token", "create", "--name", "bench"),
                *("--role", "caller", "--point", "loan_approval"),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        from warden.api.app import create_app_from_env

        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        app = create_app_from_env()
        if args.refused:
            app.state.engine.max_in_flight = 0
        asyncio.run(_run(app, token, args.decisions, args.profile))


if __name__ == "__main__":
    main()
