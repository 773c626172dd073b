"""A small C2SP tlog-witness: `warden witness serve`, which any organisation can host.

It knows the logs it witnesses by their verifier keys (origin+keyhash+base64), keeps the latest
checkpoint it cosigned for each in SQLite, and answers `POST /add-checkpoint` as c2sp.org/
tlog-witness says: it checks the log's signature, that the old size is the one it holds, and the
RFC 6962 consistency proof from there, then cosigns with its own Ed25519 key (cosignature/v1).
A log that shows it a history which does not extend what it cosigned before gets no
cosignature — so two views of one log cannot both be witnessed.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from warden.ledger import note
from warden.ledger.merkle import verify_consistency

KEY_FILE = "witness-key.pem"
STATE_FILE = "witness.sqlite"
MAX_BODY = 64 * 1024
MAX_PROOF = 63


class Refused(Exception):
    def __init__(self, status: int, message: str, content_type: str = "text/plain") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.content_type = content_type


@dataclass(frozen=True)
class Submission:
    old: int
    proof: list[bytes]
    signed: note.Note
    checkpoint: note.CheckpointBody


def parse_submission(data: bytes) -> Submission:
    """The add-checkpoint body: `old N`, proof lines, a blank line, then the signed checkpoint."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8") from None
    head, sep, rest = text.partition("\n\n")
    if not sep:
        raise Refused(400, "the body needs a blank line between the proof and the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    size_text = first[4:]
    if not first.startswith("old ") or not size_text.isdigit() or str(int(size_text)) != size_text:
        raise Refused(400, "the first line must be `old <size>` in decimal without leading zeros")
    if len(lines) - 1 > MAX_PROOF:
        raise Refused(400, f"at most {MAX_PROOF} consistency proof lines")
    try:
        proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
    except (binascii.Error, ValueError):
        raise Refused(400, "a consistency proof line is not base64") from None
    if any(len(p) != 32 for p in proof):
        raise Refused(400, "a consistency proof hash is not 32 bytes")
    try:
        signed = note.parse_note(rest)
        body = note.parse_checkpoint(signed.body)
    except note.NoteError as exc:
        raise Refused(400, f"the checkpoint is malformed: {exc}") from None
    return Submission(int(size_text), proof, signed, body)


class Witness:
    """The witness's state and decision; the HTTP layer only translates."""

    def __init__(
        self, name: str, key: Ed25519PrivateKey, logs: Sequence[note.Verifier], db: Path
    ) -> None:
        self.name = name
        self.key = key
        self.logs: dict[str, list[note.Verifier]] = {}
        for log in logs:
            self.logs.setdefault(log.name, []).append(log)
        self.db = db
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS checkpoints (origin TEXT PRIMARY KEY, size INTEGER "
                "NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL, updated_at REAL NOT NULL)"
            )

    @property
    def verifier(self) -> note.Verifier:
        return note.Verifier(self.name, note.raw_public(self.key.public_key()), note.COSIGNATURE_V1)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, timeout=30, isolation_level=None)

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT size, root FROM checkpoints WHERE origin = ?", (origin,)
            ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def add(self, submission: Submission, now: float | None = None) -> str:
        """Check a submission and cosign it; Refused says which HTTP status and why."""
        body = submission.checkpoint
        trusted = self.logs.get(body.origin)
        if trusted is None:
            raise Refused(404, f"unknown log {body.origin!r}")
        if not any(submission.signed.signed_by(v) for v in trusted):
            raise Refused(403, "no signature from a known key of this log verifies")
        if submission.old > body.size:
            raise Refused(400, f"old size {submission.old} is larger than the checkpoint's")
        with self._lock, self._connect() as conn:  # check and store atomically
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT size, root FROM checkpoints WHERE origin = ?", (body.origin,)
            ).fetchone()
            size, root = (int(row[0]), bytes(row[1])) if row else (0, b"")
            if submission.old != size:
                conn.execute("ROLLBACK")
                raise Refused(409, f"{size}\n", "text/x.tlog.size")
            if size == 0:
                if submission.proof:
                    conn.execute("ROLLBACK")
                    raise Refused(400, "the proof must be empty when the old size is 0")
            elif size == body.size:
                if root != body.root:
                    conn.execute("ROLLBACK")
                    raise Refused(409, f"{size}\n", "text/x.tlog.size")
            elif not verify_consistency(size, body.size, root, body.root, submission.proof):
                conn.execute("ROLLBACK")
                raise Refused(
                    422, f"the checkpoint is not consistent with the one cosigned at size {size}"
                )
            conn.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT(origin) DO UPDATE "
                "SET size = excluded.size, root = excluded.root, note = excluded.note, "
                "updated_at = excluded.updated_at",
                (body.origin, body.size, body.root, submission.signed.text(), time.time()),
            )
            conn.execute("COMMIT")
        moment = int(now if now is not None else time.time())
        return note.cosign(submission.signed.body, self.name, self.key, moment).line()


def create_app(witness: Witness) -> Starlette:
    async def add_checkpoint(request: Request) -> Response:
        data = await request.body()
        if len(data) > MAX_BODY:
            return PlainTextResponse("the body is too large\n", status_code=413)
        try:
            line = witness.add(parse_submission(data))
        except Refused as refused:
            text = refused.message if refused.message.endswith("\n") else refused.message + "\n"
            return PlainTextResponse(
                text, status_code=refused.status, media_type=refused.content_type
            )
        return PlainTextResponse(line)

    async def public_key(request: Request) -> Response:
        return PlainTextResponse(witness.verifier.vkey() + "\n")

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/public-key", public_key, methods=["GET"]),
        ]
    )
