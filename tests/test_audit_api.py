"""The audit routes through a real HTTP client: roles, verify, checkpoints, proofs, consistency."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.engine import Engine
from warden.ledger.checkpoint import Checkpoint, make_checkpoint
from warden.ledger.keys import load_or_create, parse_public_key
from warden.ledger.merkle import verify_consistency
from warden.ledger.proof import check_bundle
from warden.store.schema import events

GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def client(engine: Engine, home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(engine)) as test_client:
        yield test_client


def _token(engine: Engine, roles: list[str], points: list[str]) -> dict[str, str]:
    secret, _ = create_token(engine.recorder, name="t", roles=roles, points=points, actor="test")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def auditor(engine: Engine) -> dict[str, str]:
    return _token(engine, ["auditor"], ["*"])


def _decide(client: TestClient, engine: Engine, n: int = 3) -> list[str]:
    caller = _token(engine, ["caller"], ["loan_approval"])
    ids = []
    for i in range(n):
        response = client.post(
            "/v1/decisions",
            json={"point": "loan_approval", "input": {**GOOD, "amount": 1000 + i}},
            headers=caller,
        )
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    return ids


def test_only_auditors_and_admins(client: TestClient, engine: Engine) -> None:
    assert client.get("/v1/audit/verify").status_code == 401
    caller = _token(engine, ["caller"], ["*"])
    response = client.get("/v1/audit/verify", headers=caller)
    assert response.status_code == 403 and response.json()["error"]["type"] == "forbidden"
    admin = _token(engine, ["admin"], ["*"])
    assert client.get("/v1/audit/verify", headers=admin).status_code == 200


def test_proof_from_the_api_checks_offline(
    client: TestClient, engine: Engine, auditor: dict[str, str], home: Path
) -> None:
    ids = _decide(client, engine)
    key = client.get("/v1/audit/public-key", headers=auditor).json()
    public = parse_public_key(key["pem"].encode())
    assert public.key_id == key["key_id"]
    early = client.get(f"/v1/audit/proofs/{ids[1]}", headers=auditor)
    assert early.status_code == 409 and "no checkpoint covers" in early.text  # reads never sign
    make_checkpoint(engine.db, load_or_create(home))
    response = client.get(f"/v1/audit/proofs/{ids[1]}", headers=auditor)
    assert response.status_code == 200, response.text
    bundle = response.json()
    result = check_bundle(bundle, public)
    assert result.ok, result.problems
    assert [e["type"] for e in result.events] == ["decision.created"]
    bundle["events"][0]["inclusion"][0] = "00" * 32
    assert not check_bundle(bundle, public).ok
    missing = client.get("/v1/audit/proofs/nope", headers=auditor)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    scoped = _token(engine, ["auditor"], ["refund_agent"])
    assert client.get(f"/v1/audit/proofs/{ids[0]}", headers=scoped).status_code == 404


def test_verify_checkpoints_and_consistency(
    client: TestClient, engine: Engine, auditor: dict[str, str], home: Path
) -> None:
    key = load_or_create(home)
    _decide(client, engine, 2)
    first = make_checkpoint(engine.db, key)
    _decide(client, engine, 3)
    second = make_checkpoint(engine.db, key)
    report = client.get("/v1/audit/verify", headers=auditor).json()
    assert report["ok"] and report["checkpoints"] == 2 and report["first_break"] is None

    page = client.get("/v1/audit/checkpoints?limit=1", headers=auditor).json()
    assert [c["size"] for c in page["data"]] == [second.size]
    rest = client.get(f"/v1/audit/checkpoints?cursor={page['next_cursor']}", headers=auditor)
    assert [c["size"] for c in rest.json()["data"]] == [first.size]
    assert rest.json()["next_cursor"] is None

    proof = client.get(
        f"/v1/audit/consistency?old={first.size}&new={second.size}", headers=auditor
    ).json()
    old, new = Checkpoint.from_dict(proof["old"]), Checkpoint.from_dict(proof["new"])
    assert old.signed_by(key.public) and new.signed_by(key.public)
    hashes = [bytes.fromhex(p) for p in proof["proof"]]
    assert verify_consistency(old.size, new.size, old.root_bytes, new.root_bytes, hashes)
    bad = client.get("/v1/audit/consistency?old=5&new=2", headers=auditor)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "old"
    unknown = client.get("/v1/audit/consistency?old=1&new=99999", headers=auditor)
    assert unknown.status_code == 404


def test_verify_reports_a_tampered_ledger(
    client: TestClient, engine: Engine, auditor: dict[str, str]
) -> None:
    _decide(client, engine, 2)
    with engine.db.begin() as conn:
        last = conn.execute(sa.select(sa.func.max(events.c.seq))).scalar_one()
        conn.execute(events.delete().where(events.c.seq == last - 1))
    report = client.get("/v1/audit/verify", headers=auditor).json()
    assert report["ok"] is False
    assert report["first_break"]["kind"] == "deleted"
    assert report["first_break"]["seq"] == last - 1


def test_periodic_checkpointer(client: TestClient, engine: Engine, home: Path) -> None:
    from warden.ledger.checkpoint import latest
    from warden.ledger.checkpointer import start_checkpointer

    checkpointer = start_checkpointer(engine.db, home, every=3, seconds=0.3)
    try:
        _decide(client, engine, 4)
        deadline = time.monotonic() + 10
        while checkpointer.made == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        checkpointer.stop()
    with engine.db.connect() as conn:
        newest = latest(conn)
    assert newest is not None and newest.signed_by(load_or_create(home).public)
    checkpointer.tick(time.monotonic(), 0.0)  # signs what came after the first one, if anything
    assert checkpointer.tick(time.monotonic(), time.monotonic()) is None  # nothing new
