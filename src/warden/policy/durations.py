"""Human-friendly durations in policy files: `500ms`, `30s`, `15m`, `4h`, `2d`."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: str | int | float) -> float:
    """Seconds for a duration; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(
            f"'{value}' is not a duration; write e.g. '500ms', '30s', '15m', '4h', '2d'"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]
