"""The recorder's hot path in plain DBAPI calls.

A decision batch is a handful of statements; through SQLAlchemy Core each costs more Python
time than SQLite takes to run it, so the recorder issues these directly on its own connection.
Column lists come from the table definitions, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from warden.store.schema import decisions, events

# Everything that may withdraw authority from a decision, read in one round trip per commit:
# kill switches, active rollouts, model aliases and live policy versions.
GUARDS = (
    "SELECT 'kill', scope, NULL, NULL, NULL, NULL FROM kill_switches WHERE engaged "
    "UNION ALL SELECT 'rollout', id, point, mode, state, CAST(step AS VARCHAR(16)) "
    "FROM rollouts WHERE state IN ('running', 'paused') "
    "UNION ALL SELECT 'alias', point, alias, version, NULL, NULL FROM model_aliases "
    "UNION ALL SELECT 'policy', point, version, NULL, NULL, NULL FROM policies "
    "WHERE status = 'live'"
)


def _sqlite_time(value: datetime | None) -> str | None:
    """The text form SQLAlchemy's SQLite DateTime type reads back (naive UTC)."""
    if value is None:
        return None
    text = _times.get(value)
    if text is None:
        # A batch shares one timestamp across its decisions, decided_at and events: format
        # it once. The cache only ever holds the last few.
        if len(_times) > 64:
            _times.clear()
        text = _times[value] = (
            value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        )
    return text


_times: dict[datetime, str] = {}


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class RawStatements:
    sqlite: bool
    begin: str | None
    head: str
    guards: str
    insert_decision: str
    insert_event: str
    update_head: str
    decision_row: Callable[[dict[str, Any]], tuple[Any, ...]]
    event_row: Callable[[dict[str, Any]], tuple[Any, ...]]
    mark: str = "?"
    time: Callable[[Any], Any] = _identity
    _inserters: dict[str, tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]] = field(
        default_factory=dict
    )

    def inserter(self, table: sa.Table) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]:
        """INSERT text and row converter for any table, built once per table."""
        found = self._inserters.get(table.name)
        if found is None:
            found = (_insert(table, self.mark), _converter(table, self.time))
            self._inserters[table.name] = found
        return found

    @classmethod
    def for_dialect(cls, dialect: str) -> RawStatements:
        sqlite = dialect == "sqlite"
        mark = "?" if sqlite else "%s"
        time = _sqlite_time if sqlite else _identity
        return cls(
            sqlite=sqlite,
            begin="BEGIN IMMEDIATE" if sqlite else None,
            head=f"SELECT seq, chain_hash FROM ledger_head WHERE id = {mark}"
            + ("" if sqlite else " FOR UPDATE"),
            guards=GUARDS,
            insert_decision=_insert(decisions, mark),
            insert_event=_insert(events, mark),
            update_head=(
                f"UPDATE ledger_head SET seq = {mark}, chain_hash = {mark} WHERE id = {mark}"
            ),
            decision_row=_converter(decisions, time),
            event_row=_converter(events, time),
            mark=mark,
            time=time,
        )


def _insert(table: sa.Table, mark: str) -> str:
    names = [c.name for c in table.columns]
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
    )


def _converter(
    table: sa.Table, time: Callable[[Any], Any]
) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Row dict -> parameter tuple in column order; only JSON, time and flag columns convert."""
    names = [c.name for c in table.columns]
    fixes: list[tuple[int, Callable[[Any], Any]]] = []
    for index, column in enumerate(table.columns):
        if isinstance(column.type, sa.JSON):
            fixes.append((index, _json_text))
        elif isinstance(column.type, sa.DateTime) and time is not _identity:
            fixes.append((index, time))
        elif isinstance(column.type, sa.Boolean):
            fixes.append((index, lambda v: None if v is None else bool(v)))

    def convert(row: dict[str, Any]) -> tuple[Any, ...]:
        get = row.get
        values = [get(name) for name in names]
        for index, fix in fixes:
            value = values[index]
            if value is not None:
                values[index] = fix(value)
        return tuple(values)

    return convert
