"""The ledger's Ed25519 signing key: made on first use in WARDEN_HOME, readable by its owner only.

Checkpoints are signed with it; auditors hold the public key and need nothing else to check a
proof. Several API replicas must share the one key file (mount it as a secret), or each signs
with its own and auditors need every public key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from warden.errors import WardenError

KEY_FILE = "ledger-signing-key.pem"


class KeyFileError(WardenError):
    """A key file is unreadable, too open, or not an Ed25519 key."""

    type = "key_error"
    http_status = 500


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey

    @property
    def raw(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        """A short fingerprint: SHA-256 of the raw public key, 16 hex digits."""
        return hashlib.sha256(self.raw).hexdigest()[:16]

    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    key: Ed25519PrivateKey
    path: Path

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


def key_path(home: Path, name: str = KEY_FILE) -> Path:
    return home / name


def load_or_create(home: Path, name: str = KEY_FILE) -> SigningKey:
    """The key file `name` in `home`, created (mode 0600) when there is none yet.

    Creation is atomic (`os.link` of a finished temporary file), so processes starting together
    all end up with the same key. The ledger's own key goes through
    `warden.ledger.identity.signing_key`, which never replaces a key the ledger already had.
    """
    path = key_path(home, name)
    if not path.exists():
        _create(path)
    return load_signing_key(path)


def existing_public_key(home: Path) -> PublicKey | None:
    """The public half of the key in `home`, without creating one."""
    path = key_path(home)
    return load_signing_key(path).public if path.exists() else None


def load_signing_key(path: Path) -> SigningKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{path} is readable by others (mode {mode:04o}); it signs the ledger's "
            f"checkpoints, so run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise KeyFileError(f"{path} is not a readable PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return SigningKey(key, path)


def load_public_key(path: Path) -> PublicKey:
    """A public key from a PEM file, as `warden audit public-key` writes it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the public key {path}: {exc.strerror}") from None
    return parse_public_key(data, str(path))


def parse_public_key(data: bytes, where: str = "public key") -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:  # also accept the raw 32 bytes, base64-encoded
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
        except ValueError:
            raise KeyFileError(
                f"{where} is neither a PEM public key nor a base64 Ed25519 key; export one "
                "with `warden audit public-key`"
            ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{where} holds a {type(key).__name__}, not an Ed25519 public key")
    return PublicKey(key)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
