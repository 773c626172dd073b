"""Asking C2SP tlog-witnesses to cosign Warden's checkpoints, and keeping their cosignatures.

Witnesses are configured in WARDEN_WITNESSES as `URL VKEY` pairs, separated by commas or new
lines (URL: the witness's submission prefix; VKEY: its cosigner key, `name+hash+base64`). Each
checkpoint goes to each witness with the consistency proof from the size the witness last
cosigned; a witness that holds another size says so (409) and the proof is rebuilt once from
there. A witness that refuses — because the ledger it saw before is not a prefix of this one —
leaves the checkpoint without its cosignature, which `warden audit verify --witness-key`
then reports.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa

from warden.errors import InvalidRequest
from warden.ledger import note
from warden.ledger.checkpoint import Checkpoint
from warden.ledger.tree import LedgerTree
from warden.store.database import write_connection
from warden.store.schema import checkpoint_cosignatures

log = logging.getLogger(__name__)

WITNESSES_ENV = "WARDEN_WITNESSES"


@dataclass(frozen=True)
class WitnessTarget:
    url: str
    verifier: note.Verifier

    @property
    def name(self) -> str:
        return self.verifier.name


def parse_targets(text: str) -> list[WitnessTarget]:
    found = []
    for entry in text.replace("\n", ",").split(","):
        parts = entry.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].startswith(("http://", "https://")):
            raise InvalidRequest(
                f"{WITNESSES_ENV} entry {entry.strip()!r} must be `URL VKEY`, e.g. "
                "`https://witness.example/ witness.example+1a2b3c4d+BASE64`",
                field=WITNESSES_ENV,
            )
        try:
            verifier = note.parse_vkey(parts[1])
        except note.NoteError as exc:
            raise InvalidRequest(f"{WITNESSES_ENV}: {exc}", field=WITNESSES_ENV) from None
        if verifier.kind != note.COSIGNATURE_V1:
            raise InvalidRequest(
                f"{WITNESSES_ENV}: {verifier.name} is not a cosigner key (type 0x04)",
                field=WITNESSES_ENV,
            )
        found.append(WitnessTarget(parts[0].rstrip("/"), verifier))
    return found


def from_env() -> list[WitnessTarget]:
    return parse_targets(os.environ.get(WITNESSES_ENV, ""))


def cosigned_sizes(conn: sa.Connection) -> dict[str, int]:
    rows = conn.execute(
        sa.select(
            checkpoint_cosignatures.c.witness, sa.func.max(checkpoint_cosignatures.c.size)
        ).group_by(checkpoint_cosignatures.c.witness)
    ).all()
    return {name: int(size) for name, size in rows}


@dataclass
class Submitter:
    db: sa.Engine
    targets: list[WitnessTarget]
    tree: LedgerTree = field(default_factory=LedgerTree)
    timeout: float = 10.0
    _known: dict[str, int] | None = None

    def submit(self, cp: Checkpoint) -> dict[str, str]:
        """Hand `cp` to every witness; what happened at each, by witness name."""
        if self._known is None:
            with self.db.connect() as conn:
                self._known = cosigned_sizes(conn)
        results = {}
        with httpx.Client(timeout=self.timeout) as client:
            for target in self.targets:
                try:
                    results[target.name] = self._one(client, target, cp)
                except (httpx.HTTPError, ValueError) as exc:
                    results[target.name] = f"failed: {exc}"
                if not results[target.name].startswith("cosigned"):
                    log.warning("witness %s: %s", target.name, results[target.name])
        return results

    def _one(self, client: httpx.Client, target: WitnessTarget, cp: Checkpoint) -> str:
        assert self._known is not None
        if cp.note is None:
            return "failed: the checkpoint has no signed note"
        old = min(self._known.get(target.name, 0), cp.size)
        for _ in range(2):
            response = client.post(f"{target.url}/add-checkpoint", content=self._body(cp, old))
            if response.status_code == 409 and "x.tlog.size" in response.headers.get(
                "content-type", ""
            ):
                held = int(response.text.strip() or "0")
                self._known[target.name] = held
                if held > cp.size:
                    return (
                        f"refused: the witness holds a checkpoint of {held} events, more than "
                        f"this ledger's {cp.size}: the ledger was truncated or forked"
                    )
                old = held
                continue
            break
        if response.status_code != 200:
            return f"refused ({response.status_code}): {response.text.strip()}"
        return self._store(target, cp, response.text)

    def _body(self, cp: Checkpoint, old: int) -> bytes:
        proof: list[bytes] = []
        if 0 < old < cp.size:
            with self.db.connect() as conn:
                proof = self.tree.consistency(conn, old, cp.size)
        lines = [f"old {old}", *(base64.b64encode(p).decode() for p in proof)]
        return ("\n".join(lines) + "\n\n" + (cp.note or "")).encode()

    def _store(self, target: WitnessTarget, cp: Checkpoint, text: str) -> str:
        assert self._known is not None and cp.note is not None
        body = note.parse_note(cp.note).body
        for line in text.splitlines():
            try:
                signature = note.parse_signature_line(line)
            except note.NoteError:
                continue
            if note.cosigned_at(note.Note(body, (signature,)), target.verifier) is None:
                continue
            try:
                with write_connection(self.db) as conn, conn.begin():
                    conn.execute(
                        checkpoint_cosignatures.insert().values(
                            size=cp.size,
                            witness=target.name,
                            line=signature.line(),
                            received_at=datetime.now(UTC),
                        )
                    )
            except sa.exc.IntegrityError:
                pass  # cosigned before (a retry): the first one stands
            self._known[target.name] = cp.size
            return "cosigned"
        return "failed: the witness answered without a valid cosignature"
