"""Limits on the JSON a caller may send: how deep it nests, and no NUL characters in names.

Both are checked by walking the value with an explicit stack, so a hostile value cannot
exhaust the interpreter's recursion limit while it is being judged.
"""

from __future__ import annotations

import os
from typing import Any

from warden.errors import WardenError

DEPTH_ENV = "WARDEN_MAX_JSON_DEPTH"
DEFAULT_MAX_DEPTH = 64
# The ledger's canonical encoder refuses values nested 255 levels deep, and a decision is
# recorded inside its request's envelope: keep every configurable limit well below that.
MAX_CONFIGURABLE_DEPTH = 200


def max_depth_from_env() -> int:
    """WARDEN_MAX_JSON_DEPTH, checked: a bad setting stops the server at start, not a request."""
    raw = os.environ.get(DEPTH_ENV, str(DEFAULT_MAX_DEPTH))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CONFIGURABLE_DEPTH:
        raise WardenError(
            f"{DEPTH_ENV}={raw!r} must be a whole number from 1 to {MAX_CONFIGURABLE_DEPTH}",
            field=DEPTH_ENV,
        )
    return value


def too_deep(value: Any, limit: int, path: str) -> str | None:
    """The path of the first object or array nested more than `limit` levels deep, or None.

    `value` itself is level 1 when it is an object or an array; scalars add no level.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, level = stack.pop()
        if isinstance(item, dict):
            if level > limit:
                return where
            stack.extend((v, f"{where}.{k}", level + 1) for k, v in item.items())
        elif isinstance(item, list | tuple):
            if level > limit:
                return where
            stack.extend((v, f"{where}[{i}]", level + 1) for i, v in enumerate(item))
    return None


def depth_message(path: str, limit: int) -> str:
    return (
        f"{path} is nested more than {limit} levels deep; send flatter JSON, or raise "
        f"{DEPTH_ENV} on the server (now {limit})"
    )


def nul_at(value: Any, path: str) -> str | None:
    """The path of the first string or key that holds a NUL character, or None.

    PostgreSQL text cannot store NUL, and no name, reason or id needs one.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return where
                stack.append((child, f"{where}.{key}" if where else key))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None
