"""Verify against a real database on both backends: every kind of tampering is caught and located.

One ledger of 300 events (checkpoints at 100, 257 and 300; stored Merkle tiles) is built per
test; each Hypothesis example tampers with it the way someone with database access would, runs
the full verification, and puts the ledger back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import ledger_helpers as lh
from warden.ledger import verify
from warden.ledger.keys import SigningKey, load_or_create
from warden.ledger.remembered import SIGNER_FILE
from warden.ledger.tree import TILE
from warden.ledger.verify import Break, BreakKind, Report, verify_ledger
from warden.store.schema import checkpoints, events, ledger_head, ledger_tiles

N = 300
SIZES = [100, 257, N]
examples = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


@pytest.fixture(autouse=True, params=["one batch", "batches of 7"])
def batches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify checks events a batch at a time; in small batches, breaks, checkpoints and tiles
    also fall on and across the edges of batches."""
    if request.param == "batches of 7":
        monkeypatch.setattr(verify, "_BATCH", 7)


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return load_or_create(tmp_path / "home")


@pytest.fixture
def ledger(db: sa.Engine, key: SigningKey) -> Iterator[lh.Snapshot]:
    lh.build(db, key, SIZES)
    snap = lh.Snapshot(db)
    assert snap.size == N and len(snap.tiles) == N // TILE
    yield snap


def _verify(db: sa.Engine, key: SigningKey) -> Report:
    # These ledgers are events alone, with no state rows: the history is checked here, the
    # state projection in test_state_projection.py.
    return verify_ledger(db, [key.public], projection=False)


def _first(db: sa.Engine, key: SigningKey) -> Break:
    report = _verify(db, key)
    assert not report.ok, "tampering went unnoticed"
    assert report.first is not None
    return report.first


def test_intact_ledger_verifies(db: sa.Engine, key: SigningKey, ledger: lh.Snapshot) -> None:
    report = _verify(db, key)
    assert report.ok, report.problems
    assert (report.events, report.head, report.checkpoints) == (N, N, 3)
    assert report.root is not None and report.latest_checkpoint == N


@examples
@given(chunks=st.lists(st.integers(1, 60), min_size=1, max_size=4))
def test_any_valid_ledger_verifies(db: sa.Engine, key: SigningKey, chunks: list[int]) -> None:
    with db.begin() as conn:
        for table in (checkpoints, ledger_tiles, lh.events):
            conn.execute(table.delete())
        conn.execute(ledger_head.update().values(seq=0, chain_hash="0" * 64))
    (key.path.parent / SIGNER_FILE).unlink(missing_ok=True)  # a new ledger: its signer forgets
    sizes = [sum(chunks[: i + 1]) for i in range(len(chunks))]
    lh.build(db, key, sizes)
    lh.record(db, sizes[-1], sizes[-1] + 3)  # events after the last checkpoint are fine too
    report = _verify(db, key)
    assert report.ok, report.problems
    assert report.events == sizes[-1] + 3 and report.checkpoints == len(sizes)


@examples
@given(seq=st.integers(1, N), rehash=st.booleans())
def test_modified_body_is_found(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, seq: int, rehash: bool
) -> None:
    (lh.modify_and_rehash if rehash else lh.modify_body)(db, ledger, seq)
    try:
        first = _first(db, key)
        assert (first.kind, first.seq) == (BreakKind.MODIFIED, seq), first
    finally:
        ledger.restore()


@examples
@given(seq=st.integers(1, N), column=st.sampled_from(sorted(lh.COLUMN_CHANGES)))
def test_modified_column_is_found(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, seq: int, column: str
) -> None:
    lh.modify_column(db, seq, column)
    try:
        first = _first(db, key)
        assert (first.kind, first.seq) == (BreakKind.MODIFIED, seq), first
        assert column in first.message
    finally:
        ledger.restore()


@pytest.mark.parametrize("column", ["prev_hash", "leaf_hash", "chain_hash"])
def test_hash_moved_into_the_next_row_is_found(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, column: str
) -> None:
    """A stored hash cut short and the next one lengthened by the same characters: the two
    still read the same one after the other, and each is wrong."""
    if db.dialect.name == "postgresql":
        pytest.skip("VARCHAR(64) keeps PostgreSQL from storing a longer hash")
    seq = 40
    first, second = ledger.row(seq)[column], ledger.row(seq + 1)[column]
    with db.begin() as conn:
        conn.execute(events.update().where(events.c.seq == seq).values({column: first[:-2]}))
        conn.execute(
            events.update().where(events.c.seq == seq + 1).values({column: first[-2:] + second})
        )
    try:
        found = _first(db, key)
        assert (found.kind, found.seq) == (BreakKind.MODIFIED, seq), found
    finally:
        ledger.restore()


@examples
@given(seq=st.integers(1, N))
def test_deleted_event_is_found(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, seq: int
) -> None:
    lh.delete(db, seq)
    try:
        first = _first(db, key)
        kind = BreakKind.TRUNCATED if seq == N else BreakKind.DELETED
        assert (first.kind, first.seq) == (kind, seq), first
    finally:
        ledger.restore()


@examples
@given(seq=st.integers(1, N + 1))
def test_inserted_event_is_found(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, seq: int
) -> None:
    if seq == N + 1:
        lh.append_behind_head(db, ledger)
    else:
        lh.insert(db, ledger, seq)
    try:
        first = _first(db, key)
        assert (first.kind, first.seq) == (BreakKind.INSERTED, seq), first
    finally:
        ledger.restore()


@examples
@given(first_seq=st.integers(1, N - 1), data=st.data())
def test_reordered_events_are_found(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, first_seq: int, data: st.DataObject
) -> None:
    second = data.draw(st.integers(first_seq + 1, N))
    lh.swap(db, first_seq, second)
    try:
        first = _first(db, key)
        assert (first.kind, first.seq) == (BreakKind.REORDERED, first_seq), first
        assert str(second) in first.message
    finally:
        ledger.restore()


@examples
@given(seq=st.integers(1, N), count=st.integers(0, 40))
def test_truncation_and_rewrite_is_found(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, seq: int, count: int
) -> None:
    length = lh.truncate_and_rewrite(db, ledger, seq, count)
    try:
        first = _first(db, key)
        if first.kind is BreakKind.TRUNCATED:
            assert first.seq == length + 1 and first.last_seq is not None
            assert first.last_seq >= length + 1
        else:
            assert first.kind is BreakKind.CHECKPOINT_MISMATCH, first
            assert first.seq is not None and first.last_seq is not None
            assert first.seq <= seq <= first.last_seq, first
    finally:
        ledger.restore()


@pytest.mark.parametrize("column", ["root", "signature", "signed_at", "size"])
def test_tampered_checkpoint_is_found(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, column: str
) -> None:
    changes = {
        "root": "ab" * 32,
        "signature": "A" * 86 + "==",
        "signed_at": "2020-01-01T00:00:00.000000Z",
        "size": 99,
    }
    with db.begin() as conn:
        conn.execute(
            checkpoints.update().where(checkpoints.c.size == 100).values({column: changes[column]})
        )
    first = _first(db, key)
    assert first.kind is BreakKind.CHECKPOINT_MISMATCH
    assert first.checkpoint in (99, 100) and "signature" in first.message


def test_resigned_rewrite_is_caught_by_the_witness(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, tmp_path: Path
) -> None:
    """Someone with the database *and* a copy of the key rewrites history and re-signs it: only
    a copy of an old checkpoint kept outside the database catches that. The server's own signer
    refuses to sign the rewrite: it remembers the last checkpoint it signed."""
    from warden.ledger.checkpoint import all_checkpoints, make_checkpoint
    from warden.ledger.remembered import LedgerForked

    with db.connect() as conn:
        witnessed = all_checkpoints(conn)
    lh.truncate_and_rewrite(db, ledger, 150, 200)
    with db.begin() as conn:
        conn.execute(checkpoints.delete().where(checkpoints.c.size > 100))
        conn.execute(ledger_tiles.delete())
    with pytest.raises(LedgerForked, match="refusing to sign"):
        make_checkpoint(db, key)
    (tmp_path / "stolen").mkdir()
    make_checkpoint(db, SigningKey(key.key, tmp_path / "stolen" / "key.pem"))
    assert _verify(db, key).ok  # the database alone now tells a consistent story
    report = verify_ledger(db, [key.public], witnessed=witnessed, projection=False)
    assert report.first is not None
    assert report.first.kind is BreakKind.CHECKPOINT_MISMATCH
    assert report.first.checkpoint == 257 and "witnessed" in report.first.message


def test_unknown_signer_and_altered_tile(
    db: sa.Engine, key: SigningKey, ledger: lh.Snapshot, tmp_path: Path
) -> None:
    stranger = load_or_create(tmp_path / "stranger")
    report = verify_ledger(db, [stranger.public], projection=False)
    assert report.first is not None and "not trusted" in report.first.message
    with db.begin() as conn:
        conn.execute(ledger_tiles.update().values(hash="00" * 32))
    first = _first(db, key)
    assert (first.kind, first.seq) == (BreakKind.TILE_MISMATCH, 1)


def test_concurrent_checkpoints_agree(db: sa.Engine, key: SigningKey) -> None:
    """Replicas signing at the same moment: one checkpoint per size, and everyone gets it."""
    from concurrent.futures import ThreadPoolExecutor

    from warden.ledger.checkpoint import make_checkpoint

    lh.record(db, 0, 40)
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: make_checkpoint(db, key), range(4)))
    assert {cp.size for cp in made} == {40}
    assert len({cp.signature for cp in made}) == 1
    assert _verify(db, key).ok
