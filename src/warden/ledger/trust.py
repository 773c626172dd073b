"""Which keys an auditor trusts for which checkpoints: the keys they pass, and the chain of
rotations the ledger itself records.

A rotation is an event (`ledger.key_rotated`) naming the old and the new public key. Once a
checkpoint that a trusted key signed covers that event (and its root matches the events), the
event is authentic, and the key it names on the other side becomes trusted too: the new key for
checkpoints from the rotation on, the old key for those before it. Warden signs the first
checkpoint after a rotation with both keys, so an auditor holding either key follows the chain.
A rotation after a lost key is signed by the new key only: an auditor holding only the old key
is told so and must accept the new key explicitly.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson

from warden.ledger import keys
from warden.ledger import note as notes
from warden.ledger.checkpoint import Checkpoint
from warden.ledger.keys import PublicKey

ROTATED = "ledger.key_rotated"


@dataclass(frozen=True)
class Rotation:
    seq: int
    old_key_id: str
    old: PublicKey | None
    new: PublicKey
    lost: bool

    def describe(self) -> str:
        how = "after the old key was lost" if self.lost else "signed by both keys"
        return (
            f"event {self.seq} rotates the ledger key from {self.old_key_id} to "
            f"{self.new.key_id} ({how})"
        )


def _public(value: object) -> PublicKey | None:
    if not isinstance(value, str):
        return None
    try:
        return keys.parse_public_key(base64.b64encode(base64.b64decode(value, validate=True)))
    except (binascii.Error, ValueError, keys.KeyFileError):
        return None


def rotation(seq: int, body: str) -> Rotation | None:
    """The rotation an event body states, or None if it is not a well-formed one."""
    try:
        payload = orjson.loads(body).get("payload") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return None
    new = _public(payload.get("new_public_key"))
    if new is None or not isinstance(payload.get("old_key_id"), str):
        return None
    return Rotation(
        seq,
        payload["old_key_id"],
        _public(payload.get("old_public_key")),
        new,
        bool(payload.get("lost")),
    )


@dataclass
class KeyChain:
    """The trusted keys, and for the keys reached through rotations the sizes they vouch for."""

    trusted: Sequence[PublicKey]
    rotations: Sequence[Rotation]
    origin: str | None = None
    known: dict[str, PublicKey] = field(default_factory=dict)
    ranges: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # [from, to)

    def __post_init__(self) -> None:
        for key in self.trusted:
            self.known[key.key_id] = key
            self.ranges[key.key_id] = (0, None)
        for r in self.rotations:
            self.known.setdefault(r.new.key_id, r.new)
            if r.old is not None:
                self.known.setdefault(r.old.key_id, r.old)

    def valid_at(self, key_id: str, size: int) -> bool:
        span = self.ranges.get(key_id)
        return span is not None and span[0] <= size and (span[1] is None or size < span[1])

    def signers(self, cp: Checkpoint) -> tuple[set[str], str | None]:
        """The known keys whose signature on `cp` verifies, and why `cp` is altered, if it is."""
        found: set[str] = set()
        key = self.known.get(cp.key_id)
        if key is not None:
            if not cp.signed_by(key):
                return found, "has an invalid signature: its size, root or time was altered"
            found.add(key.key_id)
        if cp.note is None:
            return found, None
        try:
            parsed, body = cp.parsed_note()
        except notes.NoteError as exc:
            return found, f"has a signed note that does not hold: {exc}"
        if self.origin is not None and body.origin != self.origin:
            return found, (
                f"has a note for origin {body.origin!r}, but this ledger's origin is "
                f"{self.origin!r}"
            )
        for known in self.known.values():
            if parsed.signed_by(notes.Verifier(body.origin, known.raw)):
                found.add(known.key_id)
        return found, None

    def resolve(self, found: Sequence[Checkpoint], intact: Callable[[Checkpoint], bool]) -> None:
        """Follow rotations covered by intact checkpoints that a trusted key signed."""
        signed = {cp.size: self.signers(cp)[0] for cp in found}
        pending = list(self.rotations)
        while pending:
            progress = False
            for r in list(pending):
                vouched = any(
                    cp.size >= r.seq
                    and intact(cp)
                    and any(self.valid_at(k, cp.size) for k in signed[cp.size])
                    for cp in found
                )
                if not vouched:
                    continue
                pending.remove(r)
                progress = True
                self.ranges.setdefault(r.new.key_id, (r.seq, None))
                if r.old is not None:
                    self.ranges.setdefault(r.old.key_id, (0, r.seq))
            if not progress:
                return

    def vouches_for_note(self, signed: notes.Note, origin: str, size: int) -> bool:
        """Whether a trusted key, valid at lane-0 size `size`, signed `signed` under `origin`:
        a lanes checkpoint is trusted as the lane-0 checkpoint of its cut would be, so a key
        rotated in (or out) counts from (or until) its rotation event in lane 0."""
        return any(
            self.valid_at(key.key_id, size) and signed.signed_by(notes.Verifier(origin, key.raw))
            for key in self.known.values()
        )

    def problem(self, cp: Checkpoint) -> str | None:
        """Why `cp` is not vouched for by a trusted key, or None when it is."""
        found, altered = self.signers(cp)
        if altered is not None:
            return altered
        if any(self.valid_at(k, cp.size) for k in found):
            return None
        trusted = ", ".join(sorted(self.ranges)) or "none"
        signer = ", ".join(sorted(found)) or cp.key_id
        which = "keys {}, neither of which is" if len(found) > 1 else "key {}, which is"
        message = f"is signed by {which.format(signer)} not trusted here (trusted keys: {trusted})"
        named = [r for r in self.rotations if cp.key_id in (r.new.key_id, r.old_key_id)]
        if named:
            message += "; " + "; ".join(r.describe() for r in named)
            message += ", but no checkpoint signed by a trusted key vouches for that rotation"
        return message + "; pass the key with --public-key if you accept it"
