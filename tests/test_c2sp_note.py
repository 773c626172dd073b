"""Warden's checkpoints as C2SP signed notes, checked by code written here from the specs
(c2sp.org/signed-note, tlog-checkpoint, tlog-cosignature), not by Warden's own, and against the
published example of Go's golang.org/x/mod/sumdb/note (BSD-3-Clause; used as data only)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from typer.testing import CliRunner

from warden.cli.app import app
from warden.ledger import note

runner = CliRunner()
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


# -- an independent reading of the specs -------------------------------------------------------


def spec_vkey(vkey: str) -> tuple[str, bytes, int, bytes]:
    """name, key ID, type, public key of a verifier key; the key ID is recomputed and checked."""
    name, key_hash, rest = vkey.split("+", 2)
    material = base64.b64decode(rest)
    kind, public = material[0], material[1:]
    expected = hashlib.sha256(name.encode() + b"\x0a" + bytes([kind]) + public).digest()[:4]
    assert expected.hex() == key_hash, "the key hash is SHA-256(name || 0x0A || type || key)[:4]"
    return name, expected, kind, public


def spec_open(text: str, vkey: str) -> str:
    """The body of a signed note if a signature line of `vkey` verifies; raises otherwise."""
    name, key_id, kind, public = spec_vkey(vkey)
    assert kind == 0x01
    body, _, signatures = text.rpartition("\n\n")
    body += "\n"
    for line in signatures.rstrip("\n").split("\n"):
        dash, line_name, blob = line.split(" ")
        assert dash == "\u2014"
        raw = base64.b64decode(blob)
        if line_name == name and raw[:4] == key_id:
            Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], body.encode())
            return body
    raise AssertionError(f"no signature by {name}")


def spec_cosigned_at(body: str, line: str, name: str, public: bytes) -> int:
    _, line_name, blob = line.rstrip("\n").split(" ")
    raw = base64.b64decode(blob)
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    assert line_name == name and raw[:4] == key_id and len(raw) == 4 + 8 + 64
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    message = f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()
    Ed25519PublicKey.from_public_bytes(public).verify(raw[12:], message)
    return int(timestamp)


# -- the tests ---------------------------------------------------------------------------------


def test_go_sumdb_note_example() -> None:
    """Warden reads Go's example and, with its key, writes the very same bytes."""
    verifier = note.parse_vkey(GO_VKEY)
    parsed = note.parse_note(GO_NOTE)
    assert parsed.body == GO_TEXT and parsed.signed_by(verifier)
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    line = note.sign_line(GO_TEXT, "PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))
    assert note.Note(GO_TEXT, (line,)).text() == GO_NOTE
    assert spec_open(GO_NOTE, GO_VKEY) == GO_TEXT
    assert not note.parse_note(GO_NOTE.replace("cryptography", "cryptographY")).signed_by(verifier)
    # transparency-dev/formats' test key, whose base64 holds a '+' (Apache-2.0, data only)
    assert (
        note.parse_vkey("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6").name == "TEST"
    )
    for bad in (GO_VKEY.replace("c74f20a3", "c74f20a4"), "PeterNeumann+c74f20a3", "a b+00+AA=="):
        with pytest.raises(note.NoteError):
            note.parse_vkey(bad)


def test_checkpoint_note_verifies_with_an_independent_implementation(
    points_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_CONFIG", str(points_dir))
    monkeypatch.setenv("WARDEN_DB_URL", f"sqlite:///{tmp_path / 'w.db'}")
    made = runner.invoke(app, ["init", "--origin", "ledger.example.com/loans"])
    assert made.exit_code == 0, made.output
    data = '{"amount": 1000, "income": 5000, "credit_score": 800}'
    assert runner.invoke(app, ["decide", "loan_approval", "--input", data]).exit_code == 0
    cp = json.loads(runner.invoke(app, ["audit", "checkpoint"]).stdout)
    vkey = runner.invoke(app, ["audit", "public-key", "--note"]).stdout.strip()
    assert vkey.startswith("ledger.example.com/loans+")

    body = spec_open(cp["note"], vkey)
    origin, size, root, end = body.split("\n")
    assert (origin, int(size), end) == ("ledger.example.com/loans", cp["size"], "")
    assert base64.b64decode(root).hex() == cp["root"]
    forged = cp["note"].replace(f"\n{size}\n", f"\n{int(size) + 1}\n")
    with pytest.raises(InvalidSignature):
        spec_open(forged, vkey)


def test_cosignature_matches_the_spec() -> None:
    witness = Ed25519PrivateKey.generate()
    public = note.raw_public(witness.public_key())
    body = note.checkpoint_body("example.com/log", 20852163, b"\x07" * 32)
    line = note.cosign(body, "witness.example/w1", witness, 1679315147)
    assert spec_cosigned_at(body, line.line(), "witness.example/w1", public) == 1679315147
    verifier = note.Verifier("witness.example/w1", public, note.COSIGNATURE_V1)
    assert verifier.vkey().split("+")[2].startswith("B")  # base64 of 0x04 || key
    assert note.parse_vkey(verifier.vkey()) == verifier
    signed = note.Note(body, (line,))
    assert note.cosigned_at(signed, verifier) == 1679315147
    other = note.Note(note.checkpoint_body("example.com/log", 20852164, b"\x07" * 32), (line,))
    assert note.cosigned_at(other, verifier) is None


def test_checkpoint_bodies_are_parsed_strictly() -> None:
    good = note.checkpoint_body("example.com/log", 5, b"\x01" * 32)
    assert note.parse_checkpoint(good).size == 5
    root = base64.b64encode(b"\x01" * 32).decode()
    for bad in (
        f"example.com/log\n05\n{root}\n",
        f"example.com/log\n-5\n{root}\n",
        f"example.com/log\n5\n{root}",
        f"\n5\n{root}\n",
        "example.com/log\n5\nAAAA\n",
        f"example.com/log\n5\n{root}\n\n",
    ):
        with pytest.raises(note.NoteError):
            note.parse_checkpoint(bad)
