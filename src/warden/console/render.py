"""Templates and the small formatting helpers they use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.templating import Jinja2Templates

from warden import readable

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def remaining(due: datetime | None, now: datetime | None = None) -> str:
    """`3h 12m left`, `overdue 5m`, or an em dash when the point sets no SLA."""
    if due is None:
        return "—"
    seconds = int((due - (now or datetime.now(UTC))).total_seconds())
    text = _span(abs(seconds))
    return f"{text} left" if seconds >= 0 else f"overdue {text}"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def is_overdue(due: datetime | None) -> bool:
    return due is not None and due <= datetime.now(UTC)


def stamp(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def percent(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "—"


templates.env.filters.update(
    remaining=remaining, stamp=stamp, pretty=pretty, percent=percent, readable=readable.cell
)
templates.env.globals.update(is_overdue=is_overdue)
