"""Proof bundles for decisions in lanes above 0: each event in its lane's tree, the lane in the
lanes tree, and the signed lanes checkpoint — checked offline with the ledger's public key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from warden.errors import InvalidRequest
from warden.ledger import merkle
from warden.ledger import note as notes
from warden.ledger.keys import PublicKey, SigningKey
from warden.ledger.lanecheckpoint import (
    LanesCheckpoint,
    LaneTrees,
    make_lanes_checkpoint,
    prove_event,
)
from warden.ledger.lanes import LaneProof, StoredLanes, check_lane_proof, parse_index_body, stored

if TYPE_CHECKING:
    from warden.ledger.proof import BundleCheck

LANES_FORMAT = "warden.proof.lanes/v1"


def build_lane_bundle(
    db: sa.Engine,
    decision_id: str,
    lane: int,
    seqs: Sequence[int],
    signer: Callable[[], SigningKey] | None,
) -> dict[str, Any]:
    """The bundle of a decision's events in `lane`, against the newest lanes checkpoint that
    covers them (one is signed first when none does and `signer` is given)."""
    with db.connect() as conn:
        covering = [
            cp
            for cp in stored(conn)
            if isinstance(cp, StoredLanes)
            and len(cp.heads) > lane
            and cp.heads[lane].size >= seqs[-1]
        ]
    if covering:
        newest = covering[-1]
        checkpoint = LanesCheckpoint(newest.origin, newest.heads, newest.note.text(), [])
    elif signer is not None:
        checkpoint = make_lanes_checkpoint(db, signer())
    else:
        raise InvalidRequest(
            f"no lanes checkpoint covers event {seqs[-1]} of lane {lane} yet; run "
            "`warden audit lanes-checkpoint`, or wait for the next periodic one",
            field="decision_id",
        )
    with db.connect() as conn:
        trees = LaneTrees()
        proofs = [prove_event(conn, checkpoint, lane, seq, trees) for seq in seqs]
    return {
        "format": LANES_FORMAT,
        "decision_id": decision_id,
        "lane": lane,
        "index_note": checkpoint.note,
        "lane_inclusion": [p.hex() for p in proofs[0].lane_inclusion],
        "events": [
            {"seq": p.seq, "body": p.body, "inclusion": [h.hex() for h in p.inclusion]}
            for p in proofs
        ],
    }


def check_lane_bundle(bundle: dict[str, Any], key: PublicKey, result: BundleCheck) -> None:
    """Fill `result` with what a lanes bundle proves, or with what is wrong with it."""
    result.decision_id = bundle.get("decision_id")
    lane, text = bundle.get("lane"), bundle.get("index_note")
    if not isinstance(lane, int) or not isinstance(text, str):
        result.problems.append("a lanes proof needs lane (integer) and index_note (string)")
        return
    try:
        origin, heads, _ = parse_index_body(notes.parse_note(text).body)
        lane_path = [bytes.fromhex(p) for p in bundle.get("lane_inclusion") or []]
    except (notes.NoteError, ValueError, TypeError) as exc:
        result.problems.append(f"the lanes checkpoint does not hold: {exc}")
        return
    result.origin = origin
    verifier = notes.Verifier(origin, key.raw)
    items = bundle.get("events")
    if not isinstance(items, list) or not items:
        result.problems.append("the bundle holds no events")
        return
    for number, item in enumerate(items, 1):
        problem = _check_item(item, lane, lane_path, text, verifier, result.decision_id)
        if problem:
            result.problems.append(f"event #{number}: {problem}")
        else:
            body = orjson.loads(item["body"])
            result.events.append(
                {"seq": item["seq"], "lane": lane, "type": body.get("type"), "ts": body.get("ts")}
            )
    if not result.problems and 0 <= lane < len(heads):
        result.lane_size = heads[lane].size


def _check_item(
    item: Any,
    lane: int,
    lane_path: list[bytes],
    text: str,
    verifier: notes.Verifier,
    decision_id: Any,
) -> str | None:
    if not isinstance(item, dict):
        return "not an object"
    seq, body, path = item.get("seq"), item.get("body"), item.get("inclusion")
    if not isinstance(seq, int) or not isinstance(body, str) or not isinstance(path, list):
        return "needs seq (integer), body (string) and inclusion (list)"
    try:
        inclusion = [bytes.fromhex(p) for p in path]
        parsed = orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return "body is not JSON or inclusion is not hex"
    if not isinstance(parsed, dict) or parsed.get("decision_id") != decision_id:
        return f"the event is not about decision {decision_id}"
    if any(len(h) != merkle.HASH_SIZE for h in (*inclusion, *lane_path)):
        return "a proof hash is not 32 bytes"
    return check_lane_proof(LaneProof(body, lane, seq, inclusion, lane_path, text), verifier)
