"""A `warden serve` process on a fresh SQLite database with one caller token, for the tests
that need a real server process (its HTTP server, its signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.reviewing import review_points
from tests.test_crash import _free_port
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate


def serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start `warden serve --port P *args` and wait until it is ready: (process, url, secret)."""
    folder = review_points(tmp_path / "points")
    db_url = f"sqlite:///{tmp_path / 'warden.db'}"
    db = create_engine(db_url)
    migrate(db)
    engine = Engine(load_points(folder), db, actor="test")
    secret, _ = create_token(
        engine.recorder, name="svc", roles=["caller"], points=["*"], actor="test"
    )
    engine.close()
    db.dispose()
    port = _free_port()
    environ = {
        **os.environ,
        "WARDEN_CONFIG": str(folder),
        "WARDEN_DB_URL": db_url,
        "WARDEN_HOME": str(tmp_path / "home"),
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port), *args],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240  # a loaded machine starts a server slowly
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url, secret
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=10)
    raise AssertionError(f"warden serve {' '.join(args)} did not start")


@contextmanager
def serve_workers(
    env: dict[str, str], log: Path, workers: int = 2
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`warden serve --workers N` with `env`, its log in `log`: (process, url) once every
    worker has started, so traffic reaches all of them; stopped with SIGINT afterwards."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        deadline = time.monotonic() + 300  # workers start slowly on a busy machine
        started = 0
        while started < workers and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.5)
            started = log.read_text().count("Application startup complete")
        assert started == workers, log.read_text()  # every worker serves before the traffic
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
