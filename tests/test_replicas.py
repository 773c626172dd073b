"""Two server processes on one database: kill switch and rollout abort reach the other replica
for the very next decision."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_crash import _free_port
from tests.test_rollout import POINT, SMOKE, train
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate

pytestmark = pytest.mark.slow

APPLICATION = {"amount": 1000.0, "income": 5000.0, "credit_score": 800, "customer": "c1"}


def _serve(folder: Path, db_url: str, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "WARDEN_CONFIG": str(folder),
        "WARDEN_DB_URL": db_url,
        "WARDEN_HOME": str(home),
        "WARDEN_ROLLOUT_TICK": "3600",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


@pytest.fixture
def replicas(tmp_path: Path, db_url: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    folder = tmp_path / "points"
    folder.mkdir()
    train(folder / "base.joblib", 1)
    (folder / "credit.yaml").write_text(textwrap.dedent(POINT))
    db = create_engine(db_url)
    migrate(db)
    engine = Engine(load_points(folder), db, actor="test", model_cache=tmp_path / "cache")
    engine.registry.register(
        engine.points["credit"],
        version="v2",
        artifact=train(tmp_path / "v2.joblib", 2),
        actor="test",
        smoke_input=SMOKE,
    )
    secret, _ = create_token(
        engine.recorder, name="ops", roles=["owner", "caller"], points=["credit"], actor="test"
    )
    engine.close()
    db.dispose()
    first, a = _serve(folder, db_url, tmp_path / "a")
    second, b = _serve(folder, db_url, tmp_path / "b")
    try:
        yield a, b, {"Authorization": f"Bearer {secret}"}
    finally:
        for proc in (first, second):
            proc.terminate()
            proc.wait(timeout=30)


def _decide(url: str, auth: dict[str, str]) -> dict[str, object]:
    response = httpx.post(
        f"{url}/v1/decisions",
        headers=auth,
        timeout=30,
        json={"point": "credit", "input": APPLICATION},
    )
    assert response.status_code in (200, 202), response.text
    body: dict[str, object] = response.json()
    return body


def test_kill_switch_reaches_the_other_replica(replicas: tuple[str, str, dict[str, str]]) -> None:
    a, b, auth = replicas
    assert _decide(a, auth)["route"] == "auto"
    killed = httpx.post(f"{b}/v1/points/credit/kill", headers=auth, json={"reason": "test"})
    assert killed.status_code == 200
    after = _decide(a, auth)
    assert after["route"] == "review"
    assert after["reasons"][0]["code"] == "kill_switch"  # type: ignore[index]


def test_abort_reaches_the_other_replica(replicas: tuple[str, str, dict[str, str]]) -> None:
    a, b, auth = replicas
    started = httpx.post(
        f"{b}/v1/points/credit/rollout",
        headers=auth,
        json={"challenger": "v2", "plan": {"steps": [100], "sticky_key": "input.customer"}},
    )
    assert started.status_code == 201, started.text
    for _ in range(3):  # replica a learns of the rollout from its own commits
        _decide(a, auth)
    assert _decide(a, auth)["model_version"] == "v2"
    aborted = httpx.post(
        f"{b}/v1/points/credit/rollout/abort", headers=auth, json={"reason": "test"}
    )
    assert aborted.status_code == 200
    after = _decide(a, auth)
    assert not (after["model_version"] == "v2" and after["route"] == "auto")
    assert _decide(a, auth)["model_version"] == "v1"
