"""A stopping server gives requests in flight `--grace` seconds, then closes their connections:
one slow or stuck client must not keep a replica from stopping (rolling deploys, SIGTERM from
an orchestrator)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.reviewing import review_points
from tests.test_crash import _free_port
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate


@pytest.mark.slow
def test_sigterm_stops_within_the_grace_while_a_request_is_stuck(tmp_path: Path) -> None:
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
    env = {
        **os.environ,
        "WARDEN_CONFIG": str(folder),
        "WARDEN_DB_URL": db_url,
        "WARDEN_HOME": str(tmp_path / "home"),
    }
    command = [sys.executable, "-m", "warden", "serve", "--port", str(port), "--grace", "1"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stuck: socket.socket | None = None
    try:
        deadline = time.monotonic() + 240  # a loaded machine starts a server slowly
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("the server did not start")
        # An authenticated request whose body never arrives: the app waits for it.
        stuck = socket.create_connection(("127.0.0.1", port), timeout=5)
        stuck.sendall(
            (
                "POST /v1/decisions HTTP/1.1\r\nHost: warden\r\n"
                f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n{"
            ).encode()
        )
        time.sleep(1.0)  # the request has reached the app
        assert proc.poll() is None
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)  # without a grace the server waits for the body forever
        except subprocess.TimeoutExpired:
            raise AssertionError("the server did not stop after its grace period") from None
        assert time.monotonic() - began < 30
    finally:
        if stuck is not None:
            stuck.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
