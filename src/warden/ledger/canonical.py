"""Canonical bytes of an event: sorted keys, no whitespace, UTF-8, finite numbers only.

The stored bytes are what is hashed, so verification never depends on re-serialising.
"""

from __future__ import annotations

import math
from typing import Any

import orjson


class NotCanonical(ValueError):
    """A value cannot be represented canonically (NaN, infinity, non-string keys...)."""


def canonical_bytes(value: Any, *, checked: bool = False) -> bytes:
    """Canonical JSON. `checked=True` skips the finite-number walk for values the caller has
    already validated (the engine checks every decision's input, context and confidence)."""
    if not checked:
        _reject_non_finite(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise NotCanonical(str(exc)) from exc


_PLAIN = frozenset({str, int, bool, type(None)})


def _reject_non_finite(value: Any) -> None:
    """orjson would write NaN and infinity as null, silently; refuse them instead."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _PLAIN:
            continue
        if kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise NotCanonical(f"{item} is not a finite number")
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
