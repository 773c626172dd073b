"""HTTP: requests/s, latency and server CPU per request of POST /v1/decisions beside a bare
endpoint with the same model.

Run: .venv/bin/python benchmarks/bench_http.py [--seconds 10] [--concurrency 32] [--rounds 1]
                                               [--server uvicorn|granian]

Both servers run as single processes on 127.0.0.1 in the same run, measured in alternating
rounds; the load generator is wrk (Debian package `wrk`), which costs little CPU of its own.
CPU per request is the server process's user + system time (all its threads and any child
processes, from /proc/<pid>/stat) over the requests wrk completed: on a busy machine it is
steadier than requests/s. The server imports `warden` from PYTHONPATH when it is set, so
`PYTHONPATH=other/src python benchmarks/bench_http.py` measures another build with this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from _setup import applications, write_point

HERE = Path(__file__).parent
TICKS = os.sysconf("SC_CLK_TCK")
GOVERNED = "governed POST /v1/decisions"
BARE = "bare FastAPI + model"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str) -> None:
    deadline = time.monotonic() + 240  # a busy machine starts a server slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not start")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and every process below it (granian runs its workers as
    children), all threads included."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


def _lua_script(folder: Path, headers: dict[str, str]) -> Path:
    """A wrk script that cycles through generated applications."""
    bodies = ",\n".join("[[" + b.decode() + "]]" for b in _bodies()[:500])
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = folder / f"load_{len(headers)}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"{header_lines}\nlocal bodies = {{\n{bodies}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
    )
    return script


def _ms(text: str) -> float:
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    return float(match.group(1)) * units[match.group(2)]


def _wrk(url: str, script: Path, seconds: float, concurrency: int, pid: int) -> dict[str, float]:
    before = _cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cpu = _cpu_seconds(pid) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "errors": float(bad.group(1)) if bad else 0.0,
        "cpu_us": cpu / max(done, 1) * 1e6,
    }


def _bodies() -> list[bytes]:
    return [json.dumps({"point": "loan_approval", "input": a}).encode() for a in applications(2000)]


def _bare_command(server: str, port: int) -> list[str]:
    target = "bare_app:app"
    if server == "granian":
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            target,
        ]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of each")
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_http needs wrk: apt-get install wrk (or brew install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        points = write_point(folder / "points", "sklearn")
        inherited = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "WARDEN_CONFIG": str(points),
            "WARDEN_HOME": str(folder / "home"),  # signing key and checkpoint state of this run
            "WARDEN_DB_URL": os.environ.get("WARDEN_DB_URL", f"sqlite:///{folder / 'warden.db'}"),
            "BARE_MODEL_PATH": str(points / "credit.joblib"),
            # the build under test first (PYTHONPATH=other/src measures another build)
            "PYTHONPATH": os.pathsep.join(p for p in (inherited, str(HERE)) if p),
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
        governed_port, bare_port = _free_port(), _free_port()
        governed = [
            sys.executable,
            "-m",
            "warden",
            "serve",
            "--port",
            str(governed_port),
            "--workers",
            "1",
        ]
        if args.server != "uvicorn":
            governed += ["--server", args.server]
        bare = _bare_command(args.server, bare_port)
        servers = {
            GOVERNED: subprocess.Popen(
                governed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ),
            BARE: subprocess.Popen(
                bare, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ),
        }
        results: dict[str, list[dict[str, float]]] = {BARE: [], GOVERNED: []}
        try:
            _wait(f"http://127.0.0.1:{governed_port}/readyz")
            _wait(f"http://127.0.0.1:{bare_port}/docs")
            auth = {"Authorization": f"Bearer {token}"}
            runs = {
                BARE: (f"http://127.0.0.1:{bare_port}/predict", {}),
                GOVERNED: (f"http://127.0.0.1:{governed_port}/v1/decisions", auth),
            }
            scripts = {name: _lua_script(folder, headers) for name, (_, headers) in runs.items()}
            for name, (url, _) in runs.items():
                _wrk(url, scripts[name], 2, args.concurrency, servers[name].pid)  # warm up
            for _ in range(args.rounds):
                for name, (url, _) in runs.items():
                    pid = servers[name].pid
                    results[name].append(
                        _wrk(url, scripts[name], args.seconds, args.concurrency, pid)
                    )
        finally:
            for server in servers.values():
                server.terminate()
                server.wait(timeout=30)
        load = os.getloadavg()
        print(
            f"{args.server}, {args.concurrency} concurrent connections, {args.seconds:g}s each, "
            f"{args.rounds} round(s), db {env['WARDEN_DB_URL'].split(':')[0]}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        )
        for i in range(args.rounds):
            for name in runs:
                r = results[name][i]
                print(
                    f"{name:28s} {r['rps']:7.0f} req/s  CPU {r['cpu_us']:6.0f} µs/req  "
                    f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  errors {int(r['errors'])}"
                )
            g, b = results[GOVERNED][i], results[BARE][i]
            print(
                f"  governed/bare: throughput {g['rps'] / b['rps']:.0%}, "
                f"CPU per request {g['cpu_us'] / b['cpu_us']:.2f}x\n"
            )


if __name__ == "__main__":
    main()
