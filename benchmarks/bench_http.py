"""HTTP: requests/s and latency of POST /v1/decisions beside a bare endpoint with the same model.

Run: .venv/bin/python benchmarks/bench_http.py [--seconds 10] [--concurrency 32]
Both servers run as single uvicorn processes on 127.0.0.1 in the same run; the load generator is
wrk (Debian package `wrk`), so the load generator costs little CPU of its own.
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not start")


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


def _wrk(url: str, script: Path, seconds: float, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": float(bad.group(1)) if bad else 0.0}


def _bodies() -> list[bytes]:
    return [json.dumps({"point": "loan_approval", "input": a}).encode() for a in applications(2000)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_http needs wrk: apt-get install wrk (or brew install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        points = write_point(folder / "points", "sklearn")
        env = {
            **os.environ,
            "WARDEN_CONFIG": str(points),
            "WARDEN_DB_URL": os.environ.get("WARDEN_DB_URL", f"sqlite:///{folder / 'warden.db'}"),
            "BARE_MODEL_PATH": str(points / "credit.joblib"),
            "PYTHONPATH": str(HERE),
        }
        token = subprocess.run(
            [
                sys.executable,
                "-m",
                "warden",
                "token",
                "create",
                "--name",
                "bench",
                "--role",
                "caller",
                "--point",
                "loan_approval",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        governed_port, bare_port = _free_port(), _free_port()
        servers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "warden",
                    "serve",
                    "--port",
                    str(governed_port),
                    "--workers",
                    "1",
                ],
                env=env,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bare_app:app",
                    "--port",
                    str(bare_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env=env,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            _wait(f"http://127.0.0.1:{governed_port}/readyz")
            _wait(f"http://127.0.0.1:{bare_port}/docs")
            auth = {"Authorization": f"Bearer {token}"}
            runs = {
                "bare FastAPI + model": (f"http://127.0.0.1:{bare_port}/predict", {}),
                "governed POST /v1/decisions": (
                    f"http://127.0.0.1:{governed_port}/v1/decisions",
                    auth,
                ),
            }
            results = {}
            for name, (url, headers) in runs.items():
                script = _lua_script(folder, headers)
                _wrk(url, script, 2, args.concurrency)  # warm up
                results[name] = _wrk(url, script, args.seconds, args.concurrency)
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=30)
        print(
            f"{args.concurrency} concurrent connections, {args.seconds:g}s each, "
            f"db {env['WARDEN_DB_URL'].split(':')[0]}\n"
        )
        for name, r in results.items():
            print(
                f"{name:30s} {r['rps']:8.0f} req/s  p50 {r['p50']:7.2f} ms  "
                f"p99 {r['p99']:7.2f} ms  errors {int(r['errors'])}"
            )
        ratio = (
            results["governed POST /v1/decisions"]["rps"] / results["bare FastAPI + model"]["rps"]
        )
        print(f"\ngoverned throughput = {ratio:.0%} of the bare endpoint")


if __name__ == "__main__":
    main()
