"""Secrets and personal data in tool arguments: named paths are replaced by a keyed digest in
what the decision records, so the ledger never holds them and still proves which value it was."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from warden.mcp.binding import keyed_digest

MARK = "[redacted] "


def redact(arguments: dict[str, Any], paths: Sequence[str], key: bytes) -> dict[str, Any]:
    """A copy of `arguments` with each present `path` (dotted) replaced by `[redacted] <digest>`;
    paths that are absent are left alone."""
    if not paths:
        return arguments
    out = copy.deepcopy(arguments)
    for path in paths:
        *parents, last = path.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            node[last] = MARK + keyed_digest(key, node[last])
    return out
