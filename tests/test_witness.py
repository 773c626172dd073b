"""C2SP tlog-witness both ways: Warden's witness server, and the ledger submitting to witnesses.

Two real witnesses listen on loopback. One has already cosigned a forked history of the same log
(same origin, same key, other events) and so refuses the real one; verify then reports exactly
how many witnesses vouch for the ledger.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.testclient import TestClient
from typer.testing import CliRunner

from tests import ledger_helpers as lh
from warden.cli.app import app
from warden.ledger import identity, note
from warden.ledger.checkpoint import make_checkpoint
from warden.ledger.cosigner import Witness, create_app
from warden.ledger.keys import SigningKey
from warden.ledger.verify import BreakKind, verify_ledger
from warden.ledger.witnessing import Submitter, WitnessTarget, parse_targets
from warden.store.database import create_engine, migrate
from warden.store.schema import checkpoint_cosignatures


class Running:
    """A witness served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, witness: Witness) -> None:
        self.witness = witness
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(witness), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "the witness did not start"

    @property
    def target(self) -> WitnessTarget:
        return WitnessTarget(self.url, self.witness.verifier)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def log(db: sa.Engine, warden_home: Path) -> tuple[SigningKey, str]:
    origin = identity.ensure_origin(db, "ledger.example.com/loans")
    return identity.signing_key(db, warden_home), origin


def _witness(tmp_path: Path, name: str, key: SigningKey, origin: str) -> Witness:
    folder = tmp_path / name
    folder.mkdir()
    return Witness(
        name,
        Ed25519PrivateKey.generate(),
        [note.Verifier(origin, key.public.raw)],
        folder / "witness.sqlite",
    )


@pytest.fixture
def witnesses(tmp_path: Path, log: tuple[SigningKey, str]) -> Iterator[tuple[Running, Running]]:
    key, origin = log
    first = Running(_witness(tmp_path, "w1.example", key, origin))
    second = Running(_witness(tmp_path, "w2.example", key, origin))
    yield first, second
    first.stop()
    second.stop()


def test_one_witness_saw_a_fork_and_refuses(
    db: sa.Engine,
    db_url: str,
    tmp_path: Path,
    log: tuple[SigningKey, str],
    witnesses: tuple[Running, Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, origin = log
    honest, forked = witnesses
    # Someone with the key shows the second witness another history of the same log first.
    fork = create_engine(f"sqlite:///{tmp_path / 'fork.db'}")
    migrate(fork)
    identity.ensure_origin(fork, origin)
    lh.record(fork, 1000, 1012)
    (tmp_path / "copy").mkdir()
    fork_cp = make_checkpoint(fork, SigningKey(key.key, tmp_path / "copy" / "key.pem"))
    assert Submitter(fork, [forked.target]).submit(fork_cp) == {"w2.example": "cosigned"}
    fork.dispose()

    lh.record(db, 0, 20)
    cp = make_checkpoint(db, key)
    submitter = Submitter(db, [honest.target, forked.target])
    outcome = submitter.submit(cp)
    assert outcome["w1.example"] == "cosigned"
    assert outcome["w2.example"].startswith("refused (422)")
    assert "not consistent with the one cosigned at size 12" in outcome["w2.example"]

    both = [honest.witness.verifier, forked.witness.verifier]
    report = verify_ledger(db, [key.public], cosigners=both, min_cosigners=2)
    assert not report.ok and report.first is not None
    assert report.first.kind is BreakKind.UNVOUCHED
    assert "no checkpoint is cosigned by 2 of the 2" in report.first.message
    assert report.witnesses == {"w1.example": cp.size}
    one = verify_ledger(db, [key.public], cosigners=both, min_cosigners=1)
    assert one.ok, one.problems
    assert one.cosigned == cp.size

    # The ledger grows: the honest witness gets a consistency proof from what it holds.
    lh.record(db, 20, 45)
    later = make_checkpoint(db, key)
    assert submitter.submit(later)["w1.example"] == "cosigned"
    assert honest.witness.latest(origin) == (later.size, later.root_bytes)
    # Deleting the cosignatures from the database loses the witnesses' word: verify says so,
    with db.begin() as conn:
        conn.execute(checkpoint_cosignatures.delete())
    gone = verify_ledger(db, [key.public], cosigners=both[:1], min_cosigners=1)
    assert gone.first is not None and gone.first.kind is BreakKind.UNVOUCHED
    # and asking again starts from old size 0: the witness answers 409 with its size, the
    # submitter proves consistency from there.
    assert Submitter(db, [honest.target]).submit(later) == {"w1.example": "cosigned"}

    monkeypatch.setenv("WARDEN_DB_URL", db_url)
    args = ["audit", "verify", "--witness-key", both[0].vkey(), "--witness-key", both[1].vkey()]
    result = CliRunner().invoke(app, [*args, "--min-witnesses", "2"])
    assert result.exit_code == 1 and "unvouched" in result.stdout
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"checkpoint {later.size} is cosigned" in result.stdout


def test_a_rewritten_log_is_not_cosigned(
    db: sa.Engine,
    tmp_path: Path,
    log: tuple[SigningKey, str],
    witnesses: tuple[Running, Running],
) -> None:
    """DBA, server and key: rewrite the history and re-sign it. The witness refuses."""
    key, origin = log
    honest, _ = witnesses
    lh.record(db, 0, 30)
    cp = make_checkpoint(db, key)
    assert Submitter(db, [honest.target]).submit(cp) == {"w1.example": "cosigned"}
    snap = lh.Snapshot(db)
    lh.truncate_and_rewrite(db, snap, 10, 40)
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM checkpoints"))
        conn.execute(sa.text("DELETE FROM ledger_tiles"))
    (tmp_path / "stolen").mkdir()
    resigned = make_checkpoint(db, SigningKey(key.key, tmp_path / "stolen" / "key.pem"))
    outcome = Submitter(db, [honest.target]).submit(resigned)
    assert outcome["w1.example"].startswith("refused (422)")
    assert honest.witness.latest(origin) == (cp.size, cp.root_bytes)


def test_witness_protocol_errors(tmp_path: Path) -> None:
    log_key = Ed25519PrivateKey.generate()
    origin = "log.example/a"
    witness = Witness(
        "w.example",
        Ed25519PrivateKey.generate(),
        [note.Verifier(origin, note.raw_public(log_key.public_key()))],
        tmp_path / "w.sqlite",
    )
    client = TestClient(create_app(witness))

    def signed(size: int, root: bytes, by: Ed25519PrivateKey = log_key, at: str = origin) -> str:
        body = note.checkpoint_body(at, size, root)
        return note.Note(body, (note.sign_line(body, at, by),)).text()

    def post(text: str) -> tuple[int, str, str]:
        response = client.post("/add-checkpoint", content=text.encode())
        return response.status_code, response.text, response.headers["content-type"]

    root = b"\x05" * 32
    assert post(f"old 0\n\n{signed(3, root)}")[0] == 200
    assert post(f"old 0\n\n{signed(4, root)}")[:2] == (409, "3\n")
    assert "text/x.tlog.size" in post(f"old 0\n\n{signed(4, root)}")[2]
    other_root = b"\x06" * 32
    assert post(f"old 3\n\n{signed(3, other_root)}")[:2] == (409, "3\n")  # same size, new root
    assert post(f"old 3\n\n{signed(3, root)}")[0] == 200  # the same checkpoint again
    bad_proof = base64.b64encode(b"\x01" * 32).decode()
    assert post(f"old 3\n{bad_proof}\n\n{signed(5, root)}")[0] == 422
    assert post(f"old 9\n\n{signed(5, root)}")[0] == 400
    assert post(f"old 0\n\n{signed(5, root, at='other.example/log')}")[0] == 404
    assert post(f"old 3\n\n{signed(5, root, by=Ed25519PrivateKey.generate())}")[0] == 403
    for junk in ("", "old 03\n\n" + signed(5, root), "old 3\nnot base64!\n\n" + signed(5, root)):
        assert post(junk)[0] == 400
    assert post("old 3\n\nexample\n")[0] == 400
    assert client.get("/public-key").text.strip() == witness.verifier.vkey()
    assert witness.latest(origin) == (3, root)


def test_witness_configuration_is_checked() -> None:
    key = note.Verifier("w.example", b"\x01" * 32, note.COSIGNATURE_V1)
    log_key = note.Verifier("w.example", b"\x01" * 32)
    found = parse_targets(f"http://127.0.0.1:9/ {key.vkey()}, https://w2.example {key.vkey()}")
    assert [t.url for t in found] == ["http://127.0.0.1:9", "https://w2.example"]
    for bad in (
        "127.0.0.1 " + key.vkey(),
        "http://x",
        f"http://x {log_key.vkey()}",
    ):
        with pytest.raises(Exception, match="WARDEN_WITNESSES"):
            parse_targets(bad)


def test_with_witnesses_every_commit_is_checkpointed_and_cosigned(
    db: sa.Engine,
    warden_home: Path,
    log: tuple[SigningKey, str],
    witnesses: tuple[Running, Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from warden.ledger.checkpoint import head_size
    from warden.ledger.checkpointer import Checkpointer, start_checkpointer

    honest, _ = witnesses
    monkeypatch.setenv("WARDEN_WITNESSES", f"{honest.url} {honest.witness.verifier.vkey()}")
    configured = Checkpointer.from_env(db, warden_home)
    assert (configured.every, configured.poll) == (1, 0.25)  # a few a second at most

    checkpointer = start_checkpointer(db, warden_home, poll=0.05)
    try:
        for start in (0, 3, 4):  # small commits, far below the 1,000-event default
            lh.record(db, start, start + (3 if start == 0 else 1))
            with db.connect() as conn:
                size = head_size(conn)
            deadline = time.monotonic() + 30
            while honest.witness.latest(log[1]) is None or honest.witness.latest(log[1])[0] < size:
                assert time.monotonic() < deadline, "the commit was not checkpointed and witnessed"
                time.sleep(0.02)
    finally:
        checkpointer.stop()
    report = verify_ledger(db, [log[0].public], cosigners=[honest.witness.verifier])
    assert report.ok, report.problems
    assert report.cosigned == size == 5
