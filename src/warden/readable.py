"""Values as people read them in pages and reports: 23,100 rather than 23100.0, and a
timestamp to the second in UTC rather than `02:46:32.607425+00:00`."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def number(value: Any) -> str:
    """Thousands separated; whole floats without `.0`; small fractions to four digits."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


def moment(value: datetime | str | None) -> str:
    """`2026-11-30 02:46:32 UTC`; an ISO string is parsed first, anything else shown as is."""
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        when = value
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cell(value: Any) -> str:
    """Any input value: numbers readable, datetimes as moments, the rest as text."""
    if isinstance(value, datetime):
        return moment(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number(value)
    return "—" if value is None else str(value)
