"""Proof bundles: a decision's events, their inclusion proofs and the signed checkpoint.

A bundle is self-contained JSON. `check_bundle` needs only it and the ledger's public key — no
database, no Warden server — so an auditor can check one decision on their own machine. Asked
with `since` (the size of the checkpoint an auditor remembers), it also carries the RFC 9162
consistency proof from that checkpoint to its own, so the auditor's state moves forward only
along one history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from warden.errors import InvalidRequest, NotFound
from warden.ledger import checkpoint as checkpoints
from warden.ledger.checkpoint import Checkpoint
from warden.ledger.keys import PublicKey, SigningKey
from warden.ledger.laneproof import LANES_FORMAT, check_lane_bundle
from warden.ledger.merkle import hash_leaf, verify_consistency, verify_inclusion
from warden.ledger.note import NoteError
from warden.ledger.remembered import Remembered
from warden.ledger.tree import LedgerDamaged, LedgerTree
from warden.store.schema import events

FORMAT = "warden.proof/v1"


def build_bundle(
    db: sa.Engine,
    decision_id: str,
    *,
    tree: LedgerTree | None = None,
    signer: Callable[[], SigningKey] | None = None,
    since: int | None = None,
    since_lanes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The proof bundle of one decision, against the newest checkpoint (of its lane).

    When no checkpoint covers the decision's last event yet, `signer` (if given) makes one.
    """
    tree = tree or LedgerTree()
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.seq, events.c.body, events.c.leaf_hash, events.c.lane)
            .where(events.c.decision_id == decision_id)
            .order_by(events.c.seq)
        ).all()
        if not rows:
            raise NotFound(f"no events for decision '{decision_id}'", field="decision_id")
        cp = checkpoints.covering(conn, rows[-1].seq) if not rows[0].lane else None
    if rows[0].lane:  # a decision in a lane above 0: proved against a lanes checkpoint
        if since is not None:
            raise InvalidRequest(
                f"decision '{decision_id}' is in lane {rows[0].lane}: its proof is against a "
                "lanes checkpoint, so give since_lanes (every lane's size at the lanes "
                "checkpoint you remember, e.g. 1,3,3) instead of since",
                field="since",
            )
        from warden.ledger.laneproof import build_lane_bundle

        return build_lane_bundle(
            db, decision_id, rows[0].lane, [r.seq for r in rows], signer, since_lanes
        )
    if since_lanes is not None:
        raise InvalidRequest(
            f"decision '{decision_id}' is in lane 0: its proof is against an ordinary "
            "checkpoint, so give since (its size) instead of since_lanes",
            field="since_lanes",
        )
    if cp is None:
        if signer is None:
            raise InvalidRequest(
                f"no checkpoint covers event {rows[-1].seq} of decision '{decision_id}' yet; "
                "run `warden audit checkpoint`, or wait for the next periodic one",
                field="decision_id",
            )
        cp = checkpoints.make_checkpoint(db, signer(), tree)
    if since is not None and not 0 < since <= cp.size:
        raise InvalidRequest(
            f"since must be the size of an earlier checkpoint, between 1 and {cp.size}",
            field="since",
        )
    tree.store_tiles(db, cp.size)
    with db.connect() as conn:
        proofs = [tree.inclusion(conn, row.seq - 1, cp.size) for row in rows]
        extension = tree.consistency(conn, since, cp.size) if since is not None else None
    bundle: dict[str, Any] = {
        "format": FORMAT,
        "decision_id": decision_id,
        "checkpoint": cp.to_dict(),
        "events": [
            {"seq": row.seq, "body": row.body, "inclusion": [p.hex() for p in proof]}
            for row, proof in zip(rows, proofs, strict=True)
        ],
    }
    if since is not None and extension is not None:
        bundle["consistency"] = {"old_size": since, "proof": [p.hex() for p in extension]}
    for row, proof in zip(rows, proofs, strict=True):
        if not verify_inclusion(
            bytes.fromhex(row.leaf_hash), row.seq - 1, cp.size, proof, cp.root_bytes
        ):
            raise LedgerDamaged(
                f"event {row.seq} does not prove against checkpoint {cp.size}; the ledger or its "
                "tiles were altered — run `warden audit verify`",
                seq=row.seq,
            )
    return bundle


@dataclass
class BundleCheck:
    decision_id: str | None = None
    checkpoint: Checkpoint | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    origin: str | None = None
    lane_size: int | None = None  # a lanes proof: the size of its lane at its checkpoint
    lanes_note: str | None = None  # a lanes proof that holds: its signed lanes checkpoint

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.events)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "decision_id": self.decision_id,
            "checkpoint": self.checkpoint.to_dict() if self.checkpoint else None,
            "events": self.events,
            "problems": self.problems,
        }


def check_bundle(bundle: Any, key: PublicKey, *, state: Remembered | None = None) -> BundleCheck:
    """Check a bundle offline: the signature, each body's hash, each inclusion proof, and with
    `state` that its checkpoint extends the remembered one."""
    result = BundleCheck()
    if isinstance(bundle, dict) and bundle.get("format") == LANES_FORMAT:
        check_lane_bundle(bundle, key, result, state)
        return result
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        result.problems.append(f"not a Warden proof bundle (format must be {FORMAT!r})")
        return result
    result.decision_id = bundle.get("decision_id")
    try:
        cp = Checkpoint.from_dict(bundle.get("checkpoint"))
    except ValueError as exc:
        result.problems.append(str(exc))
        return result
    result.checkpoint = cp
    if cp.key_id != key.key_id:
        result.problems.append(
            f"the checkpoint is signed by key {cp.key_id}, but the public key given is {key.key_id}"
        )
    elif not cp.signed_by(key):
        result.problems.append("the checkpoint signature is invalid: it was altered")
    if cp.note is not None:
        try:
            result.origin = cp.parsed_note()[1].origin
        except NoteError as exc:
            result.problems.append(f"the checkpoint's signed note does not hold: {exc}")
    if state is not None:
        result.problems += _extension_problems(bundle.get("consistency"), cp, state, result.origin)
    items = bundle.get("events")
    if not isinstance(items, list) or not items:
        result.problems.append("the bundle holds no events")
        return result
    for number, item in enumerate(items, 1):
        problem = _check_event(item, cp, result.decision_id)
        if problem:
            result.problems.append(f"event #{number}: {problem}")
        else:
            body = orjson.loads(item["body"])
            result.events.append(
                {"seq": item["seq"], "type": body.get("type"), "ts": body.get("ts")}
            )
    return result


def _extension_problems(
    claim: Any, cp: Checkpoint, state: Remembered, origin: str | None
) -> list[str]:
    """Whether the bundle's checkpoint is the remembered one or a consistent extension of it."""
    if state.origin is not None and origin is not None and origin != state.origin:
        return [f"the proof is for ledger {origin!r}, but your state is of {state.origin!r}"]
    if cp.size < state.size:
        return [
            f"the proof's checkpoint ({cp.size}) is older than the one you remember "
            f"({state.size}); ask for a proof against a newer checkpoint"
        ]
    if cp.size == state.size:
        if cp.root_bytes != state.root:
            return [
                f"the proof's checkpoint {cp.size} has another root than the one you remember: "
                "the ledger was forked or rewritten"
            ]
        return []
    if not isinstance(claim, dict) or claim.get("old_size") != state.size:
        return [
            f"the proof carries no consistency proof from your remembered checkpoint "
            f"{state.size}; ask for it with `warden audit prove ID --since {state.size}`"
        ]
    try:
        path = [bytes.fromhex(p) for p in claim.get("proof") or []]
    except (TypeError, ValueError):
        return ["the consistency proof is not a list of hex hashes"]
    if any(len(p) != 32 for p in path) or not verify_consistency(
        state.size, cp.size, state.root, cp.root_bytes, path
    ):
        return [
            f"checkpoint {cp.size} is not a consistent extension of your remembered checkpoint "
            f"{state.size}: events up to {state.size} were rewritten"
        ]
    return []


def _check_event(item: Any, cp: Checkpoint, decision_id: Any) -> str | None:
    if not isinstance(item, dict):
        return "not an object"
    seq, body, path = item.get("seq"), item.get("body"), item.get("inclusion")
    if not isinstance(seq, int) or not isinstance(body, str) or not isinstance(path, list):
        return "needs seq (integer), body (string) and inclusion (list)"
    try:
        parsed = orjson.loads(body)
        proof = [bytes.fromhex(p) for p in path]
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return "body is not JSON or inclusion is not hex"
    if not isinstance(parsed, dict) or parsed.get("seq") != seq:
        return f"body does not say it is event {seq}"
    if parsed.get("decision_id") != decision_id:
        return f"event {seq} belongs to decision {parsed.get('decision_id')!r}"
    if not verify_inclusion(hash_leaf(body.encode()), seq - 1, cp.size, proof, cp.root_bytes):
        return f"event {seq} is not in the signed tree of size {cp.size}: it was altered"
    return None


def consistency_between(db: sa.Engine, old: int, new: int, tree: LedgerTree) -> dict[str, Any]:
    """Two stored checkpoints, the RFC 9162 consistency proof between them, and whether it holds.

    Signatures are not checked here: the caller knows which keys it trusts.
    """
    if old > new:
        raise InvalidRequest(f"old ({old}) must not be larger than new ({new})", field="old")
    with db.connect() as conn:
        older = checkpoints.get(conn, old)
        newer = checkpoints.get(conn, new)
    tree.store_tiles(db, new)
    with db.connect() as conn:
        proof = tree.consistency(conn, old, new)
    holds = verify_consistency(old, new, older.root_bytes, newer.root_bytes, proof)
    return {
        "old": older.to_dict(),
        "new": newer.to_dict(),
        "proof": [p.hex() for p in proof],
        "consistent": holds,
        "problems": [] if holds else [f"checkpoint {new} does not extend checkpoint {old}"],
    }
