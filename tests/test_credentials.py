"""How credentials live and die: expiry, revocation, rotation and disabling, on every replica.

The cache in front of token lookups must never outlive a revocation by more than its epoch
check interval, must not remember failures, and must not forget everything when full.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.reviewing import REVIEW_INPUT, review_points, token
from tests.test_crash import _free_port
from warden.api.app import create_app
from warden.auth.cache import TokenCache
from warden.auth.lifecycle import disable_principal, disable_user, revoke_token
from warden.auth.tokens import create_token
from warden.auth.users import create_user
from warden.cli.app import app as cli
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate
from warden.store.schema import events

PASSWORD = "correct horse battery"
runner = CliRunner()


@pytest.fixture
def engine(tmp_path: Path, db: sa.Engine) -> Iterator[Engine]:
    eng = Engine(load_points(review_points(tmp_path / "cp")), db, actor="test")
    yield eng
    eng.close()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, workers=[]), follow_redirects=False) as test_client:
        yield test_client


def _secret(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _event_types(engine: Engine) -> list[str]:
    with engine.db.connect() as conn:
        return list(conn.execute(sa.select(events.c.type).order_by(events.c.seq)).scalars())


# -- the cache ---------------------------------------------------------------------------


def test_a_revoked_token_is_refused_after_the_epoch_check(engine: Engine) -> None:
    headers, who = token(engine, ["caller"], name="svc")
    cache = TokenCache(epoch_interval=0.0)
    assert cache.lookup(engine, _secret(headers)) == who
    revoke_token(engine.recorder, who.token_id, actor="test", reason="leaked")
    assert cache.lookup(engine, _secret(headers)) is None
    assert "token.revoked" in _event_types(engine)


def test_failed_lookups_are_not_remembered(engine: Engine) -> None:
    """A token unknown a moment ago (e.g. created on another replica) works at once."""
    cache = TokenCache(epoch_interval=3600.0)
    assert cache.lookup(engine, "wdn_nothing_yet") is None
    headers, who = token(engine, ["caller"], name="svc")
    assert cache.lookup(engine, _secret(headers)) == who


def test_a_full_cache_evicts_the_oldest_not_everything(engine: Engine) -> None:
    cache = TokenCache(epoch_interval=3600.0, max_entries=3)
    secrets = [_secret(token(engine, ["caller"], name=f"svc{i}")[0]) for i in range(4)]
    for secret in secrets:
        assert cache.lookup(engine, secret) is not None
    assert len(cache) == 3


def test_expiry_applies_to_cached_and_fresh_lookups(engine: Engine) -> None:
    now = [datetime.now(UTC)]
    cache = TokenCache(epoch_interval=3600.0, clock=lambda: now[0])
    secret, _ = create_token(
        engine.recorder,
        name="short",
        roles=["caller"],
        points=["*"],
        actor="test",
        expires=timedelta(hours=1),
    )
    assert cache.lookup(engine, secret) is not None
    now[0] += timedelta(hours=1, seconds=1)
    assert cache.lookup(engine, secret) is None  # cached entry dropped at expiry
    assert cache.lookup(engine, secret) is None  # and the database agrees


# -- the API -----------------------------------------------------------------------------


def test_admin_revokes_over_the_api_and_the_token_stops_working(
    client: TestClient, engine: Engine
) -> None:
    admin, _ = token(engine, ["admin"], points=["*"], name="root")
    victim, who = token(engine, ["caller"], name="svc")
    assert client.get("/v1/tokens", headers=victim).status_code == 200
    client.app.state.tokens.epoch_interval = 0.0  # type: ignore[attr-defined]
    revoked = client.post(
        f"/v1/tokens/{who.token_id}/revoke", json={"reason": "left"}, headers=admin
    )
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    refused = client.get("/v1/tokens", headers=victim)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


def test_owners_manage_their_own_tokens_only(client: TestClient, engine: Engine) -> None:
    mine, me = token(engine, ["caller"], name="mia")
    _, other = token(engine, ["caller"], name="otto")
    listed = client.get("/v1/tokens", headers=mine).json()["data"]
    assert [t["id"] for t in listed] == [me.token_id]
    hidden = client.post(f"/v1/tokens/{other.token_id}/revoke", headers=mine)
    assert hidden.status_code == 404
    assert client.post("/v1/tokens", json={}, headers=mine).status_code == 403
    point_admin, _ = token(engine, ["admin"], points=["loan_approval"], name="pa")
    assert client.post("/v1/users/x/disable", headers=point_admin).status_code == 403


def test_rotation_keeps_the_old_secret_for_the_grace_period(
    client: TestClient, engine: Engine
) -> None:
    old, who = token(engine, ["caller"], name="svc")
    client.app.state.tokens.epoch_interval = 0.0  # type: ignore[attr-defined]
    rotated = client.post(f"/v1/tokens/{who.token_id}/rotate", json={"grace": "1h"}, headers=old)
    assert rotated.status_code == 200, rotated.text
    new = {"Authorization": f"Bearer {rotated.json()['secret']}"}
    assert client.get("/v1/tokens", headers=new).status_code == 200
    assert client.get("/v1/tokens", headers=old).status_code == 200  # within the grace
    again = client.post(
        f"/v1/tokens/{rotated.json()['id']}/rotate", json={"grace": "0s"}, headers=new
    )
    assert again.status_code == 200
    assert client.get("/v1/tokens", headers=new).status_code == 401  # no grace: gone now
    newest = {"Authorization": f"Bearer {again.json()['secret']}"}
    assert client.get("/v1/tokens", headers=newest).status_code == 200
    assert _event_types(engine).count("token.rotated") == 2


def test_bad_lifecycle_requests_are_4xx(client: TestClient, engine: Engine) -> None:
    admin, _ = token(engine, ["admin"], points=["*"], name="root")
    _, who = token(engine, ["caller"], name="svc")
    bad_grace = client.post(
        f"/v1/tokens/{who.token_id}/rotate", json={"grace": "soon"}, headers=admin
    )
    assert bad_grace.status_code == 400 and "grace" in bad_grace.text
    missing = client.post("/v1/tokens/nope/revoke", headers=admin)
    assert missing.status_code == 404
    made = client.post(
        "/v1/tokens",
        json={"name": "x", "roles": ["caller"], "points": ["*"], "expires": "forever"},
        headers=admin,
    )
    assert made.status_code == 400 and "90d" in made.text
    client.post(f"/v1/tokens/{who.token_id}/revoke", headers=admin)
    twice = client.post(f"/v1/tokens/{who.token_id}/revoke", headers=admin)
    assert twice.status_code == 409


# -- console users and principals ----------------------------------------------------------


def _login(client: TestClient, username: str) -> None:
    import re

    page = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    response = client.post(
        "/console/login",
        data={"csrf": csrf.group(1), "username": username, "password": PASSWORD},
    )
    assert response.status_code == 303, response.text


def test_disabling_a_user_ends_their_sessions(client: TestClient, engine: Engine) -> None:
    create_user(
        engine.recorder,
        username="olga",
        password=PASSWORD,
        roles=["reviewer"],
        points=["*"],
        actor="test",
    )
    _login(client, "olga")
    assert client.get("/console/queue").status_code == 200
    disable_user(engine.recorder, "olga", actor="test", reason="left the company")
    assert client.get("/console/queue").status_code == 303  # back to the login page
    assert "user.disabled" in _event_types(engine)


def test_disabling_a_principal_refuses_all_their_credentials(
    client: TestClient, engine: Engine
) -> None:
    create_user(
        engine.recorder,
        username="pia",
        password=PASSWORD,
        roles=["reviewer"],
        points=["*"],
        actor="test",
    )
    api, _ = token(engine, ["caller"], name="pia")
    _login(client, "pia")
    client.app.state.tokens.epoch_interval = 0.0  # type: ignore[attr-defined]
    assert client.get("/v1/tokens", headers=api).status_code == 200
    disable_principal(engine.recorder, "pia", actor="test")
    assert client.get("/v1/tokens", headers=api).status_code == 401
    assert client.get("/console/queue").status_code == 303
    with pytest.raises(Exception, match="disabled"):
        token(engine, ["caller"], name="pia")


# -- the CLI -------------------------------------------------------------------------------


def test_cli_token_lifecycle(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_CONFIG", str(review_points(tmp_path / "cli")))
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "home"))
    made = runner.invoke(
        cli,
        [
            "token",
            "create",
            "--name",
            "ci",
            "--principal",
            "build-bot",
            "--kind",
            "service",
            "--role",
            "caller",
            "--point",
            "*",
            "--expires",
            "90d",
        ],
    )
    assert made.exit_code == 0, made.output
    listed = runner.invoke(cli, ["token", "list", "--json"])
    tokens = json.loads(listed.stdout)
    assert len(tokens) == 1 and tokens[0]["principal"] == "build-bot"
    expires = datetime.fromisoformat(tokens[0]["expires_at"])
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)
    token_id = tokens[0]["id"]
    rotated = runner.invoke(cli, ["token", "rotate", token_id, "--grace", "0s"])
    assert rotated.exit_code == 0, rotated.output
    revoked = runner.invoke(cli, ["token", "revoke", token_id, "--reason", "rotated"])
    assert revoked.exit_code == 0, revoked.output
    twice = runner.invoke(cli, ["token", "revoke", token_id])
    assert twice.exit_code == 1 and "already revoked" in twice.output
    states = json.loads(runner.invoke(cli, ["token", "list", "--all", "--json"]).stdout)
    assert sorted(t["state"] for t in states) == ["active", "revoked"]
    bad = runner.invoke(
        cli,
        ["token", "create", "--name", "x", "--role", "caller", "--point", "*", "--expires", "soon"],
    )
    assert bad.exit_code == 1 and "90d" in bad.output
    runner.invoke(
        cli,
        ["user", "create", "uma", "--role", "reviewer", "--point", "*", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert runner.invoke(cli, ["user", "disable", "uma"]).exit_code == 0
    again = runner.invoke(cli, ["user", "disable", "uma"])
    assert again.exit_code == 1 and "already disabled" in again.output


# -- two replicas --------------------------------------------------------------------------


def _serve(folder: Path, db_url: str, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`warden serve` on a free port; waits generously, since a loaded machine starts slowly."""
    port = _free_port()
    env = {
        **os.environ,
        "WARDEN_CONFIG": str(folder),
        "WARDEN_DB_URL": db_url,
        "WARDEN_HOME": str(home),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start")


@pytest.mark.slow
def test_revocation_reaches_every_replica_within_a_second(tmp_path: Path, db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("replicas share a PostgreSQL database")
    folder = review_points(tmp_path / "rep")
    db = create_engine(db_url)
    migrate(db)
    engine = Engine(load_points(folder), db, actor="test")
    admin_secret, _ = create_token(
        engine.recorder, name="root", roles=["admin"], points=["*"], actor="test"
    )
    victim_secret, victim = create_token(
        engine.recorder, name="svc", roles=["caller"], points=["*"], actor="test"
    )
    engine.close()
    db.dispose()
    procs = []
    try:
        for name in ("a", "b"):
            procs.append(_serve(folder, db_url, tmp_path / name))
        urls = [url for _, url in procs]
        victim_auth = {"Authorization": f"Bearer {victim_secret}"}
        for url in urls:  # warm both caches
            assert httpx.get(f"{url}/v1/tokens", headers=victim_auth, timeout=30).status_code == 200
        revoked = httpx.post(
            f"{urls[1]}/v1/tokens/{victim.token_id}/revoke",
            headers={"Authorization": f"Bearer {admin_secret}"},
            timeout=30,
        )
        assert revoked.status_code == 200, revoked.text
        time.sleep(1.0)
        for url in urls:
            after = httpx.get(f"{url}/v1/tokens", headers=victim_auth, timeout=30)
            assert after.status_code == 401, (url, after.text)
            decided = httpx.post(
                f"{url}/v1/decisions",
                headers=victim_auth,
                json={"point": "loan_approval", "input": REVIEW_INPUT},
                timeout=30,
            )
            assert decided.status_code == 401
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(timeout=30)
