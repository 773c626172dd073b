"""Proof bundles for decisions in lanes above 0: each event in its lane's tree, the lane in the
lanes tree, and the signed lanes checkpoint — checked offline with the ledger's public key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from warden.errors import InvalidRequest, NotFound
from warden.ledger import merkle
from warden.ledger import note as notes
from warden.ledger.keys import PublicKey, SigningKey
from warden.ledger.lanecheckpoint import (
    LanesCheckpoint,
    LaneTrees,
    make_lanes_checkpoint,
    prove_event,
)
from warden.ledger.lanes import (
    LaneHead,
    LaneProof,
    StoredLanes,
    check_lane_proof,
    lane_consistency_problems,
    parse_index_body,
    stored,
)
from warden.store.schema import ledger_head

if TYPE_CHECKING:
    from warden.ledger.proof import BundleCheck
    from warden.ledger.remembered import Remembered

LANES_FORMAT = "warden.proof.lanes/v1"


def build_lane_bundle(
    db: sa.Engine,
    decision_id: str,
    lane: int,
    seqs: Sequence[int],
    signer: Callable[[], SigningKey] | None,
    since_lanes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The bundle of a decision's events in `lane`, against the newest lanes checkpoint that
    covers them (one is signed first when none does and `signer` is given). With `since_lanes`
    (every lane's size at the lanes checkpoint an auditor remembers) it also carries each lane's
    RFC 9162 consistency proof from there."""
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
    if since_lanes is not None:
        _check_since(since_lanes, checkpoint)
    with db.connect() as conn:
        trees = LaneTrees()
        proofs = [prove_event(conn, checkpoint, lane, seq, trees) for seq in seqs]
        extension = (
            [
                trees.consistency(conn, head.lane, old, head.size)
                for old, head in zip(since_lanes, checkpoint.heads, strict=True)
            ]
            if since_lanes is not None
            else None
        )
    bundle = {
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
    if since_lanes is not None and extension is not None:
        bundle["consistency"] = {
            "old_sizes": list(since_lanes),
            "proofs": [[h.hex() for h in proof] for proof in extension],
        }
    return bundle


def _check_since(since_lanes: Sequence[int], checkpoint: LanesCheckpoint) -> None:
    sizes = [head.size for head in checkpoint.heads]
    if len(since_lanes) != len(sizes) or any(
        not 0 <= old <= new for old, new in zip(since_lanes, sizes, strict=True)
    ):
        raise InvalidRequest(
            f"since_lanes must give each of the {len(sizes)} lanes' sizes at an earlier lanes "
            f"checkpoint, lane 0 first, none above this one's ({', '.join(map(str, sizes))})",
            field="since_lanes",
        )


def parse_since_lanes(text: str) -> list[int]:
    """`1,3,3` (as `verify` prints a lanes checkpoint's sizes) as a list of sizes."""
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(size < 0 for size in sizes):
        raise InvalidRequest(
            f"since_lanes must be every lane's size, lane 0 first, separated by commas (e.g. "
            f"1,3,3), not {text!r}",
            field="since_lanes",
        )
    return sizes


def check_lane_bundle(
    bundle: dict[str, Any],
    key: PublicKey,
    result: BundleCheck,
    state: Remembered | None = None,
) -> None:
    """Fill `result` with what a lanes bundle proves, or with what is wrong with it; with
    `state`, also whether every lane extends the lanes checkpoint it remembers."""
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
    if state is not None:
        result.problems += _extension_problems(bundle.get("consistency"), origin, heads, state)
    if not result.problems and 0 <= lane < len(heads):
        result.lane_size = heads[lane].size
        result.lanes_note = text


def _extension_problems(
    claim: Any, origin: str, heads: Sequence[LaneHead], state: Remembered
) -> list[str]:
    """Whether every lane of the bundle's lanes checkpoint extends the remembered one."""
    if state.origin is not None and origin != state.origin:
        return [f"the proof is for ledger {origin!r}, but your state is of {state.origin!r}"]
    if state.lanes_note is None:
        return []  # no lanes checkpoint remembered yet: this one is the first
    try:
        _, before, _ = parse_index_body(notes.parse_note(state.lanes_note).body)
    except notes.NoteError as exc:
        return [f"the lanes checkpoint in your state file cannot be read: {exc}"]
    sizes = [h.size for h in before]
    wanted = ",".join(map(str, sizes))
    if [h.size for h in heads] == sizes:
        proofs: list[list[bytes]] = [[] for _ in heads]
    elif not isinstance(claim, dict) or claim.get("old_sizes") != sizes:
        return [
            f"the proof carries no consistency proofs from your remembered lanes checkpoint "
            f"(lanes at {wanted}); ask for them with `warden audit prove ID --since-lanes {wanted}`"
        ]
    else:
        try:
            proofs = [[bytes.fromhex(h) for h in path] for path in claim.get("proofs") or []]
        except (TypeError, ValueError):
            return ["the consistency proofs are not lists of hex hashes"]
    problems = lane_consistency_problems(before, heads, proofs)
    return [f"{p} since your remembered lanes checkpoint" for p in problems]


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


def lane_consistency_between(db: sa.Engine, lane: int, old: int, new: int) -> dict[str, Any]:
    """Two stored lanes checkpoints, at which `lane` had `old` and `new` events, and the RFC 9162
    consistency proof of that lane between them. Signatures are not checked here: the caller
    knows which keys it trusts (each side carries its signed lanes checkpoint)."""
    if old > new:
        raise InvalidRequest(f"old ({old}) must not be larger than new ({new})", field="old")
    with db.connect() as conn:
        found = [cp for cp in stored(conn) if isinstance(cp, StoredLanes)]
    if found and not 0 <= lane < len(found[-1].heads):
        raise InvalidRequest(
            f"lane {lane} is not one of this ledger's {len(found[-1].heads)} lanes", field="lane"
        )
    sides = []
    for size, name in ((old, "old"), (new, "new")):
        at = [cp for cp in found if len(cp.heads) > lane and cp.heads[lane].size == size]
        if not at:
            raise NotFound(
                f"no signed lanes checkpoint has lane {lane} at {size} events; the sizes signed "
                f"are {sorted({cp.heads[lane].size for cp in found if len(cp.heads) > lane})}",
                field=name,
            )
        sides.append(at[-1])
    older, newer = sides
    trees = LaneTrees()
    with db.connect() as conn:
        head_size = conn.execute(
            sa.select(ledger_head.c.seq).where(ledger_head.c.id == lane + 1)
        ).scalar()
    trees.tree(lane).store_tiles(db, min(new, int(head_size or 0)))
    with db.connect() as conn:
        proof = trees.consistency(conn, lane, old, new) if old else []
    before, after = older.heads[lane], newer.heads[lane]
    holds = merkle.verify_consistency(old, new, before.root, after.root, proof) if old else True
    return {
        "origin": older.origin,
        "lane": lane,
        "old": {"size": old, "root": before.root.hex(), "note": older.note.text()},
        "new": {"size": new, "root": after.root.hex(), "note": newer.note.text()},
        "proof": [h.hex() for h in proof],
        "consistent": holds,
        "problems": []
        if holds
        else [f"lane {lane} at {new} events does not extend lane {lane} at {old}: it was forked"],
    }
