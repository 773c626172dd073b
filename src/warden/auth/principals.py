"""Principals: the person or service behind credentials.

Governance asks *who* acted, not which secret was used: a person's API tokens and console
login all belong to one principal, and self-approval and four-eyes compare principals. A
principal's id is derived from its unique name, so it is stable, and the ledger's events
(which carry the name) imply it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa

from warden.errors import InvalidRequest, NotFound
from warden.ledger.chain import EventDraft
from warden.store.schema import auth_epoch, principals

PRINCIPAL_PREFIX = "principal:"
_ID = re.compile(r"^principal:([A-Za-z0-9_]+)")
MAX_NAME = 255


class Kind(StrEnum):
    PERSON = "person"
    SERVICE = "service"


def principal_id_for(name: str) -> str:
    """The stable id of the principal with this name."""
    return "p_" + hashlib.sha256(name.encode()).hexdigest()[:16]


def person_of(actor: str | None) -> str | None:
    """Who an actor string names: `principal:<id>` for credentials with a principal, else the
    actor itself (older records, the CLI, the policy)."""
    if actor is None:
        return None
    match = _ID.match(actor)
    return f"{PRINCIPAL_PREFIX}{match.group(1)}" if match else actor


def check_name(name: str) -> str:
    clean = name.strip()
    if not clean or len(clean) > MAX_NAME or any(c in clean for c in "\n\r\t"):
        raise InvalidRequest(
            f"a principal name is 1-{MAX_NAME} characters on one line, e.g. alice or ci-bot",
            field="principal",
        )
    return clean


def find(conn: sa.Connection, name_or_id: str) -> sa.Row[tuple[object, ...]] | None:
    return conn.execute(
        sa.select(principals).where(
            sa.or_(principals.c.name == name_or_id, principals.c.id == name_or_id)
        )
    ).first()


def require(conn: sa.Connection, name_or_id: str) -> sa.Row[tuple[object, ...]]:
    row = find(conn, name_or_id)
    if row is None:
        raise NotFound(
            f"no principal '{name_or_id}'; `warden principal list` shows them", field="principal"
        )
    return row


def ensure(
    conn: sa.Connection, name: str, kind: Kind, actor: str
) -> tuple[str, EventDraft | None, Callable[[sa.Connection], None]]:
    """The principal's id, the event that creates it (None when it exists) and the insert to
    run inside the change that records that event."""
    name = check_name(name)
    pid = principal_id_for(name)
    row = find(conn, name)
    if row is not None:
        if row.disabled_at is not None:
            raise InvalidRequest(
                f"principal '{name}' is disabled; it gets no new credentials", field="principal"
            )
        return str(row.id), None, lambda _conn: None
    now = datetime.now(UTC)
    values = {
        "id": pid,
        "name": name,
        "kind": kind.value,
        "created_by": actor,
        "created_at": now,
        "disabled_at": None,
    }
    draft = EventDraft(
        type="principal.created",
        actor=actor,
        payload={"principal_id": pid, "name": name, "kind": kind.value},
        ts=now,
    )

    def insert(conn: sa.Connection) -> None:
        exists = conn.execute(sa.select(principals.c.id).where(principals.c.id == pid)).first()
        if exists is None:
            conn.execute(principals.insert().values(**values))

    return pid, draft, insert


def bump_epoch(conn: sa.Connection) -> None:
    """Tell every replica's credential cache that something was revoked or disabled."""
    conn.execute(sa.update(auth_epoch).values(epoch=auth_epoch.c.epoch + 1))


def read_epoch(conn: sa.Connection) -> int:
    value = conn.execute(sa.select(auth_epoch.c.epoch).where(auth_epoch.c.id == 1)).scalar()
    return int(value or 0)
