"""Asking C2SP tlog-witnesses to cosign Warden's checkpoints, and keeping their cosignatures.

Witnesses are configured in WARDEN_WITNESSES as `URL VKEY` pairs, separated by commas or new
lines (URL: the witness's submission prefix; VKEY: its cosigner key, `name+hash+base64`). Each
checkpoint goes to each witness with the consistency proof from the size the witness last
cosigned; a witness that holds another size says so (409) and the proof is rebuilt once from
there. With several lanes, each lane above 0 is a log of its own (origin `ORIGIN/lane/k`): its
note goes to the same witnesses with its own consistency proof, and its cosignatures are kept
in `lane_cosignatures`. A witness that refuses — because the ledger it saw before is not a prefix of this one —
leaves the checkpoint without its cosignature, which `warden audit verify --witness-key`
then reports.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa

from warden.errors import InvalidRequest
from warden.ledger import note
from warden.ledger.checkpoint import Checkpoint
from warden.ledger.lanecheckpoint import LanesCheckpoint, LaneTrees
from warden.ledger.lanes import CONTROL
from warden.ledger.tree import LedgerTree
from warden.store.database import write_connection
from warden.store.schema import checkpoint_cosignatures, lane_cosignatures

log = logging.getLogger(__name__)

WITNESSES_ENV = "WARDEN_WITNESSES"


@dataclass(frozen=True)
class WitnessTarget:
    url: str
    verifier: note.Verifier

    @property
    def name(self) -> str:
        return self.verifier.name


def parse_targets(text: str) -> list[WitnessTarget]:
    found = []
    for entry in text.replace("\n", ",").split(","):
        parts = entry.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].startswith(("http://", "https://")):
            raise InvalidRequest(
                f"{WITNESSES_ENV} entry {entry.strip()!r} must be `URL VKEY`, e.g. "
                "`https://witness.example/ witness.example+1a2b3c4d+BASE64`",
                field=WITNESSES_ENV,
            )
        try:
            verifier = note.parse_vkey(parts[1])
        except note.NoteError as exc:
            raise InvalidRequest(f"{WITNESSES_ENV}: {exc}", field=WITNESSES_ENV) from None
        if verifier.kind != note.COSIGNATURE_V1:
            raise InvalidRequest(
                f"{WITNESSES_ENV}: {verifier.name} is not a cosigner key (type 0x04)",
                field=WITNESSES_ENV,
            )
        found.append(WitnessTarget(parts[0].rstrip("/"), verifier))
    return found


def from_env() -> list[WitnessTarget]:
    return parse_targets(os.environ.get(WITNESSES_ENV, ""))


def cosigned_sizes(conn: sa.Connection) -> dict[str, int]:
    rows = conn.execute(
        sa.select(
            checkpoint_cosignatures.c.witness, sa.func.max(checkpoint_cosignatures.c.size)
        ).group_by(checkpoint_cosignatures.c.witness)
    ).all()
    return {name: int(size) for name, size in rows}


def lane_cosigned_sizes(conn: sa.Connection) -> dict[tuple[str, int], int]:
    """The newest size each witness cosigned of each lane above 0."""
    rows = conn.execute(
        sa.select(
            lane_cosignatures.c.witness,
            lane_cosignatures.c.lane,
            sa.func.max(lane_cosignatures.c.size),
        ).group_by(lane_cosignatures.c.witness, lane_cosignatures.c.lane)
    ).all()
    return {(name, int(lane)): int(size) for name, lane, size in rows}


@dataclass(frozen=True)
class _Submission:
    """One log's signed checkpoint for the witnesses: lane 0's, or lane k's own (ORIGIN/lane/k)."""

    lane: int
    size: int
    note: str


@dataclass
class Submitter:
    db: sa.Engine
    targets: list[WitnessTarget]
    tree: LedgerTree = field(default_factory=LedgerTree)
    timeout: float = 10.0
    lane_trees: LaneTrees = field(default_factory=LaneTrees)
    _known: dict[tuple[str, int], int] | None = None  # (witness, lane) -> size it holds

    def submit(self, cp: Checkpoint) -> dict[str, str]:
        """Hand `cp` (lane 0's checkpoint) to every witness; what happened at each, by name."""
        if cp.note is None:
            return {t.name: "failed: the checkpoint has no signed note" for t in self.targets}
        return self._submit(_Submission(CONTROL, cp.size, cp.note))

    def submit_lanes(self, made: LanesCheckpoint) -> dict[str, str]:
        """Hand each lane's own checkpoint note of a lanes checkpoint, lanes above 0, to every
        witness (lane 0's is the ordinary checkpoint, handed over by `submit`); what happened
        at each witness, by `witness, lane k`."""
        results = {}
        for head, text in zip(made.heads, made.lane_notes, strict=True):
            if head.lane == CONTROL or head.size == 0:
                continue
            for name, outcome in self._submit(_Submission(head.lane, head.size, text)).items():
                results[f"{name}, lane {head.lane}"] = outcome
        return results

    def _submit(self, sub: _Submission) -> dict[str, str]:
        if self._known is None:
            with self.db.connect() as conn:
                known = {(name, CONTROL): size for name, size in cosigned_sizes(conn).items()}
                known.update(lane_cosigned_sizes(conn))
            self._known = known
        results = {}
        with httpx.Client(timeout=self.timeout) as client:
            for target in self.targets:
                try:
                    results[target.name] = self._one(client, target, sub)
                except (httpx.HTTPError, ValueError) as exc:
                    results[target.name] = f"failed: {exc}"
                if not results[target.name].startswith("cosigned"):
                    where = f" (lane {sub.lane})" if sub.lane else ""
                    log.warning("witness %s%s: %s", target.name, where, results[target.name])
        return results

    def _one(self, client: httpx.Client, target: WitnessTarget, sub: _Submission) -> str:
        assert self._known is not None
        key = (target.name, sub.lane)
        old = min(self._known.get(key, 0), sub.size)
        for _ in range(2):
            response = client.post(f"{target.url}/add-checkpoint", content=self._body(sub, old))
            if response.status_code == 409 and "x.tlog.size" in response.headers.get(
                "content-type", ""
            ):
                held = int(response.text.strip() or "0")
                self._known[key] = held
                if held > sub.size:
                    lane = f"lane {sub.lane} of " if sub.lane else ""
                    return (
                        f"refused: the witness holds a checkpoint of {held} events, more than "
                        f"{lane}this ledger's {sub.size}: it was truncated or forked"
                    )
                old = held
                continue
            break
        if response.status_code != 200:
            return f"refused ({response.status_code}): {response.text.strip()}"
        return self._store(target, sub, response.text)

    def _body(self, sub: _Submission, old: int) -> bytes:
        proof: list[bytes] = []
        if 0 < old < sub.size:
            with self.db.connect() as conn:
                if sub.lane == CONTROL:
                    proof = self.tree.consistency(conn, old, sub.size)
                else:
                    proof = self.lane_trees.consistency(conn, sub.lane, old, sub.size)
        lines = [f"old {old}", *(base64.b64encode(p).decode() for p in proof)]
        return ("\n".join(lines) + "\n\n" + sub.note).encode()

    def _store(self, target: WitnessTarget, sub: _Submission, text: str) -> str:
        assert self._known is not None
        body = note.parse_note(sub.note).body
        for line in text.splitlines():
            try:
                signature = note.parse_signature_line(line)
            except note.NoteError:
                continue
            if note.cosigned_at(note.Note(body, (signature,)), target.verifier) is None:
                continue
            row = {
                "size": sub.size,
                "witness": target.name,
                "line": signature.line(),
                "received_at": datetime.now(UTC),
            }
            table = checkpoint_cosignatures
            if sub.lane != CONTROL:
                table, row = lane_cosignatures, {**row, "lane": sub.lane}
            try:
                with write_connection(self.db) as conn, conn.begin():
                    conn.execute(table.insert().values(**row))
            except sa.exc.IntegrityError:
                pass  # cosigned before (a retry): the first one stands
            self._known[target.name, sub.lane] = sub.size
            return "cosigned"
        return "failed: the witness answered without a valid cosignature"
