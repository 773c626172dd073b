"""Events and the hash chain.

leaf_hash  = SHA-256(0x00 || body)            (RFC 6962 leaf hashing, ready for Merkle proofs)
chain_hash = SHA-256(prev_chain_hash || leaf_hash)

`body` is the canonical JSON of the event including its sequence number, so reordering,
insertion or deletion all change a hash.

Only the number and the previous hash depend on the chain head. `prepare` does everything else
before the writer takes the head lock: the canonical bytes on either side of the number (its
key sorts between "point" and "ts", so the body is `head + digits + tail`) and the SHA-256
state over `0x00 || head`; `seal_prepared` then costs one short hash update and one chain hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from warden.ledger.canonical import canonical_bytes

GENESIS = "0" * 64


@dataclass(slots=True)
class EventDraft:
    """An event before the ledger assigns it a place in the chain."""

    type: str
    actor: str
    payload: dict[str, Any]
    point: str | None = None
    decision_id: str | None = None
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    checked: bool = False  # the payload holds only finite numbers (validated by its producer)


@dataclass(frozen=True, slots=True)
class SealedEvent:
    seq: int
    type: str
    point: str | None
    decision_id: str | None
    actor: str
    ts: datetime
    body: str
    prev_hash: str
    leaf_hash: str
    chain_hash: str
    lane: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "seq": self.seq,
            "type": self.type,
            "point": self.point,
            "decision_id": self.decision_id,
            "actor": self.actor,
            "ts": self.ts,
            "body": self.body,
            "prev_hash": self.prev_hash,
            "leaf_hash": self.leaf_hash,
            "chain_hash": self.chain_hash,
        }


def event_body(seq: int, draft: EventDraft, lane: int = 0) -> bytes:
    """The canonical body; an event of lane k > 0 names its lane (lane 0's bodies never do)."""
    body = {
        "seq": seq,
        "type": draft.type,
        "point": draft.point,
        "decision_id": draft.decision_id,
        "actor": draft.actor,
        "ts": draft.ts.isoformat(),
        "payload": draft.payload,
    }
    if lane:
        body["lane"] = lane
    return canonical_bytes(body, checked=draft.checked)


def leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def next_chain_hash(prev_hex: str, leaf: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hex) + leaf).hexdigest()


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """A draft's canonical bytes around its sequence number, and the leaf hash so far."""

    draft: EventDraft
    head: bytes  # `{"actor":…,"decision_id":…,"payload":…,"point":…,"seq":`
    tail: bytes  # `,"ts":…,"type":…}`
    leaf_state: Any  # SHA-256 over 0x00 || head, copied for each sequence number
    lane: int = 0  # named in the head's bytes when above 0


def prepare(draft: EventDraft, lane: int = 0) -> PreparedEvent:
    """Everything about an event that does not depend on its place in its lane's chain."""
    fields: dict[str, Any] = {
        "actor": draft.actor,
        "decision_id": draft.decision_id,
        "payload": draft.payload,
        "point": draft.point,
    }
    if lane:
        fields["lane"] = lane
    before = canonical_bytes(fields, checked=draft.checked)
    after = canonical_bytes({"ts": draft.ts.isoformat(), "type": draft.type}, checked=True)
    head = before[:-1] + b',"seq":'
    state = hashlib.sha256(b"\x00")
    state.update(head)
    return PreparedEvent(draft, head, b"," + after[1:], state, lane)


def seal_prepared(seq: int, prev_hash: str, prepared: PreparedEvent) -> SealedEvent:
    """Give a prepared event its sequence number and hashes: the part under the head lock."""
    digits = b"%d" % seq
    state = prepared.leaf_state.copy()
    state.update(digits)
    state.update(prepared.tail)
    leaf = state.digest()
    draft = prepared.draft
    return SealedEvent(
        seq=seq,
        type=draft.type,
        point=draft.point,
        decision_id=draft.decision_id,
        actor=draft.actor,
        ts=draft.ts,
        body=(prepared.head + digits + prepared.tail).decode(),
        prev_hash=prev_hash,
        leaf_hash=leaf.hex(),
        chain_hash=next_chain_hash(prev_hash, leaf),
        lane=prepared.lane,
    )


def seal(seq: int, prev_hash: str, draft: EventDraft, lane: int = 0) -> SealedEvent:
    """Give a draft its sequence number (in its lane) and hashes."""
    return seal_prepared(seq, prev_hash, prepare(draft, lane))


@dataclass(frozen=True, slots=True)
class Break:
    seq: int
    kind: str
    message: str


def verify_rows(
    rows: list[dict[str, Any]], *, start_hash: str = GENESIS, start_seq: int = 1
) -> Break | None:
    """Re-derive every hash of consecutive event rows; the first break, or None when intact."""
    prev = start_hash
    expected_seq = start_seq
    for row in rows:
        seq = row["seq"]
        if seq != expected_seq:
            kind = "deleted" if seq > expected_seq else "reordered"
            return Break(expected_seq, kind, f"expected event {expected_seq}, found {seq}")
        body = row["body"].encode()
        leaf = leaf_hash(body)
        if leaf.hex() != row["leaf_hash"]:
            return Break(seq, "modified", f"event {seq}: body does not match its leaf hash")
        if row["prev_hash"] != prev:
            return Break(seq, "modified", f"event {seq}: previous hash does not match the chain")
        if next_chain_hash(prev, leaf) != row["chain_hash"]:
            return Break(seq, "modified", f"event {seq}: chain hash does not match")
        prev = row["chain_hash"]
        expected_seq += 1
    return None
