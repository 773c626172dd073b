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

from warden.auth.tokens import Principal, Role, parse_roles
from warden.errors import Conflict, InvalidRequest
from warden.ledger.chain import EventDraft
from warden.store.recorder import Change, DuplicateKey, Recorder
from warden.store.schema import users

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
) -> Principal:
    """Create a console user; a `user.created` event records who did it (never the password)."""
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
    row = {
        "username": username,
        "password_hash": password_hash,
        "roles": sorted(parsed),
        "points": sorted(set(points)),
        "groups": sorted(set(groups or ())),
        "created_by": actor,
        "created_at": now,
        "disabled_at": None,
    }
    draft = EventDraft(
        type="user.created",
        actor=actor,
        ts=now,
        payload={
            **{k: row[k] for k in ("username", "roles", "points", "groups")},
            # a digest of the password hash: a swapped hash is detected, yet the ledger (which
            # auditors export) holds nothing to guess passwords against
            "password_sha256": hashlib.sha256(password_hash.encode()).hexdigest(),
        },
    )
    try:
        recorder.record(Change(events=[draft], rows=[(users, row)]))
    except DuplicateKey:
        raise Conflict(f"user '{username}' already exists", field="username") from None
    return _principal(row, method="password")


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
    return conn.execute(
        sa.select(users).where(users.c.username == username, users.c.disabled_at.is_(None))
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
    )
