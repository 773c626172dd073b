"""How credentials die: revoke, rotate, expire, disable — each a ledger event.

Every change here bumps the credential epoch in its own transaction, so the short cache of
every replica drops what it knew within its check interval (see `warden.api.auth`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from warden.auth import principals as people
from warden.auth.tokens import PREFIX, Principal, hash_secret
from warden.errors import Conflict, NotFound
from warden.ledger.chain import EventDraft
from warden.store.queries import aware
from warden.store.recorder import Change, Recorder
from warden.store.schema import console_sessions, principals, tokens, users

DEFAULT_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class TokenInfo:
    """A token as `warden token list` shows it; never its secret."""

    id: str
    name: str
    principal: str
    principal_id: str
    roles: list[str]
    points: list[str]
    groups: list[str]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "principal": self.principal,
            "principal_id": self.principal_id,
            "roles": self.roles,
            "points": self.points,
            "groups": self.groups,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "state": self.state(now),
        }


def list_tokens(
    conn: sa.Connection, *, principal: str | None = None, include_dead: bool = False
) -> list[TokenInfo]:
    query = (
        sa.select(tokens, principals.c.name.label("principal_name"))
        .select_from(tokens.outerjoin(principals, principals.c.id == tokens.c.principal_id))
        .order_by(tokens.c.created_at, tokens.c.id)
    )
    if principal is not None:
        query = query.where(sa.or_(principals.c.name == principal, principals.c.id == principal))
    now = datetime.now(UTC)
    found = [_info(r._mapping) for r in conn.execute(query)]
    return [t for t in found if include_dead or t.state(now) == "active"]


def _info(m: Any) -> TokenInfo:
    created = aware(m["created_at"])
    assert created is not None
    return TokenInfo(
        id=m["id"],
        name=m["name"],
        principal=m["principal_name"] or "",
        principal_id=m["principal_id"] or "",
        roles=list(m["roles"]),
        points=list(m["points"]),
        groups=list(m["groups"] or []),
        created_at=created,
        created_by=m["created_by"],
        expires_at=aware(m["expires_at"]),
        revoked_at=aware(m["revoked_at"]),
    )


def _token(conn: sa.Connection, token_id: str) -> TokenInfo:
    row = conn.execute(
        sa.select(tokens, principals.c.name.label("principal_name"))
        .select_from(tokens.outerjoin(principals, principals.c.id == tokens.c.principal_id))
        .where(tokens.c.id == token_id)
    ).first()
    if row is None:
        raise NotFound(f"no token '{token_id}'; `warden token list` shows them", field="id")
    return _info(row._mapping)


def revoke_token(recorder: Recorder, token_id: str, *, actor: str, reason: str = "") -> TokenInfo:
    """Revoke at once; refused everywhere within the cache's check interval."""
    with recorder.engine.connect() as conn:
        info = _token(conn, token_id)
    if info.revoked_at is not None:
        raise Conflict(f"token '{token_id}' was already revoked at {info.revoked_at}", field="id")
    now = datetime.now(UTC)

    def apply(conn: sa.Connection) -> None:
        conn.execute(
            sa.update(tokens)
            .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        conn.execute(sa.delete(console_sessions).where(console_sessions.c.token_id == token_id))
        people.bump_epoch(conn)

    recorder.record(
        Change(
            events=[
                EventDraft(
                    type="token.revoked",
                    actor=actor,
                    payload={
                        "token_id": token_id,
                        "principal_id": info.principal_id,
                        "reason": reason,
                        "revoked_at": now.isoformat(),
                    },
                    ts=now,
                )
            ],
            apply=apply,
        )
    )
    return _token_after(recorder, token_id)


def rotate_token(
    recorder: Recorder,
    token_id: str,
    *,
    actor: str,
    grace: timedelta = DEFAULT_GRACE,
    expires: timedelta | None = None,
) -> tuple[str, TokenInfo]:
    """A new secret with the same principal, roles, points and groups; the old one keeps
    working for `grace` (so deployments can switch over), then expires."""
    with recorder.engine.connect() as conn:
        old = _token(conn, token_id)
    now = datetime.now(UTC)
    if old.state(now) != "active":
        raise Conflict(
            f"token '{token_id}' is {old.state(now)}; create a new one instead", field="id"
        )
    new_id = secrets.token_hex(6)
    secret = f"{PREFIX}{new_id}_{secrets.token_urlsafe(32)}"
    old_until = now + grace
    if old.expires_at is not None:
        old_until = min(old_until, old.expires_at)
    if expires is not None:
        new_expires: datetime | None = now + expires
    elif old.expires_at is not None:
        new_expires = now + (old.expires_at - old.created_at)
    else:
        new_expires = None
    row = {
        "id": new_id,
        "name": old.name,
        "secret_hash": hash_secret(secret),
        "roles": old.roles,
        "points": old.points,
        "groups": old.groups,
        "created_by": actor,
        "created_at": now,
        "revoked_at": None,
        "principal_id": old.principal_id or None,
        "expires_at": new_expires,
    }

    def apply(conn: sa.Connection) -> None:
        conn.execute(tokens.insert().values(**row))
        conn.execute(sa.update(tokens).where(tokens.c.id == token_id).values(expires_at=old_until))
        people.bump_epoch(conn)

    recorder.record(
        Change(
            events=[
                EventDraft(
                    type="token.rotated",
                    actor=actor,
                    payload={
                        "token_id": token_id,
                        "new_token_id": new_id,
                        "name": old.name,
                        "roles": old.roles,
                        "points": old.points,
                        "groups": old.groups,
                        "principal_id": old.principal_id,
                        "old_expires_at": old_until.isoformat(),
                        "expires_at": new_expires.isoformat() if new_expires else None,
                        # as `token.created`: the hash of a random secret reveals nothing, and
                        # makes the new row derivable (its creator and time are the event's)
                        "secret_hash": row["secret_hash"],
                    },
                    ts=now,
                )
            ],
            apply=apply,
        )
    )
    return secret, _token_after(recorder, new_id)


def _token_after(recorder: Recorder, token_id: str) -> TokenInfo:
    with recorder.engine.connect() as conn:
        return _token(conn, token_id)


def disable_user(recorder: Recorder, username: str, *, actor: str, reason: str = "") -> None:
    """Disable a console user: refused at the next login, and their sessions end now."""
    with recorder.engine.connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.username == username)).first()
    if row is None:
        raise NotFound(f"no user '{username}'", field="username")
    if row.disabled_at is not None:
        raise Conflict(f"user '{username}' is already disabled", field="username")
    now = datetime.now(UTC)

    def apply(conn: sa.Connection) -> None:
        conn.execute(sa.update(users).where(users.c.username == username).values(disabled_at=now))
        conn.execute(sa.delete(console_sessions).where(console_sessions.c.username == username))
        people.bump_epoch(conn)

    recorder.record(
        Change(
            events=[
                EventDraft(
                    type="user.disabled",
                    actor=actor,
                    payload={
                        "username": username,
                        "principal_id": row.principal_id or "",
                        "reason": reason,
                        "disabled_at": now.isoformat(),
                    },
                    ts=now,
                )
            ],
            apply=apply,
        )
    )


def disable_principal(recorder: Recorder, name_or_id: str, *, actor: str, reason: str = "") -> str:
    """Disable a person or service: every token and console login of theirs stops working."""
    with recorder.engine.connect() as conn:
        row = people.require(conn, name_or_id)
    if row.disabled_at is not None:
        raise Conflict(f"principal '{row.name}' is already disabled", field="principal")
    now = datetime.now(UTC)
    pid = str(row.id)

    def apply(conn: sa.Connection) -> None:
        conn.execute(sa.update(principals).where(principals.c.id == pid).values(disabled_at=now))
        names = sa.select(users.c.username).where(users.c.principal_id == pid)
        ids = sa.select(tokens.c.id).where(tokens.c.principal_id == pid)
        conn.execute(
            sa.delete(console_sessions).where(
                sa.or_(console_sessions.c.username.in_(names), console_sessions.c.token_id.in_(ids))
            )
        )
        people.bump_epoch(conn)

    recorder.record(
        Change(
            events=[
                EventDraft(
                    type="principal.disabled",
                    actor=actor,
                    payload={
                        "principal_id": pid,
                        "name": row.name,
                        "reason": reason,
                        "disabled_at": now.isoformat(),
                    },
                    ts=now,
                )
            ],
            apply=apply,
        )
    )
    return pid


def owns(who: Principal, info: TokenInfo) -> bool:
    """Whether `who` is the principal the token belongs to."""
    return bool(who.principal_id) and who.principal_id == info.principal_id
