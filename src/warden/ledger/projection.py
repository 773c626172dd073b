"""State is a projection of the ledger: fold the events, compare the result with the tables.

Every row Warden serves or that grants authority must be what its events imply
(`warden.ledger.folds` says, per event type, what that is). A row changed, inserted or deleted
outside Warden — by whoever can write to the database — is named here: the table, the key, the
column, the value stored and the value the ledger implies, and the event that last set it.

Memory stays flat however many decisions there are: decisions and review tasks are compared per
decision, merging three streams read in decision-id order (events by `decision_id`, `decisions`
by `id`, `review_tasks` by `decision_id`); only one decision's events are held at a time. The
other tables grow with people's actions, not with traffic, and are folded in memory.

Values are compared in one form per column type: times as UTC text
`YYYY-MM-DD HH:MM:SS.ffffff` (what SQLite stores, and what PostgreSQL is asked to print), JSON
as parsed values. A row is first compared whole; only a row that differs is compared column by
column, so the common case costs one tuple comparison. Nearly every decision is one
`decision.created` event routed without review: its row, written as that event's body would
be, is compared with the body as text (`_as_written`), and only a difference goes on to the
fold and the column-by-column comparison that names it.

The decisions can be checked in shares (`Part`: a range of decision ids), each in its own
process (`warden.ledger.statepass`); `merged` makes one report of them. A new table keyed by
decision id plugs in by its `TABLES` entry and folds alone: every share reads its rows within
its range and merges them like the review tasks. A table keyed otherwise is folded and compared
once, by the share that holds the small tables.
"""

from __future__ import annotations

import contextlib
import operator
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from warden.ledger.folds import (
    DECIDED,
    DECISION_COLUMNS,
    TABLES,
    UNKNOWN,
    Event,
    Implied,
    Key,
    Projection,
    StateTable,
    apply,
    decided_row,
)

LISTED = 1000  # disagreements listed in a report; all are counted
_BATCH = 2000
_C_COLLATIONS = {"c", "posix", "c.utf-8", "c.utf8", "ucs_basic"}


class Kind:
    CHANGED = "changed"  # a column differs from what the ledger implies
    INSERTED = "inserted"  # a row no event made
    DELETED = "deleted"  # a row the ledger made is missing
    RESURRECTED = "resurrected"  # a row the ledger deleted is present
    UNREADABLE = "unreadable"  # an event lacks what its type implies


@dataclass(frozen=True)
class Disagreement:
    """One place where the tables and the ledger disagree."""

    kind: str
    table: str
    key: dict[str, Any]
    column: str | None = None
    stored: Any = None
    implied: Any = None
    seq: int | None = None  # the event that last set the implied value (or made the row)

    @property
    def message(self) -> str:
        where = f"{self.table} {_key_text(self.key)}"
        if self.kind == Kind.CHANGED:
            return (
                f"{where}: {self.column} is {_show(self.stored)} but the ledger says "
                f"{_show(self.implied)} (event {self.seq})"
            )
        if self.kind == Kind.INSERTED:
            return f"{where}: the row has no event; it was written outside Warden"
        if self.kind == Kind.UNREADABLE:
            return f"event {self.seq}: {self.implied}; its rows cannot be derived"
        if self.kind == Kind.DELETED:
            return f"{where}: the row is missing; event {self.seq} made it"
        return f"{where}: the row is present but event {self.seq} deleted it"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "table": self.table,
            "key": self.key,
            "column": self.column,
            "stored": _jsonable(self.stored),
            "implied": _jsonable(self.implied),
            "seq": self.seq,
            "message": self.message,
        }


@dataclass
class StateReport:
    rows: dict[str, int] = field(default_factory=dict)  # rows compared, per table
    unchecked: int = 0  # column values older events do not record
    count: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.count == 0

    def add(self, found: Disagreement) -> None:
        self.count += 1
        if len(self.disagreements) < LISTED:
            self.disagreements.append(found)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "unchecked": self.unchecked,
            "disagreements": self.count,
            "listed": [d.to_dict() for d in self.disagreements],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Part:
    """A share of the check, for checking on several cores: the decisions with ids from `low`
    up to (not including) `high` (None: no bound), and with `small` the tables not keyed by
    decision. Parts that cover every id once, one of them `small`, check everything."""

    low: str | None = None
    high: str | None = None
    small: bool = True


WHOLE = Part()


def verify_state(conn: sa.Connection, dialect: str, part: Part = WHOLE) -> StateReport:
    """Compare every state table with what the events imply, inside the caller's snapshot."""
    began = time.perf_counter()
    report = StateReport()
    reader = _Reader(conn, dialect, part)
    if part.small:
        small = Projection()
        for ev in reader.events("decision_id IS NULL", "seq"):
            apply(small, ev)
        _unreadable(small, report)
        for spec in TABLES.values():
            if not spec.by_decision:
                _compare_small(reader, spec, small, report)
    _compare_by_decision(reader, report)
    report.seconds = time.perf_counter() - began
    return report


def merged(parts: Sequence[StateReport]) -> StateReport:
    """One report of parts checked side by side, in the order of their ranges."""
    report = StateReport()
    for found in parts:
        for table, count in found.rows.items():
            report.rows[table] = report.rows.get(table, 0) + count
        report.unchecked += found.unchecked
        report.count += found.count - len(found.disagreements)
        for disagreement in found.disagreements:
            report.add(disagreement)
        report.seconds = max(report.seconds, found.seconds)
    return report


# -- comparing --------------------------------------------------------------------------------


class _Shape:
    """How one table's rows are read and compared."""

    def __init__(self, spec: StateTable) -> None:
        self.spec = spec
        self.columns = spec.columns
        types = [spec.table.c[name].type for name in self.columns]
        self.times = [i for i, t in enumerate(types) if isinstance(t, sa.DateTime)]
        self.jsons = [i for i, t in enumerate(types) if isinstance(t, sa.JSON)]
        self.stored = [(self.columns.index(c), fn) for c, fn in spec.stored.items()]
        self.key_at = [self.columns.index(k) for k in spec.key]

    def stored_row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        """A row as read, in comparable form: JSON parsed (times are already text)."""
        row = list(raw)
        loads = orjson.loads
        for i in self.jsons:
            value = row[i]
            if type(value) is str:
                # not JSON at all: compared as the text it is, and differs
                with contextlib.suppress(orjson.JSONDecodeError):
                    row[i] = loads(value)
        for i, fn in self.stored:
            row[i] = fn(row[i])
        return tuple(row)

    def implied_tuple(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """Implied values in column order, times in their compared form."""
        if not self.times:
            return values
        row = list(values)
        for i in self.times:
            value = row[i]
            if type(value) is not str or len(value) != 26:
                row[i] = time_text(value)
        return tuple(row)

    def implied_row(self, values: dict[str, Any]) -> list[Any]:
        row = [values.get(name, UNKNOWN) for name in self.columns]
        for i in self.times:
            row[i] = time_text(row[i])
        return row

    def key(self, row: Sequence[Any]) -> Key:
        return tuple(row[i] for i in self.key_at)

    def key_dict(self, key: Key) -> dict[str, Any]:
        return dict(zip(self.spec.key, key, strict=True))

    def compare(
        self,
        stored: list[Any],
        implied: list[Any],
        origin: dict[str, int],
        report: StateReport,
    ) -> None:
        if stored == implied:
            return
        for i, name in enumerate(self.columns):
            want = implied[i]
            if want is UNKNOWN:
                report.unchecked += 1
                continue
            have = stored[i]
            if have == want or (i in self.times and time_text(have, parse=True) == want):
                continue
            report.add(
                Disagreement(
                    Kind.CHANGED,
                    self.spec.name,
                    self.key_dict(self.key(stored)),
                    name,
                    have,
                    want,
                    origin.get(name),
                )
            )


def _compare_small(
    reader: _Reader, spec: StateTable, projection: Projection, report: StateReport
) -> None:
    shape = _Shape(spec)
    implied = projection.rows[spec.name]
    deleted = projection.deleted[spec.name]
    seen: set[Key] = set()
    count = 0
    for raw in reader.rows(shape):
        count += 1
        stored = list(shape.stored_row(raw))
        key = shape.key(stored)
        seen.add(key)
        found = implied.get(key)
        if found is None:
            gone = deleted.get(key)
            kind = Kind.INSERTED if gone is None else Kind.RESURRECTED
            report.add(Disagreement(kind, spec.name, shape.key_dict(key), seq=gone))
            continue
        shape.compare(stored, shape.implied_row(found.values), found.origin, report)
    for key, found in implied.items():
        if key not in seen:
            seq = found.origin.get(spec.key[0])
            report.add(Disagreement(Kind.DELETED, spec.name, shape.key_dict(key), seq=seq))
    report.rows[spec.name] = count


class _Stream:
    """A table's rows in key order, walked alongside the events."""

    def __init__(self, shape: _Shape, rows: Iterator[Sequence[Any]], report: StateReport) -> None:
        self.shape = shape
        self.rows = rows
        self.report = report
        self.count = 0
        self.row: Sequence[Any] | None = None
        self.key: str | None = None
        self.advance()

    def advance(self) -> None:
        self.row = next(self.rows, None)
        self.key = None if self.row is None else self.row[self.shape.key_at[0]]
        if self.row is not None:
            self.count += 1

    def skip_to(self, key: str | None) -> None:
        """Every row before `key` (all that are left, for None) has no event."""
        while self.key is not None and (key is None or self.key < key):
            name = self.shape.spec.name
            self.report.add(Disagreement(Kind.INSERTED, name, self.shape.key_dict((self.key,))))
            self.advance()

    def take(self, key: str) -> Sequence[Any] | None:
        self.skip_to(key)
        if self.key != key:
            return None
        row = self.row
        self.advance()
        return row


def _compare_by_decision(reader: _Reader, report: StateReport) -> None:
    """Merge the events grouped by decision with the decision-keyed tables, in id order.

    Most decisions are one `decision.created` event and one row, routed without review: those
    take a short lane (the row implied straight from the event, no projection, few calls per
    row). Any other decision is folded through the registry like every other table.
    """
    specs = [spec for spec in TABLES.values() if spec.by_decision]
    shapes = [_Shape(spec) for spec in specs]
    streams = [_Stream(shape, reader.rows(shape), report) for shape in shapes]
    main, main_shape, others = streams[0], shapes[0], streams[1:]
    assert main_shape.columns == DECISION_COLUMNS
    reasons_at, input_at, context_at = (DECISION_COLUMNS.index(c) for c in _DECISION_JSON)
    assert sorted(main_shape.jsons) == sorted((reasons_at, input_at, context_at))
    projection = Projection()
    tables = [(projection.rows[s.name], projection.deleted[s.name]) for s in specs]
    loads = orjson.loads
    events = reader.event_rows("decision_id IS NOT NULL", "decision_id")
    ahead = next(events, None)
    while ahead is not None:
        first = ahead
        seq, type_, point, decision_id, actor, ts, body = first
        ahead = next(events, None)
        if type_ == "decision.created" and (ahead is None or ahead[3] != decision_id):
            if main.key == decision_id and _as_written(main.row, seq) == body:
                main.advance()  # the row, written as its event would be, is the event
                for stream in others:
                    if stream.key is not None and stream.key <= decision_id:
                        _compare_group(str(decision_id), [stream], [({}, {})], report)
                continue
            try:
                payload = loads(body)["payload"]
                routed = payload.get("route") != "review"
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                routed = False  # the registry's fold reports what is wrong with it
            if routed and main.key == decision_id:
                raw: Sequence[Any] = main.row  # type: ignore[assignment]  # its key matched
                main.advance()
                try:
                    stored = (
                        *raw[:reasons_at],
                        loads(raw[reasons_at]),
                        *raw[reasons_at + 1 : input_at],
                        loads(raw[input_at]),
                        loads(raw[context_at]),
                        *raw[context_at + 1 :],
                    )
                except (orjson.JSONDecodeError, TypeError):
                    stored = main_shape.stored_row(raw)
                implied = decided_row(decision_id, point, actor, ts, payload)
                if stored != implied:
                    origin = dict.fromkeys(DECISION_COLUMNS, seq)
                    implied = main_shape.implied_tuple(implied)
                    main_shape.compare(list(stored), list(implied), origin, report)
                for stream in others:
                    if stream.key is not None and stream.key <= decision_id:
                        _compare_group(str(decision_id), [stream], [({}, {})], report)
                continue
        group = [_event(first)]
        while ahead is not None and ahead[3] == decision_id:
            group.append(_event(ahead))
            ahead = next(events, None)
        for implied_rows, deleted in tables:
            implied_rows.clear()
            deleted.clear()
        for ev in group:
            apply(projection, ev)
        if projection.unreadable:
            _unreadable(projection, report)
        _compare_group(str(decision_id), streams, tables, report)
    for stream in streams:
        stream.skip_to(None)
        report.rows[stream.shape.spec.name] = stream.count


_DECISION_JSON = ("reasons", "input", "context")
_AT = {name: i for i, name in enumerate(DECISION_COLUMNS)}
_PAYLOAD = (*DECIDED, "idempotency_key", "request_hash")
_payload_of = operator.itemgetter(*(_AT[name] for name in _PAYLOAD))
_JSON_AT = tuple((name, _AT[name]) for name in _DECISION_JSON)
_ROUTE, _CREATED, _DECIDED_AT, _GROUND_TRUTH, _GROUND_TRUTH_AT, _ACTOR, _POINT = (
    _AT[name]
    for name in (
        "route",
        "created_at",
        "decided_at",
        "ground_truth",
        "ground_truth_at",
        "actor",
        "point",
    )
)
_SORTED = orjson.OPT_SORT_KEYS


def _as_written(row: Sequence[Any] | None, seq: int) -> str | None:
    """The body of the `decision.created` event that would make this decisions row (routed
    without review), or None if no event could: the short lane of the state check.

    Equal text means equal values: the stored JSON columns are parsed and the whole is written
    canonically, as Warden writes bodies, so the body parses to exactly what the row holds.
    Any difference (a value changed, an older event's shape, a time without microseconds)
    leaves the decision to the full comparison, which names what differs.
    """
    if row is None:
        return None
    created = row[_CREATED]
    if (
        row[_ROUTE] == "review"
        or row[_DECIDED_AT] != created
        or row[_GROUND_TRUTH] is not None
        or row[_GROUND_TRUTH_AT] is not None
        or type(created) is not str
        or len(created) != 26
    ):
        return None
    loads = orjson.loads
    try:
        payload = dict(zip(_PAYLOAD, _payload_of(row), strict=True))
        for name, i in _JSON_AT:
            payload[name] = loads(row[i])
        return orjson.dumps(
            {
                "actor": row[_ACTOR],
                "decision_id": row[0],
                "payload": payload,
                "point": row[_POINT],
                "seq": seq,
                "ts": f"{created[:10]}T{created[11:]}+00:00",
                "type": "decision.created",
            },
            option=_SORTED,
        ).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, TypeError):
        return None


def _compare_group(
    decision_id: str,
    streams: list[_Stream],
    tables: list[tuple[dict[Key, Implied], dict[Key, int]]],
    report: StateReport,
) -> None:
    key = (decision_id,)
    for stream, (implied, deleted) in zip(streams, tables, strict=True):
        shape = stream.shape
        raw = stream.take(decision_id)
        found = implied.get(key)
        name = shape.spec.name
        if raw is None:
            if found is not None:
                seq = found.origin.get(shape.spec.key[0])
                report.add(Disagreement(Kind.DELETED, name, shape.key_dict(key), seq=seq))
            continue
        if found is None:
            gone = deleted.get(key)
            kind = Kind.INSERTED if gone is None else Kind.RESURRECTED
            report.add(Disagreement(kind, name, shape.key_dict(key), seq=gone))
            continue
        stored = list(shape.stored_row(raw))
        shape.compare(stored, shape.implied_row(found.values), found.origin, report)


def _event(row: Sequence[Any]) -> Event:
    seq, type_, point, decision_id, actor, ts, body = row
    try:
        payload = orjson.loads(body).get("payload")
    except (orjson.JSONDecodeError, AttributeError):
        payload = None  # the chain check reports a mangled body
    if not isinstance(payload, dict):
        payload = {}
    return Event(seq, type_, point, decision_id, actor, ts, payload)


def _unreadable(projection: Projection, report: StateReport) -> None:
    for seq, why in projection.unreadable:
        report.add(Disagreement(Kind.UNREADABLE, "events", {"seq": seq}, implied=why, seq=seq))
    projection.unreadable.clear()


# -- reading ----------------------------------------------------------------------------------


class _Reader:
    """Rows straight from the driver, in key order, a batch at a time; times as UTC text.

    Decision-keyed rows are read within the part's range of decision ids."""

    def __init__(self, conn: sa.Connection, dialect: str, part: Part = WHOLE) -> None:
        self.conn = conn
        self.postgres = dialect == "postgresql"
        self.collate = ""
        if self.postgres:  # order keys as Python compares them: by code point
            collation = conn.exec_driver_sql(
                "SELECT datcollate FROM pg_database WHERE datname = current_database()"
            ).scalar()
            if str(collation).lower() not in _C_COLLATIONS:
                self.collate = ' COLLATE "C"'
        self.part = part
        self._cursors = 0

    def _time(self, column: str) -> str:
        if self.postgres:
            return f"pg_catalog.to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
        return column

    def _within(self, column: str) -> tuple[str, list[str]]:
        """The condition that keeps `column` (a decision id) within the part, and its values."""
        marker = "%s" if self.postgres else "?"
        terms, values = list[str](), list[str]()
        if self.part.low is not None:
            terms.append(f"{column}{self.collate} >= {marker}")
            values.append(self.part.low)
        if self.part.high is not None:
            terms.append(f"{column}{self.collate} < {marker}")
            values.append(self.part.high)
        return "".join(f" AND {t}" for t in terms), values

    def _select(self, sql: str, values: Sequence[str] = ()) -> Iterator[Sequence[Any]]:
        driver = self.conn.connection.driver_connection
        assert driver is not None
        self._cursors += 1
        cursor = (
            driver.cursor(name=f"warden_state_{self._cursors}")
            if self.postgres
            else driver.cursor()
        )
        try:
            cursor.execute(sql, tuple(values))
            while batch := cursor.fetchmany(_BATCH):
                yield from batch
        finally:
            cursor.close()

    def event_rows(self, where: str, order: str) -> Iterator[Sequence[Any]]:
        """(seq, type, point, decision_id, actor, ts, body) in `order`, then seq; events of
        decisions only those within the part."""
        columns = f"seq, type, point, decision_id, actor, {self._time('ts')}, body"
        order_by = f"{order}{self.collate}, seq" if order != "seq" else "seq"
        within, values = self._within("decision_id") if order == "decision_id" else ("", [])
        return self._select(
            f"SELECT {columns} FROM events WHERE {where}{within} ORDER BY {order_by}", values
        )

    def events(self, where: str, order: str) -> Iterator[Event]:
        return map(_event, self.event_rows(where, order))

    def rows(self, shape: _Shape) -> Iterator[Sequence[Any]]:
        table = shape.spec.table
        parts = []
        for name in shape.columns:
            column_type = table.c[name].type
            quoted = f'"{name}"'
            if isinstance(column_type, sa.DateTime):
                parts.append(self._time(quoted))
            elif isinstance(column_type, sa.JSON) and self.postgres:
                parts.append(f"{quoted}::text")
            else:
                parts.append(quoted)
        within, values = "", list[str]()
        if shape.spec.by_decision:
            within, values = self._within(f'"{shape.spec.key[0]}"')
        order = ", ".join(f'"{k}"{self.collate}' for k in shape.spec.key)
        return self._select(
            f"SELECT {', '.join(parts)} FROM {table.name} WHERE true{within} ORDER BY {order}",
            values,
        )


# -- values -----------------------------------------------------------------------------------


def time_text(value: Any, *, parse: bool = False) -> Any:
    """A time as UTC text `YYYY-MM-DD HH:MM:SS.ffffff`; other values as they are."""
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " " and not parse:
            return value
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")
    return value


def _jsonable(value: Any) -> Any:
    return None if value is UNKNOWN else value


def _show(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 120 else text[:117] + "..."


def _key_text(key: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in key.items())
