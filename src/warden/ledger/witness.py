"""Witnesses: copies of checkpoints kept outside the database.

A witness is a file (one checkpoint per line, appended) or a webhook URL (each checkpoint POSTed
as JSON). Whoever later rewrites the database cannot reach these copies, so `warden audit verify
--witness FILE` catches a history that no longer matches what was witnessed.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson

from warden.errors import InvalidRequest
from warden.ledger.checkpoint import Checkpoint

WITNESS_ENV = "WARDEN_WITNESS"


class WitnessError(Exception):
    """A checkpoint could not be handed to its witness; the checkpoint itself is stored."""


def from_env() -> str | None:
    return os.environ.get(WITNESS_ENV) or None


def push(checkpoint: Checkpoint, target: str, *, timeout: float = 5.0) -> str:
    """Hand `checkpoint` to `target` (a file path or an http(s) URL); says where it went."""
    line = orjson.dumps(checkpoint.to_dict())
    if target.startswith(("http://", "https://")):
        try:
            response = httpx.post(
                target,
                content=line,
                headers={"content-type": "application/json"},
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise WitnessError(f"witness {target} did not answer: {exc}") from None
        if response.status_code >= 300:
            raise WitnessError(f"witness {target} answered {response.status_code}")
        return f"posted to {target}"
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            handle.write(line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise WitnessError(f"cannot append to witness file {path}: {exc.strerror}") from None
    return f"appended to {path}"


def read(path: Path) -> list[Checkpoint]:
    """The checkpoints in a witness file, naming the line of the first that does not parse."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read witness file {path}: {exc.strerror}", field="witness"
        ) from None
    found = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            found.append(Checkpoint.from_dict(orjson.loads(raw), f"{path}:{number}"))
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise InvalidRequest(f"{path}:{number}: {exc}", field="witness") from None
    return found
