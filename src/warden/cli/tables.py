"""Tables that stay readable in an 80-column terminal, and ids given by a unique prefix.

Rich shares a narrow terminal among all columns, so an id ends up folded or cut and every
column shrinks to a few letters. Here each column says whether it may be left out and in which
order: the least useful go first, whole, and the table says which and that `--json` has
everything. Columns that must stay (ids) are never wrapped or cut.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from warden.errors import InvalidRequest

WRAPPED_MIN = 16  # a wrapping column needs at least this many cells to be worth showing
CELL_EXTRA = 3  # padding either side and one border per column


@dataclass(frozen=True)
class Column:
    header: str
    drop: int = 0  # 0: always shown; otherwise left out first where the number is highest
    wrap: bool = False  # free text that may take several lines
    justify: str = "left"


def fitted(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    width: int,
    title: str | None = None,
) -> Table:
    """A table of `rows` that fits `width`, leaving out droppable columns as needed."""
    natural = [
        max([Text.from_markup(c.header).cell_len, *(Text.from_markup(r[i]).cell_len for r in rows)])
        for i, c in enumerate(columns)
    ]

    def need(index: int) -> int:
        shown = min(natural[index], WRAPPED_MIN) if columns[index].wrap else natural[index]
        return shown + CELL_EXTRA

    chosen = list(range(len(columns)))
    dropped: list[int] = []
    while sum(need(i) for i in chosen) + 1 > width:
        candidates = [i for i in chosen if columns[i].drop]
        if not candidates:
            break
        worst = max(candidates, key=lambda i: (columns[i].drop, i))
        chosen.remove(worst)
        dropped.append(worst)
    caption = None
    if dropped:
        names = ", ".join(columns[i].header for i in sorted(dropped))
        caption = f"not shown at this width: {names} (see --json, or widen the terminal)"
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for i in chosen:
        column = columns[i]
        table.add_column(
            column.header,
            no_wrap=not column.wrap,
            overflow="fold" if column.wrap else "ellipsis",
            min_width=None if column.wrap else natural[i],
            justify=column.justify,  # type: ignore[arg-type]
        )
    for row in rows:
        table.add_row(*(row[i] for i in chosen))
    return table


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    console: Console | None = None,
) -> None:
    """Print `rows` fitted to the terminal this command runs in (COLUMNS is honoured)."""
    screen = console or Console()
    screen.print(fitted(columns, rows, width=screen.width, title=title))


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


SHORTEST_PREFIX = 4


def resolve_prefix(conn: sa.Connection, column: sa.ColumnElement[str], given: str) -> str:
    """The one id in `column` that starts with `given`; `given` itself when none does (the
    command then says the id is unknown). Several → InvalidRequest listing them."""
    if len(given) < SHORTEST_PREFIX:
        return given
    if conn.execute(sa.select(column).where(column == given).limit(1)).first() is not None:
        return given
    escaped = given.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    found = list(
        conn.execute(
            sa.select(column).where(column.like(f"{escaped}%", escape="\\")).limit(6)
        ).scalars()
    )
    if len(found) == 1:
        return str(found[0])
    if found:
        more = ", ..." if len(found) > 5 else ""
        raise InvalidRequest(
            f"'{given}' is the start of several ids: {', '.join(found[:5])}{more}; "
            "give more characters",
            field="id",
        )
    return given
