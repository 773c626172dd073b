"""Canonical bytes of an event: sorted keys, no whitespace, UTF-8, finite numbers only.

The stored bytes are what is hashed, so verification never depends on re-serialising.
"""

from __future__ import annotations

import math
from typing import Any

import orjson


class NotCanonical(ValueError):
    """A value cannot be represented canonically (NaN, infinity, non-string keys...)."""


def canonical_bytes(value: Any) -> bytes:
    _reject_non_finite(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise NotCanonical(str(exc)) from exc


def _reject_non_finite(value: Any) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotCanonical(f"{value} is not a finite number")
    elif isinstance(value, dict):
        for item in value.values():
            _reject_non_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_non_finite(item)
