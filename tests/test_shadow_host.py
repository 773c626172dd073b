"""One shadow process per host: the workers of `warden serve --workers N` share it, the server
restarts it when it dies, and a worker reconnects."""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.serving import serve_workers
from tests.test_rollout import POINT, SMOKE, train
from tests.test_shadow_process import guarded, results
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.rollout import shadow
from warden.rollout.shadow import ShadowCall, ShadowRunner
from warden.rollout.shadow_host import PROCESS_NAME, ShadowHost
from warden.serving import default_workers
from warden.store.database import create_engine, migrate
from warden.store.recorder import Recorder
from warden.store.schema import shadow_results


@pytest.fixture
def host() -> Iterator[ShadowHost]:
    host = ShadowHost()
    assert host.wait_ready(120)  # a busy machine starts a Python process slowly
    yield host
    host.close()


@pytest.fixture
def recorder(db: sa.Engine) -> Iterator[Recorder]:
    recorder = Recorder(db)
    yield recorder
    recorder.close()


def _answered_by(db: sa.Engine) -> set[float | None]:
    return {row.confidence for row in results(db)}


def test_two_workers_runners_share_the_hosts_process(
    db: sa.Engine, recorder: Recorder, host: ShadowHost, tmp_path: Path
) -> None:
    model = guarded(tmp_path)
    runners = [ShadowRunner(recorder, isolated=True, host=host.address) for _ in range(2)]
    try:
        for i in range(40):
            runner = runners[i % 2]
            assert runner.submit(ShadowCall(f"d{i:03}", "p", "c1", model, {"n": i}))
        for runner in runners:
            runner.drain(30)
        assert {runner._child.pid for runner in runners if runner._child} == {host.pid}
    finally:
        for runner in runners:
            runner.close()
    assert len(results(db)) == 40
    assert host.pid is not None and host.pid != os.getpid()
    assert _answered_by(db) == {(host.pid % 1000) / 1000}  # the model saw the host's pid


def test_a_dead_host_process_is_restarted_and_workers_reconnect(
    db: sa.Engine,
    recorder: Recorder,
    host: ShadowHost,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shadow, "RESTART_AFTER", 0.2)
    model = guarded(tmp_path)
    runner = ShadowRunner(recorder, isolated=True, host=host.address)
    try:
        assert runner.submit(ShadowCall("a", "p", "c1", model, {"n": 1}))
        runner.drain(30)
        first = host.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (host.restarts == 0 or host.pid == first) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host.restarts == 1 and host.pid != first
        assert host.wait_ready(120)
        answered = 0
        for i in range(200):  # calls while the connection is found broken are dropped, counted
            runner.submit(ShadowCall(f"b{i:03}", "p", "c1", model, {"n": i}))
            runner.drain(10)
            with db.connect() as conn:
                answered = conn.execute(
                    sa.select(sa.func.count()).where(shadow_results.c.decision_id.like("b%"))
                ).scalar_one()
            if answered:
                break
            time.sleep(0.1)
        assert answered
        assert runner._child is not None and runner._child.pid == host.pid
    finally:
        runner.close()


def test_default_workers_follow_the_database() -> None:
    assert default_workers("sqlite:////tmp/x.db") == 1
    assert default_workers("postgresql+psycopg://h/db") == len(os.sched_getaffinity(0))


# -- end to end: `warden serve --workers 2` with a shadow rollout ------------------------


def _tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, ValueError, IndexError):
                continue
    found, todo = {root}, [root]
    while todo:
        pid = todo.pop()
        children = [c for c, p in parents.items() if p == pid and c not in found]
        found.update(children)
        todo.extend(children)
    return sorted(found)


def _named_shadow(pids: list[int]) -> list[int]:
    named = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == PROCESS_NAME.decode():
                named.append(pid)
        except OSError:
            continue
    return named


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_serve_with_two_workers_runs_one_shadow_process(tmp_path: Path) -> None:
    folder, home = tmp_path / "points", tmp_path / "home"
    folder.mkdir()
    train(folder / "base.joblib", 1)
    (folder / "credit.yaml").write_text(textwrap.dedent(POINT))
    db_url = f"sqlite:///{tmp_path / 'warden.db'}"
    db = create_engine(db_url)
    migrate(db)
    setup = Engine(load_points(folder), db, actor="test", model_cache=home / "models")
    setup.registry.register(
        setup.points["credit"],
        version="flipped",
        artifact=train(tmp_path / "flipped.joblib", 1, flip=True),
        actor="test",
        smoke_input=SMOKE,
    )
    secret, _ = create_token(
        setup.recorder, name="ops", roles=["owner", "caller"], points=["credit"], actor="test"
    )
    setup.close()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PROMETHEUS", "WARDEN_"))},
        "WARDEN_CONFIG": str(folder),
        "WARDEN_DB_URL": db_url,
        "WARDEN_HOME": str(home),
    }
    log = tmp_path / "serve.log"
    with serve_workers(env, log) as (server, base):
        auth = {"Authorization": f"Bearer {secret}"}
        plan = {"steps": [100], "interval": "60s", "min_decisions": 30}
        rollout = httpx.post(
            f"{base}/v1/points/credit/rollout",
            headers=auth,
            json={"challenger": "flipped", "mode": "shadow", "plan": plan},
        )
        assert rollout.status_code in (200, 201), rollout.text
        sent = 60
        for i in range(sent):  # a new connection each, so both workers take their share
            response = httpx.post(
                f"{base}/v1/decisions",
                headers=auth,
                json={
                    "point": "credit",
                    "input": {"amount": 1000.0, "income": 5000.0, "credit_score": 300 + i * 9},
                },
            )
            assert response.status_code in (200, 202), response.text
        named = _named_shadow(_tree(server.pid))
        assert len(named) == 1, named  # each worker has shadowed by now
        compared = 0
        waited = time.monotonic() + 120
        while compared < sent and time.monotonic() < waited:
            time.sleep(0.5)
            with db.connect() as conn:
                compared = conn.execute(
                    sa.select(sa.func.count()).select_from(shadow_results)
                ).scalar_one()
        # The shadow process runs at the lowest priority: on a machine busy with other work
        # it may starve long enough to be taken for hung and restarted, losing calls.
        assert compared > 0, log.read_text()[-4000:]
        workers = set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))
        counted = {p.stem.split("_")[1] for p in (home / "prometheus").glob("counter_*.db")}
        assert len(workers) == 2 and workers <= counted, (workers, counted)  # both shadowed
    db.dispose()
    deadline = time.monotonic() + 10
    while _running(named[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(named[0])  # the server stops its shadow process


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
