"""The webhook signing secret, encrypted at rest.

The secret is generated once and kept in the database (so every replica signs alike), as a
Fernet token under a key that never enters the database: `WARDEN_SECRETS_KEY` (a Fernet key,
the same on every replica — set it when replicas do not share `WARDEN_HOME`), else the file
`secrets.key` in `WARDEN_HOME`, created on first use with mode 0600. `WARDEN_WEBHOOK_SECRET`
overrides the stored secret altogether. A value stored in plain text by an older version is
encrypted the first time it is read.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from warden.outbound.signing import new_secret
from warden.store.database import write_connection
from warden.store.schema import server_secrets

SECRET_ENV = "WARDEN_WEBHOOK_SECRET"
KEY_ENV = "WARDEN_SECRETS_KEY"
KEY_FILE = "secrets.key"
SECRET_NAME = "webhook"
MARK = "fernet:"

_lock = threading.Lock()
_registered: sa.Engine | None = None


class SecretUnavailable(RuntimeError):
    """The stored secret cannot be decrypted with this replica's key."""


def _home() -> Path:
    return Path(os.environ.get("WARDEN_HOME", ".warden"))


def fernet() -> Fernet:
    configured = os.environ.get(KEY_ENV, "").strip()
    if configured:
        return Fernet(configured.encode())
    path = _home() / KEY_FILE
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key())
        return Fernet(path.read_bytes().strip())


def webhook_secret(db: sa.Engine) -> str:
    """`WARDEN_WEBHOOK_SECRET`, or the stored one (generated and stored, encrypted, once)."""
    configured = os.environ.get(SECRET_ENV)
    if configured:
        return configured
    box = fernet()
    with write_connection(db) as conn, conn.begin():
        found = conn.execute(
            sa.select(server_secrets.c.value).where(server_secrets.c.name == SECRET_NAME)
        ).scalar()
        if found is None:
            value = new_secret()
            conn.execute(
                server_secrets.insert().values(
                    name=SECRET_NAME, value=_seal(box, value), created_at=datetime.now(UTC)
                )
            )
            return value
        stored = str(found)
        if not stored.startswith(MARK):  # plain text from before encryption at rest
            conn.execute(
                sa.update(server_secrets)
                .where(server_secrets.c.name == SECRET_NAME)
                .values(value=_seal(box, stored))
            )
            return stored
        try:
            return box.decrypt(stored.removeprefix(MARK).encode()).decode()
        except InvalidToken:
            raise SecretUnavailable(
                f"the stored webhook secret was encrypted with another key; give every replica "
                f"the same {KEY_ENV} (or the same {KEY_FILE} in WARDEN_HOME)"
            ) from None


def _seal(box: Fernet, value: str) -> str:
    return MARK + box.encrypt(value.encode()).decode()


def register(db: sa.Engine) -> None:
    """Let signers without a database handle (alert sinks) find the secret."""
    global _registered
    _registered = db


def current() -> str | None:
    """The secret for signers that have no database handle; None when none is known."""
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV]
    return webhook_secret(_registered) if _registered is not None else None
