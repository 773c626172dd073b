"""`warden serve --server granian` serves the same API as uvicorn: decisions, the request
limits enforced before any route, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.reviewing import AUTO_INPUT, REVIEW_INPUT, review_points
from tests.test_crash import _free_port
from warden.auth.tokens import create_token
from warden.cli.app import app as cli
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate

pytest.importorskip("granian")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_granian_serves_the_same_api(tmp_path: Path) -> None:
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
        "WARDEN_MAX_BODY_BYTES": "4096",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port), "--server", "granian"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {secret}"}
    try:
        deadline = time.monotonic() + 240  # a loaded machine starts a server slowly
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("granian did not start")
        with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
            auto = client.post(
                "/v1/decisions", json={"point": "loan_approval", "input": AUTO_INPUT}
            )
            assert auto.status_code == 200, auto.text
            assert auto.json()["status"] == "final"
            review = client.post(
                "/v1/decisions", json={"point": "loan_approval", "input": REVIEW_INPUT}
            )
            assert review.status_code == 202 and review.json()["route"] == "review"
            again = client.get(f"/v1/decisions/{auto.json()['id']}")
            assert again.json() == auto.json()
            nul = client.post("/v1/decisions?x=%00", json={"point": "loan_approval"})
            assert nul.status_code == 400 and nul.json()["error"]["field"] == "x"
            big = client.post("/v1/decisions", content=b"{" + b" " * 5000 + b"}")
            assert big.status_code == 413
            anonymous = client.post("/v1/decisions", headers={"Authorization": ""}, json={})
            assert anonymous.status_code == 401
        workers = _children(proc.pid)
        assert workers, "granian serves from a worker process"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_serve_names_the_servers_it_knows() -> None:
    result = CliRunner().invoke(cli, ["serve", "--server", "gunicorn"])
    assert result.exit_code == 2
    assert "uvicorn" in result.output and "granian" in result.output
