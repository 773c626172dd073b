"""Changing the ledger's signing key on purpose, so that the chain of keys verifies.

The rotation is an event in the ledger (`ledger.key_rotated`, naming both public keys and the
old key's last checkpoint), and the first checkpoint over it is signed by the new key and — when
the old key is still at hand — by the old one too. An auditor who trusts either key then follows
the chain (see `warden.ledger.trust`). After a lost key the event says so, and an auditor must
accept the new key explicitly.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from warden.errors import Conflict
from warden.ledger import checkpoint as checkpoints
from warden.ledger import identity, keys
from warden.ledger.chain import EventDraft
from warden.ledger.checkpoint import Checkpoint
from warden.ledger.keys import PublicKey, SigningKey
from warden.ledger.trust import ROTATED
from warden.store.recorder import Change, Recorder
from warden.store.schema import ledger_keys

NEXT_FILE = "ledger-signing-key.next.pem"


@dataclass(frozen=True)
class Rotated:
    old_key_id: str
    new: PublicKey
    checkpoint: Checkpoint
    retired: Path | None


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def rotate(db: sa.Engine, home: Path, *, actor: str, reason: str, lost: bool = False) -> Rotated:
    """Record the rotation, sign its first checkpoint, then put the new key file in place."""
    path = keys.key_path(home)
    with db.connect() as conn:
        current = identity.active(conn)
        last = checkpoints.latest(conn)
    if current is None:
        raise Conflict("this ledger has no signing key yet: `warden init` creates the first one")
    old: SigningKey | None = None
    if lost:
        if path.exists() and keys.load_signing_key(path).public.key_id == current.key_id:
            raise Conflict(
                f"{path} still holds the ledger's key {current.key_id}: it is not lost; rotate "
                "without --lost-key so the old key vouches for the new one"
            )
        old_public = identity.public_from_row(current)
    else:
        old = identity.signing_key(db, home)
        old_public = old.public
    fresh = Ed25519PrivateKey.generate()
    staged = home / NEXT_FILE
    _write_private(staged, fresh)
    new = SigningKey(fresh, staged)
    payload: dict[str, Any] = {
        "old_key_id": old_public.key_id,
        "old_public_key": base64.b64encode(old_public.raw).decode(),
        "new_key_id": new.public.key_id,
        "new_public_key": base64.b64encode(new.public.raw).decode(),
        "lost": lost,
        "reason": reason,
        "last_checkpoint": {"size": last.size, "root": last.root} if last else None,
    }

    def apply(conn: sa.Connection) -> None:
        conn.execute(
            ledger_keys.update()
            .where(ledger_keys.c.key_id == old_public.key_id)
            .values(replaced_by=new.public.key_id)
        )
        identity.record(conn, new.public)

    recorder = Recorder(db)
    try:
        recorder.record(Change(events=[EventDraft(ROTATED, actor, payload)], apply=apply))
    finally:
        recorder.close()
    cp = checkpoints.make_checkpoint(db, new, also=(old,) if old is not None else ())
    retired = None
    if path.exists():
        retired = home / f"ledger-signing-key.{old_public.key_id}.retired.pem"
        os.replace(path, retired)
    os.replace(staged, path)
    return Rotated(old_public.key_id, new.public, cp, retired)
