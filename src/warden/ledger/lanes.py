"""Ledger lanes: several independent hash chains and Merkle trees, bound by one signed index.

Lane 0 is the control lane (every event not about one decision) and, with one lane, the whole
ledger exactly as it always was. With N > 1 lanes, a decision's events go to lane
`1 + H(point) mod (N - 1)`, so everything about one decision (and one point) stays in one lane,
in order. Each lane has its own head row (`ledger_head.id = lane + 1`), its own `seq` from 1 and
its own chain from 64 zeros; an event of lane k > 0 names its lane in its canonical body.

A lanes checkpoint is one signed note (`INDEX_FORMAT`) listing every lane's size and root, read
in one snapshot; its root is the RFC 9162 Merkle root over the leaf hashes of the lanes'
tlog-checkpoint bodies (`ORIGIN` for lane 0, `ORIGIN/lane/k` for lane k), which witnesses cosign
lane by lane. An event is proved across lanes by its inclusion in its lane's tree plus its
lane's inclusion in the lanes tree. See docs/ledger.md, "Lanes".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from warden.errors import InvalidRequest
from warden.ledger import merkle
from warden.ledger import note as notes
from warden.ledger.chain import GENESIS
from warden.store.schema import events, lane_checkpoints, ledger_head

LANES_ENV = "WARDEN_LEDGER_LANES"
INDEX_FORMAT = "warden.ledger.lanes/v1"
MAX_LANES = 256
CONTROL = 0


class LanesRefused(InvalidRequest):
    """The lanes asked for cannot be used with this ledger."""


def lane_of(point: str | None, decision_id: str | None, lanes: int) -> int:
    """The lane of an event: control events in lane 0, a decision's in its point's lane."""
    if lanes == 1 or decision_id is None or point is None:
        return CONTROL
    digest = hashlib.sha256(point.encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % (lanes - 1)


def head_id(lane: int) -> int:
    """The `ledger_head` row of a lane (lane 0 keeps the row it always had, id 1)."""
    return lane + 1


def lane_origin(origin: str, lane: int) -> str:
    """The tlog-checkpoint origin of a lane: the ledger's own for lane 0."""
    return origin if lane == CONTROL else f"{origin}/lane/{lane}"


def configured_lanes() -> int:
    """`WARDEN_LEDGER_LANES` (default 1), checked."""
    raw = os.environ.get(LANES_ENV, "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LANES:
        raise LanesRefused(f"{LANES_ENV} must be a whole number from 1 to {MAX_LANES}, not {raw!r}")
    return value


def lane_count(conn: sa.Connection) -> int:
    """How many lanes this ledger has: its head rows (one before lanes existed)."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(ledger_head)).scalar() or 1)


def configure(db: sa.Engine, lanes: int) -> int:
    """Give the ledger `lanes` lanes, or confirm it has them; returns the number it has.

    The number is fixed once anything was recorded: a point's lane must never change, or a
    decision's later events would land in another lane than its first.
    """
    if not 1 <= lanes <= MAX_LANES:
        raise LanesRefused(f"a ledger has 1 to {MAX_LANES} lanes, not {lanes}")
    with db.begin() as conn:
        have = lane_count(conn)
        if have == lanes:
            return have
        if lanes > 1 and db.dialect.name == "sqlite":
            raise LanesRefused(
                f"{LANES_ENV}={lanes}: SQLite has one lane (its writers share one file lock, so "
                "more lanes would add work and no concurrency); use PostgreSQL for more, or "
                f"unset {LANES_ENV}"
            )
        recorded = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()
        if recorded:
            raise LanesRefused(
                f"{LANES_ENV}={lanes}, but this ledger has {have} lane(s) and already holds "
                f"{recorded} event(s); the number of lanes is fixed when the ledger is created "
                f"(a point's lane never changes). Set {LANES_ENV}={have}, or start a new ledger"
            )
        if lanes > have:
            conn.execute(
                ledger_head.insert(),
                [
                    {"id": head_id(lane), "seq": 0, "chain_hash": GENESIS}
                    for lane in range(have, lanes)
                ],
            )
        else:
            conn.execute(ledger_head.delete().where(ledger_head.c.id > head_id(lanes - 1)))
    return lanes


# -- the lanes checkpoint ------------------------------------------------------------------


@dataclass(frozen=True)
class LaneHead:
    """A lane's size and Merkle root at one moment."""

    lane: int
    size: int
    root: bytes

    def body(self, origin: str) -> str:
        """The lane's own tlog-checkpoint body, as witnesses cosign it."""
        return notes.checkpoint_body(lane_origin(origin, self.lane), self.size, self.root)

    def leaf(self, origin: str) -> bytes:
        """The lane's leaf in the lanes tree."""
        return merkle.hash_leaf(self.body(origin).encode())


def index_root(origin: str, heads: Sequence[LaneHead]) -> bytes:
    """The RFC 9162 root over every lane's checkpoint body, lane 0 first."""
    _check_order(heads)
    return merkle.root([head.leaf(origin) for head in heads])


def index_inclusion(origin: str, heads: Sequence[LaneHead], lane: int) -> list[bytes]:
    """The audit path of `lane`'s leaf in the lanes tree."""
    _check_order(heads)
    tree = merkle.MemoryTree([head.leaf(origin) for head in heads])
    return merkle.inclusion_proof(lane, len(heads), tree.subtree)


def index_body(origin: str, heads: Sequence[LaneHead]) -> str:
    """The signed text of a lanes checkpoint (see the module docstring)."""
    root = index_root(origin, heads)
    lines = [INDEX_FORMAT, origin, str(len(heads)), _b64(root)]
    lines += [f"{h.lane} {h.size} {_b64(h.root)}" for h in heads]
    return "".join(line + "\n" for line in lines)


def parse_index_body(body: str) -> tuple[str, list[LaneHead], bytes]:
    """Origin, lane heads and root of a lanes checkpoint body; the root must match the heads."""
    lines = body.split("\n")
    if len(lines) < 6 or lines[-1] != "" or lines[0] != INDEX_FORMAT:
        raise notes.NoteError(f"a lanes checkpoint starts with {INDEX_FORMAT!r}")
    origin, count_text, root_text, *rows = lines[1:-1]
    if not count_text.isdigit() or int(count_text) != len(rows) or not rows:
        raise notes.NoteError(f"a lanes checkpoint names {count_text} lanes but lists {len(rows)}")
    heads = []
    for at, row in enumerate(rows):
        parts = row.split(" ")
        if len(parts) != 3 or parts[0] != str(at) or not parts[1].isdigit():
            raise notes.NoteError(f"lane line {at} is not `LANE SIZE ROOT`: {row!r}")
        heads.append(LaneHead(at, int(parts[1]), _unb64(parts[2])))
    root = _unb64(root_text)
    if index_root(origin, heads) != root:
        raise notes.NoteError("the lanes root does not match the lanes listed")
    return origin, heads, root


def sign_index(origin: str, heads: Sequence[LaneHead], key: Ed25519PrivateKey) -> str:
    """A lanes checkpoint as a signed note, named with the ledger's origin."""
    body = index_body(origin, heads)
    return notes.Note(body, (notes.sign_line(body, origin, key),)).text()


def sign_lanes(
    origin: str, heads: Sequence[LaneHead], key: Ed25519PrivateKey
) -> tuple[str, list[str]]:
    """The lanes checkpoint and each lane's own tlog-checkpoint note (for its witnesses)."""
    per_lane = []
    for head in heads:
        body = head.body(origin)
        name = lane_origin(origin, head.lane)
        per_lane.append(notes.Note(body, (notes.sign_line(body, name, key),)).text())
    return sign_index(origin, heads, key), per_lane


# -- stored lanes checkpoints ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredLanes:
    id: int
    origin: str
    heads: list[LaneHead]
    note: notes.Note


def stored(conn: sa.Connection) -> list[StoredLanes | str]:
    """Every stored lanes checkpoint, oldest first; one that cannot be read is a message."""
    found: list[StoredLanes | str] = []
    for id_, text in conn.execute(
        sa.select(lane_checkpoints.c.id, lane_checkpoints.c.note).order_by(lane_checkpoints.c.id)
    ).all():
        try:
            parsed = notes.parse_note(text)
            origin, heads, _ = parse_index_body(parsed.body)
        except notes.NoteError as exc:
            found.append(f"lanes checkpoint {id_} cannot be read: {exc}")
            continue
        found.append(StoredLanes(int(id_), origin, heads, parsed))
    return found


# -- proofs across lanes -------------------------------------------------------------------


@dataclass(frozen=True)
class LaneProof:
    """An event proved against a lanes checkpoint: in its lane, and its lane in the index."""

    body: str  # the event's canonical body, as hashed
    lane: int
    seq: int
    inclusion: list[bytes]  # the event in its lane's tree at the lane's size
    lane_inclusion: list[bytes]  # the lane's leaf in the lanes tree
    index_note: str  # the signed lanes checkpoint


def check_lane_proof(proof: LaneProof, verifier: notes.Verifier) -> str | None:
    """What is wrong with a proof across lanes, or None when it holds."""
    try:
        index = notes.parse_note(proof.index_note)
        origin, heads, root = parse_index_body(index.body)
    except notes.NoteError as exc:
        return f"the lanes checkpoint cannot be read: {exc}"
    if verifier.name != origin or not index.signed_by(verifier):
        return f"the lanes checkpoint is not signed by {verifier.name}'s key"
    if not 0 <= proof.lane < len(heads):
        return f"lane {proof.lane} is not among the {len(heads)} lanes of the checkpoint"
    head = heads[proof.lane]
    if not merkle.verify_inclusion(
        head.leaf(origin), proof.lane, len(heads), proof.lane_inclusion, root
    ):
        return f"lane {proof.lane}'s checkpoint is not in the lanes tree"
    if not 1 <= proof.seq <= head.size:
        return f"event {proof.seq} is beyond lane {proof.lane}'s size {head.size}"
    leaf = merkle.hash_leaf(proof.body.encode())
    if not merkle.verify_inclusion(leaf, proof.seq - 1, head.size, proof.inclusion, head.root):
        return f"event {proof.seq} is not in lane {proof.lane}'s tree at size {head.size}"
    named = _named_place(proof.body)
    if named != (proof.lane, proof.seq):
        return f"the event's body names lane {named[0]}, event {named[1]}, not where it is proved"
    return None


def lane_consistency_problems(
    old: Sequence[LaneHead],
    new: Sequence[LaneHead],
    proofs: Sequence[Sequence[bytes]],
) -> list[str]:
    """Whether every lane of `new` extends the same lane of `old` (RFC 9162, lane by lane)."""
    if len(old) != len(new) or len(proofs) != len(new):
        return [f"the checkpoints have {len(old)} and {len(new)} lanes; lanes never change"]
    problems = []
    for before, after, proof in zip(old, new, proofs, strict=True):
        if after.size < before.size:
            problems.append(f"lane {after.lane} shrank from {before.size} to {after.size} events")
        elif before.size == 0:
            continue
        elif not merkle.verify_consistency(before.size, after.size, before.root, after.root, proof):
            problems.append(
                f"lane {after.lane} at {after.size} events does not extend its checkpoint at "
                f"{before.size}: the lane was forked or rewritten"
            )
    return problems


def _named_place(body: str) -> tuple[int, int]:
    try:
        parsed = orjson.loads(body)
        return int(parsed.get("lane", CONTROL)), int(parsed["seq"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return -1, -1


def _check_order(heads: Sequence[LaneHead]) -> None:
    if [h.lane for h in heads] != list(range(len(heads))):
        raise ValueError("lane heads are listed lane 0 first, one per lane")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise notes.NoteError(f"{text!r} is not base64") from None
    if len(data) != 32:
        raise notes.NoteError(f"a root hash has 32 bytes, not {len(data)}")
    return data
