"""Signed tree heads: the Merkle root over the first `size` events, the time, an Ed25519 signature.

A checkpoint commits Warden to a history. Anyone holding one (an auditor, a witness file, a
webhook receiver) can later demand a consistency proof that the current log extends it, so
rewriting the past is caught even by someone with full database access — as long as one copy of
an old checkpoint lives outside the database.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from warden.errors import InvalidRequest, NotFound
from warden.ledger.canonical import canonical_bytes
from warden.ledger.keys import PublicKey, SigningKey
from warden.ledger.tree import LedgerTree
from warden.store.database import write_connection
from warden.store.schema import checkpoints, ledger_head

ORIGIN = "warden.ledger/v1"


class EmptyLedger(InvalidRequest):
    """Nothing has been recorded yet, so there is no history to sign."""


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: str
    signed_at: str
    key_id: str
    signature: str

    def statement(self) -> bytes:
        """The exact bytes that are signed."""
        return canonical_bytes(
            {
                "origin": ORIGIN,
                "size": self.size,
                "root": self.root,
                "signed_at": self.signed_at,
                "key_id": self.key_id,
            }
        )

    def signed_by(self, key: PublicKey) -> bool:
        try:
            signature = base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        return key.key_id == self.key_id and key.verify(signature, self.statement())

    @property
    def root_bytes(self) -> bytes:
        return bytes.fromhex(self.root)

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": ORIGIN,
            "size": self.size,
            "root": self.root,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "checkpoint") -> Checkpoint:
        """Parse a checkpoint from JSON, naming the first field that is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a JSON object")
        if data.get("origin", ORIGIN) != ORIGIN:
            raise ValueError(f"{where}: origin is {data.get('origin')!r}, expected {ORIGIN!r}")
        fields = {"size": int, "root": str, "signed_at": str, "key_id": str, "signature": str}
        for name, kind in fields.items():
            value = data.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{where}: {name} must be a {kind.__name__}")
        root = data["root"]
        if len(root) != 64 or any(c not in "0123456789abcdef" for c in root):
            raise ValueError(f"{where}: root must be 64 lower-case hex digits")
        return cls(data["size"], root, data["signed_at"], data["key_id"], data["signature"])

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        return cls(int(row.size), row.root, row.signed_at, row.key_id, row.signature)


def sign(key: SigningKey, size: int, root: bytes, now: datetime | None = None) -> Checkpoint:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    unsigned = Checkpoint(
        size=size,
        root=root.hex(),
        signed_at=moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        key_id=key.public.key_id,
        signature="",
    )
    signature = base64.b64encode(key.sign(unsigned.statement())).decode()
    return Checkpoint(unsigned.size, unsigned.root, unsigned.signed_at, unsigned.key_id, signature)


def head_size(conn: sa.Connection) -> int:
    size = conn.execute(sa.select(ledger_head.c.seq).where(ledger_head.c.id == 1)).scalar()
    return int(size or 0)


def make_checkpoint(db: sa.Engine, key: SigningKey, tree: LedgerTree | None = None) -> Checkpoint:
    """Sign the ledger as it is now, or return the newest checkpoint when nothing was added.

    Several processes may do this at once: a checkpoint is keyed by its size, the root of a size
    never changes, so the first one stored wins and the others return it.
    """
    tree = tree or LedgerTree()
    with db.connect() as conn:
        size = head_size(conn)
        newest = latest(conn)
    if size == 0:
        raise EmptyLedger("the ledger is empty: nothing to sign until a first event is recorded")
    if newest is not None and newest.size >= size:
        return newest
    tree.store_tiles(db, size)
    with db.connect() as conn:
        checkpoint = sign(key, size, tree.root(conn, size))
    try:
        with write_connection(db) as conn, conn.begin():
            conn.execute(checkpoints.insert().values(**_row(checkpoint)))
    except sa.exc.IntegrityError:  # another process signed this size first: theirs stands
        with db.connect() as conn:
            return get(conn, size)
    return checkpoint


def _row(checkpoint: Checkpoint) -> dict[str, Any]:
    row = checkpoint.to_dict()
    del row["origin"]
    return row


def latest(conn: sa.Connection) -> Checkpoint | None:
    row = conn.execute(sa.select(checkpoints).order_by(checkpoints.c.size.desc()).limit(1)).first()
    return Checkpoint.from_row(row) if row else None


def get(conn: sa.Connection, size: int) -> Checkpoint:
    row = conn.execute(sa.select(checkpoints).where(checkpoints.c.size == size)).first()
    if row is None:
        raise NotFound(
            f"no checkpoint of size {size}; list them with `warden audit checkpoints` "
            "or GET /v1/audit/checkpoints",
            field="size",
        )
    return Checkpoint.from_row(row)


def covering(conn: sa.Connection, seq: int) -> Checkpoint | None:
    """The newest checkpoint, if it covers event `seq`."""
    newest = latest(conn)
    return newest if newest is not None and newest.size >= seq else None


def page(conn: sa.Connection, *, before: int | None, limit: int) -> list[Checkpoint]:
    """Newest first; `before` is the size of the last checkpoint of the previous page."""
    query = sa.select(checkpoints).order_by(checkpoints.c.size.desc()).limit(limit)
    if before is not None:
        query = query.where(checkpoints.c.size < before)
    return [Checkpoint.from_row(r) for r in conn.execute(query)]


def all_checkpoints(conn: sa.Connection) -> list[Checkpoint]:
    rows = conn.execute(sa.select(checkpoints).order_by(checkpoints.c.size))
    return [Checkpoint.from_row(r) for r in rows]
