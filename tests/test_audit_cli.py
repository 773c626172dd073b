"""`warden audit` end to end through the real CLI, on both backends."""

from __future__ import annotations

import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from warden.cli.app import app
from warden.ledger.keys import KEY_FILE
from warden.store.database import create_engine
from warden.store.schema import events

GOOD = '{"amount": 1000, "income": 5000, "credit_score": 800}'
runner = CliRunner()


@pytest.fixture
def env(points_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = points_dir.parent / "home"
    monkeypatch.setenv("WARDEN_CONFIG", str(points_dir))
    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    monkeypatch.setenv("WARDEN_HOME", str(home))
    monkeypatch.delenv("WARDEN_WITNESS", raising=False)
    return home


def _decide(amount: int = 1000) -> str:
    data = GOOD.replace("1000", str(amount))
    result = runner.invoke(app, ["decide", "loan_approval", "--input", data])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["id"])


def _audit(*args: str) -> object:
    return runner.invoke(app, ["audit", *args])


def test_verify_checkpoint_prove_and_check_offline(
    env: Path, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [_decide(1000 + i) for i in range(3)]
    assert _audit("verify").exit_code == 0  # no checkpoint yet, no key needed

    made = _audit("checkpoint")
    assert made.exit_code == 0, made.output
    cp = json.loads(made.stdout)
    assert cp["size"] >= 3 and cp["origin"] == "warden.ledger/v1"
    key_file = env / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    ok = _audit("verify")
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.stdout and "1 signed and matching" in ok.stdout

    pem = tmp_path / "warden.pub"
    assert _audit("public-key", "--out", str(pem)).exit_code == 0
    assert pem.read_text().startswith("-----BEGIN PUBLIC KEY-----")

    proof = tmp_path / "proof.json"
    later = _decide(2000)  # not yet covered: `prove` signs a new checkpoint for it
    for decision in (ids[1], later):
        made = _audit("prove", decision, "--out", str(proof))
        assert made.exit_code == 0, made.output
        # The auditor's laptop: no reachable database, no Warden home, only file and key.
        monkeypatch.setenv("WARDEN_DB_URL", "postgresql+psycopg://nobody@127.0.0.1:9/none")
        monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "empty"))
        checked = _audit("check-proof", str(proof), "--public-key", str(pem))
        monkeypatch.setenv("WARDEN_DB_URL", db_url)
        monkeypatch.setenv("WARDEN_HOME", str(env))
        assert checked.exit_code == 0, checked.output
        assert f"decision {decision}" in checked.stdout
        assert "decision.created" in checked.stdout

    bundle = json.loads(proof.read_text())
    bundle["events"][0]["body"] = bundle["events"][0]["body"].replace("approve", "decline")
    proof.write_text(json.dumps(bundle))
    bad = _audit("check-proof", str(proof), "--public-key", str(pem))
    assert bad.exit_code == 1 and "INVALID" in bad.stdout and "altered" in bad.stdout


def test_verify_names_the_first_break(env: Path, db_url: str) -> None:
    for i in range(4):
        _decide(1000 + i)
    assert _audit("checkpoint").exit_code == 0
    db = create_engine(db_url)
    try:
        with db.begin() as conn:
            seq, body = conn.execute(
                sa.select(events.c.seq, events.c.body).where(events.c.body.contains("1002"))
            ).one()
            conn.execute(
                events.update()
                .where(events.c.seq == seq)
                .values(body=body.replace('"amount":1002', '"amount":9002'))
            )
    finally:
        db.dispose()
    broken = _audit("verify")
    assert broken.exit_code == 1
    assert f"BROKEN at event {seq}: modified" in broken.stdout
    as_json = json.loads(_audit("verify", "--json").stdout)
    assert as_json["ok"] is False
    assert as_json["first_break"]["kind"] == "modified" and as_json["first_break"]["seq"] == seq


def test_consistency_between_checkpoints(env: Path) -> None:
    _decide()
    old = json.loads(_audit("checkpoint").stdout)["size"]
    for i in range(5):
        _decide(3000 + i)
    new = json.loads(_audit("checkpoint").stdout)["size"]
    result = _audit("consistency", str(old), str(new))
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["consistent"] and body["verified"] and body["proof"]
    missing = _audit("consistency", str(old), "99999")
    assert missing.exit_code == 2 and "no checkpoint of size 99999" in missing.output
    listed = json.loads(_audit("checkpoints").stdout)
    assert [c["size"] for c in listed] == [new, old]


def test_export_jsonl_and_parquet(env: Path, tmp_path: Path) -> None:
    for i in range(5):
        _decide(1000 + i)
    target = tmp_path / "out" / "events.jsonl"
    result = _audit("export", "--out", str(target), "--point", "loan_approval")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert all(row["point"] == "loan_approval" for row in lines)
    assert sum(row["type"] == "decision.created" for row in lines) == 5
    assert all(row["ts"] == json.loads(row["body"])["ts"] for row in lines)
    manifest = json.loads((tmp_path / "out" / "events.jsonl.manifest.json").read_text())
    assert manifest["events"] == len(lines) and manifest["checkpoint"]["size"] >= 7
    empty = _audit("export", "--out", str(tmp_path / "none.jsonl"), "--since", "2999-01-01")
    assert empty.exit_code == 0 and (tmp_path / "none.jsonl").read_text() == ""
    bad = _audit("export", "--out", str(tmp_path / "x.jsonl"), "--since", "yesterday")
    assert bad.exit_code == 2 and "ISO" in bad.output
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    parquet = tmp_path / "events.parquet"
    assert _audit("export", "--out", str(parquet)).exit_code == 0
    table = pq.read_table(parquet)
    assert table.num_rows >= 5 and "body" in table.column_names


def test_witness_file_and_webhook(env: Path, tmp_path: Path) -> None:
    _decide()
    witness_file = tmp_path / "witness.jsonl"
    assert _audit("checkpoint", "--witness", str(witness_file)).exit_code == 0
    received: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _decide(1500)
        url = f"http://127.0.0.1:{server.server_address[1]}/witness"
        result = _audit("checkpoint", "--witness", url)
        assert result.exit_code == 0, result.output
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads(received[0])["size"] == json.loads(result.stdout)["size"]
    ok = _audit("verify", "--witness", str(witness_file))
    assert ok.exit_code == 0 and "witnessed: 1 checkpoints match" in ok.stdout
    down = _audit("checkpoint", "--witness", url)
    assert down.exit_code == 1 and "did not answer" in down.output


def test_clear_errors(env: Path, tmp_path: Path) -> None:
    assert "nothing to sign" in _audit("checkpoint").output
    assert "no events for decision" in _audit("prove", "nope").output
    missing = _audit("check-proof", str(tmp_path / "x.json"), "--public-key", str(tmp_path))
    assert missing.exit_code == 2 and "cannot read" in missing.output
    _decide()
    assert _audit("checkpoint").exit_code == 0
    (env / KEY_FILE).chmod(0o644)
    loose = _audit("public-key")
    assert loose.exit_code == 2 and "chmod 600" in loose.output
