"""Kill switches per agent and per upstream server, beside the per-point one.

They are rows of the same table with scopes `agent:<name>` and `server:<name>` (point names
cannot contain ':'), written with the same `kill_switch.*` ledger events, so `warden audit`
sees them like any other switch and every process reading the database obeys them at once.
"""

from __future__ import annotations

import sqlalchemy as sa

from warden.engine import Engine
from warden.errors import InvalidRequest
from warden.store import queries
from warden.store.schema import kill_switches

KINDS = ("agent", "server")


def scope(kind: str, name: str) -> str:
    if kind not in KINDS:
        raise InvalidRequest(f"a gateway kill switch is per agent or server, not '{kind}'")
    value = f"{kind}:{name}"
    if not name or len(value) > 64:
        raise InvalidRequest(
            f"'{name}' is not a valid {kind} name (1 to {63 - len(kind)} characters)"
        )
    return value


def set_switch(
    engine: Engine, kind: str, name: str, engaged: bool, *, actor: str, reason: str
) -> queries.KillSwitch:
    """Engage or release the switch of one agent or server; effective for the next call."""
    return engine.write_kill_switch(scope(kind, name), engaged, actor=actor, reason=reason)


def engaged(engine: Engine, agent: str, server: str) -> queries.KillSwitch | None:
    """The engaged switch that stops this agent's calls to this server, if any."""
    wanted = {f"agent:{agent}", f"server:{server}"}
    with engine.db.connect() as conn:
        rows = conn.execute(
            sa.select(kill_switches).where(
                kill_switches.c.scope.in_(sorted(wanted)), kill_switches.c.engaged
            )
        ).all()
    if not rows:
        return None
    row = rows[0]
    return queries.KillSwitch(row.scope, row.engaged, row.actor, row.reason, row.changed_at)
