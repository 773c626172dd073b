"""C2SP signed notes, checkpoints and cosignatures: the formats the transparency-log ecosystem reads.

- signed-note (c2sp.org/signed-note): a text body, a blank line, then signature lines
  `— <name> base64(key ID (4 bytes) || signature)`; an Ed25519 key ID is the first 4 bytes of
  SHA-256(name || 0x0A || 0x01 || public key), its verifier key `name+hex(key ID)+base64(0x01 ||
  public key)`.
- tlog-checkpoint (c2sp.org/tlog-checkpoint): the body is the origin line, the tree size in
  decimal and the root hash in base64, each ending in a newline, then optional extension lines.
- tlog-cosignature (c2sp.org/tlog-cosignature): a witness signs "cosignature/v1\\ntime <t>\\n"
  followed by the checkpoint body; its key ID uses type 0x04 and its signature is the
  timestamp (8 bytes, big-endian) followed by the Ed25519 signature.

Go's `golang.org/x/mod/sumdb/note` and the witnesses of the transparency-dev and Sigsum projects
read and write these bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014"
_MAX_NOTE = 1 << 20


class NoteError(ValueError):
    """A note, checkpoint, signature line or verifier key that does not follow its format."""


def key_hash(name: str, public: bytes, kind: int = ED25519) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"key name {name!r} must be non-empty, with no spaces and no '+'")


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key, as written in a verifier key (vkey)."""

    name: str
    public: bytes
    kind: int = ED25519

    @property
    def key_id(self) -> bytes:
        return key_hash(self.name, self.public, self.kind)

    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([self.kind]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


def parse_vkey(text: str) -> Verifier:
    """A verifier key `name+hash+base64(type || key)`, checked against its own hash."""
    parts = text.strip().split("+", 2)  # the base64 key may itself hold a '+'
    if len(parts) != 3:
        raise NoteError("a verifier key has the form name+keyhash+base64key")
    name, hash_hex, encoded = parts
    _check_name(name)
    try:
        data = base64.b64decode(encoded, validate=True)
        expected = bytes.fromhex(hash_hex)
    except (binascii.Error, ValueError):
        raise NoteError(f"verifier key {name}: hash or key is not hex/base64") from None
    if len(data) != 33 or data[0] not in (ED25519, COSIGNATURE_V1):
        raise NoteError(
            f"verifier key {name}: only Ed25519 keys (type 0x01) and Ed25519 cosigner keys "
            "(type 0x04) of 32 bytes are supported"
        )
    verifier = Verifier(name, data[1:], data[0])
    if verifier.key_id != expected:
        raise NoteError(f"verifier key {name}: key hash {hash_hex} does not match the key")
    return verifier


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{DASH} {self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class Note:
    body: str
    signatures: tuple[Signature, ...]

    def text(self) -> str:
        return self.body + "\n" + "".join(s.line() for s in self.signatures)

    def signed_by(self, verifier: Verifier) -> bool:
        """Whether a signature line of `verifier` (name and key ID) verifies over the body."""
        if verifier.kind != ED25519:
            return False
        return any(
            s.name == verifier.name
            and s.key_id == verifier.key_id
            and verifier.verify(s.signature, self.body.encode())
            for s in self.signatures
        )


def parse_signature_line(line: str) -> Signature:
    if not line.startswith(DASH + " "):
        raise NoteError("a signature line starts with an em dash (U+2014) and a space")
    fields = line[2:].split(" ")
    if len(fields) != 2:
        raise NoteError("a signature line is `— <name> <base64>`")
    name, encoded = fields
    _check_name(name)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"signature of {name} is not base64") from None
    if len(data) < 5:
        raise NoteError(f"signature of {name} is too short")
    return Signature(name, data[:4], data[4:])


def parse_note(text: str) -> Note:
    """Split a signed note into its body and signature lines; the body keeps its last newline."""
    if len(text) > _MAX_NOTE:
        raise NoteError("note is too large")
    if not text.endswith("\n"):
        raise NoteError("a note ends with a newline")
    at = text.rfind("\n\n")
    if at < 0:
        raise NoteError("a note has a blank line between its body and its signatures")
    body, tail = text[: at + 1], text[at + 2 :]
    signatures = tuple(parse_signature_line(line) for line in tail[:-1].split("\n"))
    if not signatures:
        raise NoteError("a note has at least one signature")
    return Note(body, signatures)


def sign_line(body: str, name: str, key: Ed25519PrivateKey) -> Signature:
    public = raw_public(key.public_key())
    return Signature(name, key_hash(name, public), key.sign(body.encode()))


# -- tlog-checkpoint ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointBody:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "".join(line + "\n" for line in [*lines, *self.extensions])


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    return CheckpointBody(origin, size, root).text()


def parse_checkpoint(body: str) -> CheckpointBody:
    """The origin, size and root of a checkpoint body, strictly as tlog-checkpoint writes them."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint body has an origin, a size and a root hash line")
    origin, size_text, root_text, *extensions = lines[:-1]
    if not origin:
        raise NoteError("the checkpoint's origin line is empty")
    if not size_text.isascii() or not size_text.isdigit() or size_text != str(int(size_text)):
        raise NoteError(f"checkpoint size {size_text!r} is not a decimal without leading zeros")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("checkpoint root hash is not base64") from None
    if len(root) != 32:
        raise NoteError(f"checkpoint root hash has {len(root)} bytes, not 32")
    if any(not line for line in extensions):
        raise NoteError("a checkpoint extension line is empty")
    return CheckpointBody(origin, int(size_text), root, tuple(extensions))


# -- tlog-cosignature --------------------------------------------------------------------------


def cosigned_message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def cosign(body: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> Signature:
    """A witness's cosignature/v1 over a checkpoint body."""
    public = raw_public(key.public_key())
    signed = key.sign(cosigned_message(body, timestamp))
    return Signature(
        name, key_hash(name, public, COSIGNATURE_V1), struct.pack(">Q", timestamp) + signed
    )


def cosigned_at(note: Note, witness: Verifier) -> int | None:
    """The time of `witness`'s valid cosignature on `note`, or None when it has none."""
    for s in note.signatures:
        if s.name != witness.name or s.key_id != witness.key_id or len(s.signature) != 72:
            continue
        (timestamp,) = struct.unpack(">Q", s.signature[:8])
        if timestamp < 1 << 63 and witness.verify(
            s.signature[8:], cosigned_message(note.body, timestamp)
        ):
            return int(timestamp)
    return None
