"""Ledger lanes: independent chains per lane, one signed index over them, proofs across lanes.

The invariants: with N lanes any tamper in any lane is found and named with its lane; a fork in
one lane fails that lane's consistency proof; an event proved across lanes checks with an
independent RFC 9162 implementation; writers of points in different lanes commit side by side.
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import postgres_schema_url
from warden.ledger import lanes as lanes_mod
from warden.ledger import merkle, remembered
from warden.ledger import note as notes
from warden.ledger.chain import GENESIS, EventDraft, leaf_hash, next_chain_hash
from warden.ledger.keys import load_or_create
from warden.ledger.lanecheckpoint import lane_consistency, make_lanes_checkpoint, prove_event
from warden.ledger.lanes import LaneHead, LaneProof, check_lane_proof, lane_of
from warden.ledger.remembered import LedgerForked
from warden.ledger.verify import verify_ledger
from warden.store.database import create_engine, migrate
from warden.store.rawsql import RawStatements
from warden.store.recorder import Change, Recorder
from warden.store.schema import events, ledger_head

POSTGRES_ENV = "WARDEN_TEST_POSTGRES_URL"
LANES = 4


# -- an independent RFC 9162 (hashlib only, recursive, straight from the RFC's definitions) ----


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes."""
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _h(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:]))


def _path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def _independent_inclusion(
    leaf: bytes, m: int, leaves: Sequence[bytes], proof: list[bytes]
) -> bool:
    return leaves[m] == leaf and _path(m, leaves) == proof


# -- pure: lane assignment, the index, proofs across lanes --------------------------------------


@given(st.text(min_size=1, max_size=40), st.integers(1, 64), st.booleans())
def test_a_decisions_events_share_its_points_lane_and_control_events_stay_in_lane_0(
    point: str, lanes: int, about_a_decision: bool
) -> None:
    decision = str(uuid.uuid4()) if about_a_decision else None
    lane = lane_of(point, decision, lanes)
    assert 0 <= lane < lanes
    assert lane == lane_of(point, str(uuid.uuid4()) if about_a_decision else None, lanes)
    if decision is None or lanes == 1:
        assert lane == 0
    else:
        assert lane >= 1  # lane 0 is the control lane


def _lanes(bodies: list[list[str]]) -> list[LaneHead]:
    return [
        LaneHead(k, len(b), merkle.root([leaf_hash(x.encode()) for x in b]))
        for k, b in enumerate(bodies)
    ]


def _body(lane: int, seq: int, text: str) -> str:
    place = f'"lane":{lane},' if lane else ""
    return f'{{"actor":"a",{place}"payload":{{"x":{text!r:s}}},"seq":{seq}}}'.replace("'", '"')


lane_bodies = st.lists(
    st.lists(st.text(alphabet="abcdef", max_size=6), min_size=1, max_size=20),
    min_size=1,
    max_size=6,
).map(lambda lanes: [[_body(k, i + 1, t) for i, t in enumerate(b)] for k, b in enumerate(lanes)])


@settings(max_examples=60, deadline=None)
@given(lane_bodies, st.data())
def test_an_event_proved_across_lanes_checks_independently_and_any_altered_byte_fails(
    bodies: list[list[str]], data: st.DataObject
) -> None:
    private = lanes_mod.Ed25519PrivateKey.generate()
    origin = "ledger.example.com/loans"
    heads = _lanes(bodies)
    note, per_lane = lanes_mod.sign_lanes(origin, heads, private)
    lane = data.draw(st.integers(0, len(heads) - 1))
    seq = data.draw(st.integers(1, heads[lane].size))
    leaves = [leaf_hash(x.encode()) for x in bodies[lane]]
    proof = LaneProof(
        body=bodies[lane][seq - 1],
        lane=lane,
        seq=seq,
        inclusion=merkle.inclusion_proof(seq - 1, len(leaves), merkle.MemoryTree(leaves).subtree),
        lane_inclusion=lanes_mod.index_inclusion(origin, heads, lane),
        index_note=note,
    )
    verifier = notes.Verifier(origin, notes.raw_public(private.public_key()))
    assert check_lane_proof(proof, verifier) is None
    # independently: the event in its lane, the lane's checkpoint body in the lanes tree, the
    # lanes root and every lane's size and root as the signed note lists them
    assert _independent_inclusion(leaf_hash(proof.body.encode()), seq - 1, leaves, proof.inclusion)
    lane_leaves = [_h(b"\x00" + h.body(origin).encode()) for h in heads]
    assert _independent_inclusion(lane_leaves[lane], lane, lane_leaves, proof.lane_inclusion)
    parsed = notes.parse_note(note)
    assert parsed.signed_by(verifier)
    lines = parsed.body.split("\n")
    assert lines[:3] == [lanes_mod.INDEX_FORMAT, origin, str(len(heads))]
    assert base64.b64decode(lines[3]) == _mth(lane_leaves)
    for k, line in enumerate(lines[4:-1]):
        assert line == f"{k} {len(bodies[k])} {base64.b64encode(_mth_of(bodies[k])).decode()}"
    # each lane's own note is an ordinary tlog-checkpoint of its own origin
    own = notes.parse_note(per_lane[lane])
    body = notes.parse_checkpoint(own.body)
    assert (body.size, body.root) == (heads[lane].size, heads[lane].root)
    assert body.origin == (origin if lane == 0 else f"{origin}/lane/{lane}")
    # any altered hash of either path, another place, or another body fails
    broken = data.draw(st.sampled_from(["inclusion", "lane_inclusion", "seq", "lane", "body"]))
    if broken == "inclusion" and proof.inclusion:
        at = data.draw(st.integers(0, len(proof.inclusion) - 1))
        bad = [*proof.inclusion]
        bad[at] = bytes([bad[at][0] ^ 1]) + bad[at][1:]
        assert check_lane_proof(_with(proof, inclusion=bad), verifier) is not None
    elif broken == "lane_inclusion" and proof.lane_inclusion:
        bad = [bytes([proof.lane_inclusion[0][0] ^ 1]) + proof.lane_inclusion[0][1:]]
        bad += proof.lane_inclusion[1:]
        assert check_lane_proof(_with(proof, lane_inclusion=bad), verifier) is not None
    elif broken == "seq":
        assert check_lane_proof(_with(proof, seq=seq + 1), verifier) is not None
    elif broken == "lane" and len(heads) > 1:
        other = (lane + 1) % len(heads)
        assert check_lane_proof(_with(proof, lane=other), verifier) is not None
    elif broken == "body":
        assert check_lane_proof(_with(proof, body=proof.body + " "), verifier) is not None


def _mth_of(bodies: list[str]) -> bytes:
    return _mth([_h(b"\x00" + x.encode()) for x in bodies])


def _with(proof: LaneProof, **changes: Any) -> LaneProof:
    values = {**proof.__dict__, **changes}
    return LaneProof(**values)


def test_a_lanes_checkpoint_signed_by_another_key_or_with_an_edited_lane_line_is_refused() -> None:
    key = lanes_mod.Ed25519PrivateKey.generate()
    other = lanes_mod.Ed25519PrivateKey.generate()
    origin = "ledger.example.com/x"
    heads = _lanes([[_body(0, 1, "a")], [_body(1, 1, "b"), _body(1, 2, "c")]])
    good = lanes_mod.sign_index(origin, heads, key)
    proof = LaneProof(_body(1, 1, "b"), 1, 1, [leaf_hash(_body(1, 2, "c").encode())], [], good)
    proof = _with(proof, lane_inclusion=lanes_mod.index_inclusion(origin, heads, 1))
    verifier = notes.Verifier(origin, notes.raw_public(key.public_key()))
    assert check_lane_proof(proof, verifier) is None
    stranger = notes.Verifier(origin, notes.raw_public(other.public_key()))
    assert "not signed" in (check_lane_proof(proof, stranger) or "")
    edited = good.replace("1 2 ", "1 3 ", 1)
    assert check_lane_proof(_with(proof, index_note=edited), verifier) is not None


# -- PostgreSQL: lanes in the database ---------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from postgres_schema_url()


@pytest.fixture
def lanes_db(pg_url: str) -> Iterator[sa.Engine]:
    db = create_engine(pg_url)
    migrate(db)
    lanes_mod.configure(db, LANES)
    yield db
    db.dispose()


def _points_per_lane(lanes: int) -> dict[int, str]:
    found: dict[int, str] = {}
    n = 0
    while len(found) < lanes - 1:
        point = f"point_{n}"
        found.setdefault(lane_of(point, "d", lanes), point)
        n += 1
    return found


def _decision_event(point: str, n: int) -> EventDraft:
    return EventDraft(
        "decision.created", "test", {"n": n}, point=point, decision_id=str(uuid.uuid4())
    )


def _fill(db: sa.Engine, per_lane: int = 5) -> dict[int, str]:
    points = _points_per_lane(LANES)
    recorder = Recorder(db)
    try:
        for n in range(per_lane):
            changes = [Change(events=[_decision_event(p, n)]) for p in points.values()]
            changes.append(Change(events=[EventDraft("token.created", "test", {"n": n})]))
            for future in recorder.submit_many(changes):
                recorder.wait(future)
            if n == 1:  # a barrier: a guard change takes every lane and records their heads
                recorder.record(
                    Change(events=[EventDraft("kill_switch.released", "test", {"scope": "x"})])
                )
    finally:
        recorder.close()
    return points


def _lane_rows(db: sa.Engine, lane: int) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.select(events).where(events.c.lane == lane).order_by(events.c.seq)
            ).mappings()
        ]


def test_lanes_are_independent_chains_and_a_barrier_records_every_lanes_head(
    lanes_db: sa.Engine,
) -> None:
    points = _fill(lanes_db)
    for lane in range(LANES):
        rows = _lane_rows(lanes_db, lane)
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        prev = GENESIS
        for row in rows:
            assert row["prev_hash"] == prev
            assert next_chain_hash(prev, leaf_hash(row["body"].encode())) == row["chain_hash"]
            assert ('"lane":' in row["body"]) == (lane > 0)
            prev = row["chain_hash"]
        if lane:
            assert {r["point"] for r in rows} == {points[lane]}
        else:
            assert all(r["decision_id"] is None for r in rows)
    barrier = next(r for r in _lane_rows(lanes_db, 0) if r["type"] == "kill_switch.released")
    recorded = orjson.loads(barrier["body"])["payload"]["ledger_heads"]
    assert len(recorded) == LANES
    for lane in range(1, LANES):
        seq, chain_hash = recorded[lane]
        assert seq == 2 and _lane_rows(lanes_db, lane)[seq - 1]["chain_hash"] == chain_hash
    assert verify_ledger(lanes_db, [], projection=False).ok


def test_any_tamper_in_any_lane_is_found_and_named_with_its_lane(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    _fill(lanes_db)
    key = load_or_create(tmp_path)
    make_lanes_checkpoint(lanes_db, key)
    trusted = [key.public]
    assert verify_ledger(lanes_db, trusted, projection=False).ok

    originals = {k: _lane_rows(lanes_db, k) for k in range(LANES)}
    with lanes_db.connect() as conn:
        heads = [r._asdict() for r in conn.execute(sa.select(ledger_head)).all()]

    @settings(
        max_examples=24, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(
        st.integers(0, LANES - 1),
        st.sampled_from(["body", "delete", "reorder", "rehash", "move"]),
        st.data(),
    )
    def tamper(lane: int, how: str, data: st.DataObject) -> None:
        rows = originals[lane]
        at = data.draw(st.integers(0, len(rows) - 2))
        try:
            _tamper(lanes_db, lane, rows, at, how)
            report = verify_ledger(lanes_db, trusted, projection=False)
            assert not report.ok, (lane, how, at)
            named = {p.lane or 0 for p in report.problems}
            assert lane in named, (lane, how, at, [p.message for p in report.problems])
        finally:
            with lanes_db.begin() as conn:  # back to the genuine ledger
                conn.execute(events.delete())
                conn.execute(events.insert(), [r for k in range(LANES) for r in originals[k]])
                for head in heads:
                    conn.execute(
                        ledger_head.update().where(ledger_head.c.id == head["id"]).values(head)
                    )

    tamper()
    assert verify_ledger(lanes_db, trusted, projection=False).ok


def _tamper(db: sa.Engine, lane: int, rows: list[dict[str, Any]], at: int, how: str) -> None:
    where = (events.c.lane == lane) & (events.c.seq == rows[at]["seq"])
    with db.begin() as conn:
        if how == "body":
            conn.execute(
                events.update()
                .where(where)
                .values(body=rows[at]["body"].replace('"payload":{', '"payload":{"forged":1,'))
            )
        elif how == "delete":
            conn.execute(events.delete().where(where))
        elif how == "reorder":
            a, b = rows[at], rows[at + 1]
            conn.execute(
                events.delete().where(events.c.lane == lane, events.c.seq.in_([a["seq"], b["seq"]]))
            )
            conn.execute(events.insert(), [{**a, "seq": b["seq"]}, {**b, "seq": a["seq"]}])
        elif how == "move":  # the event is taken to the next lane, re-chained there
            other = (lane + 1) % LANES
            last = _lane_rows(db, other)[-1]
            moved = {
                **rows[at],
                "lane": other,
                "seq": last["seq"] + 1,
                "prev_hash": last["chain_hash"],
            }
            moved["chain_hash"] = next_chain_hash(
                last["chain_hash"], bytes.fromhex(moved["leaf_hash"])
            )
            conn.execute(events.delete().where(where))
            conn.execute(events.insert().values(**moved))
            conn.execute(
                ledger_head.update()
                .where(ledger_head.c.id == other + 1)
                .values(seq=moved["seq"], chain_hash=moved["chain_hash"])
            )
        else:  # rewrite one event and re-hash the rest of the lane and its head
            prev = rows[at]["prev_hash"]
            for row in rows[at:]:
                body = (
                    row["body"].replace('"payload":{', '"payload":{"forged":1,')
                    if row is rows[at]
                    else row["body"]
                )
                leaf = leaf_hash(body.encode())
                chain = next_chain_hash(prev, leaf)
                conn.execute(
                    events.update()
                    .where((events.c.lane == lane) & (events.c.seq == row["seq"]))
                    .values(body=body, leaf_hash=leaf.hex(), prev_hash=prev, chain_hash=chain)
                )
                prev = chain
            conn.execute(
                ledger_head.update().where(ledger_head.c.id == lane + 1).values(chain_hash=prev)
            )


def test_a_fork_in_one_lane_fails_that_lanes_consistency_proof_only(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    points = _fill(lanes_db)
    key = load_or_create(tmp_path)
    old = make_lanes_checkpoint(lanes_db, key)
    forked = 2
    rows = _lane_rows(lanes_db, forked)
    _tamper(lanes_db, forked, rows, 1, "rehash")
    recorder = Recorder(lanes_db)
    try:
        for n in range(3):
            recorder.record(Change(events=[_decision_event(p, 100 + n) for p in points.values()]))
    finally:
        recorder.close()
    with pytest.raises(LedgerForked, match=f"lane {forked} "):  # the signer remembers
        make_lanes_checkpoint(lanes_db, key)
    # someone who can also replace the signer's memory gets the fork signed; the proofs tell
    remembered.lanes_path_for(key).unlink()
    new = make_lanes_checkpoint(lanes_db, key)
    with lanes_db.connect() as conn:
        proofs = [
            lane_consistency(conn, h.lane, h.size, n.size)
            for h, n in zip(old.heads, new.heads, strict=True)
        ]
    problems = lanes_mod.lane_consistency_problems(old.heads, new.heads, proofs)
    assert len(problems) == 1 and f"lane {forked} " in problems[0], problems
    # and verify names the lane whose events no longer give the root the older index signed
    report = verify_ledger(lanes_db, [key.public], projection=False)
    assert any(p.lane == forked and p.kind == "checkpoint_mismatch" for p in report.problems), [
        p.to_dict() for p in report.problems
    ]


def test_an_event_is_proved_across_lanes_from_the_database(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    _fill(lanes_db)
    key = load_or_create(tmp_path)
    made = make_lanes_checkpoint(lanes_db, key)
    verifier = notes.Verifier(made.origin, key.public.raw)
    for lane in range(LANES):
        rows = _lane_rows(lanes_db, lane)
        with lanes_db.connect() as conn:
            proof = prove_event(conn, made, lane, rows[-2]["seq"])
        assert proof.body == rows[-2]["body"]
        assert check_lane_proof(proof, verifier) is None
        leaves = [leaf_hash(r["body"].encode()) for r in rows]
        assert _independent_inclusion(leaves[-2], len(rows) - 2, leaves, proof.inclusion)


def test_the_number_of_lanes_is_fixed_once_anything_is_recorded(lanes_db: sa.Engine) -> None:
    assert lanes_mod.configure(lanes_db, LANES) == LANES
    _fill(lanes_db, per_lane=1)
    with pytest.raises(lanes_mod.LanesRefused, match="fixed when the ledger is created"):
        lanes_mod.configure(lanes_db, LANES + 1)


def test_sqlite_keeps_one_lane(tmp_path: Any) -> None:
    db = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(db)
    with pytest.raises(lanes_mod.LanesRefused, match="SQLite has one lane"):
        lanes_mod.configure(db, 2)
    assert lanes_mod.configure(db, 1) == 1


# -- two writer processes, points in different lanes -------------------------------------------


def _writer(url: str, point: str, count: int, out: Any) -> None:
    db = create_engine(url)
    recorder = Recorder(db)
    try:
        for n in range(count):
            recorder.record(Change(events=[_decision_event(point, n)]))
    finally:
        recorder.close()
        db.dispose()
    out.put(point)


def test_two_writer_processes_commit_decisions_of_points_in_different_lanes(
    lanes_db: sa.Engine, pg_url: str
) -> None:
    points = _points_per_lane(LANES)
    chosen = [points[1], points[2]]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=_writer, args=(pg_url, p, 200, out)) for p in chosen]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert {out.get(timeout=5), out.get(timeout=5)} == set(chosen)
    for lane in (1, 2):
        rows = _lane_rows(lanes_db, lane)
        assert [r["seq"] for r in rows] == list(range(1, 201))
    assert verify_ledger(lanes_db, [], projection=False).ok


def test_a_deployment_with_lanes_verifies_its_state_as_a_projection_of_every_lane(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    """Decisions, reviews, ground truth, tokens, users and kill switches on a ledger of several
    lanes: each decision's events share its point's lane, the rest lane 0, and the state check
    folds them all."""
    from tests.reviewing import AUTO_INPUT, REVIEW_INPUT, Clock, review_points, reviewer, token
    from warden.engine import Engine
    from warden.policy.loader import load_points
    from warden.review.desk import ReviewDesk

    clock = Clock()
    engine = Engine(load_points(review_points(tmp_path / "points")), lanes_db, actor="test")
    desk = ReviewDesk(engine, clock=clock)
    try:
        auto = engine.decide("loan_approval", AUTO_INPUT).id
        engine.record_ground_truth(auto, "approve", actor="test")
        settled = engine.decide("loan_approval", REVIEW_INPUT).id
        _, alice = reviewer(engine, "alice")
        desk.claim(alice, settled)
        clock.advance(30)
        desk.approve(alice, settled)
        token(engine, ["owner"], points=["*"], name="owner")
        engine.set_kill("loan_approval", True, actor="ops", reason="drift")
        killed = engine.decide("loan_approval", AUTO_INPUT)
        assert killed.route != "auto"  # the barrier: no AUTO decision after the kill
    finally:
        engine.close()
    lane = lane_of("loan_approval", auto, LANES)
    assert lane > 0
    with lanes_db.connect() as conn:
        placed = conn.execute(sa.select(events.c.lane, events.c.decision_id)).all()
    assert placed and all((d is None) == (k == 0) for k, d in placed)
    assert {k for k, d in placed if d is not None} == {lane}
    report = verify_ledger(lanes_db, [])
    assert report.ok, report.to_dict()
    assert report.projection is not None and report.projection.rows["decisions"] == 3
    assert report.projection.rows["review_tasks"] == 2  # the killed one went to review
    with lanes_db.begin() as conn:  # a state row changed outside Warden is still found
        conn.execute(sa.text("UPDATE decisions SET outcome = 'deny' WHERE id = :id"), {"id": auto})
    assert not verify_ledger(lanes_db, []).ok


event_kinds = st.lists(
    st.tuples(
        st.sampled_from(["decision.created", "token.created", "kill_switch.engaged", "policy.x"]),
        st.sampled_from(["a", "b", "c", "d", "e"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=80, deadline=None)
@given(st.lists(event_kinds, min_size=1, max_size=5), st.integers(1, 6))
def test_the_writer_locks_the_heads_of_its_lanes_in_ascending_order_and_every_lane_for_a_guard(
    batch_events: list[list[tuple[str, str]]], lanes: int
) -> None:
    batch = [
        Change(
            events=[
                EventDraft(
                    kind,
                    "t",
                    {},
                    point=point,
                    decision_id=str(uuid.uuid4()) if kind == "decision.created" else None,
                )
                for kind, point in kinds
            ]
        )
        for kinds in batch_events
    ]
    asked: list[int] = []

    def fetch(statement: str, params: tuple[Any, ...]) -> tuple[int, str]:
        assert "ledger_head" in statement
        asked.append(params[0])
        return (0, GENESIS)

    recorder = Recorder.__new__(Recorder)  # only the lock choice, no writer thread
    recorder._sql = RawStatements.for_dialect("postgresql")
    heads = recorder._lock_heads(fetch, batch, lanes)
    assert asked == sorted(set(asked))  # ascending, each once: no cycle between two writers
    guard = any(e.type.startswith(("kill_switch.", "policy.")) for c in batch for e in c.events)
    lanes_written = {lane_of(e.point, e.decision_id, lanes) for c in batch for e in c.events}
    if guard and lanes > 1:
        assert sorted(heads) == list(range(lanes))
    else:
        assert set(heads) == lanes_written
    assert asked == [lane + 1 for lane in sorted(heads)]


def test_the_monitor_follows_every_lane_with_its_own_cursor(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    """Two monitored points in two lanes: the second point's decisions, numbered from 1 in its
    lane, are not skipped because the first point's lane is further along."""
    import numpy as np

    from tests.conftest import LOAN_POINT, write_points
    from tests.monitoring import MONITORING, applications, write_reference
    from warden.engine import Engine
    from warden.monitor.worker import Monitor
    from warden.policy.loader import load_points
    from warden.store.schema import monitor_windows

    other = next(
        f"loan_{n}"
        for n in range(100)
        if lane_of(f"loan_{n}", "d", LANES) != lane_of("loan_approval", "d", LANES)
    )
    folder = tmp_path / "points"
    monitored = LOAN_POINT.rstrip() + "\n" + MONITORING
    write_points(folder, monitored, monitored.replace("point: loan_approval", f"point: {other}"))
    write_reference(folder / "reference.csv", applications(np.random.default_rng(1), 2000))
    engine = Engine(load_points(folder), lanes_db, actor="test")
    rng = np.random.default_rng(3)
    try:
        monitor = Monitor(engine, clock=lambda: 1e9)
        for item in applications(rng, 250):
            engine.decide("loan_approval", item)
        monitor.poll()
        for item in applications(rng, 200):
            engine.decide(other, item)
        monitor.poll()
    finally:
        engine.close()
    with lanes_db.connect() as conn:
        windows = {r.point: r.decisions for r in conn.execute(sa.select(monitor_windows)).all()}
    assert windows == {"loan_approval": 200, other: 200}


def test_the_periodic_checkpointer_signs_lanes_checkpoints_that_verify(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    """Each lanes checkpoint hashes only what its lanes gained since the last one; verify
    re-derives every lane's root from all its leaves and finds the same."""
    from typer.testing import CliRunner

    from warden.cli.app import app
    from warden.ledger.checkpointer import Checkpointer
    from warden.ledger.lanecheckpoint import latest_sizes
    from warden.store.schema import lane_checkpoints

    points = _fill(lanes_db, per_lane=3)
    checkpointer = Checkpointer(lanes_db, tmp_path, every=1, seconds=60)
    checkpointer.tick(0.0, 0.0)
    checkpointer.tick(0.0, 0.0)  # nothing grew: nothing signed
    recorder = Recorder(lanes_db)
    try:
        for n in range(70):  # past a tile's 64 leaves in one lane
            recorder.record(Change(events=[_decision_event(points[2], 10 + n)]))
    finally:
        recorder.close()
    checkpointer.tick(0.0, 0.0)
    with lanes_db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(lane_checkpoints)).scalar() == 2
        sizes = latest_sizes(conn)
    assert sizes is not None and sizes[2] == len(_lane_rows(lanes_db, 2))
    key = load_or_create(tmp_path)
    report = verify_ledger(lanes_db, [key.public], projection=False)
    assert report.ok, report.to_dict()
    result = CliRunner().invoke(
        app,
        ["audit", "lanes-checkpoint"],
        env={
            "WARDEN_HOME": str(tmp_path),
            "WARDEN_DB_URL": str(lanes_db.url.render_as_string(hide_password=False)),
        },
    )
    assert result.exit_code == 0, result.output
    printed = orjson.loads(result.stdout)
    assert [lane["size"] for lane in printed["lanes"]] == sizes
    assert printed["note"].startswith(lanes_mod.INDEX_FORMAT)


def test_a_decision_beyond_lane_0_gets_a_proof_bundle_checked_offline(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    from typer.testing import CliRunner

    from warden.cli.app import app
    from warden.ledger.proof import build_bundle, check_bundle

    _fill(lanes_db)
    key = load_or_create(tmp_path)
    decision = _lane_rows(lanes_db, 2)[1]["decision_id"]
    bundle = build_bundle(lanes_db, decision, signer=lambda: key)
    assert bundle["format"] == "warden.proof.lanes/v1" and bundle["lane"] == 2
    checked = check_bundle(bundle, key.public)
    assert checked.ok, checked.problems
    assert [e["seq"] for e in checked.events] == [2]
    other = load_or_create(tmp_path / "other")
    assert not check_bundle(bundle, other.public).ok
    forged = {
        **bundle,
        "events": [
            {**bundle["events"][0], "body": bundle["events"][0]["body"].replace('"n":1', '"n":9')}
        ],
    }
    assert not check_bundle(forged, key.public).ok
    elsewhere = {**bundle, "decision_id": str(uuid.uuid4())}
    assert not check_bundle(elsewhere, key.public).ok
    path = tmp_path / "proof.json"
    path.write_bytes(orjson.dumps(bundle))
    (tmp_path / "key.pem").write_text(key.public.pem())
    result = CliRunner().invoke(
        app, ["audit", "check-proof", str(path), "--public-key", str(tmp_path / "key.pem")]
    )
    assert result.exit_code == 0, result.output
    assert "lane 2" in result.output


def test_export_of_several_lanes_verifies_every_lane_and_names_each_events_lane(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    from warden.ledger.export import ExportFilter, export_events

    points = _fill(lanes_db)
    key = load_or_create(tmp_path)
    signed = make_lanes_checkpoint(lanes_db, key)
    out = tmp_path / "all.jsonl"
    result = export_events(lanes_db, out, None, ExportFilter(), lanes_checkpoint=signed)
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert result.scanned == result.events == len(lines) == sum(h.size for h in signed.heads)
    assert {(r["lane"], r["seq"]) for r in lines} == {
        (k, s) for k in range(LANES) for s in range(1, signed.heads[k].size + 1)
    }
    only = export_events(
        lanes_db, tmp_path / "p.jsonl", None, ExportFilter(point=points[3]), lanes_checkpoint=signed
    )
    assert only.events == signed.heads[3].size
    manifest = orjson.loads(result.manifest.read_bytes())
    assert manifest["lanes_checkpoint"] == signed.note
    rows = _lane_rows(lanes_db, 1)
    _tamper(lanes_db, 1, rows, 1, "rehash")  # rewritten and re-hashed: the root tells
    with pytest.raises(Exception, match="lane 1 does not match"):
        export_events(lanes_db, tmp_path / "x.jsonl", None, ExportFilter(), lanes_checkpoint=signed)
    assert not (tmp_path / "x.jsonl").exists()


def test_the_auditors_state_remembers_every_lane_and_catches_a_lane_rewritten_since(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    """An attacker who rewrites a lane, re-hashes it and deletes the lanes checkpoints leaves
    nothing in the database to disagree; the auditor's remembered lanes checkpoint still does."""
    from warden.cli.audit import _advance_state
    from warden.ledger import remembered
    from warden.ledger.checkpoint import make_checkpoint
    from warden.store.schema import lane_checkpoints

    _fill(lanes_db)
    key = load_or_create(tmp_path)
    make_checkpoint(lanes_db, key)
    make_lanes_checkpoint(lanes_db, key)
    state_file = tmp_path / "auditor-state.json"
    report = verify_ledger(lanes_db, [key.public], projection=False, require_signed=True)
    assert report.ok and report.vouched_lanes is not None
    _advance_state(state_file, None, report)
    state = remembered.load(state_file)
    assert state is not None and state.lanes_note == report.vouched_lanes.note.text()
    assert verify_ledger(lanes_db, [key.public], projection=False, state=state).ok
    _tamper(lanes_db, 2, _lane_rows(lanes_db, 2), 1, "rehash")
    with lanes_db.begin() as conn:
        conn.execute(lane_checkpoints.delete())
    assert verify_ledger(lanes_db, [key.public], projection=False).ok  # nothing disagrees
    report = verify_ledger(lanes_db, [key.public], projection=False, state=state)
    assert not report.ok
    assert [(p.kind, p.lane) for p in report.problems] == [("forked", 2)], report.to_dict()


def test_an_auditor_with_a_key_is_told_when_no_trusted_lanes_checkpoint_covers_the_lanes(
    lanes_db: sa.Engine, tmp_path: Any
) -> None:
    from warden.ledger.checkpoint import make_checkpoint

    _fill(lanes_db)
    key = load_or_create(tmp_path)
    make_checkpoint(lanes_db, key)  # lane 0 is signed, the other lanes are not
    report = verify_ledger(lanes_db, [key.public], projection=False, require_signed=True)
    assert [(p.kind, p.lane) for p in report.problems] == [("unvouched", 1)]
    make_lanes_checkpoint(lanes_db, key)
    assert verify_ledger(lanes_db, [key.public], projection=False, require_signed=True).ok
    stranger = load_or_create(tmp_path / "stranger")
    make_lanes_checkpoint(lanes_db, stranger)  # a checkpoint by another key vouches for nothing
    report = verify_ledger(lanes_db, [stranger.public], projection=False, require_signed=True)
    assert not report.ok
