"""The signer's memory of lanes: a lane rewritten behind the server's back is refused, named.

The attacker has the database only. They rewrite a lane (edit an event and re-hash the rest of
the lane and its head), truncate one, or delete an event, while the server is down; the server
that starts next must refuse to sign a lanes checkpoint and say which lane. A lane that only grew
is signed. Property: over random lane histories and random edits, the server refuses exactly when
some lane no longer extends what it signed, and names exactly those lanes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests import test_lanes
from tests.test_lanes import LANES, _fill, _lane_rows, _tamper
from warden.cli.app import app
from warden.ledger import merkle, remembered
from warden.ledger.chain import GENESIS, EventDraft, seal
from warden.ledger.checkpointer import Checkpointer
from warden.ledger.keys import load_or_create
from warden.ledger.lanecheckpoint import LaneTrees, make_lanes_checkpoint
from warden.ledger.verify import verify_ledger
from warden.store.schema import events, lane_checkpoints, ledger_head

pg_url = test_lanes.pg_url
lanes_db = test_lanes.lanes_db


def _cli(db: sa.Engine, home: Path, *args: str) -> Any:
    env = {"WARDEN_HOME": str(home), "WARDEN_DB_URL": db.url.render_as_string(hide_password=False)}
    return CliRunner().invoke(app, list(args), env=env)


def test_a_lane_rewritten_while_the_server_was_down_is_refused_and_named(
    lanes_db: sa.Engine, tmp_path: Path
) -> None:
    _fill(lanes_db)
    signed = _cli(lanes_db, tmp_path, "audit", "lanes-checkpoint")
    assert signed.exit_code == 0, signed.output
    memory = tmp_path / remembered.LANES_SIGNER_FILE
    assert orjson.loads(memory.read_bytes())["note"] == orjson.loads(signed.stdout)["note"]

    # the attacker: rewrite event 2 of lane 2, re-hash the lane and its head, delete the
    # lanes checkpoints so nothing in the database disagrees
    _tamper(lanes_db, 2, _lane_rows(lanes_db, 2), 1, "rehash")
    with lanes_db.begin() as conn:
        conn.execute(lane_checkpoints.delete())
    key = load_or_create(tmp_path)
    assert verify_ledger(lanes_db, [key.public], projection=False).ok  # nothing disagrees

    refused = _cli(lanes_db, tmp_path, "audit", "lanes-checkpoint")  # a new process
    assert refused.exit_code == 2, refused.output
    assert "refusing to sign the lanes checkpoint" in refused.output
    assert "lane 2 " in refused.output and "events 1-5 of lane 2 were rewritten" in refused.output
    assert "lane 1 " not in refused.output and "lane 3 " not in refused.output
    with lanes_db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(lane_checkpoints)).scalar() == 0

    # the server's periodic checkpointer, started afresh, refuses too and signs nothing
    checkpointer = Checkpointer(lanes_db, tmp_path, every=1, seconds=60)
    with pytest.raises(remembered.LedgerForked, match="lane 2 "):
        checkpointer._lanes_tick(0.0, 0.0)
    with lanes_db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(lane_checkpoints)).scalar() == 0


def test_a_truncated_lane_and_a_lane_with_an_event_deleted_are_refused(
    lanes_db: sa.Engine, tmp_path: Path
) -> None:
    _fill(lanes_db)
    key = load_or_create(tmp_path)
    make_lanes_checkpoint(lanes_db, key)
    rows = _lane_rows(lanes_db, 3)
    with lanes_db.begin() as conn:  # drop lane 3's last two events and move its head back
        conn.execute(events.delete().where(events.c.lane == 3, events.c.seq > len(rows) - 2))
        conn.execute(
            ledger_head.update()
            .where(ledger_head.c.id == 4)
            .values(seq=len(rows) - 2, chain_hash=rows[-3]["chain_hash"])
        )
    with pytest.raises(remembered.LedgerForked, match="lane 3 holds 3 events, fewer than the 5"):
        make_lanes_checkpoint(lanes_db, key, LaneTrees())
    with lanes_db.begin() as conn:  # put it back: the lane extends what was signed again
        conn.execute(events.insert(), rows[-2:])
        conn.execute(
            ledger_head.update()
            .where(ledger_head.c.id == 4)
            .values(seq=len(rows), chain_hash=rows[-1]["chain_hash"])
        )
    make_lanes_checkpoint(lanes_db, key, LaneTrees())
    _tamper(lanes_db, 1, _lane_rows(lanes_db, 1), 2, "delete")
    with pytest.raises(remembered.LedgerForked, match="event 3 of lane 1 is missing"):
        make_lanes_checkpoint(lanes_db, key, LaneTrees())


def test_a_new_process_signs_and_proves_a_long_lane_from_its_stored_tiles(
    lanes_db: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lanes above 0 keep their tiles in `lane_tiles`: a new process checks the signer's memory,
    signs and proves without reading the lane's leaves in full (O(tile) leaves, not O(lane))."""
    from warden.ledger import tree as tree_mod
    from warden.ledger.lanecheckpoint import lane_consistency, prove_event
    from warden.ledger.lanes import check_lane_proof
    from warden.ledger.note import Verifier
    from warden.store.schema import lane_tiles

    texts = [["a"], ["b"] * 3, ["c"] * 300, ["d"] * 5]
    with lanes_db.begin() as conn:
        _write_lanes(conn, texts)
    key = load_or_create(tmp_path)
    first = make_lanes_checkpoint(lanes_db, key)
    with lanes_db.connect() as conn:
        stored = conn.execute(sa.select(lane_tiles.c.lane, lane_tiles.c.tile)).all()
    assert sorted(stored) == [(2, t) for t in range(300 // 64)]
    texts[2] += ["e"] * 10
    with lanes_db.begin() as conn:
        _write_lanes(conn, texts)
    read: list[int] = []
    real = tree_mod.read_leaves

    def counting(*args: Any, **kwargs: Any) -> list[bytes]:
        leaves = real(*args, **kwargs)
        read.append(len(leaves))
        return leaves

    monkeypatch.setattr(tree_mod, "read_leaves", counting)
    made = make_lanes_checkpoint(lanes_db, key, LaneTrees())  # a new process
    assert made.heads[2].size == 310
    assert max(read) <= 64 and sum(read) < 4 * 64, read
    read.clear()
    trees = LaneTrees()
    with lanes_db.connect() as conn:
        proof = prove_event(conn, made, 2, 7, trees)
        consistency = lane_consistency(conn, 2, 300, 310, trees)
    assert sum(read) < 4 * 64, read
    origin = made.origin
    assert check_lane_proof(proof, Verifier(origin, key.public.raw)) is None
    assert merkle.verify_consistency(300, 310, first.heads[2].root, made.heads[2].root, consistency)


# -- property: random lane histories, random edits behind the server's back -------------------


def _lane_row(lane: int, seq: int, text: str, prev: str) -> dict[str, Any]:
    """A sealed event of `lane` as the writer would store it (columns matching its body)."""
    draft = EventDraft(
        "test.lane",
        "a",
        {"x": text},
        point=f"p{lane}" if lane else None,
        decision_id=f"d-{lane}-{seq}" if lane else None,
        ts=datetime(2026, 12, 1, tzinfo=UTC),
    )
    return seal(seq, prev, draft, lane).row()


def _write_lanes(conn: sa.Connection, texts: list[list[str]]) -> None:
    """Replace every lane's events with chains over `texts` and set the heads to match."""
    conn.execute(events.delete())
    for lane, lane_texts in enumerate(texts):
        prev, rows = GENESIS, []
        for seq, text in enumerate(lane_texts, start=1):
            rows.append(_lane_row(lane, seq, text, prev))
            prev = rows[-1]["chain_hash"]
        if rows:
            conn.execute(events.insert(), rows)
        conn.execute(
            ledger_head.update()
            .where(ledger_head.c.id == lane + 1)
            .values(seq=len(rows), chain_hash=prev)
        )


lane_texts = st.lists(st.sampled_from("abc"), min_size=0, max_size=12)
edit = st.one_of(
    st.tuples(st.just("grow"), st.integers(0, 6)),
    st.tuples(st.just("rewrite"), st.integers(0, 12)),
    st.tuples(st.just("truncate"), st.integers(0, 12)),
)


@pytest.fixture
def signer(lanes_db: sa.Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield lanes_db, tmp_path_factory


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(lane_texts, min_size=LANES, max_size=LANES),
    st.lists(edit, min_size=LANES, max_size=LANES),
)
def test_the_signer_refuses_exactly_the_lanes_that_no_longer_extend_what_it_signed(
    signer: Any, before: list[list[str]], edits: list[tuple[str, int]]
) -> None:
    db, factory = signer
    home = factory.mktemp("signer")
    key = load_or_create(home)
    with db.begin() as conn:
        _write_lanes(conn, before)
    make_lanes_checkpoint(db, key, LaneTrees())
    after, broken = [], set()
    for lane, (texts, (how, at)) in enumerate(zip(before, edits, strict=True)):
        if how == "grow":
            after.append(texts + ["z"] * at)
        elif how == "rewrite":  # re-hashed from there on, head and all
            changed = [t if i != at else t + "!" for i, t in enumerate(texts)]
            after.append(changed)
            if at < len(texts):
                broken.add(lane)
        else:
            after.append(texts[:at])
            if at < len(texts):
                broken.add(lane)
    with db.begin() as conn:
        _write_lanes(conn, after)
    if broken:
        with pytest.raises(remembered.LedgerForked) as refused:
            make_lanes_checkpoint(db, key, LaneTrees())
        named = {lane for lane in range(LANES) if f"lane {lane} " in str(refused.value)}
        assert named == broken, str(refused.value)
    else:
        made = make_lanes_checkpoint(db, key, LaneTrees())
        assert [h.size for h in made.heads] == [len(t) for t in after]
