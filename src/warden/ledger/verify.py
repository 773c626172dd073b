"""Full verification: re-derive every hash, link, column, tile, root and signature.

One pass over the events in order, inside one read snapshot. The first event that does not fit is
diagnosed — modified, deleted, inserted, reordered — and checkpoints (stored and witnessed) are
checked against the roots the pass re-derives: a checkpoint over more events than remain means
the log was truncated; one whose root differs means history was rewritten after it was signed.

Which keys vouch for a checkpoint is `warden.ledger.trust`'s business; with `require_signed`
(an auditor who passed their own keys) a ledger that no trusted checkpoint covers fails, and
with a remembered checkpoint (`--state`) the ledger must be a consistent extension of it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
import sqlalchemy as sa

from warden.ledger import identity, remembered
from warden.ledger import note as notes
from warden.ledger.chain import GENESIS
from warden.ledger.checkpoint import Checkpoint, all_checkpoints
from warden.ledger.keys import PublicKey
from warden.ledger.lanes import StoredLanes, lane_count, parse_index_body
from warden.ledger.lanes import stored as stored_lanes
from warden.ledger.projection import StateReport, merged, verify_state
from warden.ledger.remembered import Remembered
from warden.ledger.statepass import (
    PARALLEL_FROM,
    StateJob,
    StateJobFailed,
    can_share,
    shared_snapshot,
    split,
)
from warden.ledger.tree import TILE, LedgerDamaged, LedgerTree, TiledFrontier
from warden.ledger.trust import ROTATED, KeyChain, Rotation, rotation
from warden.store.schema import (
    checkpoint_cosignatures,
    lane_cosignatures,
    lane_tiles,
    ledger_head,
    ledger_tiles,
)

Progress = Callable[[int, int], None]
Row = tuple[Any, ...]
_COLUMNS = "seq, type, point, decision_id, actor, {ts}, body, prev_hash, leaf_hash, chain_hash"
# Times read as SQLite keeps them, naive UTC text with microseconds: no datetime per row.
_UTC_TEXT = {"postgresql": "pg_catalog.to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"}
_BATCH = 1000  # rows: a batch that stays in the CPU's cache is checked fastest


class BreakKind(StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    TILE_MISMATCH = "tile_mismatch"
    UNVOUCHED = "unvouched"
    FORKED = "forked"


@dataclass(frozen=True)
class Break:
    """What is wrong and where: the first event affected (and the last, for a range)."""

    kind: BreakKind
    seq: int | None
    message: str
    last_seq: int | None = None
    checkpoint: int | None = None
    lane: int | None = None  # set for a break in a lane other than lane 0

    def to_dict(self) -> dict[str, Any]:
        found = {
            "kind": self.kind.value,
            "seq": self.seq,
            "last_seq": self.last_seq,
            "checkpoint": self.checkpoint,
            "message": self.message,
        }
        if self.lane is not None:
            found["lane"] = self.lane
        return found


@dataclass
class Report:
    events: int = 0
    head: int = 0
    root: str | None = None
    checkpoints: int = 0
    witnessed: int = 0
    latest_checkpoint: int | None = None
    vouched: int | None = None  # the newest checkpoint a trusted key signed and events match
    vouched_checkpoint: Checkpoint | None = None
    origin: str | None = None
    trusted_keys: list[str] = field(default_factory=list)
    rotations: list[str] = field(default_factory=list)
    state: str | None = None  # what the remembered checkpoint check found
    cosigned: int | None = None  # the newest vouched checkpoint with enough cosignatures
    witnesses: dict[str, int] = field(default_factory=dict)  # witness -> newest size cosigned
    seconds: float = 0.0
    problems: list[Break] = field(default_factory=list)
    projection: StateReport | None = None  # the state tables against what the events imply
    lanes: list[dict[str, Any]] = field(default_factory=list)  # lanes above 0: size, root
    vouched_lanes: StoredLanes | None = None  # the newest trusted lanes checkpoint that holds
    lanes_cosigned: dict[int, int] = field(default_factory=dict)  # lane -> newest size cosigned
    lanes_witnesses: dict[int, dict[str, int]] = field(
        default_factory=dict
    )  # lane -> witness -> size
    phases: dict[str, float] = field(default_factory=dict)  # seconds; state runs beside chain

    @property
    def ok(self) -> bool:
        return not self.problems and (self.projection is None or self.projection.ok)

    @property
    def first(self) -> Break | None:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "head": self.head,
            "root": self.root,
            "checkpoints": self.checkpoints,
            "latest_checkpoint": self.latest_checkpoint,
            "vouched": self.vouched,
            "origin": self.origin,
            "trusted_keys": self.trusted_keys,
            "rotations": self.rotations,
            "state": self.state,
            "cosigned": self.cosigned,
            "witnesses": self.witnesses,
            "witnessed": self.witnessed,
            "seconds": round(self.seconds, 3),
            "first_break": self.first.to_dict() if self.first else None,
            "problems": [p.to_dict() for p in self.problems],
            "projection": self.projection.to_dict() if self.projection is not None else None,
            **({"lanes": self.lanes} if self.lanes else {}),
            **(
                {
                    "lanes_cosigned": {str(k): v for k, v in self.lanes_cosigned.items()},
                    "lanes_witnesses": {str(k): v for k, v in self.lanes_witnesses.items()},
                }
                if self.lanes_witnesses or self.lanes_cosigned
                else {}
            ),
        }


def verify_ledger(
    db: sa.Engine,
    keys: Sequence[PublicKey],
    *,
    witnessed: Sequence[Checkpoint] = (),
    progress: Progress | None = None,
    require_signed: bool = False,
    state: Remembered | None = None,
    cosigners: Sequence[notes.Verifier] = (),
    min_cosigners: int = 0,
    projection: bool = True,
    parallel: bool | None = None,
) -> Report:
    """Verify everything Warden stored, against the trusted public `keys`.

    `projection`: also check that every state table holds what the events imply
    (`warden.ledger.projection`), in a second process beside the chain pass when the ledger
    is large (`parallel`: None decides by size; True or False insists).
    `require_signed`: fail unless a checkpoint signed by a trusted key covers the ledger.
    `state`: a checkpoint remembered from an earlier run, which the ledger must extend.
    `cosigners`, `min_cosigners`: witnesses, and how many must have cosigned a checkpoint.
    """
    began = time.perf_counter()
    report = Report(witnessed=len(witnessed))
    jobs = _state_jobs(db, parallel, projection)
    lane_jobs = _lane_jobs(db, parallel, state)
    try:
        with shared_snapshot(db, [*jobs, *lane_jobs]) as conn:
            read = _read(conn, db.dialect.name, report, witnessed, state, progress, lane_jobs)
            if projection:
                report.projection = _state(conn, db.dialect.name, jobs)
    finally:
        for job in [*jobs, *lane_jobs]:
            job.close()
    chain, stored, cosignatures, tiles = read.chain, read.stored, read.cosignatures, read.tiles
    head_seq, head_chain = read.head
    lanes, lane_cps, remembered_lanes = read.lanes, read.lane_cps, read.remembered_lanes
    other_lanes = read.other_lanes
    checking = time.perf_counter()
    report.head = head_seq
    report.events = chain.verified
    report.checkpoints = len(stored)
    report.latest_checkpoint = stored[-1].size if stored else None
    problems: list[Break] = [p for lane in other_lanes for p in lane.problems]
    report.lanes = [lane.summary() for lane in other_lanes]
    trust = KeyChain(keys, chain.rotations, report.origin)
    trust.resolve([*stored, *witnessed], lambda cp: chain.roots.get(cp.size) == cp.root_bytes)

    def trusted(cp: StoredLanes) -> bool:
        return trust.vouches_for_note(cp.note, cp.origin, cp.heads[0].size)

    if lanes > 1:
        if isinstance(remembered_lanes, StoredLanes):
            lane_cps = lane_cps[:-1]
        problems += _lanes_checkpoint_problems(lane_cps, trusted, chain, other_lanes)
        vouched_lanes = [
            cp
            for cp in lane_cps
            if isinstance(cp, StoredLanes)
            and trusted(cp)
            and not _lanes_checkpoint_problems([cp], trusted, chain, other_lanes)
        ]
        report.vouched_lanes = vouched_lanes[-1] if vouched_lanes else None
        if cosigners:
            problems += _lane_cosignature_problems(
                vouched_lanes, read.lane_cosignatures, cosigners, min_cosigners, report, other_lanes
            )
        unsigned = [lane for lane in other_lanes if lane.events and not lane.problems]
        if require_signed and unsigned and report.vouched_lanes is None:
            problems.append(
                Break(
                    BreakKind.UNVOUCHED,
                    1,
                    "no lanes checkpoint signed by a trusted key covers lanes "
                    + ", ".join(str(lane.lane) for lane in unsigned)
                    + ": nothing vouches for their events (sign one with "
                    "`warden audit lanes-checkpoint`)",
                    last_seq=unsigned[0].events,
                    lane=unsigned[0].lane,
                )
            )
        if remembered_lanes is not None:
            problems += _remembered_lanes_problems(
                remembered_lanes, report.vouched_lanes, chain, other_lanes
            )
    if chain.broken is not None:
        problems.append(chain.broken)
    else:
        problems += _head_problems(head_seq, head_chain, chain.verified, chain.last_chain)
        if not problems:
            report.root = chain.tree.root().hex()
    report.trusted_keys = sorted(trust.ranges)
    report.rotations = [r.describe() for r in chain.rotations]
    problems += _checkpoint_problems(stored, "checkpoint", trust, chain, tiles)
    problems += _checkpoint_problems(witnessed, "witnessed checkpoint", trust, chain, tiles)
    if not problems:
        problems += _tile_problems(tiles, chain)
    vouched = [
        cp
        for cp in stored
        if trust.problem(cp) is None and chain.roots.get(cp.size) == cp.root_bytes
    ]
    if vouched:
        report.vouched = vouched[-1].size
        report.vouched_checkpoint = vouched[-1]
    if require_signed and chain.verified and not vouched and chain.broken is None:
        problems.append(
            Break(
                BreakKind.UNVOUCHED,
                1,
                f"no checkpoint signed by a trusted key covers the ledger: nothing vouches for "
                f"events 1-{chain.verified} ("
                + (
                    f"none of the {len(stored)} stored checkpoints is signed by a trusted key"
                    if stored
                    else "no checkpoint is stored: were they deleted? If this ledger is new, "
                    "sign one with `warden audit checkpoint`"
                )
                + ")",
                last_seq=chain.verified,
            )
        )
    if state is not None:
        problems += _state_problems(db, state, report, chain, prove=not problems)
    if cosigners:
        problems += _cosignature_problems(vouched, cosignatures, cosigners, min_cosigners, report)
    report.problems = sorted(problems, key=_order)
    report.seconds = time.perf_counter() - began
    report.phases = {
        "chain": chain.seconds - chain.merkle_seconds,
        "merkle": chain.merkle_seconds,
        "checkpoints": report.seconds - (checking - began),
        "state": report.projection.seconds if report.projection is not None else 0.0,
    }
    return report


def _state_jobs(db: sa.Engine, parallel: bool | None, projection: bool) -> list[StateJob]:
    """Processes that check the state projection beside the chain pass, a share of the
    decisions each, when that pays (or `parallel` asks for it)."""
    cores = os.cpu_count() or 1
    if not projection or parallel is False or not can_share(db):
        return []
    with db.connect() as conn:
        if parallel is None:
            events = int(conn.exec_driver_sql("SELECT max(seq) FROM events").scalar() or 0)
            if cores < 2 or events < PARALLEL_FROM:
                return []
        parts = split(conn, min(max(2, cores - 1), 4))  # the chain is about a third of the work
    jobs: list[StateJob] = []
    try:
        for part in parts:
            jobs.append(StateJob(db, part))
    except (StateJobFailed, OSError):
        for job in jobs:
            job.close()
        return []  # checked in this process instead
    return jobs


def _lane_jobs(db: sa.Engine, parallel: bool | None, state: Remembered | None) -> list[StateJob]:
    """Processes that verify the lanes above 0 beside lane 0's pass in this one, a share of
    the lanes each (lanes are independent chains), when the ledger has several lanes and that
    pays (or `parallel` asks for it). Each adopts this process's snapshot."""
    cores = os.cpu_count() or 1
    if parallel is False or db.dialect.name != "postgresql" or not can_share(db):
        return []
    with db.connect() as conn:
        lanes = lane_count(conn)
        if lanes < 2:
            return []
        if parallel is None:
            above = conn.exec_driver_sql("SELECT count(*) FROM events WHERE lane > 0").scalar()
            if cores < 2 or int(above or 0) < PARALLEL_FROM:
                return []
    remembered = _remembered_lanes(state)
    extra = (
        tuple((h.lane, h.size) for h in remembered.heads)
        if isinstance(remembered, StoredLanes)
        else ()
    )
    shares = min(max(1, cores - 1), 4, lanes - 1)
    jobs: list[StateJob] = []
    try:
        for share in range(shares):
            jobs.append(StateJob(db, LanesPart(tuple(range(1 + share, lanes, shares)), extra)))
    except (StateJobFailed, OSError):
        for job in jobs:
            job.close()
        return []  # verified in this process instead
    return jobs


def _state(conn: sa.Connection, dialect: str, jobs: Sequence[StateJob]) -> StateReport:
    if not jobs:
        return verify_state(conn, dialect)
    parts = []
    for job in jobs:
        try:
            parts.append(job.result())
        except StateJobFailed:  # the same share, here, in the same snapshot
            parts.append(verify_state(conn, dialect, job.part))
    return merged(parts)


@dataclass
class _Read:
    """What the pass over the snapshot found, for the checks that follow it."""

    chain: ChainPass
    head: tuple[int, str]
    stored: list[Checkpoint]
    cosignatures: Sequence[Any]
    tiles: dict[int, str]
    lanes: int = 1
    lane_cps: list[StoredLanes | str] = field(default_factory=list)
    remembered_lanes: StoredLanes | str | None = None
    other_lanes: list[LaneCheck] = field(default_factory=list)
    lane_cosignatures: Sequence[Any] = ()


def _read(
    conn: sa.Connection,
    dialect: str,
    report: Report,
    witnessed: Sequence[Checkpoint],
    state: Remembered | None,
    progress: Progress | None,
    lane_jobs: Sequence[StateJob] = (),
) -> _Read:
    """Head, checkpoints, cosignatures and tiles, then the chain pass over every event (lanes
    above 0 in `lane_jobs`' processes when there are any, else here)."""
    report.origin = identity.origin(conn)
    head = conn.execute(
        sa.select(ledger_head.c.seq, ledger_head.c.chain_hash).where(ledger_head.c.id == 1)
    ).first()
    lanes = lane_count(conn)
    last_row = conn.exec_driver_sql(
        "SELECT max(seq) FROM events" + (" WHERE lane = 0" if lanes > 1 else "")
    ).scalar()
    stored = all_checkpoints(conn)
    sizes = {c.size for c in stored} | {c.size for c in witnessed}
    if state is not None:
        sizes.add(state.size)
    lane_cps = stored_lanes(conn) if lanes > 1 else []
    remembered_lanes = _remembered_lanes(state) if lanes > 1 else None
    if isinstance(remembered_lanes, StoredLanes):  # its roots are re-derived too
        lane_cps = [*lane_cps, remembered_lanes]
    sizes |= {cp.heads[0].size for cp in lane_cps if isinstance(cp, StoredLanes)}
    cosignatures = conn.execute(
        sa.select(checkpoint_cosignatures.c.size, checkpoint_cosignatures.c.line)
    ).all()
    lane_cosigs = (
        conn.execute(
            sa.select(lane_cosignatures.c.lane, lane_cosignatures.c.size, lane_cosignatures.c.line)
        ).all()
        if lanes > 1
        else []
    )
    tiles = {
        int(t): h
        for t, h in conn.execute(sa.select(ledger_tiles.c.tile, ledger_tiles.c.hash)).all()
    }
    chain = ChainPass(sizes, int(last_row or 0), progress)
    began = time.perf_counter()
    chain.run(event_batches(conn, dialect, lane=0 if lanes > 1 else None))
    chain.seconds = time.perf_counter() - began
    other_lanes = _other_lanes(conn, dialect, lanes, lane_cps, lane_jobs) if lanes > 1 else []
    head_at = (int(head.seq), head.chain_hash) if head else (0, GENESIS)
    return _Read(
        chain,
        head_at,
        stored,
        cosignatures,
        tiles,
        lanes,
        lane_cps,
        remembered_lanes,
        other_lanes,
        lane_cosigs,
    )


def _order(problem: Break) -> tuple[int, int]:
    """Exact breaks by where they start; ranges a checkpoint vouched for by where they end."""
    if problem.checkpoint is None:
        return problem.seq or 0, 0
    return problem.last_seq or problem.checkpoint, 1


@contextmanager
def snapshot(db: sa.Engine) -> Iterator[sa.Connection]:
    """One consistent read of head, events, checkpoints and tiles while writers go on."""
    with db.connect() as conn:
        if db.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def event_batches(
    conn: sa.Connection, dialect: str, upto: int | None = None, lane: int | None = None
) -> Iterator[list[Row]]:
    """Events in seq order (of one lane, when given), a batch at a time, straight from the
    driver: row objects cost more than hashing."""
    driver = conn.connection.driver_connection
    assert driver is not None
    columns = _COLUMNS.format(ts=_UTC_TEXT.get(dialect, "ts"))
    conditions = [] if upto is None else [f"seq <= {int(upto)}"]
    if lane is not None:
        conditions.append(f"lane = {int(lane)}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = f"SELECT {columns} FROM events{where} ORDER BY seq"
    cursor = driver.cursor(name="warden_verify") if dialect == "postgresql" else driver.cursor()
    try:
        cursor.execute(sql)
        while batch := cursor.fetchmany(_BATCH):
            yield batch
    finally:
        cursor.close()


def chain_hashes(prev: bytes, bodies: Sequence[str]) -> tuple[list[bytes], list[bytes]]:
    """The leaf and chain hashes of consecutive bodies, the first following chain hash `prev`:
    the hash chain of `warden.ledger.chain`, in two tight loops."""
    sha256 = hashlib.sha256
    leaves = [sha256(b"\x00" + body.encode()).digest() for body in bodies]
    links = []
    for leaf in leaves:
        prev = sha256(prev + leaf).digest()
        links.append(prev)
    return leaves, links


class ChainPass:
    """The single pass: hash chain, columns against bodies, Merkle roots, tiles.

    A batch of rows is checked a column at a time, with a few comparisons over the whole batch;
    only a batch where something differs is walked row by row, to name the first break exactly.
    """

    def __init__(
        self, sizes: set[int], last_row: int, progress: Progress | None, lane: int = 0
    ) -> None:
        self.roots: dict[int, bytes] = {}
        self.tree = TiledFrontier()
        self.verified = 0
        self.last_chain = GENESIS
        self.broken: Break | None = None
        self.rotations: list[Rotation] = []
        self.total = last_row
        self.progress = progress
        self._sizes = sorted((size for size in sizes if size > 0), reverse=True)
        self._prev = bytes.fromhex(GENESIS)
        self._quoted = _Quoted()
        self._lane = f'"lane":{int(lane)},' if lane else ""  # in the bodies of lanes above 0
        self.seconds = 0.0  # the whole pass, of which the Merkle tree:
        self.merkle_seconds = 0.0

    @property
    def tiles(self) -> list[bytes]:
        return self.tree.tiles

    def run(self, batches: Iterable[list[Row]]) -> None:
        batches = iter(batches)
        for rows in batches:
            if not self._take(rows):
                self._walk(rows, batches)
                if self.broken is not None:
                    return
            if self.progress is not None:
                self.progress(self.verified, self.total)

    def _take(self, rows: Sequence[Row]) -> bool:
        """Add the rows if every one of them holds, checked a column at a time."""
        columns = tuple(zip(*rows, strict=True))
        seqs, bodies, prevs, leaf_hexes, chain_hexes = columns[0], *columns[6:]
        first = self.verified + 1
        linked = (self.last_chain, *chain_hexes[:-1])
        if seqs != tuple(range(first, first + len(rows))) or prevs != linked:
            return False
        leaves, links = chain_hashes(self._prev, bodies)
        if not (_same(leaves, leaf_hexes) and _same(links, chain_hexes)):
            return False
        try:
            if not self._columns_hold(*columns[:7]):
                return False
        except (TypeError, AttributeError):  # a value of the wrong type: the walk names its row
            return False
        if ROTATED in columns[1]:
            self._note_rotations(rows)
        self._add(leaves, links[-1], chain_hexes[-1])
        return True

    def _note_rotations(self, rows: Sequence[Row]) -> None:
        for row in rows:
            if row[1] == ROTATED and (found := rotation(int(row[0]), row[6])) is not None:
                self.rotations.append(found)

    def _columns_hold(
        self,
        seqs: Sequence[int],
        types: Sequence[str],
        points: Sequence[str | None],
        decision_ids: Sequence[str | None],
        actors: Sequence[str],
        stamps: Sequence[str],
        bodies: Sequence[str],
    ) -> bool:
        """Whether each row's columns say what its canonical body says, compared as text.

        The body is canonical JSON with sorted keys, so all but the payload sits at fixed places:
        the columns, written as JSON, must spell how each body starts and ends. A mismatch is not
        yet a break (the body leaves out zero microseconds, the stored time does not): the walk
        compares values.
        """
        quoted, dumps, lane = self._quoted, orjson.dumps, self._lane
        heads = [
            f'{{"actor":{quoted[actor]},"decision_id":{dumps(decision).decode()},{lane}"payload":'
            for actor, decision in zip(actors, decision_ids, strict=True)
        ]
        tails = [
            f',"point":{quoted[point]},"seq":{seq},"ts":"{stamp.replace(" ", "T", 1)}+00:00",'
            f'"type":{quoted[type_]}}}'
            for point, seq, stamp, type_ in zip(points, seqs, stamps, types, strict=True)
        ]
        return all(map(str.startswith, bodies, heads)) and all(map(str.endswith, bodies, tails))

    def _walk(self, rows: list[Row], later: Iterator[list[Row]]) -> None:
        """Row by row through a batch that did not hold: the first break, or a false alarm."""
        for at, row in enumerate(rows):
            if self._take([row]):
                continue
            after = itertools.chain(rows[at + 1 :], itertools.chain.from_iterable(later))
            self.broken = diagnose(self.verified + 1, row, self.last_chain, after)
            if self.broken is not None:
                return
            leaf = _hash(row[6])
            self._note_rotations([row])
            self._add([leaf], hashlib.sha256(self._prev + leaf).digest(), row[9])

    def _add(self, leaves: list[bytes], last_link: bytes, last_hex: str) -> None:
        """Grow the tree by verified leaves, keeping the root at each checkpoint size passed."""
        began = time.perf_counter()
        start = self.verified
        end = start + len(leaves)
        while self._sizes and self._sizes[-1] <= end:
            size = self._sizes.pop()
            self.tree.extend(leaves[self.tree.size - start : size - start])
            self.roots[size] = self.tree.root()
        self.tree.extend(leaves[self.tree.size - start :])
        self.merkle_seconds += time.perf_counter() - began
        self.verified = end
        self._prev, self.last_chain = last_link, last_hex


def _same(digests: list[bytes], stored: Sequence[Any]) -> bool:
    """Whether each stored hex digest is the digest computed, in two C calls per batch.

    Joined with a separator that no hex digit is: equal text then has the separators at the same
    places, so each stored value is exactly its digest (joined without one, a stored hash cut
    short and the next lengthened to match would pass)."""
    try:
        return " ".join(stored) == b"".join(digests).hex(" ", 32)
    except TypeError:  # a value that is not text: the walk names its row
        return False


class _Quoted(dict[Any, str]):
    """JSON text of the few values that repeat in every row (actors, points, types)."""

    def __missing__(self, value: Any) -> str:
        text = orjson.dumps(value).decode()
        if len(self) < 10_000:
            self[value] = text
        return text


def instant(value: Any) -> datetime | None:
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _body_seq(body: str) -> int | None:
    """The `seq` inside a canonical body, without parsing it all (it is the last number key)."""
    at = body.rfind(',"seq":')
    if at < 0:
        return None
    digits = body[at + 7 : body.find(",", at + 7)]
    return int(digits) if digits.isdigit() else None


def _hash(body: str) -> bytes:
    return hashlib.sha256(b"\x00" + body.encode()).digest()


def diagnose(
    position: int, row: tuple[Any, ...], prev_hex: str, later: Iterable[tuple[Any, ...]]
) -> Break | None:
    """Name what is wrong with the event expected at `position`, or None if nothing is.

    `later` are the rows after it; they are read only to tell a move from a deletion.
    """
    seq, body, prev_hash, leaf_hex, chain_hex = row[0], row[6], row[7], row[8], row[9]
    if seq != position:
        where = _find(position, [row], later)
        if where is not None:
            return Break(
                BreakKind.REORDERED,
                position,
                f"event {position} is stored at position {where}: events were reordered",
            )
        last = seq - 1
        span = f"event {position} is" if last == position else f"events {position}-{last} are"
        return Break(BreakKind.DELETED, position, f"{span} missing", last_seq=last)
    leaf_ok = _hash(body).hex() == leaf_hex
    body_seq = _body_seq(body)
    if leaf_ok and body_seq is not None and body_seq != position:
        if body_seq < position:
            return Break(
                BreakKind.INSERTED,
                body_seq,
                f"position {position} holds event {body_seq}: "
                f"{position - body_seq} event(s) were inserted from position {body_seq}",
                last_seq=position - 1,
            )
        where = _find(position, [], later)
        if where is not None:
            return Break(
                BreakKind.REORDERED,
                position,
                f"position {position} holds event {body_seq} and event {position} is at "
                f"position {where}: events were reordered",
            )
        return Break(
            BreakKind.DELETED,
            position,
            f"position {position} holds event {body_seq}: events {position}-{body_seq - 1} "
            "were deleted and the rest renumbered",
            last_seq=body_seq - 1,
        )
    if not leaf_ok:
        return Break(
            BreakKind.MODIFIED, position, f"event {position}: body does not match its leaf hash"
        )
    own_chain = hashlib.sha256(bytes.fromhex(prev_hash) + bytes.fromhex(leaf_hex)).hexdigest()
    if own_chain != chain_hex:
        return Break(
            BreakKind.MODIFIED,
            position,
            f"event {position}: chain hash does not follow from its previous and leaf hashes",
        )
    if prev_hash != prev_hex:
        culprit = max(position - 1, 1)
        message = (
            f"event {culprit} was rewritten and re-hashed: event {position} still links to "
            "the original"
            if position > 1
            else "event 1 does not start from the genesis hash"
        )
        return Break(BreakKind.MODIFIED, culprit, message)
    return _column_break(position, row)


def _column_break(position: int, row: tuple[Any, ...]) -> Break | None:
    _, type_, point, decision_id, actor, ts, body, *_ = row
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Break(BreakKind.MODIFIED, position, f"event {position}: body is not JSON")
    columns = {"type": type_, "point": point, "decision_id": decision_id, "actor": actor}
    for name, value in columns.items():
        if parsed.get(name) != value:
            return Break(
                BreakKind.MODIFIED,
                position,
                f"event {position}: column {name} is {value!r} but the signed body says "
                f"{parsed.get(name)!r}",
            )
    if instant(parsed.get("ts")) != instant(ts):
        return Break(
            BreakKind.MODIFIED,
            position,
            f"event {position}: column ts is {ts} but the signed body says {parsed.get('ts')}",
        )
    return None


def _find(
    position: int, first: list[tuple[Any, ...]], later: Iterable[tuple[Any, ...]]
) -> int | None:
    """The stored position of the event whose body says it is event `position`."""
    for row in [*first, *later]:
        body = row[6]
        if _body_seq(body) == position and _hash(body).hex() == row[8]:
            return int(row[0])
    return None


def _head_problems(head_seq: int, head_chain: str, verified: int, last_chain: str) -> list[Break]:
    if head_seq > verified:
        span = (
            f"event {head_seq}" if head_seq == verified + 1 else f"events {verified + 1}-{head_seq}"
        )
        return [
            Break(
                BreakKind.TRUNCATED,
                verified + 1,
                f"the ledger head is at event {head_seq} but the log ends at {verified}: "
                f"{span} were cut off",
                last_seq=head_seq,
            )
        ]
    if head_seq < verified:
        return [
            Break(
                BreakKind.INSERTED,
                head_seq + 1,
                f"events {head_seq + 1}-{verified} lie beyond the ledger head ({head_seq}): "
                "they were written outside Warden",
                last_seq=verified,
            )
        ]
    if head_chain != last_chain:
        return [
            Break(
                BreakKind.MODIFIED,
                verified,
                f"event {verified} was rewritten and re-hashed: the ledger head still holds "
                "the original chain hash",
            )
        ]
    return []


def _checkpoint_problems(
    found: Sequence[Checkpoint],
    what: str,
    trust: KeyChain,
    chain: ChainPass,
    tiles: dict[int, str],
) -> list[Break]:
    problems: list[Break] = []
    vouched = 0  # the largest size a checkpoint still vouches for
    for cp in sorted(found, key=lambda c: c.size):
        reason = trust.problem(cp)
        if reason is not None:
            problems.append(
                Break(
                    BreakKind.CHECKPOINT_MISMATCH,
                    None,
                    f"{what} {cp.size} {reason}",
                    checkpoint=cp.size,
                )
            )
            continue
        if chain.broken is not None and cp.size >= (chain.broken.seq or 1):
            continue  # the chain break above already explains it
        if cp.size > chain.verified:
            problems.append(
                Break(
                    BreakKind.TRUNCATED,
                    max(chain.verified + 1, vouched + 1),
                    f"{what} {cp.size} signed {cp.size} events but the log holds only "
                    f"{chain.verified}: it was truncated",
                    last_seq=cp.size,
                    checkpoint=cp.size,
                )
            )
            continue
        if chain.roots.get(cp.size) != cp.root_bytes:
            first, last = _rewritten_range(vouched + 1, cp.size, tiles, chain.tiles)
            problems.append(
                Break(
                    BreakKind.CHECKPOINT_MISMATCH,
                    first,
                    f"{what} {cp.size} signed root {cp.root[:16]}... but events up to "
                    f"{cp.size} now give {chain.roots[cp.size].hex()[:16]}...: events "
                    f"{first}-{last} were rewritten after it was signed",
                    last_seq=last,
                    checkpoint=cp.size,
                )
            )
            continue
        vouched = max(vouched, cp.size)
    return problems


def _rewritten_range(
    first: int, last: int, stored: dict[int, str], computed: list[bytes]
) -> tuple[int, int]:
    """Narrow a rewritten range with the stored tiles, when they predate the rewrite."""
    for tile in range((first - 1) // TILE, last // TILE):
        digest = stored.get(tile)
        if tile < len(computed) and digest is not None and digest != computed[tile].hex():
            return max(first, tile * TILE + 1), min(last, (tile + 1) * TILE)
    return first, last


def _tile_problems(stored: dict[int, str], chain: ChainPass) -> list[Break]:
    """Tiles are derived data; one that disagrees with intact events was itself altered."""
    for tile in sorted(stored):
        if tile >= len(chain.tiles):
            return [
                Break(
                    BreakKind.TRUNCATED,
                    chain.verified + 1,
                    f"Merkle tile {tile} was made over events up to {(tile + 1) * TILE}, but "
                    f"the log ends at {chain.verified}: it was truncated",
                    last_seq=(tile + 1) * TILE,
                )
            ]
        if stored[tile] != chain.tiles[tile].hex():
            return [
                Break(
                    BreakKind.TILE_MISMATCH,
                    tile * TILE + 1,
                    f"stored Merkle tile {tile} (events {tile * TILE + 1}-{(tile + 1) * TILE}) "
                    "does not match its events, which verify; delete the tile rows from "
                    f"{tile} on and the next checkpoint rebuilds them",
                    last_seq=(tile + 1) * TILE,
                )
            ]
    return []


def _state_problems(
    db: sa.Engine, state: Remembered, report: Report, chain: ChainPass, *, prove: bool
) -> list[Break]:
    """The ledger must extend the remembered checkpoint: same origin, at least as many events,
    the same root at its size, and an RFC 9162 consistency proof to the newest vouched
    checkpoint."""
    where = f"the remembered checkpoint {state.size}"
    if state.origin is not None and report.origin is not None and state.origin != report.origin:
        return [
            Break(
                BreakKind.FORKED,
                None,
                f"{where} is of origin {state.origin!r}, but this ledger is {report.origin!r}: "
                "it is another ledger",
                checkpoint=state.size,
            )
        ]
    if chain.broken is not None and state.size >= (chain.broken.seq or 1):
        return []  # the chain break explains it
    if state.size > chain.verified:
        report.state = "truncated"
        return [
            Break(
                BreakKind.TRUNCATED,
                chain.verified + 1,
                f"{where} covered {state.size} events, but the log now holds only "
                f"{chain.verified}: events {chain.verified + 1}-{state.size} were cut off "
                "since you last verified",
                last_seq=state.size,
                checkpoint=state.size,
            )
        ]
    if chain.roots.get(state.size) != state.root:
        report.state = "forked"
        return [
            Break(
                BreakKind.FORKED,
                1,
                f"{where} has root {state.root.hex()[:16]}..., but events 1-{state.size} now "
                f"give {chain.roots[state.size].hex()[:16]}...: history before it was rewritten "
                "since you last verified",
                last_seq=state.size,
                checkpoint=state.size,
            )
        ]
    newest = report.vouched_checkpoint
    if not prove:  # the stored tree is already in question: the roots above say enough
        return []
    if newest is None or newest.size < state.size:
        report.state = f"extends the remembered checkpoint {state.size} (no newer checkpoint)"
        return []
    reason: str | None
    try:
        with db.connect() as conn:
            proof = LedgerTree().consistency(conn, state.size, newest.size)
    except (LedgerDamaged, ValueError) as exc:
        proof, reason = [], f"no consistency proof could be built: {exc}"
    else:
        reason = remembered.extends(state, report.origin, newest.size, newest.root_bytes, proof)
    if reason is not None:
        report.state = "forked"
        return [Break(BreakKind.FORKED, None, reason, checkpoint=state.size)]
    report.state = (
        f"checkpoint {newest.size} extends the remembered checkpoint {state.size} "
        f"(RFC 9162 consistency proof of {len(proof)} hashes)"
    )
    return []


def _cosignature_problems(
    vouched: Sequence[Checkpoint],
    rows: Sequence[Any],
    cosigners: Sequence[notes.Verifier],
    needed: int,
    report: Report,
) -> list[Break]:
    """The newest vouched checkpoint that at least `needed` of the witnesses cosigned."""
    lines: dict[int, list[notes.Signature]] = {}
    for size, line in rows:
        try:
            lines.setdefault(int(size), []).append(notes.parse_signature_line(line.rstrip("\n")))
        except notes.NoteError:
            continue
    for cp in vouched:
        if cp.note is None or cp.size not in lines:
            continue
        signed = notes.Note(notes.parse_note(cp.note).body, tuple(lines[cp.size]))
        by = [w.name for w in cosigners if notes.cosigned_at(signed, w) is not None]
        for name in by:
            report.witnesses[name] = cp.size
        if len(by) >= needed:
            report.cosigned = cp.size
    if report.cosigned is not None:
        return []
    best = max(report.witnesses.values(), default=None)
    found = f"; the newest cosigned by any of them is {best}" if best else ""
    return [
        Break(
            BreakKind.UNVOUCHED,
            None,
            f"no checkpoint is cosigned by {needed} of the {len(cosigners)} witness key(s) "
            f"given{found}: the witnesses did not vouch for this ledger (were cosignatures "
            "deleted, or did the witnesses refuse a forked history?)",
        )
    ]


def _lane_cosignature_problems(
    vouched: Sequence[StoredLanes],
    rows: Sequence[Any],
    cosigners: Sequence[notes.Verifier],
    needed: int,
    report: Report,
    lanes: Sequence[LaneCheck],
) -> list[Break]:
    """Every lane above 0 that holds events needs a checkpoint of its own, at a size a vouched
    lanes checkpoint names (so its root is re-derived here), cosigned by `needed` witnesses."""
    lines: dict[tuple[int, int], list[notes.Signature]] = {}
    for lane, size, line in rows:
        try:
            signature = notes.parse_signature_line(line.rstrip("\n"))
        except notes.NoteError:
            continue
        lines.setdefault((int(lane), int(size)), []).append(signature)
    problems = []
    for check in lanes:
        if check.problems or not check.events:
            continue  # a broken lane is named already; an empty one has nothing to vouch for
        seen: dict[str, int] = {}
        best: int | None = None
        for cp in vouched:
            head = cp.heads[check.lane]
            signatures = lines.get((check.lane, head.size))
            if not head.size or not signatures:
                continue
            signed = notes.Note(head.body(cp.origin), tuple(signatures))
            by = [w.name for w in cosigners if notes.cosigned_at(signed, w) is not None]
            for name in by:
                seen[name] = max(seen.get(name, 0), head.size)
            if len(by) >= needed:
                best = max(best or 0, head.size)
        report.lanes_witnesses[check.lane] = seen
        if best is not None:
            report.lanes_cosigned[check.lane] = best
            continue
        newest = max(seen.values(), default=None)
        found = f"; the newest cosigned by any of them is {newest}" if newest else ""
        problems.append(
            Break(
                BreakKind.UNVOUCHED,
                None,
                f"lane {check.lane}: no checkpoint of the lane is cosigned by {needed} of the "
                f"{len(cosigners)} witness key(s) given{found}: the witnesses did not vouch for "
                "this lane (were its cosignatures deleted, or did the witnesses refuse a fork "
                "of it?)",
                lane=check.lane,
            )
        )
    return problems


@dataclass
class LaneCheck:
    """One lane above 0, verified as lane 0 is: its chain, columns, head and Merkle root."""

    lane: int
    events: int
    root: bytes | None
    problems: list[Break]
    roots: dict[int, bytes] = field(default_factory=dict)  # at each checkpointed size

    def summary(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "events": self.events,
            "root": self.root.hex() if self.root is not None else None,
            "ok": not self.problems,
        }


@dataclass(frozen=True)
class LanesPart:
    """A share of the lanes above 0 for another process to verify, with the (lane, size) pairs
    of the auditor's remembered lanes checkpoint (the stored ones it reads itself)."""

    lanes: tuple[int, ...]
    remembered: tuple[tuple[int, int], ...] = ()


def verify_lanes_part(conn: sa.Connection, dialect: str, part: LanesPart) -> list[LaneCheck]:
    """`verify_lanes` over one share, as a child process runs it in the parent's snapshot."""
    extra = [part.remembered] if part.remembered else []
    sizes = _lane_sizes(stored_lanes(conn), extra)
    return verify_lanes(conn, dialect, lane_count(conn), only=part.lanes, sizes=sizes)


def _other_lanes(
    conn: sa.Connection,
    dialect: str,
    lanes: int,
    lane_cps: Sequence[StoredLanes | str],
    jobs: Sequence[StateJob],
) -> list[LaneCheck]:
    """Every lane above 0, from the jobs' processes; a job that failed has its share done here,
    in the same snapshot."""
    if not jobs:
        return verify_lanes(conn, dialect, lanes, lane_cps)
    sizes = _lane_sizes(lane_cps)
    found: list[LaneCheck] = []
    for job in jobs:
        assert isinstance(job.part, LanesPart)
        try:
            found += job.result()  # type: ignore[arg-type]
        except StateJobFailed:
            found += verify_lanes(conn, dialect, lanes, only=job.part.lanes, sizes=sizes)
    return sorted(found, key=lambda check: check.lane)


def _lane_sizes(
    checkpoints: Sequence[StoredLanes | str], extra: Sequence[Sequence[tuple[int, int]]] = ()
) -> dict[int, set[int]]:
    """Every lane's sizes that some lanes checkpoint names, so its root is kept at each."""
    sizes: dict[int, set[int]] = {}
    for cp in checkpoints:
        if isinstance(cp, StoredLanes):
            for head in cp.heads:
                sizes.setdefault(head.lane, set()).add(head.size)
    for pairs in extra:
        for lane, size in pairs:
            sizes.setdefault(lane, set()).add(size)
    return sizes


def verify_lanes(
    conn: sa.Connection,
    dialect: str,
    lanes: int,
    checkpoints: Sequence[StoredLanes | str] = (),
    *,
    only: Sequence[int] | None = None,
    sizes: dict[int, set[int]] | None = None,
) -> list[LaneCheck]:
    """Lanes 1 .. lanes-1 (or `only` those), each on its own: a break in one names its lane and
    spares the rest. The root of each lane is kept at every size a lanes checkpoint names."""
    sizes = sizes if sizes is not None else _lane_sizes(checkpoints)
    heads = {
        int(id_) - 1: (int(seq), chain_hash)
        for id_, seq, chain_hash in conn.execute(
            sa.select(ledger_head.c.id, ledger_head.c.seq, ledger_head.c.chain_hash)
        ).all()
    }
    checks = []
    for lane in only if only is not None else range(1, lanes):
        head_seq, head_chain = heads.get(lane, (0, GENESIS))
        last = conn.exec_driver_sql(f"SELECT max(seq) FROM events WHERE lane = {lane}").scalar()
        chain = ChainPass(sizes.get(lane, set()), int(last or 0), None, lane=lane)
        chain.run(event_batches(conn, dialect, lane=lane))
        found = (
            [chain.broken]
            if chain.broken is not None
            else _head_problems(head_seq, head_chain, chain.verified, chain.last_chain)
        )
        if not found:  # the lane's stored tiles are derived data: each must match its events
            tiles = {
                int(t): h
                for t, h in conn.execute(
                    sa.select(lane_tiles.c.tile, lane_tiles.c.hash).where(lane_tiles.c.lane == lane)
                ).all()
            }
            found = _tile_problems(tiles, chain)
        problems = [
            Break(p.kind, p.seq, f"lane {lane}: {p.message}", p.last_seq, p.checkpoint, lane)
            for p in found
        ]
        root = chain.tree.root() if not problems else None
        checks.append(LaneCheck(lane, chain.verified, root, problems, chain.roots))
    return checks


def _lanes_checkpoint_problems(
    found: Sequence[StoredLanes | str],
    trusted: Callable[[StoredLanes], bool],
    control: ChainPass,
    others: Sequence[LaneCheck],
) -> list[Break]:
    """Every stored lanes checkpoint must be signed by a trusted key and name, for every lane,
    the root its events give at the size it names."""
    problems = []
    roots = [control.roots, *(lane.roots for lane in others)]
    verified = [control.verified, *(lane.events for lane in others)]
    broken = {0} if control.broken is not None else set()
    broken |= {lane.lane for lane in others if lane.problems}  # named already, where it broke
    for cp in found:
        if isinstance(cp, str):
            problems.append(Break(BreakKind.CHECKPOINT_MISMATCH, None, cp))
            continue
        if not trusted(cp):
            problems.append(
                Break(
                    BreakKind.CHECKPOINT_MISMATCH,
                    None,
                    f"lanes checkpoint {cp.id} is not signed by a trusted key",
                )
            )
        if len(cp.heads) != len(roots):
            problems.append(
                Break(
                    BreakKind.CHECKPOINT_MISMATCH,
                    None,
                    f"lanes checkpoint {cp.id} names {len(cp.heads)} lanes; the ledger has "
                    f"{len(roots)}",
                )
            )
            continue
        for head in cp.heads:
            if head.size == 0 or head.lane in broken:
                continue
            if head.size > verified[head.lane]:
                kind, what = BreakKind.TRUNCATED, "the lane now ends before it"
            elif roots[head.lane].get(head.size) != head.root:
                kind, what = BreakKind.CHECKPOINT_MISMATCH, "its events were rewritten since"
            else:
                continue
            problems.append(
                Break(
                    kind,
                    1,
                    f"lane {head.lane}: lanes checkpoint {cp.id} signed {head.size} events with "
                    f"root {head.root.hex()[:16]}...; {what}",
                    last_seq=head.size,
                    lane=head.lane or None,
                )
            )
    return problems


def _remembered_lanes(state: Remembered | None) -> StoredLanes | str | None:
    """The lanes checkpoint an auditor's state file remembers, if any (a message if unreadable)."""
    if state is None or state.lanes_note is None:
        return None
    try:
        parsed = notes.parse_note(state.lanes_note)
        origin, heads, _ = parse_index_body(parsed.body)
    except notes.NoteError as exc:
        return f"the remembered lanes checkpoint cannot be read: {exc}"
    return StoredLanes(0, origin, heads, parsed)


def _remembered_lanes_problems(
    found: StoredLanes | str,
    newest: StoredLanes | None,
    control: ChainPass,
    others: Sequence[LaneCheck],
) -> list[Break]:
    """Every lane must still give, at the size the auditor remembers, the root remembered: a
    lane rewritten or cut since is named (the roots are re-derived from every event)."""
    if isinstance(found, str):
        return [Break(BreakKind.FORKED, None, found)]
    problems = []
    for problem in _lanes_checkpoint_problems([found], lambda _: True, control, others):
        kind = BreakKind.FORKED if problem.kind == BreakKind.CHECKPOINT_MISMATCH else problem.kind
        message = problem.message.replace(
            "lanes checkpoint 0", "the remembered lanes checkpoint"
        ).replace("since", "since you last verified")
        problems.append(
            Break(kind, problem.seq, message, problem.last_seq, problem.checkpoint, problem.lane)
        )
    if newest is not None:
        for before, after in zip(found.heads, newest.heads, strict=False):
            if after.size < before.size:
                problems.append(
                    Break(
                        BreakKind.TRUNCATED,
                        after.size + 1,
                        f"lane {before.lane}: the newest lanes checkpoint has {after.size} "
                        f"events, fewer than the {before.size} you remember",
                        lane=before.lane or None,
                    )
                )
    return problems
