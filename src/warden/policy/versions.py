"""Policy versions and change control.

Every version of a decision point that Warden loads or is given is stored with its author.
A point whose file says `change_control: {require_approval: true}` keeps deciding under its
live version until a second person approves the new one; the author cannot approve their own
change. Approval takes effect on every replica from the next decision on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from warden.errors import Conflict, Forbidden, NotFound
from warden.ledger.chain import EventDraft
from warden.policy.loader import compile_spec
from warden.policy.point import CompiledPoint
from warden.policy.schema import DecisionPointSpec
from warden.store.queries import aware
from warden.store.recorder import Change, Recorder
from warden.store.schema import policies

LIVE, PENDING, SUPERSEDED = "live", "pending", "superseded"


@dataclass(frozen=True)
class PolicyVersion:
    point: str
    version: str
    status: str
    author: str
    loaded_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    source: str


class PolicyVersions:
    def __init__(self, db: sa.Engine, recorder: Recorder) -> None:
        self.db = db
        self.recorder = recorder

    def list(self, point: str) -> list[PolicyVersion]:
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(policies)
                .where(policies.c.point == point)
                .order_by(policies.c.first_loaded_at)
            ).all()
        return [_version(r) for r in rows]

    def live_versions(self) -> dict[str, str]:
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(policies.c.point, policies.c.version).where(policies.c.status == LIVE)
            ).all()
        return {r.point: r.version for r in rows}

    def register(self, points: dict[str, CompiledPoint], actor: str) -> dict[str, CompiledPoint]:
        """Store each loaded version; returns the version of each point that may decide now."""
        live = self.live_versions()
        for point in points.values():
            self.submit(point, actor, live=live)
        return self.effective(points)

    def submit(
        self, point: CompiledPoint, actor: str, live: dict[str, str] | None = None
    ) -> PolicyVersion:
        """Record a version (once). It goes live at once unless the point requires approval."""
        live = self.live_versions() if live is None else live
        existing = next((v for v in self.list(point.name) if v.version == point.version), None)
        if existing is not None:
            return existing
        needs_approval = point.spec.change_control.require_approval and point.name in live
        status = PENDING if needs_approval else LIVE
        now = datetime.now(UTC)
        row = {
            "point": point.name,
            "version": point.version,
            "owner": point.spec.owner,
            "content": point.spec.model_dump(mode="json"),
            "source": str(point.source),
            "loaded_by": actor,
            "first_loaded_at": now,
            "status": status,
            "approved_by": None,
            "approved_at": None,
        }

        def apply(conn: sa.Connection) -> None:
            exists = conn.execute(
                sa.select(policies.c.version).where(
                    policies.c.point == point.name, policies.c.version == point.version
                )
            ).first()
            if exists is not None:
                return
            if status == LIVE:
                conn.execute(
                    policies.update()
                    .where(policies.c.point == point.name, policies.c.status == LIVE)
                    .values(status=SUPERSEDED)
                )
            conn.execute(policies.insert().values(**row))

        draft = EventDraft(
            type="policy.loaded",
            actor=actor,
            point=point.name,
            ts=now,
            payload={
                "version": point.version,
                "owner": point.spec.owner,
                "source": str(point.source),
                "status": status,
                "content": row["content"],
            },
        )
        self.recorder.record(Change(events=[draft], apply=apply))
        return next(v for v in self.list(point.name) if v.version == point.version)

    def approve(self, point: str, version: str, *, actor: str) -> PolicyVersion:
        """A second person puts a pending version live; the author may not."""
        found = next((v for v in self.list(point) if v.version.startswith(version)), None)
        if found is None:
            raise NotFound(
                f"no version '{version}' of '{point}'; see `warden policy versions {point}`",
                field="version",
            )
        if found.status != PENDING:
            raise Conflict(
                f"version {found.version[:12]} of '{point}' is {found.status}, not pending",
                field="version",
            )
        if found.author == actor:
            raise Forbidden(
                "a policy change needs a second person: its author cannot approve it", field="actor"
            )
        now = datetime.now(UTC)

        def apply(conn: sa.Connection) -> None:
            conn.execute(
                policies.update()
                .where(policies.c.point == point, policies.c.status == LIVE)
                .values(status=SUPERSEDED)
            )
            moved = conn.execute(
                policies.update()
                .where(
                    policies.c.point == point,
                    policies.c.version == found.version,
                    policies.c.status == PENDING,
                )
                .values(status=LIVE, approved_by=actor, approved_at=now)
            )
            if moved.rowcount != 1:
                raise Conflict("the version changed meanwhile; retry", field="version")

        draft = EventDraft(
            type="policy.approved",
            actor=actor,
            point=point,
            ts=now,
            payload={"version": found.version, "author": found.author},
        )
        self.recorder.record(Change(events=[draft], apply=apply))
        return next(v for v in self.list(point) if v.version == found.version)

    def effective(self, loaded: dict[str, CompiledPoint]) -> dict[str, CompiledPoint]:
        """For each point, the loaded file if it is live, else the live version compiled."""
        live = self.live_versions()
        result = dict(loaded)
        for name, point in loaded.items():
            version = live.get(name)
            if version is None or version == point.version:
                continue
            with self.db.connect() as conn:
                content = conn.execute(
                    sa.select(policies.c.content).where(
                        policies.c.point == name, policies.c.version == version
                    )
                ).scalar_one()
            result[name] = compile_spec(DecisionPointSpec.model_validate(content), point.source)
        return result


def _version(row: Any) -> PolicyVersion:
    return PolicyVersion(
        point=row.point,
        version=row.version,
        status=row.status,
        author=row.loaded_by,
        loaded_at=aware(row.first_loaded_at) or row.first_loaded_at,
        approved_by=row.approved_by,
        approved_at=aware(row.approved_at),
        source=row.source,
    )
