"""Per-lane consistency through the real interfaces: `warden audit consistency --lane`,
`GET /v1/audit/consistency?lane=`, and a lanes proof bundle asked for with the auditor's
remembered lanes checkpoint (`prove --since-lanes`, `?since_lanes=`) and checked offline with
`check-proof --state`, which moves the state forward — or names the lane that forked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests import test_lanes
from tests.test_lanes import LANES, _lane_rows, _tamper
from warden.api.app import create_app
from warden.auth.tokens import create_token
from warden.cli.app import app
from warden.engine import Engine
from warden.ledger import merkle, remembered
from warden.ledger.checkpoint import make_checkpoint
from warden.ledger.keys import SigningKey, load_or_create
from warden.ledger.lanecheckpoint import make_lanes_checkpoint
from warden.ledger.lanes import lane_of

pg_url = test_lanes.pg_url
lanes_db = test_lanes.lanes_db
GOOD = {"amount": 1000, "income": 5000, "credit_score": 800}


@pytest.fixture
def deployment(
    lanes_db: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Engine, TestClient, SigningKey, Path]]:
    from tests.reviewing import review_points
    from warden.policy.loader import load_points

    home = tmp_path / "home"
    monkeypatch.setenv("WARDEN_HOME", str(home))
    engine = Engine(load_points(review_points(tmp_path / "points")), lanes_db, actor="test")
    key = load_or_create(home)
    try:
        with TestClient(create_app(engine)) as client:
            yield engine, client, key, home
    finally:
        engine.close()


def _decide(engine: Engine, n: int) -> list[str]:
    return [engine.decide("loan_approval", {**GOOD, "amount": 1000 + i}).id for i in range(n)]


def _cli(db: sa.Engine, home: Path, *args: str) -> Any:
    env = {"WARDEN_HOME": str(home), "WARDEN_DB_URL": db.url.render_as_string(hide_password=False)}
    return CliRunner().invoke(app, list(args), env=env)


def test_per_lane_consistency_and_a_lanes_proof_against_the_auditors_state(
    deployment: tuple[Engine, TestClient, SigningKey, Path], tmp_path: Path
) -> None:
    engine, client, key, home = deployment
    db = engine.db
    secret, _ = create_token(engine.recorder, name="a", roles=["auditor"], points=["*"], actor="t")
    auditor = {"Authorization": f"Bearer {secret}"}
    ids = _decide(engine, 3)
    lane = lane_of("loan_approval", ids[0], LANES)
    pem = tmp_path / "ledger.pem"
    pem.write_text(key.public.pem())
    state = tmp_path / "auditor-state.json"

    make_checkpoint(db, key)
    first = make_lanes_checkpoint(db, key)
    started = _cli(db, home, "audit", "verify", "--public-key", str(pem), "--state", str(state))
    assert started.exit_code == 0, started.output
    assert remembered.load(state).lanes_note == first.note  # type: ignore[union-attr]

    ids += _decide(engine, 4)
    second = make_lanes_checkpoint(db, key)
    old, new = first.heads[lane].size, second.heads[lane].size
    assert (old, new) == (3, 7)

    # the lane's consistency over HTTP and through the CLI
    answer = client.get(f"/v1/audit/consistency?old={old}&new={new}&lane={lane}", headers=auditor)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["consistent"] and body["new"]["note"] == second.note
    proof = [bytes.fromhex(h) for h in body["proof"]]
    assert merkle.verify_consistency(
        old, new, first.heads[lane].root, second.heads[lane].root, proof
    )
    shown = _cli(db, home, "audit", "consistency", str(old), str(new), "--lane", str(lane))
    assert shown.exit_code == 0, shown.output
    assert orjson.loads(shown.stdout)["verified"] is True
    missing = client.get(f"/v1/audit/consistency?old=2&new={new}&lane={lane}", headers=auditor)
    assert missing.status_code == 404 and "lane" in missing.json()["error"]["message"]

    # a proof bundle with every lane's consistency from the remembered lanes checkpoint
    sizes = ",".join(str(h.size) for h in first.heads)
    answer = client.get(f"/v1/audit/proofs/{ids[5]}?since_lanes={sizes}", headers=auditor)
    assert answer.status_code == 200, answer.text
    assert answer.json()["consistency"]["old_sizes"] == [h.size for h in first.heads]
    bundle = tmp_path / "proof.json"
    bundle.write_bytes(answer.content)
    checked = _cli(
        db, home, "audit", "check-proof", str(bundle), "-k", str(pem), "--state", str(state)
    )
    assert checked.exit_code == 0, checked.output
    assert remembered.load(state).lanes_note == second.note  # type: ignore[union-attr]

    # without the consistency proofs the state cannot move: it says how to ask
    plain = tmp_path / "plain.json"
    shown = _cli(db, home, "audit", "prove", ids[5], "--out", str(plain))
    assert shown.exit_code == 0, shown.output
    ids += _decide(engine, 2)
    third = make_lanes_checkpoint(db, key)
    shown = _cli(db, home, "audit", "prove", ids[-1], "--out", str(plain))
    checked = _cli(
        db, home, "audit", "check-proof", str(plain), "-k", str(pem), "--state", str(state)
    )
    assert checked.exit_code == 1
    wanted = ",".join(str(h.size) for h in second.heads)
    assert f"--since-lanes {wanted}" in checked.output

    # the lane is rewritten and re-hashed, and the server made to sign it (its memory replaced)
    _tamper(db, lane, _lane_rows(db, lane), 1, "rehash")
    remembered.lanes_path_for(key).unlink()
    ids += _decide(engine, 1)
    forked = make_lanes_checkpoint(db, key)
    shown = _cli(
        db,
        home,
        "audit",
        "consistency",
        str(new),
        str(forked.heads[lane].size),
        "--lane",
        str(lane),
    )
    assert shown.exit_code == 1, shown.output
    assert f"lane {lane} at {forked.heads[lane].size} events does not extend" in shown.output
    proved = tmp_path / "forked.json"
    shown = _cli(db, home, "audit", "prove", ids[-1], "--since-lanes", wanted, "--out", str(proved))
    assert shown.exit_code == 0, shown.output
    checked = _cli(
        db, home, "audit", "check-proof", str(proved), "-k", str(pem), "--state", str(state)
    )
    assert checked.exit_code == 1, checked.output
    assert f"lane {lane} at {forked.heads[lane].size} events does not extend its checkpoint" in (
        checked.output
    )
    assert remembered.load(state).lanes_note == second.note  # type: ignore[union-attr]
    assert third.heads[lane].size == 9


def test_since_is_refused_for_a_lanes_decision_and_since_lanes_for_lane_0(
    deployment: tuple[Engine, TestClient, SigningKey, Path],
) -> None:
    engine, client, key, _ = deployment
    secret, _ = create_token(engine.recorder, name="a", roles=["auditor"], points=["*"], actor="t")
    auditor = {"Authorization": f"Bearer {secret}"}
    decided = _decide(engine, 1)[0]
    make_lanes_checkpoint(engine.db, key)
    answer = client.get(f"/v1/audit/proofs/{decided}?since=1", headers=auditor)
    assert answer.status_code == 400 and "since_lanes" in answer.text
    answer = client.get(f"/v1/audit/proofs/{decided}?since_lanes=1,x", headers=auditor)
    assert answer.status_code == 400 and "separated by commas" in answer.text
    answer = client.get(f"/v1/audit/proofs/{decided}?since_lanes=1,2", headers=auditor)
    assert answer.status_code == 400 and f"each of the {LANES} lanes" in answer.text
