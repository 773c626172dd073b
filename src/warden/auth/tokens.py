"""API tokens: random secrets shown once, stored only as SHA-256 hashes.

Tokens are 256-bit random values, so a fast hash is the right tool (no password stretching
needed); lookups are by hash, so the plain secret never touches the database.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from warden.auth import principals as people
from warden.errors import InvalidRequest
from warden.ledger.chain import EventDraft
from warden.policy.durations import parse_duration
from warden.store.queries import aware
from warden.store.recorder import GLOBAL_SCOPE, Change, Recorder
from warden.store.schema import principals, tokens

PREFIX = "wdn_"


class Role(StrEnum):
    CALLER = "caller"
    REVIEWER = "reviewer"
    OWNER = "owner"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the credential (a token, or a console user) and the person behind it.

    `principal_id`/`principal_name` name the person or service the credential belongs to;
    self-approval and four-eyes compare `person`, never the credential. `groups` are reviewer
    groups; `method` says how they authenticated (recorded with every review action); `user`
    is set for console users, who are named by username, not token. `expires_at` is when the
    credential stops working (None: never).
    """

    token_id: str
    name: str
    roles: frozenset[Role]
    points: frozenset[str]
    groups: frozenset[str] = frozenset()
    method: str = "api-token"
    user: str | None = None
    principal_id: str = ""
    principal_name: str = ""
    expires_at: datetime | None = field(default=None, compare=False)

    @property
    def credential(self) -> str:
        """The credential used: `token:<id>:<name>` or `user:<username>`."""
        if self.user is not None:
            return f"user:{self.user}"
        return f"token:{self.token_id}:{self.name}"

    @property
    def actor(self) -> str:
        """What the ledger records: the principal and, after `via`, the credential."""
        if self.principal_id:
            return f"principal:{self.principal_id}:{self.principal_name} via {self.credential}"
        return self.credential

    @property
    def person(self) -> str:
        """The identity four-eyes and self-approval compare (see `person_of`)."""
        return f"principal:{self.principal_id}" if self.principal_id else self.actor

    def can(self, role: Role, point: str | None = None) -> bool:
        if Role.ADMIN in self.roles and self.may_see(point):
            return True
        return role in self.roles and self.may_see(point)

    def may_see(self, point: str | None) -> bool:
        return GLOBAL_SCOPE in self.points or point is None or point in self.points

    @property
    def all_points(self) -> bool:
        return GLOBAL_SCOPE in self.points


def hash_secret(secret: str) -> str:
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


def parse_expiry(text: str | None) -> timedelta | None:
    """`90d`, `12h`, `30m`, `45s`, or `never`/None: how long a new credential lives."""
    if text is None or text.strip().lower() in ("", "never"):
        return None
    try:
        seconds = parse_duration(text.strip())
    except (ValueError, TypeError):
        seconds = -1.0
    if seconds <= 0:
        raise InvalidRequest(
            f"'{text}' is not a lifetime; write e.g. 90d, 12h or 30m (or never)", field="expires"
        )
    return timedelta(seconds=seconds)


def create_token(
    recorder: Recorder,
    *,
    name: str,
    roles: list[str],
    points: list[str],
    actor: str,
    groups: list[str] | None = None,
    principal: str | None = None,
    expires: timedelta | None = None,
    kind: str = "person",
) -> tuple[str, Principal]:
    """Create a token for `principal` (by name or id; default: the principal named `name`,
    created when new); returns the secret (to show once) and its principal."""
    parsed = parse_roles(roles)
    if not points:
        raise InvalidRequest("a token needs at least one point, or '*' for all", field="point")
    try:
        kind_value = people.Kind(kind)
    except ValueError:
        raise InvalidRequest("a principal's kind is person or service", field="kind") from None
    group_set = frozenset(groups or ())
    with recorder.engine.connect() as conn:
        existing = people.find(conn, principal) if principal else None
        owner_name = str(existing.name) if existing is not None else (principal or name)
        principal_id, created, insert = people.ensure(conn, owner_name, kind_value, actor)
    token_id = secrets.token_hex(6)
    secret = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
    expires_at = now + expires if expires is not None else None
    row = {
        "id": token_id,
        "name": name,
        "secret_hash": hash_secret(secret),
        "roles": sorted(parsed),
        "points": sorted(set(points)),
        "created_by": actor,
        "created_at": now,
        "revoked_at": None,
        "groups": sorted(group_set),
        "principal_id": principal_id,
        "expires_at": expires_at,
    }
    draft = EventDraft(
        type="token.created",
        actor=actor,
        payload={
            "token_id": token_id,
            "name": name,
            "roles": row["roles"],
            "points": row["points"],
            "groups": row["groups"],
            "principal_id": principal_id,
            "principal": owner_name,
            "expires_at": expires_at.isoformat() if expires_at else None,
            # the hash of a 256-bit random secret reveals nothing, and makes the row derivable
            "secret_hash": row["secret_hash"],
        },
        ts=now,
    )

    def apply(conn: sa.Connection) -> None:
        insert(conn)
        conn.execute(tokens.insert().values(**row))

    recorder.record(Change(events=[*([created] if created else []), draft], apply=apply))
    return secret, Principal(
        token_id,
        name,
        parsed,
        frozenset(set(points)),
        group_set,
        principal_id=principal_id,
        principal_name=owner_name,
        expires_at=expires_at,
    )


def authenticate(conn: sa.Connection, secret: str, now: datetime | None = None) -> Principal | None:
    """The token's principal, unless it is unknown, revoked, expired or its principal disabled."""
    if not secret.startswith(PREFIX):
        return None
    row = conn.execute(
        sa.select(tokens, principals.c.name.label("principal_name"))
        .select_from(tokens.outerjoin(principals, principals.c.id == tokens.c.principal_id))
        .where(
            tokens.c.secret_hash == hash_secret(secret),
            tokens.c.revoked_at.is_(None),
            principals.c.disabled_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    found = token_principal(row._mapping)
    if found.expires_at is not None and found.expires_at <= (now or datetime.now(UTC)):
        return None
    return found


def token_principal(m: object, method: str = "api-token") -> Principal:
    """A token row (joined with its principal's name) as a Principal."""
    row = m if isinstance(m, dict) else dict(m)  # type: ignore[call-overload]
    return Principal(
        row["id"],
        row["name"],
        frozenset(Role(r) for r in row["roles"]),
        frozenset(row["points"]),
        frozenset(row["groups"] or ()),
        method=method,
        principal_id=row.get("principal_id") or "",
        principal_name=row.get("principal_name") or "",
        expires_at=aware(row.get("expires_at")),
    )
