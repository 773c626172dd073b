"""Signed tree heads: the Merkle root over the first `size` events, the time, an Ed25519 signature.

A checkpoint commits Warden to a history. Anyone holding one (an auditor, a witness file, a
webhook receiver) can later demand a consistency proof that the current log extends it, so
rewriting the past is caught even by someone with full database access — as long as one copy of
an old checkpoint lives outside the database.

Each checkpoint is kept twice: as Warden's signed JSON, and as a C2SP tlog-checkpoint signed note
(`note`) under the deployment's origin, which witnesses and other transparency-log tools read.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from warden.errors import InvalidRequest, NotFound
from warden.ledger import identity, remembered
from warden.ledger import note as notes
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
    note: str | None = None

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

    def parsed_note(self) -> tuple[notes.Note, notes.CheckpointBody]:
        """The C2SP note, checked to state this checkpoint's size and root (NoteError if not)."""
        if self.note is None:
            raise notes.NoteError(f"checkpoint {self.size} has no signed note")
        parsed = notes.parse_note(self.note)
        body = notes.parse_checkpoint(parsed.body)
        if body.size != self.size or body.root != self.root_bytes:
            raise notes.NoteError(
                f"checkpoint {self.size}: its note states size {body.size} and root "
                f"{body.root.hex()[:16]}..., not the checkpoint's own"
            )
        return parsed, body

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "origin": ORIGIN,
            "size": self.size,
            "root": self.root,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "signature": self.signature,
        }
        if self.note is not None:
            data["note"] = self.note
        return data

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
        if data["size"] < 1:
            raise ValueError(f"{where}: size must be at least 1")
        text = data.get("note")
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{where}: note must be a string")
        return cls(data["size"], root, data["signed_at"], data["key_id"], data["signature"], text)

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        return cls(
            int(row.size), row.root, row.signed_at, row.key_id, row.signature, row.note or None
        )


def sign(
    key: SigningKey,
    size: int,
    root: bytes,
    now: datetime | None = None,
    *,
    origin: str | None = None,
    also: tuple[SigningKey, ...] = (),
) -> Checkpoint:
    """Sign the JSON statement with `key`; with an `origin`, also the C2SP note, by `key` and by
    each of `also` (the retiring key, when keys are rotated)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    unsigned = Checkpoint(
        size=size,
        root=root.hex(),
        signed_at=moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        key_id=key.public.key_id,
        signature="",
    )
    signature = base64.b64encode(key.sign(unsigned.statement())).decode()
    text = None
    if origin is not None:
        body = notes.checkpoint_body(origin, size, root)
        lines = tuple(notes.sign_line(body, origin, k.key) for k in (key, *also))
        text = notes.Note(body, lines).text()
    return Checkpoint(
        unsigned.size, unsigned.root, unsigned.signed_at, unsigned.key_id, signature, text
    )


def head_size(conn: sa.Connection) -> int:
    size = conn.execute(sa.select(ledger_head.c.seq).where(ledger_head.c.id == 1)).scalar()
    return int(size or 0)


def make_checkpoint(
    db: sa.Engine,
    key: SigningKey,
    tree: LedgerTree | None = None,
    *,
    also: tuple[SigningKey, ...] = (),
) -> Checkpoint:
    """Sign the ledger as it is now, or return the newest checkpoint when nothing was added.

    Several processes may do this at once: a checkpoint is keyed by its size, the root of a size
    never changes, so the first one stored wins and the others return it. The key must be the
    one the database records as current, and the ledger must extend the last checkpoint this
    signer made (remembered beside the key, outside the database): a rewritten history is
    refused, not signed.
    """
    tree = tree or LedgerTree()
    origin = identity.ensure_origin(db)
    with db.connect() as conn:
        size = head_size(conn)
        newest = latest(conn)
        current = identity.active(conn)
    if current is not None and current.key_id != key.public.key_id:
        raise identity.KeyChanged(
            f"the ledger now signs with key {current.key_id}, not {key.public.key_id}: the key "
            "was rotated; load the current key"
        )
    if size == 0:
        raise EmptyLedger("the ledger is empty: nothing to sign until a first event is recorded")
    if newest is not None and newest.size >= size and not also:
        return newest
    tree.store_tiles(db, size)
    with db.connect() as conn:
        root = tree.root(conn, size)
        remembered.check_extends(remembered.path_for(key), origin, conn, tree, size, root)
        checkpoint = sign(key, size, root, origin=origin, also=also)
    try:
        with write_connection(db) as conn, conn.begin():
            conn.execute(checkpoints.insert().values(**_row(checkpoint)))
    except sa.exc.IntegrityError:  # another process signed this size first: theirs stands
        if also:  # a rotation: its checkpoint must carry both keys' signatures
            with write_connection(db) as conn, conn.begin():
                conn.execute(
                    checkpoints.update()
                    .where(checkpoints.c.size == size)
                    .values(**_row(checkpoint))
                )
            remembered.remember(remembered.path_for(key), origin, checkpoint)
            return checkpoint
        with db.connect() as conn:
            return get(conn, size)
    remembered.remember(remembered.path_for(key), origin, checkpoint)
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
