"""Console users: a username and a password, stored only as an Argon2id hash.

Passwords are chosen by people, so unlike API tokens they need a slow, salted hash. A failed
login costs the same time whether or not the user exists, so logins do not reveal usernames.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from warden.auth import principals as people
from warden.auth.tokens import Principal, Role, parse_roles
from warden.errors import Conflict, InvalidRequest
from warden.ledger.chain import EventDraft
from warden.store.recorder import Change, DuplicateKey, Recorder
from warden.store.schema import principals, users

MIN_PASSWORD = 12
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("warden-timing-equaliser")


def create_user(
    recorder: Recorder,
    *,
    username: str,
    password: str,
    roles: list[str],
    points: list[str],
    groups: list[str] | None = None,
    actor: str,
    principal: str | None = None,
) -> Principal:
    """Create a console user for `principal` (default: the principal named like the user, so
    a person's console login and API tokens are one person); a `user.created` event records
    who did it (never the password)."""
    if not _USERNAME.match(username):
        raise InvalidRequest(
            "a username is 1-64 lower-case letters, digits, '.', '_' or '-'", field="username"
        )
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(
            f"the password must have at least {MIN_PASSWORD} characters", field="password"
        )
    parsed = parse_roles(roles)
    if not points:
        raise InvalidRequest("a user needs at least one point, or '*' for all", field="point")
    now = datetime.now(UTC)
    password_hash = _hasher.hash(password)
    with recorder.engine.connect() as conn:
        existing = people.find(conn, principal) if principal else None
        owner = str(existing.name) if existing is not None else (principal or username)
        principal_id, created, insert = people.ensure(conn, owner, people.Kind.PERSON, actor)
    row = {
        "username": username,
        "password_hash": password_hash,
        "roles": sorted(parsed),
        "points": sorted(set(points)),
        "groups": sorted(set(groups or ())),
        "created_by": actor,
        "created_at": now,
        "disabled_at": None,
        "principal_id": principal_id,
    }
    draft = EventDraft(
        type="user.created",
        actor=actor,
        ts=now,
        payload={
            **{k: row[k] for k in ("username", "roles", "points", "groups", "principal_id")},
            "principal": owner,
            # a digest of the password hash: a swapped hash is detected, yet the ledger (which
            # auditors export) holds nothing to guess passwords against
            "password_sha256": hashlib.sha256(password_hash.encode()).hexdigest(),
        },
    )

    def apply(conn: sa.Connection) -> None:
        insert(conn)
        conn.execute(users.insert().values(**row))

    try:
        recorder.record(Change(events=[*([created] if created else []), draft], apply=apply))
    except (DuplicateKey, sa.exc.IntegrityError):
        raise Conflict(f"user '{username}' already exists", field="username") from None
    return _principal({**row, "principal_name": owner}, method="password")


def verify_password(conn: sa.Connection, username: str, password: str) -> Principal | None:
    """The user's principal when the password matches, else None."""
    row = _active(conn, username)
    try:
        _hasher.verify(row.password_hash if row else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    return _principal(row._mapping, method="password")


def user_principal(conn: sa.Connection, username: str, *, method: str) -> Principal | None:
    """A logged-in user's current principal: role changes and disabling apply at once."""
    row = _active(conn, username)
    return _principal(row._mapping, method=method) if row else None


def _active(conn: sa.Connection, username: str) -> sa.Row[tuple[object, ...]] | None:
    """The user's row, unless the user or their principal is disabled."""
    return conn.execute(
        sa.select(users, principals.c.name.label("principal_name"))
        .select_from(users.outerjoin(principals, principals.c.id == users.c.principal_id))
        .where(
            users.c.username == username,
            users.c.disabled_at.is_(None),
            principals.c.disabled_at.is_(None),
        )
    ).first()


def _principal(row: object, *, method: str) -> Principal:
    m = row if isinstance(row, dict) else dict(row)  # type: ignore[call-overload]
    return Principal(
        token_id="",
        name=m["username"],
        roles=frozenset(Role(r) for r in m["roles"]),
        points=frozenset(m["points"]),
        groups=frozenset(m["groups"]),
        method=method,
        user=m["username"],
        principal_id=m.get("principal_id") or "",
        principal_name=m.get("principal_name") or "",
    )
