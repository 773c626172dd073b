"""A checkpoint remembered outside the database: the auditor's state file and the signer's own.

Whoever keeps the latest checkpoint they verified (or signed) can demand, next time, an RFC 9162
consistency proof that the ledger only grew since. Deleting checkpoints, truncating the log or
rewriting anything before the remembered size is then caught without a witness:

- `warden audit verify --state FILE` and `check-proof --state FILE` keep the auditor's copy;
- the signer keeps its own beside the signing key, and refuses to sign a ledger that no longer
  extends the last checkpoint it signed, so someone who rewrites the database cannot get the
  running server to vouch for the rewrite.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from warden.errors import Conflict, InvalidRequest
from warden.ledger import note as notes
from warden.ledger.lanes import parse_index_body
from warden.ledger.merkle import verify_consistency

if TYPE_CHECKING:
    from warden.ledger.checkpoint import Checkpoint
    from warden.ledger.keys import SigningKey
    from warden.ledger.lanes import LaneHead
    from warden.ledger.tree import LedgerTree

FORMAT = "warden.checkpoint-state/v1"
SIGNER_FILE = "ledger-signer-state.json"
LANES_SIGNER_FILE = "ledger-signer-lanes.json"
LANES_FORMAT = "warden.lanes-signer-state/v1"


class LedgerForked(Conflict):
    """The ledger no longer extends a checkpoint someone remembers: history was rewritten."""

    type = "ledger_forked"


@dataclass(frozen=True)
class Remembered:
    origin: str | None
    size: int
    root: bytes
    checkpoint: dict[str, Any]
    lanes_note: str | None = None  # with several lanes: the newest lanes checkpoint verified

    def to_dict(self) -> dict[str, Any]:
        found = {
            "format": FORMAT,
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "checkpoint": self.checkpoint,
        }
        if self.lanes_note is not None:
            found["lanes_note"] = self.lanes_note
        return found


def load(path: Path) -> Remembered | None:
    """The remembered checkpoint, or None when the file does not exist yet."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidRequest(f"cannot read state file {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"state file {path} is not JSON: {exc}") from None
    try:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format must be {FORMAT!r}")
        size, root = data["size"], bytes.fromhex(data["root"])
        if not isinstance(size, int) or size < 1 or len(root) != 32:
            raise ValueError("size must be a positive integer and root 32 bytes of hex")
        origin = data.get("origin")
        if origin is not None and not isinstance(origin, str):
            raise ValueError("origin must be a string")
        lanes_note = data.get("lanes_note")
        if lanes_note is not None and not isinstance(lanes_note, str):
            raise ValueError("lanes_note must be a string")
        return Remembered(origin, size, root, dict(data.get("checkpoint") or {}), lanes_note)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"state file {path} is damaged ({exc}); restore it from your own copy — deleting "
            "it gives up the protection it gives"
        ) from None


def save(
    path: Path, origin: str | None, checkpoint: Checkpoint, lanes_note: str | None = None
) -> None:
    """Replace the file atomically (written aside, then renamed over it)."""
    state = Remembered(
        origin, checkpoint.size, checkpoint.root_bytes, checkpoint.to_dict(), lanes_note
    )
    _write_atomically(path, orjson.dumps(state.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def extends(
    state: Remembered, origin: str | None, size: int, root: bytes, proof: Sequence[bytes]
) -> str | None:
    """Why the tree (`size`, `root`) is not a consistent extension of `state`, or None if it is."""
    if state.origin is not None and origin is not None and state.origin != origin:
        return f"the ledger's origin is {origin!r}, but the remembered checkpoint is of {state.origin!r}"
    if size < state.size:
        return (
            f"the ledger's tree has {size} events, fewer than the {state.size} of the remembered "
            "checkpoint: it was truncated"
        )
    if not verify_consistency(state.size, size, state.root, root, proof):
        return (
            f"the ledger at {size} events is not a consistent extension of the remembered "
            f"checkpoint of size {state.size} (root {state.root.hex()[:16]}...): events up to "
            f"{state.size} were rewritten"
        )
    return None


# -- the signer's own memory -------------------------------------------------------------------


def path_for(key: SigningKey) -> Path:
    return key.path.parent / SIGNER_FILE


def check_extends(
    path: Path, origin: str, conn: sa.Connection, tree: LedgerTree, size: int, root: bytes
) -> None:
    """Refuse to sign (`size`, `root`) unless it extends the last checkpoint this signer made."""
    state = load(path)
    if state is None:
        return
    if size < state.size:
        reason = extends(state, origin, size, root, [])
    else:
        try:
            proof = tree.consistency(conn, state.size, size) if size > state.size else []
        except Exception as exc:  # a missing event: the tree cannot be built
            reason = f"no consistency proof could be built ({exc})"
        else:
            reason = extends(state, origin, size, root, proof)
    if reason is not None:
        raise LedgerForked(
            f"refusing to sign: {reason}. This signer last signed checkpoint {state.size} "
            f"(remembered in {path}). Run `warden audit verify` to see what changed."
        )


def remember(path: Path, origin: str, checkpoint: Checkpoint) -> None:
    """Remember a checkpoint this signer made, unless it already remembers a larger one."""
    state = load(path)
    if state is not None and state.size >= checkpoint.size:
        return
    try:
        save(path, origin, checkpoint)
    except OSError:  # a read-only key mount: the database checks still hold
        return


# -- the signer's memory of lanes --------------------------------------------------------------
#
# With several lanes the signer also keeps the last lanes checkpoint it signed (each lane's size
# and root) and refuses to sign another unless every lane extends its remembered one: a lane
# rewritten, re-hashed or truncated while the server was down is named, not signed.


def lanes_path_for(key: SigningKey) -> Path:
    return key.path.parent / LANES_SIGNER_FILE


def load_lanes(path: Path) -> tuple[str, list[LaneHead]] | None:
    """The origin and lane heads of the last lanes checkpoint this signer made, or None."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read the signer's lanes state {path}: {exc.strerror}"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the signer's lanes state {path} is not JSON: {exc}") from None
    try:
        if not isinstance(data, dict) or data.get("format") != LANES_FORMAT:
            raise ValueError(f"format must be {LANES_FORMAT!r}")
        text = data.get("note")
        if not isinstance(text, str):
            raise ValueError("note must be the signed lanes checkpoint")
        origin, heads, _ = parse_index_body(notes.parse_note(text).body)
    except (ValueError, notes.NoteError) as exc:
        raise InvalidRequest(
            f"the signer's lanes state {path} is damaged ({exc}); restore it from a backup of "
            "the key's directory — deleting it gives up the protection it gives"
        ) from None
    return origin, heads


def lanes_extend(
    state: tuple[str, list[LaneHead]],
    origin: str,
    heads: Sequence[LaneHead],
    root_at: Callable[[int, int], bytes],
) -> list[str]:
    """Why `heads` (read now) do not extend the remembered lanes, lane by lane; [] if they do.

    `root_at(lane, size)` is the lane's root over its first `size` events as stored now: equal to
    the remembered root exactly when the lane's tree now is a consistent extension of it (the
    RFC 9162 consistency proof built from these same leaves holds exactly then).
    """
    remembered_origin, before = state
    if remembered_origin != origin:
        return [f"the ledger's origin is {origin!r}, but the signer signed {remembered_origin!r}"]
    if len(before) != len(heads):
        return [
            f"the ledger has {len(heads)} lanes, but the signer signed {len(before)}; the number "
            "of lanes never changes"
        ]
    problems = []
    for old, new in zip(before, heads, strict=True):
        if new.size < old.size:
            problems.append(
                f"lane {new.lane} holds {new.size} events, fewer than the {old.size} this signer "
                "signed: it was truncated"
            )
            continue
        if old.size == 0:
            continue
        try:
            root = root_at(new.lane, old.size)
        except Exception as exc:  # a missing event: no tree can be built over the lane
            problems.append(f"lane {new.lane}: no tree can be built over its events ({exc})")
            continue
        if root != old.root:
            problems.append(
                f"lane {new.lane} at {new.size} events is not a consistent extension of the "
                f"lanes checkpoint this signer made at {old.size} (root {old.root.hex()[:16]}...): "
                f"events 1-{old.size} of lane {new.lane} were rewritten"
            )
    return problems


def check_lanes_extend(
    path: Path,
    origin: str,
    heads: Sequence[LaneHead],
    root_at: Callable[[int, int], bytes],
    state: tuple[str, list[LaneHead]] | None = None,
) -> None:
    """Refuse to sign `heads` unless every lane extends the lanes checkpoint remembered at `path`."""
    state = state if state is not None else load_lanes(path)
    if state is None:
        return
    problems = lanes_extend(state, origin, heads, root_at)
    if problems:
        sizes = ", ".join(str(h.size) for h in state[1])
        raise LedgerForked(
            f"refusing to sign the lanes checkpoint: {'; '.join(problems)}. This signer last "
            f"signed lanes at sizes {sizes} (remembered in {path}). Run `warden audit verify` "
            "to see what changed."
        )


def remember_lanes(path: Path, note_text: str, heads: Sequence[LaneHead]) -> None:
    """Remember a lanes checkpoint this signer made, unless it remembers one no lane of which
    is smaller (another replica signed a later cut first)."""
    try:
        state = load_lanes(path)
    except InvalidRequest:
        state = None
    if (
        state is not None
        and len(state[1]) == len(heads)
        and all(old.size >= new.size for old, new in zip(state[1], heads, strict=True))
    ):
        return
    body = orjson.dumps({"format": LANES_FORMAT, "note": note_text}, option=orjson.OPT_INDENT_2)
    try:
        _write_atomically(path, body + b"\n")
    except OSError:  # a read-only key mount: the database checks still hold
        return
