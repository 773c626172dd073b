"""The Alembic migrations create exactly the tables the code declares."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from warden.store.database import migrate
from warden.store.schema import ledger_head, metadata


def test_migrations_match_the_schema(db: sa.Engine) -> None:
    with db.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_migrate_is_idempotent_and_seeds_the_ledger_head(db: sa.Engine) -> None:
    migrate(db)
    with db.connect() as conn:
        head = conn.execute(sa.select(ledger_head)).one()
    assert (head.seq, head.chain_hash) == (0, "0" * 64)
