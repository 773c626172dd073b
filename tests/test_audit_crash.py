"""Two servers append to one ledger while a checkpoint is signed; both are killed with -9.

After a restart `warden audit verify` passes and every acknowledged decision is in the ledger:
the chain stayed one total order across processes and nothing acknowledged was lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.test_crash import _free_port, _start
from warden.auth.tokens import create_token
from warden.store.database import create_engine, migrate
from warden.store.recorder import Recorder
from warden.store.schema import events

pytestmark = pytest.mark.slow


def _warden(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warden", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_kill_9_two_writers_then_verify(points_dir: Path, db_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "WARDEN_CONFIG": str(points_dir),
        "WARDEN_DB_URL": db_url,
        "WARDEN_HOME": str(tmp_path / "home"),
    }
    db = create_engine(db_url)
    migrate(db)
    recorder = Recorder(db)
    secret, _ = create_token(recorder, name="load", roles=["caller"], points=["*"], actor="test")
    recorder.close()
    ports = [_free_port(), _free_port()]
    servers = [_start(points_dir, db_url, port) for port in ports]
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        port = ports[worker % 2]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=5,
            headers={"Authorization": f"Bearer {secret}"},
        ) as client:
            for n in range(3000):
                if stop.is_set():
                    return
                try:
                    response = client.post(
                        "/v1/decisions",
                        json={
                            "point": "loan_approval",
                            "input": {"amount": n, "income": 5000, "credit_score": 700 + worker},
                        },
                    )
                except httpx.HTTPError:
                    return
                if response.status_code in (200, 202):
                    with lock:
                        acknowledged.append(response.json()["id"])

    threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    signed = _warden(env, "audit", "checkpoint")  # a third process, during the appends
    assert signed.returncode == 0, signed.stderr
    while len(acknowledged) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    for server in servers:
        server.send_signal(signal.SIGKILL)
    for server in servers:
        server.wait(timeout=10)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(acknowledged) >= 100

    restarted = _start(points_dir, db_url, ports[0])
    try:
        verified = _warden(env, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "ok ledger verified" in verified.stdout
        with db.connect() as conn:
            logged = set(
                conn.execute(
                    sa.select(events.c.decision_id).where(events.c.type == "decision.created")
                ).scalars()
            )
        missing = set(acknowledged) - logged
        assert not missing, f"{len(missing)} acknowledged decisions are not in the ledger"
    finally:
        restarted.kill()
        restarted.wait(timeout=10)
        db.dispose()
