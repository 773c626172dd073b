"""The model registry: immutable versions, moving aliases, and the history of every move.

Artifacts are stored in the database itself (content-addressed by SHA-256), so every replica
can load any version without a shared filesystem, and a version can never change under its
name. A model folder (kind mlflow) is stored as a zip, addressed by the digest of its files
(`warden.rollout.artifacts`). Each alias move is a ledger event, so "which version was live at
time T" is answerable.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from warden.errors import Conflict, InvalidRequest, NotFound
from warden.ledger.chain import EventDraft
from warden.models.base import Model, ModelFailure, ModelLoadError
from warden.models.guard import check_prediction
from warden.models.loader import load_model
from warden.policy.point import CompiledPoint
from warden.policy.schema import ModelKind
from warden.rollout.artifacts import (
    FolderError,
    archive_digest,
    digest_of,
    pack_folder,
    unpack_folder,
)
from warden.store.queries import aware, recent_decisions
from warden.store.recorder import Change, DuplicateKey, Recorder
from warden.store.schema import events, model_aliases, model_artifacts, model_versions

ALIASES = ("champion", "challenger")
ARTIFACT_KINDS = (ModelKind.SKLEARN, ModelKind.ONNX, ModelKind.MLFLOW)
FOLDER_KINDS = (ModelKind.MLFLOW,)
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class ModelVersion:
    point: str
    version: str
    sha256: str
    registered_by: str
    registered_at: datetime
    metadata: dict[str, Any]


@dataclass(frozen=True)
class AliasMove:
    seq: int
    at: datetime
    alias: str
    previous: str | None
    version: str | None
    actor: str
    reason: str


class Registry:
    def __init__(self, db: sa.Engine, recorder: Recorder, cache: Path) -> None:
        self.db = db
        self.recorder = recorder
        self.cache = cache.resolve()  # artifacts load from any folder, whatever WARDEN_HOME says

    # -- versions ------------------------------------------------------------------------

    def register(
        self,
        point: CompiledPoint,
        *,
        version: str,
        artifact: Path,
        actor: str,
        metadata: dict[str, Any] | None = None,
        smoke_input: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Store an artifact as a new immutable version, after it loads and answers."""
        kind = point.spec.model.kind
        if kind not in ARTIFACT_KINDS:
            raise InvalidRequest(
                f"point '{point.name}' uses a {kind} model; the registry holds model artifacts "
                "(sklearn, onnx, mlflow). A callable's version is its code: set model.version "
                "in the point file",
                field="point",
            )
        if not version.strip():
            raise InvalidRequest("a version name is required", field="version")
        if kind in FOLDER_KINDS:
            name = artifact.resolve().name  # `.` and `..` name their folder
            digest, content = _read_folder(artifact)
            path = self._materialise_folder(digest, name, content)
        else:
            name = artifact.name
            digest, content = _read_file(artifact)
            path = self._materialise(digest, name, content)
        self._smoke_test(point, version, path, smoke_input)
        now = datetime.now(UTC)
        meta = dict(metadata or {})
        row = {
            "point": point.name,
            "version": version,
            "sha256": digest,
            "registered_by": actor,
            "registered_at": now,
            "metadata": meta,
        }

        def apply(conn: sa.Connection) -> None:
            exists = conn.execute(
                sa.select(model_artifacts.c.sha256).where(model_artifacts.c.sha256 == digest)
            ).first()
            if exists is None:
                conn.execute(
                    model_artifacts.insert().values(
                        sha256=digest, filename=name, size=len(content), content=content
                    )
                )
            conn.execute(model_versions.insert().values(**row))

        draft = EventDraft(
            type="model.registered",
            actor=actor,
            point=point.name,
            ts=now,
            payload={
                "version": version,
                "sha256": digest,
                "filename": name,
                "size": len(content),
                "metadata": meta,
            },
        )
        try:
            self.recorder.record(Change(events=[draft], apply=apply))
        except DuplicateKey:
            raise Conflict(
                f"version '{version}' of '{point.name}' is already registered; "
                "versions are immutable, choose a new name",
                field="version",
            ) from None
        return ModelVersion(point.name, version, digest, actor, now, meta)

    def _smoke_test(
        self, point: CompiledPoint, version: str, path: Path, smoke_input: dict[str, Any] | None
    ) -> None:
        if smoke_input is None:
            with self.db.connect() as conn:
                recent = [
                    d
                    for d in recent_decisions(conn, point.name, 20)
                    if not any(r.code == "invalid_input" for r in d.reasons)
                ]
            if not recent:
                raise InvalidRequest(
                    f"no recorded decision of '{point.name}' to smoke-test with; pass a smoke "
                    "input (--smoke-input JSON)",
                    field="smoke_input",
                )
            smoke_input = recent[-1].input
        try:
            point.validate_input(smoke_input)
        except Exception as exc:
            raise InvalidRequest(
                f"the smoke input does not match the input schema: {exc}", field="smoke_input"
            ) from None
        try:
            model = self._load_file(point, version, path)
            raw = model.predict(smoke_input)
            check_prediction(raw.outcome, raw.confidence, point.spec.outcomes)
        except (ModelLoadError, ModelFailure) as exc:
            raise InvalidRequest(
                f"the artifact failed its smoke test: {exc}", field="path"
            ) from None
        except Exception as exc:
            raise InvalidRequest(
                f"the artifact failed its smoke test: {type(exc).__name__}: {exc}", field="path"
            ) from None

    def versions(self, point: str) -> list[ModelVersion]:
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(model_versions)
                .where(model_versions.c.point == point)
                .order_by(model_versions.c.registered_at)
            ).all()
        return [
            ModelVersion(
                r.point,
                r.version,
                r.sha256,
                r.registered_by,
                aware(r.registered_at) or r.registered_at,
                r.metadata,
            )
            for r in rows
        ]

    def get(self, point: str, version: str) -> ModelVersion:
        found = next((v for v in self.versions(point) if v.version == version), None)
        if found is None:
            raise NotFound(
                f"no registered version '{version}' of '{point}'; see `warden model list {point}`",
                field="version",
            )
        return found

    def load(self, point: CompiledPoint, version: str) -> Model:
        """A registered version, ready to predict; its bytes are checked against the hash."""
        registered = self.get(point.name, version)
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(model_artifacts).where(model_artifacts.c.sha256 == registered.sha256)
            ).one()
        content = bytes(row.content)
        if point.spec.model.kind in FOLDER_KINDS:
            try:
                path = self._materialise_folder(registered.sha256, row.filename, content)
            except FolderError as exc:
                raise ModelLoadError(f"artifact of {point.name} {version}: {exc}") from None
            return self._load_file(point, version, path)
        if hashlib.sha256(content).hexdigest() != registered.sha256:
            raise ModelLoadError(
                f"artifact of {point.name} {version} does not match its "
                "SHA-256; the database was altered"
            )
        return self._load_file(
            point, version, self._materialise(registered.sha256, row.filename, content)
        )

    def _load_file(self, point: CompiledPoint, version: str, path: Path) -> Model:
        spec = point.spec.model.model_copy(update={"path": str(path), "version": version})
        model = load_model(spec, point.base_dir)
        assert model is not None  # file kinds always give a model
        return model

    def _materialise(self, digest: str, filename: str, content: bytes) -> Path:
        folder = self.cache / digest
        path = folder / Path(filename).name
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(path.suffix + ".partial")
            partial.write_bytes(content)
            partial.replace(path)
        return path

    def _materialise_folder(self, digest: str, name: str, archive: bytes) -> Path:
        """The archive unpacked as `<cache>/<digest>/<name>`; its files must match the digest."""
        if archive_digest(archive) != digest:
            raise FolderError("its files do not match its SHA-256; the database was altered")
        folder = self.cache / digest
        name = Path(name).name
        path = folder / (name if name not in ("", ".", "..") else "model")
        if _holds(path, digest):
            return path
        folder.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder))
        try:
            unpack_folder(archive, partial)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(partial, path)
        except OSError:
            if not _holds(path, digest):
                raise  # not a concurrent load that unpacked the same files first
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return path

    # -- aliases -------------------------------------------------------------------------

    def aliases(self, point: str) -> dict[str, str]:
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(model_aliases.c.alias, model_aliases.c.version).where(
                    model_aliases.c.point == point
                )
            ).all()
        return {r.alias: r.version for r in rows}

    def set_alias(
        self, point: str, alias: str, version: str | None, *, actor: str, reason: str
    ) -> AliasMove:
        """Point an alias at a version (or clear it with None). Every move is an event."""
        if alias not in ALIASES:
            raise InvalidRequest(f"alias must be one of {', '.join(ALIASES)}", field="alias")
        if not reason.strip():
            raise InvalidRequest("say why the alias moves; a reason is required", field="reason")
        if version is not None:
            self.get(point, version)
        now = datetime.now(UTC)
        previous = self.aliases(point).get(alias)

        def apply(conn: sa.Connection) -> None:
            conn.execute(
                model_aliases.delete().where(
                    model_aliases.c.point == point, model_aliases.c.alias == alias
                )
            )
            if version is not None:
                conn.execute(
                    model_aliases.insert().values(
                        point=point,
                        alias=alias,
                        version=version,
                        moved_by=actor,
                        moved_at=now,
                        reason=reason,
                    )
                )

        draft = EventDraft(
            type="model.alias_moved",
            actor=actor,
            point=point,
            ts=now,
            payload={"alias": alias, "from": previous, "to": version, "reason": reason},
        )
        self.recorder.record(Change(events=[draft], apply=apply))
        return AliasMove(0, now, alias, previous, version, actor, reason)

    def history(self, point: str) -> list[AliasMove]:
        """Every alias move of a point, oldest first, read from the ledger itself."""
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(events.c.seq, events.c.ts, events.c.actor, events.c.body)
                .where(events.c.point == point, events.c.type == "model.alias_moved")
                .order_by(events.c.seq)
            ).all()
        moves = []
        for row in rows:
            payload = orjson.loads(row.body)["payload"]
            moves.append(
                AliasMove(
                    row.seq,
                    aware(row.ts) or row.ts,
                    payload["alias"],
                    payload["from"],
                    payload["to"],
                    row.actor,
                    payload["reason"],
                )
            )
        return moves

    def live_at(self, point: str, alias: str, when: datetime) -> str | None:
        """Which version the alias named at time `when`."""
        live = None
        for move in self.history(point):
            if move.at > when:
                break
            if move.alias == alias:
                live = move.version
        return live


def _read_file(artifact: Path) -> tuple[str, bytes]:
    if not artifact.is_file():
        raise InvalidRequest(f"{artifact} is not a file", field="path")
    content = artifact.read_bytes()
    if len(content) > MAX_ARTIFACT_BYTES:
        raise InvalidRequest(f"{artifact} is larger than 512 MiB", field="path")
    return hashlib.sha256(content).hexdigest(), content


def _read_folder(artifact: Path) -> tuple[str, bytes]:
    """The digest of the folder's files and the archive the database stores."""
    if not (artifact / "MLmodel").is_file():
        raise InvalidRequest(
            f"{artifact} is not an MLflow model folder: it has no MLmodel file; pass the "
            "folder mlflow's save_model wrote",
            field="path",
        )
    try:
        return pack_folder(artifact, MAX_ARTIFACT_BYTES)
    except FolderError as exc:
        raise InvalidRequest(str(exc), field="path") from None


def _holds(folder: Path, digest: str) -> bool:
    try:
        return folder.is_dir() and digest_of(folder, MAX_ARTIFACT_BYTES) == digest
    except (FolderError, OSError):
        return False
