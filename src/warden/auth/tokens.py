"""API tokens: random secrets shown once, stored only as SHA-256 hashes.

Tokens are 256-bit random values, so a fast hash is the right tool (no password stretching
needed); lookups are by hash, so the plain secret never touches the database.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa

from warden.errors import InvalidRequest
from warden.ledger.chain import EventDraft
from warden.store.recorder import GLOBAL_SCOPE, Change, Recorder
from warden.store.schema import tokens

PREFIX = "wdn_"


class Role(StrEnum):
    CALLER = "caller"
    REVIEWER = "reviewer"
    OWNER = "owner"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id and name, its roles and the points it may touch.

    `groups` are reviewer groups; `method` says how they authenticated (recorded with every
    review action); `user` is set for console users, who are named by username, not token.
    """

    token_id: str
    name: str
    roles: frozenset[Role]
    points: frozenset[str]
    groups: frozenset[str] = frozenset()
    method: str = "api-token"
    user: str | None = None

    @property
    def actor(self) -> str:
        if self.user is not None:
            return f"user:{self.user}"
        return f"token:{self.token_id}:{self.name}"

    def can(self, role: Role, point: str | None = None) -> bool:
        if Role.ADMIN in self.roles and self.may_see(point):
            return True
        return role in self.roles and self.may_see(point)

    def may_see(self, point: str | None) -> bool:
        return GLOBAL_SCOPE in self.points or point is None or point in self.points

    @property
    def all_points(self) -> bool:
        return GLOBAL_SCOPE in self.points


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_roles(roles: list[str]) -> frozenset[Role]:
    try:
        parsed = frozenset(Role(r) for r in roles)
    except ValueError as exc:
        raise InvalidRequest(
            f"{exc}; roles are {', '.join(r.value for r in Role)}", field="role"
        ) from None
    if not parsed:
        raise InvalidRequest("at least one role is required", field="role")
    return parsed


def create_token(
    recorder: Recorder,
    *,
    name: str,
    roles: list[str],
    points: list[str],
    actor: str,
    groups: list[str] | None = None,
) -> tuple[str, Principal]:
    """Create a token; returns the secret (to show once) and its principal."""
    parsed = parse_roles(roles)
    if not points:
        raise InvalidRequest("a token needs at least one point, or '*' for all", field="point")
    group_set = frozenset(groups or ())
    token_id = secrets.token_hex(6)
    secret = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
    row = {
        "id": token_id,
        "name": name,
        "secret_hash": _hash(secret),
        "roles": sorted(parsed),
        "points": sorted(set(points)),
        "created_by": actor,
        "created_at": now,
        "revoked_at": None,
        "groups": sorted(group_set),
    }
    draft = EventDraft(
        type="token.created",
        actor=actor,
        ts=now,
        payload={
            "token_id": token_id,
            "name": name,
            "roles": row["roles"],
            "points": row["points"],
            "groups": row["groups"],
            # the hash of a 256-bit random secret reveals nothing, and makes the row derivable
            "secret_hash": row["secret_hash"],
        },
    )
    recorder.record(
        Change(events=[draft], apply=lambda conn: conn.execute(tokens.insert().values(**row)))
    )
    return secret, Principal(token_id, name, parsed, frozenset(set(points)), group_set)


def authenticate(conn: sa.Connection, secret: str) -> Principal | None:
    if not secret.startswith(PREFIX):
        return None
    row = conn.execute(
        sa.select(tokens).where(
            tokens.c.secret_hash == _hash(secret), tokens.c.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        return None
    return Principal(
        row.id,
        row.name,
        frozenset(Role(r) for r in row.roles),
        frozenset(row.points),
        frozenset(row.groups or ()),
    )
