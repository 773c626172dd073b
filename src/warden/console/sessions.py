"""Console sessions: a random cookie whose SHA-256 is stored, and a CSRF token per session.

Sessions live in the database, so every replica knows them; the principal is re-read on each
request, so a revoked token or a disabled user is logged out at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from warden.auth.tokens import Principal, token_principal
from warden.auth.users import user_principal
from warden.store.database import write_connection
from warden.store.schema import console_sessions, principals, tokens, users

COOKIE = "warden_session"
LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def open_session(db: sa.Engine, principal: Principal, method: str) -> tuple[str, Session]:
    """Start a session for a principal who just proved who they are; returns the cookie value."""
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with write_connection(db) as conn, conn.begin():
        conn.execute(sa.delete(console_sessions).where(console_sessions.c.expires_at < now))
        conn.execute(
            console_sessions.insert().values(
                id_hash=_hash(secret),
                csrf=csrf,
                method=method,
                token_id=principal.token_id or None,
                username=principal.user,
                created_at=now,
                expires_at=now + LIFETIME,
            )
        )
    return secret, Session(_with_method(principal, method), csrf)


def load_session(db: sa.Engine, secret: str | None) -> Session | None:
    if not secret:
        return None
    with db.connect() as conn:
        row = conn.execute(
            sa.select(console_sessions).where(console_sessions.c.id_hash == _hash(secret))
        ).first()
        if row is None or _aware(row.expires_at) < datetime.now(UTC):
            return None
        principal = (
            user_principal(conn, row.username, method=row.method)
            if row.username
            else _token_principal(conn, row.token_id, row.method)
        )
    return Session(principal, row.csrf) if principal else None


def close_session(db: sa.Engine, secret: str | None) -> None:
    if secret:
        with write_connection(db) as conn, conn.begin():
            conn.execute(
                sa.delete(console_sessions).where(console_sessions.c.id_hash == _hash(secret))
            )


def _token_principal(conn: sa.Connection, token_id: str | None, method: str) -> Principal | None:
    """The token's principal unless it was revoked, expired, or its principal disabled."""
    row = conn.execute(
        sa.select(tokens, principals.c.name.label("principal_name"))
        .select_from(tokens.outerjoin(principals, principals.c.id == tokens.c.principal_id))
        .where(
            tokens.c.id == token_id,
            tokens.c.revoked_at.is_(None),
            principals.c.disabled_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    found = token_principal(row._mapping, method)
    if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
        return None
    return found


def _with_method(principal: Principal, method: str) -> Principal:
    return replace(principal, method=method)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class SessionInfo:
    """One of a principal's console sessions, as the sessions page lists it."""

    handle: str  # the first 16 hex digits of the stored hash: enough to name, useless to use
    method: str
    credential: str
    created_at: datetime
    expires_at: datetime
    current: bool


def _owned_by(principal: Principal) -> sa.ColumnElement[bool]:
    """Sessions of `principal`'s console users and tokens (only this credential's, when the
    credential has no principal)."""
    if not principal.principal_id:
        if principal.user is not None:
            return console_sessions.c.username == principal.user
        return console_sessions.c.token_id == principal.token_id
    names = sa.select(users.c.username).where(users.c.principal_id == principal.principal_id)
    ids = sa.select(tokens.c.id).where(tokens.c.principal_id == principal.principal_id)
    return sa.or_(console_sessions.c.username.in_(names), console_sessions.c.token_id.in_(ids))


def list_sessions(db: sa.Engine, principal: Principal, current: str | None) -> list[SessionInfo]:
    now = datetime.now(UTC)
    mine = _hash(current) if current else ""
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(console_sessions)
            .where(_owned_by(principal), console_sessions.c.expires_at > now)
            .order_by(console_sessions.c.created_at.desc())
        ).all()
    return [
        SessionInfo(
            handle=r.id_hash[:16],
            method=r.method,
            credential=f"user:{r.username}" if r.username else f"token:{r.token_id}",
            created_at=_aware(r.created_at),
            expires_at=_aware(r.expires_at),
            current=r.id_hash == mine,
        )
        for r in rows
    ]


def end_sessions(db: sa.Engine, principal: Principal, handle: str | None) -> int:
    """End one of the principal's own sessions (by handle), or all of them (None)."""
    where = _owned_by(principal)
    if handle is not None:
        if len(handle) != 16 or any(c not in "0123456789abcdef" for c in handle):
            return 0
        where = sa.and_(where, console_sessions.c.id_hash.like(f"{handle}%"))
    with write_connection(db) as conn, conn.begin():
        return int(conn.execute(sa.delete(console_sessions).where(where)).rowcount or 0)
