"""kill -9 a server under load: every decision it acknowledged is there after restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from warden.auth.tokens import create_token
from warden.ledger.keys import existing_public_key
from warden.ledger.verify import verify_ledger
from warden.store.database import create_engine, migrate
from warden.store.recorder import Recorder
from warden.store.schema import decisions, events

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(points_dir: Path, db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WARDEN_CONFIG": str(points_dir), "WARDEN_DB_URL": db_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120  # a loaded machine imports slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stderr.read() if proc.stderr else ''!r}")


def test_acknowledged_decisions_survive_kill_9(
    points_dir: Path, db_url: str, warden_home: Path
) -> None:
    db = create_engine(db_url)
    migrate(db)
    recorder = Recorder(db)
    secret, _ = create_token(recorder, name="load", roles=["caller"], points=["*"], actor="test")
    recorder.close()
    port = _free_port()
    server = _start(points_dir, db_url, port)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=5,
            headers={"Authorization": f"Bearer {secret}"},
        ) as client:
            n = 0
            while not stop.is_set() and n < 5000:
                n += 1
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
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(acknowledged) >= 200

    restarted = _start(points_dir, db_url, port)
    try:
        with db.connect() as conn:
            stored = set(conn.execute(sa.select(decisions.c.id)).scalars())
            rows = [
                dict(r) for r in conn.execute(sa.select(events).order_by(events.c.seq)).mappings()
            ]
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged decisions lost"
        key = existing_public_key(warden_home)  # the server's checkpoint signing key
        report = verify_ledger(db, [key] if key is not None else [])
        assert report.ok, report.to_dict()  # the shipped verifier: chain, head, checkpoints
        logged = {r["decision_id"] for r in rows if r["type"] == "decision.created"}
        assert logged == stored
    finally:
        restarted.kill()
        restarted.wait(timeout=10)
        db.dispose()
