"""Who the ledger is: its origin (unique to a deployment) and the signing keys it has used.

The database records every key that signed checkpoints, so Warden can tell a lost or swapped key
file from a new deployment: it creates a key only when the ledger never had one, and otherwise
refuses to sign until the right key is back or the key is rotated on purpose
(`warden audit rotate-key`).
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from warden.errors import Conflict, InvalidRequest, WardenError
from warden.ledger import keys
from warden.ledger.keys import PublicKey, SigningKey
from warden.store.database import write_connection
from warden.store.schema import checkpoints, ledger_identity, ledger_keys

_ORIGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:/@-]{0,254}")


class KeyMissing(WardenError):
    """The ledger was signed before, but its key file is gone."""

    type = "key_missing"
    http_status = 500


class KeyChanged(WardenError):
    """The key file is not the key the ledger signs with now."""

    type = "key_changed"
    http_status = 500


def check_origin(origin: str) -> str:
    if not _ORIGIN.fullmatch(origin) or "+" in origin:
        raise InvalidRequest(
            f"origin {origin!r} must look like a URL without a scheme (letters, digits and "
            "._~:/@-, at most 255 characters), e.g. warden.example.com/loans",
            field="origin",
        )
    return origin


def origin(conn: sa.Connection) -> str | None:
    found = conn.execute(sa.select(ledger_identity.c.origin)).scalar()
    return str(found) if found else None


def ensure_origin(db: sa.Engine, requested: str | None = None) -> str:
    """The deployment's origin, set now (to `requested` or a random one) if it has none yet."""
    with db.connect() as conn:
        current = origin(conn)
    if current is not None:
        if requested is not None and requested != current:
            raise Conflict(
                f"this ledger's origin is already {current!r}; an origin never changes, since "
                "every signed checkpoint names it"
            )
        return current
    chosen = check_origin(requested or f"warden.ledger/{secrets.token_hex(8)}")
    try:
        with write_connection(db) as conn, conn.begin():
            conn.execute(
                ledger_identity.insert().values(id=1, origin=chosen, created_at=datetime.now(UTC))
            )
    except sa.exc.IntegrityError:  # another process set it first
        pass
    with db.connect() as conn:
        return origin(conn) or chosen


def public_from_row(row: Any) -> PublicKey:
    return keys.parse_public_key(row.public_key.encode(), f"recorded key {row.key_id}")


def recorded(conn: sa.Connection) -> list[Any]:
    """Every key the ledger has used, oldest first."""
    return list(conn.execute(sa.select(ledger_keys).order_by(ledger_keys.c.added_at)).all())


def active(conn: sa.Connection) -> Any | None:
    """The key the ledger signs with now: the newest one not replaced."""
    rows = [r for r in recorded(conn) if r.replaced_by is None]
    return rows[-1] if rows else None


def record(conn: sa.Connection, key: PublicKey) -> None:
    conn.execute(
        ledger_keys.insert().values(
            key_id=key.key_id,
            public_key=base64.b64encode(key.raw).decode(),
            added_at=datetime.now(UTC),
        )
    )


def _signed_by_others(conn: sa.Connection, key_id: str) -> list[str]:
    rows = conn.execute(
        sa.select(checkpoints.c.key_id).where(checkpoints.c.key_id != key_id).distinct().limit(5)
    )
    return [r.key_id for r in rows]


def signing_key(db: sa.Engine, home: Path) -> SigningKey:
    """The key to sign checkpoints with, created only for a ledger that never had one.

    A key file that is missing or differs from the one the database records (or that signed the
    stored checkpoints) is an error that says what was found; Warden never swaps keys silently.
    """
    path = keys.key_path(home)
    with db.connect() as conn:
        current = active(conn)
        others = [] if current else _signed_by_others(conn, "")
    if not path.exists():
        if current is not None or others:
            known = current.key_id if current is not None else ", ".join(others)
            raise KeyMissing(
                f"the ledger is signed with key {known}, but {path} is missing; restore it from "
                "your backup (Warden will not make a new key silently), or, if it is lost for "
                "good, run `warden audit rotate-key --lost-key` so the change is recorded"
            )
        return _create(db, home)
    key = keys.load_signing_key(path)
    mine = key.public.key_id
    if current is None:
        if others and mine not in others:
            raise KeyChanged(
                f"the stored checkpoints are signed by key {', '.join(others)}, but {path} "
                f"holds key {mine}; restore the original key file, or rotate with "
                "`warden audit rotate-key`"
            )
        _record_first(db, key.public)
        return signing_key(db, home)
    if current.key_id != mine:
        raise KeyChanged(
            f"the ledger signs with key {current.key_id} (recorded {current.added_at:%Y-%m-%d}), "
            f"but {path} holds key {mine}; put the right key file back, or change keys on "
            "purpose with `warden audit rotate-key`"
        )
    return key


def _create(db: sa.Engine, home: Path) -> SigningKey:
    key = keys.load_or_create(home)
    _record_first(db, key.public)
    return signing_key(db, home)


def _record_first(db: sa.Engine, key: PublicKey) -> None:
    """Record the ledger's first key; a process that recorded the same key first wins."""
    try:
        with write_connection(db) as conn, conn.begin():
            if active(conn) is None:
                record(conn, key)
    except sa.exc.IntegrityError:
        pass
