"""The trust model, attacked through the real CLI on both backends: whose keys count, what a lost
or swapped key does, key rotation, and the auditor's remembered checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests import ledger_helpers as lh
from warden.cli.app import app
from warden.ledger import merkle
from warden.ledger.keys import KEY_FILE, load_or_create
from warden.ledger.remembered import SIGNER_FILE, Remembered
from warden.ledger.verify import BreakKind, verify_ledger
from warden.store.database import create_engine
from warden.store.schema import checkpoints, events, ledger_head, ledger_keys, ledger_tiles

GOOD = '{"amount": 1000, "income": 5000, "credit_score": 800}'
runner = CliRunner()


@pytest.fixture
def env(points_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = points_dir.parent / "home"
    monkeypatch.setenv("WARDEN_CONFIG", str(points_dir))
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    monkeypatch.setenv("WARDEN_HOME", str(home))
    monkeypatch.delenv("WARDEN_WITNESS", raising=False)
    assert runner.invoke(app, ["init"]).exit_code == 0
    return home


def _decide(amount: int = 1000) -> None:
    data = GOOD.replace("1000", str(amount))
    result = runner.invoke(app, ["decide", "loan_approval", "--input", data])
    assert result.exit_code == 0, result.output


def _audit(*args: str) -> Any:
    return runner.invoke(app, ["audit", *args])


def _checkpoint() -> dict[str, Any]:
    made = _audit("checkpoint")
    assert made.exit_code == 0, made.output
    return dict(json.loads(made.stdout))


def _public_key(path: Path) -> Path:
    made = _audit("public-key", "--out", str(path))
    assert made.exit_code == 0, made.output
    return path


def _sql(db_url: str, *statements: Any) -> None:
    db = create_engine(db_url)
    try:
        with db.begin() as conn:
            for statement in statements:
                conn.execute(statement)
    finally:
        db.dispose()


def _rehash_from(db_url: str, first: int) -> None:
    """The attack of docs/ledger.md: edit event `first`, then recompute every hash after it."""
    db = create_engine(db_url)
    try:
        with db.begin() as conn:
            rows = conn.execute(
                sa.select(events.c.seq, events.c.body, events.c.prev_hash)
                .where(events.c.seq >= first)
                .order_by(events.c.seq)
            ).all()
            prev = rows[0].prev_hash
            edited = False
            for seq, body, _ in rows:
                if not edited and '"amount":' in body:
                    body, edited = body.replace('"amount":', '"amount":9'), True
                leaf = hashlib.sha256(b"\x00" + body.encode()).digest()
                chain = hashlib.sha256(bytes.fromhex(prev) + leaf).hexdigest()
                conn.execute(
                    events.update()
                    .where(events.c.seq == seq)
                    .values(body=body, prev_hash=prev, leaf_hash=leaf.hex(), chain_hash=chain)
                )
                prev = chain
            assert edited, "no decision event to edit"
            conn.execute(ledger_head.update().values(chain_hash=prev))
    finally:
        db.dispose()


def test_rewrite_and_deleted_checkpoints_fail_with_public_key_or_state(
    env: Path, db_url: str, tmp_path: Path
) -> None:
    for i in range(3):
        _decide(1000 + i)
    _checkpoint()
    pub = _public_key(tmp_path / "auditor.pub")
    state = tmp_path / "auditor-state.json"
    first = _audit("verify", "--public-key", str(pub), "--state", str(state))
    assert first.exit_code == 0, first.output
    assert "now remembering checkpoint" in first.stdout and state.exists()

    _rehash_from(db_url, 2)
    _sql(db_url, checkpoints.delete(), ledger_tiles.delete())
    # The chain alone tells a consistent story again: the server's own key passes it; only the
    # decision row, which still says what the original event said, gives the rewrite away...
    plain = _audit("verify")
    assert plain.exit_code == 1, plain.output
    assert "ok ledger verified" in plain.stdout and "STATE DIFFERS" in plain.stdout
    # ...but not an auditor who holds the public key: nothing signed vouches for the events,
    by_key = _audit("verify", "--public-key", str(pub))
    assert by_key.exit_code == 1, by_key.output
    assert "BROKEN" in by_key.stdout and "unvouched" in by_key.stdout
    assert "no checkpoint signed by a trusted key" in by_key.stdout
    # nor one who remembers the checkpoint they verified last time,
    by_state = _audit("verify", "--public-key", str(pub), "--state", str(state))
    assert by_state.exit_code == 1
    assert "forked" in by_state.stdout and "rewritten since you last verified" in by_state.stdout
    # and the server refuses to sign the rewrite: it remembers what it signed.
    refused = _audit("checkpoint")
    assert refused.exit_code == 2 and "refusing to sign" in refused.output


def test_truncation_before_the_remembered_checkpoint(
    env: Path, db_url: str, tmp_path: Path
) -> None:
    for i in range(4):
        _decide(1000 + i)
    size = _checkpoint()["size"]
    pub = _public_key(tmp_path / "auditor.pub")
    state = tmp_path / "state.json"
    assert _audit("verify", "-k", str(pub), "--state", str(state)).exit_code == 0
    _decide(2000)
    later = _checkpoint()["size"]
    grown = _audit("verify", "-k", str(pub), "--state", str(state))
    assert grown.exit_code == 0, grown.output
    assert f"checkpoint {later} extends the remembered checkpoint {size}" in grown.stdout
    assert json.loads(state.read_text())["size"] == later

    keep = later - 2
    _sql(
        db_url,
        events.delete().where(events.c.seq > keep),
        checkpoints.delete(),
        ledger_tiles.delete(),
        ledger_head.update().values(
            seq=keep,
            chain_hash=sa.select(events.c.chain_hash).where(events.c.seq == keep).scalar_subquery(),
        ),
    )
    plain = _audit("verify")  # the chain is consistent inside the database; the decisions
    assert plain.exit_code == 1  # whose events were cut off are not
    assert "ok ledger verified" in plain.stdout and "inserted: decisions" in plain.stdout
    cut = _audit("verify", "-k", str(pub), "--state", str(state))
    assert cut.exit_code == 1
    assert "truncated" in cut.stdout and "were cut off since you last verified" in cut.stdout
    assert json.loads(state.read_text())["size"] == later  # a failed run never moves the state


def test_only_the_given_keys_are_trusted(env: Path, db_url: str, tmp_path: Path) -> None:
    _decide()
    _checkpoint()
    stranger = load_or_create(tmp_path / "other")
    # A key that is not the ledger's: its holder is told, the local key is not added silently.
    (tmp_path / "other.pub").write_text(stranger.public.pem())
    result = _audit("verify", "--public-key", str(tmp_path / "other.pub"))
    assert result.exit_code == 1
    assert "not trusted here" in result.stdout
    ours = json.loads(_audit("checkpoints").stdout)[0]["key_id"]
    assert f"signed by key {ours}" in result.stdout


def test_a_missing_or_swapped_key_is_an_error_not_a_new_key(
    env: Path, db_url: str, tmp_path: Path
) -> None:
    _decide()
    cp = _checkpoint()
    key_file = env / KEY_FILE
    original = key_file.read_bytes()
    key_file.unlink()
    missing = _audit("checkpoint")
    assert missing.exit_code == 2
    assert f"signed with key {cp['key_id']}" in missing.output and "is missing" in missing.output
    assert not key_file.exists()  # no key was made
    # Also after deleting the checkpoints and the recorded key rows... the checkpoints name it.
    _sql(db_url, ledger_keys.delete())
    assert _audit("checkpoint").exit_code == 2 and not key_file.exists()
    # A replica set up with its own home cannot start signing with a key of its own,
    replica = runner.invoke(app, ["init"], env={"WARDEN_HOME": str(tmp_path / "replica")})
    assert replica.exit_code == 1 and "is missing" in replica.output
    # and a different key file (a replica's own key, or a swapped file) is refused by name.
    key_file.write_bytes(load_or_create(tmp_path / "other").path.read_bytes())
    key_file.chmod(0o600)
    swapped = _audit("checkpoint")
    assert swapped.exit_code == 2
    assert f"signed by key {cp['key_id']}" in swapped.output and "holds key" in swapped.output
    key_file.write_bytes(original)
    _decide(1500)
    assert _audit("checkpoint").exit_code == 0


def test_rotation_keeps_the_chain_of_keys(env: Path, db_url: str, tmp_path: Path) -> None:
    _decide()
    _checkpoint()
    old_pub = _public_key(tmp_path / "old.pub")
    rotated = _audit("rotate-key", "--reason", "yearly rotation")
    assert rotated.exit_code == 0, rotated.output
    cp = json.loads(rotated.stdout)
    assert cp["note"].count("\u2014 ") == 2  # signed by the new key and the old one
    new_pub = _public_key(tmp_path / "new.pub")
    assert new_pub.read_text() != old_pub.read_text()
    _decide(1500)
    _checkpoint()
    for trusted in (old_pub, new_pub):
        result = _audit("verify", "--public-key", str(trusted))
        assert result.exit_code == 0, result.output
        assert "key rotation: event" in result.stdout and "signed by both keys" in result.stdout
    # The old key file is kept aside; the server signs with the new one.
    assert len(list(env.glob("ledger-signing-key.*.retired.pem"))) == 1


def test_rotation_after_a_lost_key_must_be_accepted_explicitly(
    env: Path, db_url: str, tmp_path: Path
) -> None:
    _decide()
    _checkpoint()
    old_pub = _public_key(tmp_path / "old.pub")
    (env / KEY_FILE).unlink()
    not_lost = _audit("rotate-key", "--reason", "x")
    assert not_lost.exit_code == 2 and "is missing" in not_lost.output
    rotated = _audit("rotate-key", "--reason", "laptop stolen", "--lost-key")
    assert rotated.exit_code == 0, rotated.output
    new_pub = _public_key(tmp_path / "new.pub")
    by_old = _audit("verify", "--public-key", str(old_pub))
    assert by_old.exit_code == 1
    assert "after the old key was lost" in by_old.stdout
    assert "no checkpoint signed by a trusted key vouches for that rotation" in by_old.stdout
    both = _audit("verify", "--public-key", str(old_pub), "--public-key", str(new_pub))
    assert both.exit_code == 0, both.output
    assert _audit("verify", "--public-key", str(new_pub)).exit_code == 0


def test_check_proof_with_state_moves_only_along_one_history(
    env: Path, db_url: str, tmp_path: Path
) -> None:
    _decide()
    first = _checkpoint()
    pub = _public_key(tmp_path / "ledger.pub")
    state = tmp_path / "state.json"
    decision = json.loads(runner.invoke(app, ["decide", "loan_approval", "--input", GOOD]).stdout)[
        "id"
    ]
    proof = tmp_path / "proof.json"
    assert _audit("prove", decision, "--out", str(proof)).exit_code == 0
    checked = _audit("check-proof", str(proof), "-k", str(pub), "--state", str(state))
    assert checked.exit_code == 0, checked.output
    remembered = json.loads(state.read_text())["size"]
    assert remembered > first["size"]
    _decide(1700)
    _checkpoint()
    assert _audit("prove", decision, "--out", str(proof)).exit_code == 0
    bare = _audit("check-proof", str(proof), "-k", str(pub), "--state", str(state))
    assert bare.exit_code == 1 and f"--since {remembered}" in bare.stdout
    assert _audit("prove", decision, "--out", str(proof), "--since", str(remembered)).exit_code == 0
    ok = _audit("check-proof", str(proof), "-k", str(pub), "--state", str(state))
    assert ok.exit_code == 0, ok.output
    assert json.loads(state.read_text())["size"] > remembered
    # A bundle whose consistency proof was tampered with is refused, and the state stays.
    before = state.read_text()
    bundle = json.loads(proof.read_text())
    bundle["consistency"]["old_size"] = json.loads(before)["size"]
    bundle["consistency"]["proof"] = ["00" * 32]
    bundle["checkpoint"] = json.loads(before)["checkpoint"] | {"size": 10_000}
    proof.write_text(json.dumps(bundle))
    bad = _audit("check-proof", str(proof), "-k", str(pub), "--state", str(state))
    assert bad.exit_code == 1 and state.read_text() == before


def test_init_sets_and_shows_a_unique_origin(env: Path, db_url: str, tmp_path: Path) -> None:
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 0 and "Ledger origin: warden.ledger/" in again.stdout
    origin = again.stdout.split("Ledger origin: ", 1)[1].split()[0]
    changed = runner.invoke(app, ["init", "--origin", "example.com/other"])
    assert changed.exit_code == 1 and "never changes" in changed.output
    vkey = _audit("public-key", "--note").stdout.strip()
    assert vkey.startswith(origin + "+")
    bad = runner.invoke(
        app,
        ["init", "--origin", "has space"],
        env={"WARDEN_HOME": str(tmp_path / "new"), "WARDEN_DB_URL": ""},
    )
    assert bad.exit_code == 1 and "must look like a URL" in bad.output
    assert SIGNER_FILE not in {p.name for p in env.iterdir()}  # nothing signed yet


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    remembered=st.integers(1, 60),
    at=st.integers(1, 60),
    truncate=st.booleans(),
    drop_checkpoints=st.booleans(),
)
def test_state_catches_any_change_before_the_remembered_size(
    db: sa.Engine,
    tmp_path: Path,
    remembered: int,
    at: int,
    truncate: bool,
    drop_checkpoints: bool,
) -> None:
    """Whatever happens from event `at` on — a rewrite with a perfect chain, or a cut — the
    auditor who remembers the checkpoint of size `remembered` sees it exactly when at <= it."""
    key = load_or_create(tmp_path / "home")
    with db.connect() as conn:
        built = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()
    if not built:
        lh.build(db, key, [20, 40, 60])
    snap = lh.Snapshot(db)
    leaves = [bytes.fromhex(row["leaf_hash"]) for row in sorted(snap.events, key=_seq)]
    state = Remembered(None, remembered, merkle.root(leaves[:remembered]), {})
    try:
        lh.truncate_and_rewrite(db, snap, at, 0 if truncate else 61 - at)
        if drop_checkpoints:
            _sql_engine(db, checkpoints.delete(), ledger_tiles.delete())
        report = verify_ledger(db, [key.public], state=state)
        by_state = [
            p
            for p in report.problems
            if (p.checkpoint == remembered and p.seq != 1) or p.kind is BreakKind.FORKED
        ]
        if at <= remembered:
            assert not report.ok
            assert by_state, report.problems
            assert by_state[0].kind in (BreakKind.FORKED, BreakKind.TRUNCATED)
        else:
            assert not [p for p in report.problems if p.kind is BreakKind.FORKED]
            assert not [
                p
                for p in report.problems
                if p.kind is BreakKind.TRUNCATED
                and p.checkpoint == remembered
                and "since you last verified" in p.message
            ]
    finally:
        snap.restore()


def _seq(row: dict[str, Any]) -> int:
    return int(row["seq"])


def _sql_engine(db: sa.Engine, *statements: Any) -> None:
    with db.begin() as conn:
        for statement in statements:
            conn.execute(statement)
